"""Every fuzz target's one-input function over its seeds and over every crash found so far.

This runs in the default suite without atheris: it keeps fixed parser bugs fixed. A new
crash from a fuzzing run goes, minimised, into ``regressions/<target>/`` (one file each).
"""

from __future__ import annotations

import importlib

import pytest

from tests.fuzz.harness import regression_inputs

pytestmark = pytest.mark.unit

TARGETS = ["sigv4", "chunked", "range", "s3_xml", "dav_xml"]


def _cases():
    for target in TARGETS:
        module = importlib.import_module(f"tests.fuzz.fuzz_{target}")
        for i, seed in enumerate(module.SEEDS):
            yield pytest.param(target, seed, id=f"{target}-seed{i}")
        for path in regression_inputs(target):
            yield pytest.param(target, path.read_bytes(), id=f"{target}-{path.name}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("target", "data"), list(_cases()))
def test_input_is_accepted_or_refused_cleanly(target, data):
    importlib.import_module(f"tests.fuzz.fuzz_{target}").one_input(data)
