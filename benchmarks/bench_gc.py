"""GC and verify at scale, next to restic prune / restic check on the same logical content.

Builds a store of N small blocks (synthetic: unique random files chunked at a
1 KiB average), deletes 30% of the files, then times `cas gc` (dry run and
--delete), `cas verify` and `cas verify --deep` as separate processes, with
their peak RSS (ru_maxrss of the child). The same files go into a restic
repository (backup, delete 30%, backup, forget the first snapshot), then
`restic prune`, `restic check` and `restic check --read-data` are timed the
same way. Run at two sizes to show how the figures scale.

    python benchmarks/bench_gc.py                       # 100k and 200k blocks
    python benchmarks/bench_gc.py --sizes 20000         # quick

Needs Debian's restic (apt-get install -y restic). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3

CHUNK_AVG = 1024
FILE_BLOCKS = 200  # blocks per file (about 200 KiB files)
GARBAGE = 0.30


def _random(n: int, seed: int) -> bytes:
    return blake3.blake3(seed.to_bytes(8, "big")).digest(length=n)


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
    """(seconds, peak RSS in bytes, stdout) of one child process.

    Peak RSS is VmHWM sampled every 10 ms (ru_maxrss of a forked child would
    include the parent's resident pages from before the exec).
    """
    import threading

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
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.decode()[-2000:]}")
    return dt, peak[0], out


def _cas(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cas", *args, "--data", str(data)]


def _build(root: Path, blocks: int) -> tuple[Path, Path, int, int]:
    """Write the files and the cas store; returns (files dir, data dir, files, logical bytes)."""
    from cas.config import load_settings
    from cas.store import Store

    files = root / "files"
    files.mkdir()
    n_files = max(1, round(blocks * 1.21 / FILE_BLOCKS))  # FastCDC cuts ~1.2 KiB chunks at a 1 KiB average
    size = FILE_BLOCKS * CHUNK_AVG
    data = root / "cas"
    settings = load_settings(data, {"gc": {"min_age": 0}}, chunk_avg=str(CHUNK_AVG), env={})
    t0 = time.perf_counter()
    with Store.open_store(settings) as store:
        store.create_bucket("bench")
        for i in range(n_files):
            body = _random(size, i)
            (files / f"f{i:06d}").write_bytes(body)
            store.put("bench", f"f{i:06d}", body)
        built = store.stats()
    print(f"  built {n_files} files, {built['unique_blocks']} blocks, {built['logical_bytes'] >> 20} MiB "
          f"in {time.perf_counter() - t0:.0f}s", flush=True)
    return files, data, n_files, n_files * size


def _delete_garbage(files: Path, data: Path, n_files: int) -> list[str]:
    from cas.config import load_settings
    from cas.store import Store

    gone = [f"f{i:06d}" for i in range(n_files) if i % 10 < GARBAGE * 10]
    with Store.open_store(load_settings(data, env={})) as store:
        for key in gone:
            store.delete("bench", key)
    return gone


def _restic(files: Path, repo: Path, gone: list[str]) -> dict[str, tuple[float, int]]:
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(repo), RESTIC_CACHE_DIR=str(repo) + ".cache")
    out = {}
    subprocess.run(["restic", "init", "-q"], env=env, check=True, capture_output=True)
    subprocess.run(["restic", "backup", "-q", "--host", "b", str(files)], env=env, check=True, capture_output=True)
    for name in gone:
        (files / name).unlink()
    subprocess.run(["restic", "backup", "-q", "--host", "b", str(files)], env=env, check=True, capture_output=True)
    snaps = json.loads(subprocess.run(["restic", "snapshots", "--json"], env=env, check=True,
                                      capture_output=True).stdout)
    first = sorted(snaps, key=lambda s: s["time"])[0]["id"]
    subprocess.run(["restic", "forget", "-q", first], env=env, check=True, capture_output=True)
    out["prune (dry run)"] = _measure(["restic", "prune", "--dry-run", "-q"], env)[:2]
    out["prune"] = _measure(["restic", "prune", "-q"], env)[:2]
    out["check"] = _measure(["restic", "check", "-q"], env)[:2]
    out["check --read-data"] = _measure(["restic", "check", "--read-data", "-q"], env)[:2]
    return out


def run_size(blocks: int, keep: bool) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"bench-gc-{blocks}-"))
    try:
        print(f"\n== {blocks} blocks, {int(GARBAGE * 100)}% garbage ==", flush=True)
        files, data, n_files, logical = _build(root, blocks)
        gone = _delete_garbage(files, data, n_files)
        cas = {}
        t, rss, out = _measure(_cas(data, "gc", "--min-age", "0", "--json"))
        dry = json.loads(out)
        cas["gc (dry run)"] = (t, rss)
        t, rss, out = _measure(_cas(data, "verify", "--json"))
        cas["verify"] = (t, rss)
        t, rss, out = _measure(_cas(data, "verify", "--deep", "--json"))
        cas["verify --deep"] = (t, rss)
        t, rss, out = _measure(_cas(data, "gc", "--delete", "--min-age", "0", "--json"))
        real = json.loads(out)
        cas["gc --delete"] = (t, rss)
        restic = _restic(files, root / "restic", gone) if shutil.which("restic") else {}
        pairs = [("gc (dry run)", "prune (dry run)"), ("gc --delete", "prune"), ("verify", "check"),
                 ("verify --deep", "check --read-data")]
        print(f"  blocks: {dry['blocks_seen']} seen, {dry['marked_blocks']} in use, {real['deleted']} deleted "
              f"({real['deleted_bytes'] >> 20} MiB); mark sets {real['mark_memory']} bytes = "
              f"{real['mark_memory'] / max(1, real['marked_blocks'] + real['marked_manifests']):.1f} B per marked id")
        print(f"  {'cas':<16} {'s':>7} {'RSS MiB':>8}   {'restic':<18} {'s':>7} {'RSS MiB':>8}   {'time ratio':>10}")
        rows = []
        for ours, theirs in pairs:
            ct, cr = cas[ours]
            rt, rr = restic.get(theirs, (float("nan"), 0))
            ratio = ct / rt if rt == rt and rt else float("nan")
            print(f"  {ours:<16} {ct:7.2f} {cr / 2**20:8.1f}   {theirs:<18} {rt:7.2f} {rr / 2**20:8.1f}   {ratio:10.2f}")
            rows.append({"cas": ours, "cas_s": ct, "cas_rss": cr, "restic": theirs, "restic_s": rt, "restic_rss": rr})
        return {"blocks": blocks, "files": n_files, "logical": logical, "rows": rows, "gc": real}
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,200000", help="comma-separated block counts")
    ap.add_argument("--keep", action="store_true", help="keep the temporary stores")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    results = [run_size(int(n), args.keep) for n in args.sizes.split(",")]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
