#!/usr/bin/env python3
"""GC and verify at scale, next to restic prune / restic check on the same files, in one run.

Like with like: the input is N small files of unique random bytes, sizes spread from 512 B to
1.5 KiB (mean 1 KiB), 1,000 to a folder. Every file is smaller than both tools' minimum chunk
(cas's default chunker: 16 KiB minimum of a 64 KiB average; restic's fixed chunker: 512 KiB
minimum), so each file is exactly **one** cas block and **one** restic data blob of the same
bytes: N blocks on each side, of the same sizes. (restic's chunker has no size setting, and
blocks of restic's own ~1 MiB average would need 200 GiB of input for 200k blocks; so both work
on blocks of ~1 KiB. The old version of this script compared 1 KiB cas blocks with restic blobs
200 times larger, i.e. 200 times fewer of them.)

Set-up (untimed), through the public surfaces: ``cas init`` + ``cas put DIR`` (one process);
``restic init`` + ``restic backup``. Then 30% of the files go: on cas, deleted over S3 (``cas
serve``, DeleteObjects); on restic, removed from the folder, backed up again, the first snapshot
forgotten. Both sides now hold 30% garbage.

Timed, as separate processes with their peak RSS (VmHWM sampled every 10 ms), in pairs:

  cas gc (dry run)       vs  restic prune --dry-run
  cas verify             vs  restic check
  cas verify --deep      vs  restic check --read-data
  cas gc --delete        vs  restic prune

Every run works on fresh copies (``cp -a``, untimed) of the prepared store and repository (gc
--delete and prune change them); before each timed command dirty pages are flushed (``sync``,
untimed); in each pair cas and restic take turns going first, run by run. Figures are the median
(min–max) of ``--runs`` runs (default 3); the speed ratio is restic's median time / cas's (> 1:
cas is faster). Memory per block: cas's peak RSS / blocks (the interpreter's ~35 MiB included, so
it means something only at 100k blocks and up), and gc's own mark-set bytes per marked id.

    python benchmarks/bench_gc.py                       # 100k and 200k blocks
    python benchmarks/bench_gc.py --sizes 20000         # quick

Needs Debian's restic (apt-get install -y restic): without it the script fails (exit 2) before
doing any work. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (
    BenchError,
    Samples,
    find_cas,
    import_cas,
    runs_arg,
    runs_label,
    sync_inputs,
    text_table,
    turns,
)

MIN_FILE, MAX_FILE = 512, 1536  # bytes: below both tools' minimum chunk size, mean 1 KiB
PER_FOLDER = 1000
GARBAGE = 0.30
BUCKET = "bench"
PAIRS = [("gc (dry run)", "prune (dry run)"), ("verify", "check"), ("verify --deep", "check --read-data"),
         ("gc --delete", "prune")]


def _peak_rss(pid: int) -> int:
    """VmHWM (peak RSS since exec) of a running process, in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _measure(cmd: list[str], env: dict | None = None) -> tuple[float, int, bytes]:
    """(seconds, peak RSS in bytes, stdout) of one child process, after ``sync`` (untimed).

    Peak RSS is VmHWM sampled every 10 ms (ru_maxrss of a forked child would
    include the parent's resident pages from before the exec).
    """
    sync_inputs()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.wait(0.01):
            peak[0] = max(peak[0], _peak_rss(p.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = p.communicate()
    dt = time.perf_counter() - t0
    done.set()
    sampler.join()
    if p.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed ({p.returncode}): {err.decode(errors='replace')[-2000:]}")
    return dt, peak[0], out


def _run(cmd: list[str], env: dict | None = None) -> bytes:
    p = subprocess.run(cmd, env=env, capture_output=True)
    if p.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed ({p.returncode}): {p.stderr.decode(errors='replace')[-2000:]}")
    return p.stdout


# -- set-up


def _write_files(files: Path, blocks: int) -> tuple[list[str], int]:
    """``blocks`` files of MIN_FILE..MAX_FILE unique random bytes; returns (relative paths, bytes)."""
    import blake3

    names, total = [], 0
    span = MAX_FILE - MIN_FILE + 1
    for i in range(blocks):
        head = blake3.blake3(i.to_bytes(8, "big")).digest(length=8)
        size = MIN_FILE + int.from_bytes(head, "big") % span
        rel = f"d{i // PER_FOLDER:04d}/f{i:07d}"
        path = files / rel
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(blake3.blake3(b"gc" + i.to_bytes(8, "big")).digest(length=size))
        names.append(rel)
        total += size
    return names, total


def _cas_env() -> dict:
    from tests.fixtures.serve import ROOT_PASSWORD, ROOT_USER

    return dict(os.environ, CAS_ROOT_USER=ROOT_USER, CAS_ROOT_PASSWORD=ROOT_PASSWORD)


def _build_cas(cas: list[str], data: Path, files: Path, gone: list[str]) -> dict:
    """cas init + cas put of the tree, then the garbage deleted over S3; returns `cas stats --json`."""
    from tests.fixtures.s3api import S3Serve

    env = _cas_env()
    _run(cas + ["init", "--data", str(data)], env)
    _run(cas + ["mb", "--data", str(data), BUCKET], env)
    _run(cas + ["put", "--data", str(data), str(files), BUCKET], env)
    built = json.loads(_run(cas + ["stats", "--data", str(data), "--json"], env))
    server = S3Serve(data).start()
    try:
        client = server.client()
        for lo in range(0, len(gone), 1000):
            batch = [{"Key": k} for k in gone[lo:lo + 1000]]
            answer = client.delete_objects(Bucket=BUCKET, Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                raise BenchError(f"cas DeleteObjects failed: {answer['Errors'][:3]}")
    finally:
        server.stop()
    return built


def _restic_env(base: Path) -> dict:
    return dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(base / "repo"),
                RESTIC_CACHE_DIR=str(base / "cache"))


def build(root: Path, blocks: int, cas: list[str]) -> dict:
    """Write the files, the cas store and the restic repository, each with GARBAGE deleted."""
    files = root / "files"
    files.mkdir()
    t0 = time.perf_counter()
    names, logical = _write_files(files, blocks)
    gone = [n for i, n in enumerate(names) if i % 10 < GARBAGE * 10]
    sync_inputs()
    built = _build_cas(cas, root / "cas", files, gone)
    if built["unique_blocks"] != blocks:
        raise BenchError(f"cas stored {built['unique_blocks']} blocks for {blocks} files: not one block per file")
    env = _restic_env(root / "restic")
    _run(["restic", "init", "-q"], env)
    subprocess_cwd(["restic", "backup", "-q", "--host", "b", "."], env, files)
    for rel in gone:
        (files / rel).unlink()
    subprocess_cwd(["restic", "backup", "-q", "--host", "b", "."], env, files)
    snaps = json.loads(_run(["restic", "snapshots", "--json"], env))
    first = sorted(snaps, key=lambda s: s["time"])[0]["id"]
    _run(["restic", "forget", "-q", first], env)
    kinds = [line.split()[0] for line in _run(["restic", "list", "blobs"], env).decode().splitlines() if line]
    data_blobs = kinds.count("data")
    if data_blobs != blocks:
        raise BenchError(f"restic stored {data_blobs} data blobs for {blocks} files: not one blob per file")
    shutil.rmtree(files)
    print(f"  built {blocks:,} files of {MIN_FILE}-{MAX_FILE} B ({logical / 2**20:,.1f} MiB): cas "
          f"{built['unique_blocks']:,} blocks, restic {data_blobs:,} data blobs (+{kinds.count('tree'):,} tree); "
          f"{len(gone):,} files deleted on both sides ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"logical": logical, "gone": len(gone), "cas_stats": built, "restic_data_blobs": data_blobs}


def subprocess_cwd(cmd: list[str], env: dict, cwd: Path) -> None:
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True)
    if p.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed ({p.returncode}): {p.stderr.decode(errors='replace')[-2000:]}")


# -- the timed pairs


def _copy(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)


def one_run(root: Path, cas: list[str], run: int) -> dict:
    """Fresh copies of both; each pair timed with cas and restic in the order ``turns`` gives."""
    work = root / f"run{run}"
    work.mkdir()
    try:
        _copy(root / "cas", work / "cas")
        _copy(root / "restic", work / "restic")
        data, env = str(work / "cas"), _restic_env(work / "restic")
        commands = {
            "gc (dry run)": cas + ["gc", "--data", data, "--min-age", "0", "--json"],
            "verify": cas + ["verify", "--data", data, "--json"],
            "verify --deep": cas + ["verify", "--deep", "--data", data, "--json"],
            "gc --delete": cas + ["gc", "--delete", "--data", data, "--min-age", "0", "--json"],
            "prune (dry run)": ["restic", "prune", "--dry-run", "-q"],
            "check": ["restic", "check", "-q"],
            "check --read-data": ["restic", "check", "--read-data", "-q"],
            "prune": ["restic", "prune", "-q"],
        }
        out: dict = {"order": turns(["cas", "restic"], run)}
        for ours, theirs in PAIRS:
            for side in out["order"]:
                name = ours if side == "cas" else theirs
                secs, rss, stdout = _measure(commands[name], None if side == "cas" else env)
                out[name] = (secs, rss)
                if side == "cas" and name.startswith("gc"):
                    out[f"{name} report"] = json.loads(stdout)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_size(blocks: int, runs: int, cas: list[str], keep: bool, tmpdir: str | None) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"bench-gc-{blocks}-", dir=tmpdir))
    try:
        print(f"\n== {blocks:,} blocks, {int(GARBAGE * 100)}% garbage ==", flush=True)
        info = build(root, blocks, cas)
        results = []
        for r in range(runs):
            print(f"  run {r + 1}/{runs} ...", file=sys.stderr, flush=True)
            results.append(one_run(root, cas, r))
        return report(blocks, info, results)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"  kept {root}")


