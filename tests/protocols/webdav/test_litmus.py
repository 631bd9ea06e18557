"""litmus, the WebDAV conformance suite, against a real ``cas serve``: every suite at 100%."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import need
from tests.fixtures.webdav import unique_bucket

pytestmark = [pytest.mark.integration, pytest.mark.litmus]

SUITES = ("basic", "copymove", "props", "locks", "http")
SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")


def parse_summaries(output: str) -> dict[str, tuple[int, int, int]]:
    """{suite: (run, passed, failed)} from litmus's summary lines."""
    return {m[1]: (int(m[2]), int(m[3]), int(m[4])) for m in SUMMARY.finditer(output)}


def test_parse_summaries():
    out = "<- summary for `basic': of 16 tests run: 15 passed, 1 failed. 93.8%\n"
    assert parse_summaries(out) == {"basic": (16, 15, 1)}


def test_litmus_all_suites_pass(dav_server_any):
    need(shutil.which("litmus") is not None, "litmus (apt-get install litmus)")
    user, secret = dav_server_any.add_user()
    bucket = unique_bucket("litmus")
    client = dav_server_any.client(user, secret)
    assert client.mkcol("/" + bucket).status == 201
    url = f"{dav_server_any.dav_url}{bucket}/"
    proc = subprocess.run(["litmus", "-k", url, user, secret], capture_output=True, text=True, timeout=300, check=False,
                          env={"PATH": "/usr/bin:/bin", "TESTS": " ".join(SUITES)})
    output = proc.stdout + proc.stderr
    summaries = parse_summaries(output)
    assert set(summaries) == set(SUITES), output[-3000:]
    failures = {s: v for s, v in summaries.items() if v[2] != 0 or v[0] != v[1]}
    assert not failures, f"litmus failures {failures}:\n" + "\n".join(
        line for line in output.splitlines() if "FAIL" in line or "WARNING" in line)
    assert proc.returncode == 0, output[-3000:]
    # the server logged no internal error while litmus ran
    assert "Traceback" not in dav_server_any.log_tail(10_000)
