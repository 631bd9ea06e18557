#!/usr/bin/env python3
"""Dedup and compression of cas next to restic and borg, on the shared benchmark datasets, in one run.

Builds (or reuses) the datasets of ``../shared/datasets/make_datasets.sh`` (pinned PyPI content:
10 Django releases as tar files, the same tars normalized, and two snapshots of a tree of unpacked
wheels), then ingests each dataset into a fresh repository of every tool:

  cas     default settings (``cas init``: 64 KiB FastCDC, zstd:3); one object per file, key = the
          file's path relative to the dataset folder (tree: ``snap1/...`` then ``snap2/...``)
  restic  ``restic init --repository-version 2``; ``restic backup --compression auto``
  borg    ``borg init -e none``; ``borg create -C zstd,3`` (default chunker)

and prints logical bytes, stored bytes, the ratio logical / stored, the snap2 increment of the
tree, and ingest MiB/s (logical bytes / wall time of the whole ingest, processes included). Stored
bytes are compared like with like: ``du`` of the whole cas data dir (blocks, index and everything
else in it) beside ``du`` of each peer's repository, apparent size and on disk. cas's own
``stats`` stored_bytes (blocks only, no index) is printed below them as an extra, labelled row: it
is not the comparison. A row computed in-process with cas's own chunker (dedup only,
no store, no compression) shows what chunking alone can reach. The reference figures of
``datasets/README.md`` follow, labelled as such: they were not measured in this run.

Ingest through cas uses the CLI (``cas put`` per file) for datasets of few files; for the 10k-file
tree it uses the Store API in one child process (``--cas-ingest auto``), since a process per file
would measure Python start-up, not cas. Repositories live in a temp dir that is removed at the end.
Each dataset is read once before timing so that every tool starts from a warm page cache, and dirty
pages are flushed (untimed) before each ingest. Every figure is the median (min–max) of ``--runs``
runs (default 3); the order of the tools rotates run by run (run 1: cas, restic, borg; run 2:
restic, borg, cas; ...). Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import BenchError, Samples, find_cas, import_cas, runs_arg, runs_label, sync_inputs, turns

MiB = 1 << 20
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MAKE = REPO_ROOT.parent / "shared" / "datasets" / "make_datasets.sh"
BUCKET = "bench"
ALL_DATASETS = ["versions", "versions-norm", "tree", "random"]
DEFAULT_DATASETS = ["versions", "versions-norm", "tree"]
ALL_TOOLS = ["cas", "restic", "borg"]
CLI_MAX_FILES = 200  # --cas-ingest auto: above this many files per step, use the Store API




# ---------------------------------------------------------------- helpers


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(argv, stdout=kw.pop("stdout", subprocess.PIPE), stderr=subprocess.PIPE, **kw)
    except OSError as exc:
        raise BenchError(f"cannot run `{shlex.join(argv)}`: {exc}") from exc
    if r.returncode != 0:
        raise BenchError(f"`{shlex.join(argv)}` exited {r.returncode}:\n{r.stderr.decode(errors='replace')[-3000:]}")
    return r


def du_bytes(path: Path, apparent: bool) -> int:
    argv = ["du", "-s", "--block-size=1"] + (["--apparent-size"] if apparent else []) + [str(path)]
    return int(run(argv).stdout.split()[0])


def load() -> str:
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "n/a"


def mib(n: float) -> str:
    return f"{n / MiB:,.1f} MiB"


def files_under(root: Path) -> list[Path]:
    """Regular files under root, sorted by path (symlinks are not followed)."""
    out = []
    for d, dirs, fs in os.walk(root):
        dirs.sort()
        for f in sorted(fs):
            p = Path(d) / f
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return out


def warm(paths: list[Path]) -> None:
    """Read every file once so that all tools start from the same (warm) page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(8 * MiB):
                pass


# ---------------------------------------------------------------- datasets


