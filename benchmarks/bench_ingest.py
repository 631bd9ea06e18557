#!/usr/bin/env python3
"""Ingest and read throughput of cas next to the physical baselines, in one run on one input.

What it measures (issue 2, "Benchmark"), all on the same generated file in a temp dir on one disk:

  cas put  (unique data, fresh store)      vs  cp FILE DST           (and cp + fsync, for reference)
  cas put  (same file again, another name) vs  cp FILE DST
  cas get  BUCKET/KEY OUT                  vs  cat FILE > OUT
  cas get  BUCKET/KEY - > /dev/null        vs  cat FILE > /dev/null
  in-process FastCDC + BLAKE3 per chunk    vs  BLAKE3 of the whole buffer (one thread)

CLI commands are timed as whole processes (``subprocess``, start-up included). Every figure is the
median (with the min–max) of ``--runs`` runs (default 3); each run uses a fresh store, and in each
pair cas and its baseline take turns going first, run by run (run 1: cas first, run 2: the baseline
first, ...), so that neither the order nor load from other users of the machine favours one.

Fairness: the input file is read once before timing, so every reader (cas put, cp, cat) starts
from a warm page cache (dropping caches needs privileges a shared machine does not give). Before
every timed command all dirty pages are flushed with ``sync`` (untimed), so no command pays for the
write-back of the one before. ``cas put`` makes its blocks durable before it commits (syncfs), plain
``cp`` does not: the table therefore shows ``cp`` and ``cp + fsync`` (like for like: the baseline
that decides PASS/MISS of a unique put, issue 12) side by side.

Nothing is written outside the temp dir, which is removed at the end (also on error / Ctrl-C).
Not a test: pytest does not collect it (its name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BenchError, find_cas, import_cas, runs_arg, runs_label, turns

MiB = 1 << 20
SEGMENT = 1 * MiB
# a 64-symbol alphabet: "text" segments carry 6 bits per byte, so zstd saves ~20-25% on them
ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 \n"
TEXT_TABLE = bytes(ALPHABET[i % len(ALPHABET)] for i in range(256))

TARGETS = {  # ratio of cas to its baseline that counts as PASS (issue 2; put_unique: issue 12, vs cp + fsync)
    "put_unique": 0.50,
    "put_dup": 1.00,
    "get_file": 0.50,
    "get_null": 0.50,
}




# ---------------------------------------------------------------- helpers


def parse_size(text: str) -> int:
    """'1G', '256M', '64KiB', '65536' -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1G, 256M, 64K)")
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " ")


def input_size(text: str) -> int:
    n = parse_size(text)
    if n < MiB:
        raise argparse.ArgumentTypeError("--size must be at least 1 MiB")
    return n




def load() -> str:
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "n/a"


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, stdout=kw.pop("stdout", subprocess.PIPE), stderr=subprocess.PIPE, **kw)
    if r.returncode != 0:
        raise BenchError(f"`{shlex.join(argv)}` exited {r.returncode}:\n{r.stderr.decode(errors='replace')[-3000:]}")
    return r


def timed(argv: list[str], stdout_path: str | None = None) -> float:
    """Wall time of one whole process, after flushing dirty pages (untimed)."""
    os.sync()
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        r = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
    finally:
        if stdout_path:
            out.close()
    if r.returncode != 0:
        raise BenchError(f"`{shlex.join(argv)}` exited {r.returncode}:\n{r.stderr.decode(errors='replace')[-3000:]}")
    return dt


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    os.sync()


def du_bytes(path: Path, apparent: bool) -> int:
    argv = ["du", "-s", "--block-size=1"] + (["--apparent-size"] if apparent else []) + [str(path)]
    return int(run(argv).stdout.split()[0])


def fmt_mib(n: float) -> str:
    return f"{n / MiB:,.1f} MiB"


