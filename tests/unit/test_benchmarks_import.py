"""The benchmark scripts stay runnable: everything they (and ``benchmarks/common.py``, which they
share) import from cas and the test fixtures exists (they import some of it lazily, inside
functions, so a plain import would not notice), and each one answers ``--help``."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

HERE = Path(__file__).resolve().parents[2] / "benchmarks"
BENCHMARKS = sorted(HERE.glob("bench_*.py"))


def test_the_benchmarks_are_all_there():
    names = {p.name for p in BENCHMARKS}
    assert {"bench_s3.py", "bench_smallfiles.py", "bench_gc.py", "bench_dedup.py"} <= names, names


@pytest.mark.parametrize("script", [*BENCHMARKS, HERE / "common.py"], ids=lambda p: p.name)
def test_every_name_a_benchmark_imports_exists(script):
    missing = []
    for node in ast.walk(ast.parse(script.read_text(), str(script))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("cas", "tests"):
            module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
    assert missing == []


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_answers_help(script):
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                          check=False, cwd=script.parent.parent)
    assert proc.returncode == 0 and "usage" in proc.stdout.lower(), proc.stderr[-2000:]