@dataclass
class Step:
    """One ingest: the folder ``base/rel``; cas keys are file paths relative to ``base``."""

    name: str
    base: Path
    rel: str
    files: list[Path] = field(default_factory=list)

    @property
    def logical(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def dataset_steps(data: Path, name: str) -> list[Step]:
    if name == "tree":
        steps = [Step("snap1", data / "tree", "snap1"), Step("snap2", data / "tree", "snap2")]
    else:
        steps = [Step(name, data, name)]
    for s in steps:
        s.files = files_under(s.base / s.rel)
        if not s.files:
            raise BenchError(f"dataset {name}: no files under {s.base / s.rel}")
    return steps


def build_datasets(script: Path, lab: Path) -> None:
    if not script.is_file():
        raise BenchError(f"{script} not found (pass --make-datasets PATH)")
    env = dict(os.environ, LAB=str(lab), PY=sys.executable)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # the venv's pip
    print(f"building datasets with {script} (LAB={lab}); cached downloads are reused ...", file=sys.stderr)
    r = subprocess.run(["bash", str(script)], env=env, stdout=sys.stderr, stderr=sys.stderr)
    if r.returncode != 0:
        raise BenchError(f"{script} exited {r.returncode}")


# ---------------------------------------------------------------- tools


class Tool:
    name = ""
    label = ""

    def __init__(self, work: Path):
        self.work = work

    def version(self) -> str:
        raise NotImplementedError

    def create(self, repo: Path) -> None:
        raise NotImplementedError

    def ingest(self, repo: Path, step: Step) -> tuple[float, str]:
        """Ingest one step; returns (seconds, how)."""
        raise NotImplementedError

    def measure(self, repo: Path) -> dict:
        return {"du_apparent": du_bytes(repo, True), "du_disk": du_bytes(repo, False)}


class CasTool(Tool):
    name = "cas"

    def __init__(self, work: Path, cmd: list[str], mode: str):
        super().__init__(work)
        self.cmd = cmd
        self.mode = mode
        self.label = "cas (defaults)"

    def version(self) -> str:
        r = subprocess.run(self.cmd + ["--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        text = (r.stdout or r.stderr).decode(errors="replace").strip()
        return text if r.returncode == 0 and text else shlex.join(self.cmd)

    def create(self, repo: Path) -> None:
        run(self.cmd + ["init", "--data", str(repo)])
        run(self.cmd + ["mb", "--data", str(repo), BUCKET])

    def ingest(self, repo: Path, step: Step) -> tuple[float, str]:
        how = self.mode
        if how == "auto":
            how = "cli" if len(step.files) <= CLI_MAX_FILES else "api"
        pairs = [(str(p.relative_to(step.base)), str(p)) for p in step.files]
        if how == "cli":
            sync_inputs()
            t0 = time.perf_counter()
            for key, path in pairs:
                run(self.cmd + ["put", "--data", str(repo), path, f"{BUCKET}/{key}"])
            return time.perf_counter() - t0, f"cli: {len(pairs)} x cas put"
        listing = self.work / "keys.tsv"
        listing.write_text("".join(f"{k}\t{p}\n" for k, p in pairs))
        argv = [sys.executable, str(Path(__file__).resolve()), "--api-ingest", str(repo), BUCKET, str(listing)]
        sync_inputs()
        t0 = time.perf_counter()
        run(argv)
        dt = time.perf_counter() - t0
        listing.unlink()
        return dt, f"api: Store.put x {len(pairs)}, one process"

    def measure(self, repo: Path) -> dict:
        m = super().measure(repo)
        m["stats"] = json.loads(run(self.cmd + ["stats", "--data", str(repo), "--json"]).stdout)
        # where du's figure goes beyond stored_bytes: the index, and the fan-out directories' own size
        index = repo / "index"
        m["index_apparent"] = sum(f.stat().st_size for f in index.iterdir() if f.is_file()) if index.exists() else 0
        dirs = [Path(d) for d, _ds, _fs in os.walk(repo)]
        m["dirs"] = len(dirs)
        m["dir_bytes"] = sum(d.stat().st_size for d in dirs)
        return m


class ResticTool(Tool):
    name = "restic"

    def __init__(self, work: Path):
        super().__init__(work)
        self.label = "restic (--compression auto)"

    def env(self, repo: Path) -> dict:
        return dict(os.environ, RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD="bench",
                    RESTIC_CACHE_DIR=str(self.work / "restic-cache"))

    def version(self) -> str:
        return run(["restic", "version"]).stdout.decode().split(" compiled")[0].strip()

    def create(self, repo: Path) -> None:
        shutil.rmtree(self.work / "restic-cache", ignore_errors=True)
        run(["restic", "init", "--repository-version", "2", "-q"], env=self.env(repo))

    def ingest(self, repo: Path, step: Step) -> tuple[float, str]:
        argv = ["restic", "backup", "--compression", "auto", "--host", "bench", "-q", step.rel]
        sync_inputs()
        t0 = time.perf_counter()
        run(argv, cwd=step.base, env=self.env(repo))
        return time.perf_counter() - t0, "restic backup"


class BorgTool(Tool):
    name = "borg"

    def __init__(self, work: Path):
        super().__init__(work)
        self.label = "borg (-C zstd,3, -e none)"

    def env(self, repo: Path) -> dict:
        return dict(os.environ, BORG_REPO=str(repo), BORG_BASE_DIR=str(self.work / "borg-base"),
                    BORG_PASSPHRASE="", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                    BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")

    def version(self) -> str:
        return run(["borg", "--version"]).stdout.decode().strip()

    def create(self, repo: Path) -> None:
        shutil.rmtree(self.work / "borg-base", ignore_errors=True)
        run(["borg", "init", "-e", "none", str(repo)], env=self.env(repo))

    def ingest(self, repo: Path, step: Step) -> tuple[float, str]:
        argv = ["borg", "create", "-C", "zstd,3", f"::{step.name}", step.rel]
        sync_inputs()
        t0 = time.perf_counter()
        run(argv, cwd=step.base, env=self.env(repo))
        return time.perf_counter() - t0, "borg create"


def ideal(steps: list[Step]) -> list[int]:
    """Unique bytes after each step with cas's chunker (default params), dedup only, no store."""
    import_cas()
    from cas.chunker import Chunker
    from cas.ids import block_id

    chunker = Chunker()
    seen: set[bytes] = set()
    unique = 0
    out = []
    for s in steps:
        for p in s.files:
            data = p.read_bytes()
            for chunk in chunker.chunk_buffer(data):
                bid = block_id(chunk)
                if bid not in seen:
                    seen.add(bid)
                    unique += len(chunk)
        out.append(unique)
    return out


# ---------------------------------------------------------------- worker: ingest through the Store API


def api_ingest(data_dir: str, bucket: str, listing: str) -> int:
    """Child process: put every (key, path) of ``listing`` through one open Store."""
    import_cas()
    from cas.config import load_settings

    try:
        from cas import Store
    except ImportError:
        from cas.store import Store

    store = Store.open_store(load_settings(data_dir))
    try:
        with open(listing, encoding="utf-8") as lines:
            for line in lines:
                key, path = line.rstrip("\n").split("\t", 1)
                with open(path, "rb") as f:
                    store.put(bucket, key, f)
    finally:
        store.close()
    return 0


# ---------------------------------------------------------------- report


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join((c.ljust(w) if i == 0 else c.rjust(w)) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def reference_table(readme: Path) -> str:
    """The anchors' table of datasets/README.md, verbatim."""
    try:
        text = readme.read_text()
    except OSError as exc:
        return f"(cannot read {readme}: {exc})"
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("## What the anchors store"):
            inside = True
            continue
        if inside and line.startswith("## "):
            break
        if inside and line.startswith("|"):
            out.append(line)
    return "\n".join(out) if out else f"(no reference table found in {readme})"


def cell(stored: float | None, logical: float) -> str:
    if stored is None:
        return "-"
    return f"{mib(stored)} {logical / stored:5.2f}x" if stored else mib(stored)


def report(args, datasets, results, ideal_rows, versions, how, load_before, load_after, readme) -> None:
    """results[dataset][tool] = list (runs) of list (steps) of {seconds, logical, measure}."""
    cols = []  # (header, dataset, step index or "sum"/"inc")
    for ds, steps in datasets.items():
        if ds == "tree":
            cols += [("tree snap1", ds, 0), ("tree snap1+snap2", ds, 1), ("snap2 increment", ds, "inc")]
        else:
            cols.append((ds, ds, 0))

    logical = {ds: [sum(s.logical for s in steps[: i + 1]) for i in range(len(steps))] for ds, steps in datasets.items()}
    spread: dict[str, float] = {}  # tool -> largest (max - min) / median of stored bytes between runs

    def med_stored(ds, tool, i, getter):
        vals = [getter(r[i]["measure"]) for r in results[ds][tool]]
        mid = statistics.median(vals)
        if mid:
            spread[tool] = max(spread.get(tool, 0.0), (max(vals) - min(vals)) / mid)
        return mid

    def row(label, tool, getter):
        cells = [label]
        for _h, ds, i in cols:
            if tool not in results.get(ds, {}):
                cells.append("-")
            elif i == "inc":
                inc = med_stored(ds, tool, 1, getter) - med_stored(ds, tool, 0, getter)
                cells.append(f"+{inc / MiB:,.2f} MiB")
            else:
                cells.append(cell(med_stored(ds, tool, i, getter), logical[ds][i]))
        return cells

    rows = [["logical (file bytes)"] + [
        (f"+{(logical[ds][1] - logical[ds][0]) / MiB:,.2f} MiB" if i == "inc" else mib(logical[ds][i]))
        for _h, ds, i in cols]]
    tools = [t for t in args.tools]
    where = {"cas": "whole data dir", "restic": "repo", "borg": "repo"}
    for t in tools:  # the comparison: du of everything each tool keeps
        rows.append(row(f"{t}: du -sb {where[t]}", t, lambda m: m["du_apparent"]))
    for t in tools:
        rows.append(row(f"{t}: du {where[t]}, on disk", t, lambda m: m["du_disk"]))
    if "cas" in tools:
        rows.append(row("(extra) cas stats stored_bytes, no index", "cas", lambda m: m["stats"]["stored_bytes"]))
    if ideal_rows:
        cells = ["cas chunker, dedup only (computed)"]
        for _h, ds, i in cols:
            u = ideal_rows[ds]
            cells.append(f"+{(u[1] - u[0]) / MiB:,.2f} MiB" if i == "inc" else cell(u[i], logical[ds][i]))
        rows.append(cells)

    runs = len(next(iter(next(iter(results.values())).values())))
    print()
    print(f"cas dedup benchmark -- datasets in {args.lab}/data, {runs_label(runs)}; tool order rotated each run")
    for t in tools:
        print(f"  {t}: {versions[t]}")
    print(f"machine: {os.cpu_count()} cores; load average (1/5/15 min) before {load_before}, after {load_after}")
    print()
    print("STORED after ingest (lower is better); cell = stored bytes (median of the runs) and ratio logical/stored;")
    print("compare the du rows: everything each tool keeps on disk "
          "(for cas: blocks + index + the rest of its data dir)")
    print(table(["measure"] + [h for h, _d, _i in cols], rows))
    if runs > 1:
        print("stored bytes, largest spread between runs (max-min)/median: "
              + ", ".join(f"{t} {v:.3%}" for t, v in spread.items()))

    # ingest speed
    scols = []
    for ds, steps in datasets.items():
        for i, s in enumerate(steps):
            scols.append((f"tree {s.name}" if ds == "tree" else ds, ds, i))
    srows = []
    for t in tools:
        cells = [t]
        for _h, ds, i in scols:
            secs = statistics.median(r[i]["seconds"] for r in results[ds][t])
            speed = Samples(datasets[ds][i].logical / MiB / r[i]["seconds"] for r in results[ds][t])
            cells.append(f"{speed.cell(',.0f')} [{secs:.1f} s]")
        srows.append(cells)
    print()
    print("INGEST MiB/s = logical bytes / wall time of the whole ingest (processes included): "
          "median (min–max) [median seconds]")
    print(table(["tool"] + [h for h, _d, _i in scols], srows))
    if "cas" in tools:
        print("cas ingest: " + "; ".join((f"tree {s}" if ds == "tree" else ds) + f": {h}" for (ds, s), h in how.items()))

    if "cas" in tools:
        print()
        print("cas stats --json after each dataset (last run; dedup and compression are cas's own ratios):")
        for ds in datasets:
            st = results[ds]["cas"][-1][-1]["measure"]["stats"]
            m = results[ds]["cas"][-1][-1]["measure"]
            st = m["stats"]
            ok = "" if st["logical_bytes"] == logical[ds][-1] else f"  (files: {logical[ds][-1]:,} bytes!)"
            print(f"  {ds:14} objects {st['objects']:>6,}  logical {st['logical_bytes']:>13,}{ok}  unique_blocks "
                  f"{st['unique_blocks']:>7,}  stored {st['stored_bytes']:>12,}  dedup {st['dedup_ratio']:.3f}  "
                  f"compression {st['compression_ratio']:.3f}")
            print(f"  {'':14} data dir: du -sb {m['du_apparent']:,} = stored_bytes + index {m['index_apparent']:,} "
                  f"+ {m['dirs']:,} directories' own size {m['dir_bytes']:,} + other files "
                  f"{m['du_apparent'] - st['stored_bytes'] - m['index_apparent'] - m['dir_bytes']:,}")

    print()
    print("REFERENCE ONLY -- figures copied from datasets/README.md, NOT measured in this run:")
    print(reference_table(readme))


# ---------------------------------------------------------------- main




def csv_list(allowed: list[str]):
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
        return items

    return parse


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--api-ingest"]:  # internal: the child process of --cas-ingest api
        return api_ingest(*argv[1:4])
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: python benchmarks/bench_dedup.py --datasets versions-norm --tools cas,restic\n"
               "Needs the Debian packages restic and borgbackup (apt-get install -y restic borgbackup).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--lab", default="./bench-data",
                   help="dataset folder (LAB of make_datasets.sh; default ./bench-data, git-ignored)")
    p.add_argument("--make-datasets", default=os.environ.get("CAS_MAKE_DATASETS", str(DEFAULT_MAKE)),
                   help=f"path of make_datasets.sh (default {DEFAULT_MAKE})")
    p.add_argument("--no-build", action="store_true", help="use the datasets already in --lab, do not run the script")
    p.add_argument("--datasets", type=csv_list(ALL_DATASETS), default=DEFAULT_DATASETS,
                   help=f"comma-separated subset of {','.join(ALL_DATASETS)} (default {','.join(DEFAULT_DATASETS)})")
    p.add_argument("--tools", type=csv_list(ALL_TOOLS), default=ALL_TOOLS,
                   help=f"comma-separated subset of {','.join(ALL_TOOLS)} (default all)")
    p.add_argument("--runs", type=runs_arg, default=3, help="runs; medians (min–max) are reported (default 3)")
    p.add_argument("--cas", default=None, help="cas command (default: `cas` beside this Python, else on PATH)")
    p.add_argument("--cas-ingest", choices=["auto", "cli", "api"], default="auto",
                   help=f"cas put per file (cli), Store API in one process (api), or cli for steps of at most "
                        f"{CLI_MAX_FILES} files and api above (auto, default)")
    p.add_argument("--no-ideal", action="store_true", help="skip the computed chunker-only row")
    p.add_argument("--tmpdir", default=None, help="where to make the temp dir (default: the system temp dir)")
    args = p.parse_args(argv)
    import_cas()
    lab = Path(args.lab).resolve()
    args.lab = str(lab)

    load_before = load()
    work = Path(tempfile.mkdtemp(prefix="cas-bench-dedup-", dir=args.tmpdir))
    try:
        tools: dict[str, Tool] = {}
        for t in args.tools:
            if t == "cas":
                tools[t] = CasTool(work, find_cas(args.cas), args.cas_ingest)
            elif t == "restic":
                tools[t] = ResticTool(work)
            else:
                tools[t] = BorgTool(work)
        versions = {t: tool.version() for t, tool in tools.items()}
        if not args.no_build:
            build_datasets(Path(args.make_datasets), lab)
        data = lab / "data"
        datasets = {ds: dataset_steps(data, ds) for ds in args.datasets}

        results: dict[str, dict[str, list]] = {ds: {t: [] for t in tools} for ds in datasets}
        how: dict[tuple[str, str], str] = {}
        for r in range(args.runs):
            for ds, steps in datasets.items():
                warm([f for s in steps for f in s.files])
                for t in turns(list(tools), r):
                    tool = tools[t]
                    repo = work / f"{t}-{ds}"
                    tool.create(repo)
                    per_step = []
                    for s in steps:
                        print(f"run {r + 1}/{args.runs}: {t} <- {ds} {s.name} ({len(s.files)} files) ...",
                              file=sys.stderr)
                        secs, h = tool.ingest(repo, s)
                        if t == "cas":
                            how[(ds, s.name)] = h
                        per_step.append({"seconds": secs, "measure": tool.measure(repo)})
                    results[ds][t].append(per_step)
                    shutil.rmtree(repo)
        ideal_rows = {} if args.no_ideal else {ds: ideal(steps) for ds, steps in datasets.items()}
        readme = Path(args.make_datasets).with_name("README.md")
        report(args, datasets, results, ideal_rows, versions, how, load_before, load(), readme)
        return 0
    except BenchError as exc:
        print(f"bench_dedup: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
