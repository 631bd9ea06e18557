"""Memory stays flat: a 2 GiB put and get in a fresh process stay under 200 MiB RSS."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

# Peak RSS is VmHWM of this process's own memory map: ru_maxrss is not, since at exec Linux
# carries over the high-water mark of the parent (pytest, large after other tests).
SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    from cas.config import load_settings
    from cas.store import Store
    from tests.fixtures.core import stream_of

    def peak_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    n = 2 << 30
    with Store.open_store(load_settings(sys.argv[1], env={})) as s:
        s.create_bucket("bkt")
        info = s.put("bkt", "big", stream_of(n, seed=5))
        after_put = peak_kib()
        h = hashlib.md5()
        got = 0
        for part in s.open("bkt", "big"):
            h.update(part)
            got += len(part)
        peak = peak_kib()
    print(json.dumps({"size": info.size, "etag": info.etag, "read_md5": h.hexdigest(), "got": got,
                      "rss_after_put_kib": after_put, "peak_rss_kib": peak}))
""")


def test_two_gib_put_and_get_keep_rss_under_200_mib(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "data")], check=True,
                         capture_output=True, text=True, timeout=900)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["size"] == r["got"] == 2 << 30
    assert r["etag"] == r["read_md5"]
    assert r["peak_rss_kib"] < 200 * 1024, r
