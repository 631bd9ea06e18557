"""Running a fuzz target under atheris (libFuzzer), and the corpora every target shares.

A target module defines ``SEEDS`` (a few small inputs) and ``one_input(data: bytes)``, which
returns when the parser accepted or refused the input the documented way and raises
anything else. ``one_input`` never needs atheris: the regression test
(``test_fuzz_regressions.py``) runs it over the seeds and over ``regressions/<target>/``
without it. Only :func:`main` imports atheris, when a target runs as a script::

    python tests/fuzz/fuzz_range.py -max_total_time=30 [libFuzzer flags] [corpus dir ...]

Without a corpus directory the seeds are written to a temporary one (new inputs go there
and vanish with it). Hangs and memory are bounded by libFuzzer: ``-timeout`` (seconds per
input) and ``-rss_limit_mb`` get defaults here unless given.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
REGRESSIONS = FUZZ_DIR / "regressions"
DEFAULT_FLAGS = ("-timeout=10", "-rss_limit_mb=1024")
#: code whose branches guide the fuzzer: ours and the parsers it relies on
#: (instrumenting everything loaded, atheris.instrument_all, takes minutes on a busy machine)
INSTRUMENTED = ("__main__", "cas", "tests.fuzz", "defusedxml", "xml", "wsgidav", "email", "urllib", "calendar")


def regression_inputs(target: str) -> list[Path]:
    """The crashing inputs found for ``target`` so far (each a file, replayed by the unit test)."""
    folder = REGRESSIONS / target
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def main(one_input: Callable[[bytes], None], seeds: Sequence[bytes], target: str) -> None:
    import atheris

    args = list(sys.argv)
    for flag in DEFAULT_FLAGS:
        if not any(a.startswith(flag.split("=")[0] + "=") for a in args[1:]):
            args.append(flag)
    with tempfile.TemporaryDirectory(prefix=f"cas-fuzz-{target}-") as tmp:
        if not any(not a.startswith("-") for a in args[1:]):
            for i, seed in enumerate([*seeds, *(p.read_bytes() for p in regression_inputs(target))]):
                (Path(tmp) / f"seed-{i}").write_bytes(seed)
            args.append(tmp)
        _instrument(atheris)
        atheris.Setup(args, one_input)
        atheris.Fuzz()


def _instrument(atheris) -> None:
    import gc
    import types

    for obj in gc.get_objects():
        module = obj.__module__ if isinstance(obj, types.FunctionType) else None
        if module and (module in INSTRUMENTED or module.split(".")[0] in INSTRUMENTED):
            atheris.instrument_func(obj)
