"""Run every fuzz target under atheris for a bounded time (slow; CI's slow step).

Each target runs as its own process for ``CAS_TEST_FUZZ_SECONDS`` (default 30) seconds,
starting from its seeds and regressions. A crash, a hang (libFuzzer's ``-timeout``) or
running out of the memory limit fails the test with the crashing input shown; add it,
minimised, to ``regressions/<target>/`` and fix the parser.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need
from tests.fuzz.harness import FUZZ_DIR
from tests.fuzz.test_fuzz_regressions import TARGETS

pytestmark = pytest.mark.slow

SECONDS = int(os.environ.get("CAS_TEST_FUZZ_SECONDS", "30"))
#: CI replays the same input sequence each run (a failure reproduces); exploring new inputs is done by
#: running a target directly, or with CAS_TEST_FUZZ_SEED=0 (libFuzzer then picks a random seed)
SEED = int(os.environ.get("CAS_TEST_FUZZ_SEED", "1"))


#: what a target may allocate beyond what it starts with (libFuzzer's default limit)
RSS_BUDGET_MB = 1024


def _rss_limit_mb() -> int:
    """libFuzzer's ``-rss_limit_mb`` for a target started from this process.

    On Linux a child's peak RSS starts at its parent's RSS when it forks (the pages it maps until
    ``exec``) and ``exec`` keeps it: after tests that made pytest big, a target would be "out of
    memory" before its first input. The budget is therefore counted above this process's peak."""
    import resource

    return RSS_BUDGET_MB + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.timeout(SECONDS + 300)
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_finds_no_crash(target, tmp_path):
    need(_has_atheris(), "atheris (pip install -e '.[fuzz]')")
    root = FUZZ_DIR.parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, str(FUZZ_DIR / f"fuzz_{target}.py"), f"-max_total_time={SECONDS}",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1", f"-seed={SEED}",
         f"-rss_limit_mb={_rss_limit_mb()}"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=SECONDS + 240,
    )
    output = proc.stdout.decode("utf-8", "replace")
    crashes = sorted(p for p in Path(tmp_path).iterdir() if p.is_file())
    if proc.returncode != 0 or crashes:
        shown = "\n".join(f"{p.name}: {p.read_bytes()[:4000]!r}" for p in crashes)
        pytest.fail(f"fuzz_{target} failed (exit {proc.returncode}); crashing inputs:\n{shown}\n\n{output[-6000:]}")
    assert "Done " in output, output[-3000:]