def report(blocks: int, info: dict, results: list[dict]) -> dict:
    dry, real = results[-1]["gc (dry run) report"], results[-1]["gc --delete report"]
    marked = max(1, real["marked_blocks"] + real["marked_manifests"])
    print(f"  cas gc (last run): {dry['blocks_seen']:,} blocks seen, {dry['marked_blocks']:,} in use, "
          f"{real['deleted']:,} deleted ({real['deleted_bytes'] / 2**20:,.1f} MiB); mark sets "
          f"{real['mark_memory']:,} bytes = {real['mark_memory'] / marked:.1f} B per marked id")
    print(f"  {runs_label(len(results))}; cas and restic take turns going first; speed ratio = restic s / cas s "
          "(> 1: cas faster)")
    rows, table = [], []
    for ours, theirs in PAIRS:
        ct = Samples(r[ours][0] for r in results)
        cr = Samples(r[ours][1] / 2**20 for r in results)
        rt = Samples(r[theirs][0] for r in results)
        rr = Samples(r[theirs][1] / 2**20 for r in results)
        per_block = cr.median * 2**20 / blocks
        table.append([ours, ct.cell(".2f"), cr.cell(".0f"), f"{per_block:.0f}", theirs, rt.cell(".2f"),
                      rr.cell(".0f"), f"{rt.median / ct.median:.2f}"])
        rows.append({"cas": ours, "cas_s": ct.to_dict(), "cas_rss_mib": cr.to_dict(), "cas_rss_bytes_per_block":
                     per_block, "restic": theirs, "restic_s": rt.to_dict(), "restic_rss_mib": rr.to_dict(),
                     "speed_ratio": rt.median / ct.median})
    print("\n".join("  " + line for line in text_table(
        ["cas", "s", "RSS MiB", "RSS B/block", "restic", "s", "RSS MiB", "speed cas/restic"], table).splitlines()))
    return {"blocks": blocks, **info, "rows": rows, "gc": real, "runs": results}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,200000", help="comma-separated block counts (default 100000,200000)")
    ap.add_argument("--runs", type=runs_arg, default=3, help="runs per size; figures are medians (default 3)")
    ap.add_argument("--cas", default=None, help="cas command (default: `cas` beside this Python, else on PATH)")
    ap.add_argument("--tmpdir", default=None, help="where to make the temp dirs (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary stores")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    import_cas()
    if shutil.which("restic") is None:
        print("bench_gc: restic not found; this benchmark compares against restic and does not run without it "
              "(apt-get install -y restic)", file=sys.stderr)
        return 2
    try:
        cas = find_cas(args.cas)
        print(f"restic: {_run(['restic', 'version']).decode().strip()}")
        results = [run_size(int(n), args.runs, cas, args.keep, args.tmpdir) for n in args.sizes.split(",")]
    except BenchError as exc:
        print(f"bench_gc: {exc}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
