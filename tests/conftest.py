"""Shared fixtures: temporary stores, block stores of every kind, real servers.

Fixture modules of each area live in tests/fixtures/ and are plugged in here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = [
    f"tests.fixtures.{name}"
    for name in ("seaweed", "core", "s3api", "webdav", "gc", "web", "pg", "nodes", "netns")
    if (Path(__file__).parent / "fixtures" / f"{name}.py").exists()
]


def require_all() -> bool:
    """In CI (CAS_TEST_REQUIRE_ALL=1) a missing tool fails the test instead of skipping it."""
    return os.environ.get("CAS_TEST_REQUIRE_ALL") == "1"


def need(condition: bool, why: str) -> None:
    """Skip (locally) or fail (in CI) when a test's external tool is missing."""
    if not condition:
        if require_all():
            pytest.fail(f"required for this test but missing: {why}")
        pytest.skip(why)