def make_input(path: Path, size: int, content: str, seed: int) -> None:
    """Unique (seeded PRNG) data; 'mixed' alternates 1 MiB of random and of 6-bit text."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left, i = size, 0
        while left:
            n = min(SEGMENT, left)
            seg = rng.randbytes(n)
            if content == "text" or (content == "mixed" and i % 2 == 1):
                seg = seg.translate(TEXT_TABLE)
            f.write(seg)
            left -= n
            i += 1
        f.flush()
        os.fsync(f.fileno())


def file_hash(path: Path) -> str:
    import blake3

    h = blake3.blake3()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- measurements


def cli_round(cas: list[str], src: Path, work: Path, init_args: list[str], check: bool, turn: int) -> dict:
    """One run: cas put/put/get/get, each paired with its baseline; in each pair the side that goes
    first is the one ``turns`` gives for run number ``turn``. Returns seconds per operation."""
    store = work / "store"
    out = work / "out.bin"
    dst = work / "copy.bin"
    remove(store)
    data = ["--data", str(store)]
    run(cas + ["init"] + data + init_args)
    run(cas + ["mb"] + data + ["bench"])
    t: dict[str, float] = {}
    info: dict = {"get_identical": None}
    t["stats_start"] = timed(cas + ["stats"] + data + ["--json"])

    def put_unique():
        t["put_unique"] = timed(cas + ["put"] + data + [str(src), "bench/unique"])
        info["stats_unique"] = json.loads(run(cas + ["stats"] + data + ["--json"]).stdout)

    def cp():
        t["cp"] = timed(["cp", str(src), str(dst)])
        remove(dst)

    def put_dup():
        t["put_dup"] = timed(cas + ["put"] + data + [str(src), "bench/dup"])
        info["stats_dup"] = json.loads(run(cas + ["stats"] + data + ["--json"]).stdout)

    def cp_fsync():
        t["cp_fsync"] = timed(["sh", "-c", 'cp "$1" "$2" && sync "$2"', "cp+fsync", str(src), str(dst)])
        remove(dst)

    def get_file():
        t["get_file"] = timed(cas + ["get"] + data + ["bench/unique", str(out)])
        if check:
            info["get_identical"] = file_hash(out) == file_hash(src)
        remove(out)

    def cat_file():
        t["cat_file"] = timed(["cat", str(src)], stdout_path=str(out))
        remove(out)

    def get_null():
        t["get_null"] = timed(cas + ["get"] + data + ["bench/dup", "-"], stdout_path=os.devnull)

    def cat_null():
        t["cat_null"] = timed(["cat", str(src)], stdout_path=os.devnull)

    for ours, base in [(put_unique, cp), (put_dup, cp_fsync), (get_file, cat_file), (get_null, cat_null)]:
        sides = {"cas": ours, "baseline": base}
        for side in turns(["cas", "baseline"], turn):
            sides[side]()

    info["du_apparent"] = du_bytes(store, apparent=True)
    info["du_disk"] = du_bytes(store, apparent=False)
    remove(store)
    return {"times": t, "info": info}


def inprocess_round(buf: bytes, compression: str, chunk_avg: int | None, turn: int) -> dict:
    """MiB/s of chunking, chunk+hash, chunk+hash+encode, and raw BLAKE3, on one in-memory buffer
    (BLAKE3 of the whole buffer, the baseline, goes first in every other run)."""
    import blake3

    import_cas()
    from cas.chunker import Chunker, ChunkerParams

    try:
        from cas.ids import block_id
    except ImportError:  # pragma: no cover - older trees
        def block_id(data):
            return blake3.blake3(data).digest()

    params = ChunkerParams.for_average(chunk_avg) if chunk_avg else ChunkerParams()
    chunker = Chunker(params)
    t: dict[str, float] = {}

    def whole_buffer() -> None:
        t0 = time.perf_counter()
        blake3.blake3(buf).digest()
        t["blake3"] = time.perf_counter() - t0

    if turn % 2:
        whole_buffer()
    t0 = time.perf_counter()
    n = 0
    for _chunk in chunker.chunk_buffer(buf):
        n += 1
    t["cdc"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for chunk in chunker.chunk_buffer(buf):
        block_id(chunk)
    t["cdc_hash"] = time.perf_counter() - t0

    if compression != "none":
        from cas.codec import Codec, CodecParams

        codec = Codec(CodecParams(compression))
        t0 = time.perf_counter()
        for chunk in chunker.chunk_buffer(buf):
            block_id(chunk)
            codec.encode(chunk)
        t["cdc_hash_encode"] = time.perf_counter() - t0

    if not turn % 2:
        whole_buffer()
    return {"times": t, "chunks": n}


# ---------------------------------------------------------------- report


def table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def report(args, size, rounds, inproc, load_before, load_after, fs, cas_version) -> int:
    def med(key, src=rounds):
        return statistics.median(r["times"][key] for r in src)

    def rate(key, src=rounds):
        return size / MiB / med(key, src)

    def spread(key, src=rounds):
        rates = [size / MiB / r["times"][key] for r in src]
        return f"{min(rates):,.0f}–{max(rates):,.0f}"

    rows, verdicts = [], []

    def cli_row(label, key, base_label, base_key, target_key=None):
        ours, base = rate(key), rate(base_key)
        ratio = ours / base
        target = TARGETS.get(target_key) if target_key else None
        if target is not None:
            verdict = "PASS" if ratio >= target else "MISS"
            verdicts.append(verdict)
            tcell = f">= {target:.0%}"
        else:
            verdict, tcell = "(info)", ""
        ours_cells = [f"{ours:,.1f}", f"{med(key):.2f}", spread(key)] if label else ["", "", ""]
        rows.append([label, *ours_cells, base_label, f"{base:,.1f}", spread(base_key), f"{ratio:.0%}", tcell,
                     verdict])

    cli_row("cas put, unique (fresh store)", "put_unique", "cp", "cp")
    cli_row("", "put_unique", "cp + fsync", "cp_fsync", "put_unique")
    cli_row("cas put, duplicate (2nd name)", "put_dup", "cp", "cp", "put_dup")
    cli_row("", "put_dup", "cp + fsync", "cp_fsync")
    cli_row("cas get -> file", "get_file", "cat > file", "cat_file", "get_file")
    cli_row("cas get -> /dev/null", "get_null", "cat > /dev/null", "cat_null", "get_null")

    for label, key in [("in-process FastCDC only", "cdc"), ("in-process FastCDC + BLAKE3/chunk", "cdc_hash"),
                       (f"in-process FastCDC + BLAKE3 + {args.compression} encode", "cdc_hash_encode")]:
        if key not in inproc[0]["times"]:
            continue
        ours, base = rate(key, inproc), rate("blake3", inproc)
        rows.append([label, f"{ours:,.1f}", f"{med(key, inproc):.2f}", spread(key, inproc),
                     "BLAKE3 whole buffer", f"{base:,.1f}", spread("blake3", inproc), f"{ours / base:.0%}", "",
                     "(info)"])

    last = rounds[-1]["info"]
    s1, s2 = last["stats_unique"], last["stats_dup"]
    chunks = inproc[-1]["chunks"]
    print()
    print(f"cas ingest benchmark -- {fmt_mib(size)} of unique data ({args.content}, seed {args.seed}), "
          f"{runs_label(len(rounds))}; cas and baseline take turns going first")
    print(f"cas: {cas_version}; store: chunk avg {args.chunk_avg or 'default'}, compression {args.compression}")
    print(f"disk: input, stores and copies in one temp dir on {fs}")
    print(f"machine: {os.cpu_count()} cores; load average (1/5/15 min) before {load_before}, after {load_after}")
    print("timing: whole processes for CLI commands and baselines; warm page cache for every reader; "
          "`sync` (untimed) before each command")
    print()
    print(table(["operation", "MiB/s", "s", "MiB/s range", "baseline", "MiB/s", "MiB/s range", "ratio", "target",
                 "result"], rows, right={1, 2, 3, 5, 6, 7}))
    print("(MiB/s and s: medians over runs; range: min–max of the runs; ratio: of the medians)")
    print()
    print("store figures (last run):")
    print(f"  after unique put:    stored_bytes {fmt_mib(s1['stored_bytes'])}, unique_blocks "
          f"{s1['unique_blocks']:,}, compression_ratio {s1['compression_ratio']:.3f}")
    growth = s2["stored_bytes"] - s1["stored_bytes"]
    print(f"  after duplicate put: stored_bytes {fmt_mib(s2['stored_bytes'])} (+{growth:,} bytes), "
          f"logical {fmt_mib(s2['logical_bytes'])}, dedup_ratio {s2['dedup_ratio']:.3f}")
    print(f"  data dir (both objects): du apparent {fmt_mib(last['du_apparent'])}, on disk {fmt_mib(last['du_disk'])}")
    print(f"  in-process chunker: {chunks:,} chunks, mean {size / max(chunks, 1) / 1024:,.1f} KiB")
    if last["get_identical"] is not None or rounds[0]["info"]["get_identical"] is not None:
        ok = rounds[0]["info"]["get_identical"]
        print(f"  cas get output identical to input (run 1): {'yes' if ok else 'NO'}")
    print(f"  fixed cost of one cas command (`cas stats --json` on an empty store): {med('stats_start'):.2f} s")
    print()
    misses = verdicts.count("MISS")
    print(f"targets: {len(verdicts) - misses} PASS, {misses} MISS")
    if rounds[0]["info"]["get_identical"] is False:
        print("ERROR: cas get returned different bytes")
        return 2
    return 0


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: python benchmarks/bench_ingest.py --size 256M --runs 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--size", type=input_size, default=input_size("1G"), help="input size (default 1G; e.g. 256M)")
    p.add_argument("--runs", type=runs_arg, default=3, help="runs per figure; medians are reported (default 3)")
    p.add_argument("--content", choices=["mixed", "random", "text"], default="mixed",
                   help="input: random (incompressible), text (6-bit alphabet, compressible), or mixed "
                        "(1 MiB of each, alternating; default)")
    p.add_argument("--seed", type=int, default=1, help="PRNG seed of the input (default 1)")
    p.add_argument("--tmpdir", default=None, help="where to make the temp dir (default: the system temp dir)")
    p.add_argument("--cas", default=None, help="cas command (default: `cas` beside this Python, else on PATH)")
    p.add_argument("--chunk-avg", default=None, help="pass --chunk-avg to `cas init` (default: the store default)")
    p.add_argument("--compression", default="zstd:3", help="pass --compression to `cas init` (default zstd:3)")
    p.add_argument("--no-inprocess", action="store_true", help="skip the in-process chunk+hash figures")
    p.add_argument("--no-check", action="store_true", help="skip checking that cas get returns the input")
    args = p.parse_args(argv)
    import_cas()

    try:
        cas = find_cas(args.cas)
        cas_version = _version(cas)
    except BenchError as exc:
        print(f"bench_ingest: {exc}", file=sys.stderr)
        return 2
    init_args = ["--compression", args.compression]
    if args.chunk_avg:
        init_args += ["--chunk-avg", args.chunk_avg]

    load_before = load()
    work = Path(tempfile.mkdtemp(prefix="cas-bench-ingest-", dir=args.tmpdir))
    try:
        fs = run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(work)]).stdout.decode().strip() or "?"
        src = work / "input.bin"
        print(f"generating {fmt_mib(args.size)} of {args.content} data in {work} ...", file=sys.stderr)
        make_input(src, args.size, args.content, args.seed)
        run(["cat", str(src)], stdout=subprocess.DEVNULL)  # warm the page cache for every reader

        rounds = []
        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs}: cas put/get and cp/cat ...", file=sys.stderr)
            rounds.append(cli_round(cas, src, work, init_args, check=(i == 0 and not args.no_check), turn=i))

        inproc = []
        if not args.no_inprocess:
            buf = src.read_bytes()
            chunk_avg = parse_size(args.chunk_avg) if args.chunk_avg else None
            for i in range(args.runs):
                print(f"run {i + 1}/{args.runs}: in-process chunk+hash ...", file=sys.stderr)
                inproc.append(inprocess_round(buf, args.compression, chunk_avg, i))
            del buf
        else:
            inproc = [{"times": {"blake3": 1.0}, "chunks": 0}]
        return report(args, args.size, rounds, inproc, load_before, load(), fs, cas_version)
    except BenchError as exc:
        print(f"bench_ingest: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _version(cas: list[str]) -> str:
    """`cas --version` when the CLI has it, else the command itself."""
    try:
        r = subprocess.run(cas + ["--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise BenchError(f"cannot run {shlex.join(cas)}: {exc}") from exc
    text = (r.stdout or r.stderr).decode(errors="replace").strip()
    return f"{shlex.join(cas)} ({text})" if r.returncode == 0 and text else shlex.join(cas)


if __name__ == "__main__":
    sys.exit(main())
