"""What the benchmark scripts share: finding the `cas` command and importing cas from a checkout."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    pass


def import_cas() -> None:
    """Make ``import cas`` work from a checkout even when the package is not installed."""
    try:
        import cas  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))


def find_cas(explicit: str | None) -> list[str]:
    """The cas command: ``explicit`` (split like a shell), else the one beside this Python, else PATH."""
    if explicit:
        return shlex.split(explicit)
    beside = Path(sys.executable).with_name("cas")  # the venv this script runs in
    if beside.exists():
        return [str(beside)]
    found = shutil.which("cas")
    if found:
        return [found]
    raise BenchError("the `cas` command was not found: `pip install -e .` in the venv, or pass --cas")
