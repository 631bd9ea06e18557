"""A dry run reports what the real run then does: the same store, dry run then real run, same numbers.

Both phases (condemn now, delete after the grace) and both report forms (``--json`` and the
text line), on a store where a killed writer still holds pins: the real run reaps that writer
before it sweeps, so its pins must not protect anything in the dry run's count either.
"""

from __future__ import annotations

import json
import signal

import pytest

from cas.gc.report import human_size as _human
from cas.gc.sweep import collect
from tests.fixtures.gc import BUCKET, assert_whole, cas_env, data, run_cas

AGREE = ("condemned", "condemned_bytes", "deleted", "deleted_bytes", "pending", "pending_bytes",
         "orphans", "orphan_bytes", "manifests_deleted", "dead_writers", "dead_pins", "freed_blocks",
         "freed_bytes")


def _numbers(report: dict) -> dict:
    return {k: report[k] for k in AGREE}


def _killed_writer_over_deleted_object(s, tmp_path) -> bytes:
    """Object ``gone`` is deleted; then a ``cas put`` of the same bytes is killed after pinning them."""
    body = data(1_500_000, 71)
    s.put(BUCKET, "keep", data(300_000, 70))
    s.put(BUCKET, "gone", body)
    s.delete(BUCKET, "gone")
    src = tmp_path / "body"
    src.write_bytes(body + data(500_000, 72))
    crashed = run_cas(s.settings.data_dir, "put", str(src), f"{BUCKET}/lost",
                      env=cas_env(CAS_TESTONLY_CRASH_AT="writer.after_pin"))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    with s.index.read() as t:
        assert list(t.iter_pins())
    return body


@pytest.mark.integration
def test_dry_run_agrees_with_the_real_run_in_both_phases(local_gc_store, clock, tmp_path):
    s = local_gc_store
    _killed_writer_over_deleted_object(s, tmp_path)
    grace = 3600.0

    dry = collect(s, delete=False, min_age=grace).to_dict()
    real = collect(s, delete=True, min_age=grace).to_dict()
    assert real["condemned"] > 0 and real["dead_writers"] == 1
    assert _numbers(dry) == _numbers(real)

    clock.advance(grace + 1)
    dry = collect(s, delete=False, min_age=grace).to_dict()
    real = collect(s, delete=True, min_age=grace).to_dict()
    assert real["deleted"] > 0
    assert _numbers(dry) == _numbers(real)
    assert_whole(s, {(BUCKET, "keep"): data(300_000, 70)})


@pytest.mark.integration
def test_cli_dry_run_text_and_json_agree_with_the_real_run(local_gc_store, tmp_path):
    s = local_gc_store
    _killed_writer_over_deleted_object(s, tmp_path)
    d = s.settings.data_dir

    def gc(*args: str):
        out = run_cas(d, "gc", *args)
        assert out.returncode == 0, out.stderr
        return out.stdout.decode()

    # condemn phase (default 1h grace): nothing is deleted yet
    text, dry = gc(), json.loads(gc("--json"))
    real = json.loads(gc("--delete", "--json"))
    assert real["condemned"] > 0 and real["deleted"] == 0
    assert _numbers(dry) == _numbers(real)
    assert (f"would condemn {real['condemned']} blocks ({_human(real['condemned_bytes'])}), "
            f"would delete 0 blocks (0 B)") in text, text

    # delete phase: with no grace, what is condemned goes
    text, dry = gc("--min-age", "0"), json.loads(gc("--min-age", "0", "--json"))
    real = json.loads(gc("--delete", "--min-age", "0", "--json"))
    assert real["deleted"] > 0
    assert _numbers(dry) == _numbers(real)
    assert (f"would delete {real['deleted']} blocks ({_human(real['deleted_bytes'])})") in text, text
