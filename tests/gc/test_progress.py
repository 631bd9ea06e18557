"""Progress of long gc and verify runs: bars move by each item, and only a terminal sees them."""

from __future__ import annotations

from collections import defaultdict

import pytest

from cas.gc.sweep import collect
from cas.gc.verify import verify
from tests.fixtures.gc import BUCKET, data, run_cas


class Recorder:
    """A progress factory that keeps every ``update(n)`` of each bar, by description."""

    def __init__(self):
        self.updates: dict[str, list[int]] = defaultdict(list)

    def __call__(self, desc: str, total: int | None = None):
        recorder = self

        class _Bar:
            def update(self, n: int = 1) -> None:
                recorder.updates[desc].append(n)

            def close(self) -> None:
                return None

        return _Bar()


@pytest.mark.integration
def test_deep_verify_moves_block_by_block(local_gc_store):
    s = local_gc_store
    s.put(BUCKET, "x", data(2_000_000, 81))
    rec = Recorder()
    report = verify(s, deep=True, progress=rec)
    assert report.clean
    steps = rec.updates["verify: blocks (deep)"]
    assert sum(steps) == report.blocks > 10 and set(steps) == {1}
    assert sum(rec.updates["verify: blocks"]) == report.blocks and set(rec.updates["verify: blocks"]) == {1}
    assert rec.updates["verify: packs"] == [1] * report.packs and report.packs >= 1


@pytest.mark.integration
def test_gc_sweep_moves_by_each_deleted_block(local_gc_store):
    s = local_gc_store
    s.put(BUCKET, "keep", data(500_000, 82))
    s.put(BUCKET, "gone", data(1_500_000, 83))
    s.delete(BUCKET, "gone")
    rec = Recorder()
    report = collect(s, delete=True, min_age=0, progress=rec)
    steps = rec.updates["gc: sweep"]
    assert report.deleted > 10 and sum(steps) == report.blocks_seen
    assert steps.count(1) >= report.deleted and max(steps) <= report.blocks_seen - report.deleted


@pytest.mark.integration
def test_no_progress_bars_when_stderr_is_not_a_terminal(local_gc_store):
    s = local_gc_store
    s.put(BUCKET, "x", data(1_000_000, 84))
    s.delete(BUCKET, "x")
    for args in (("verify", "--deep"), ("gc", "--delete", "--min-age", "0")):
        out = run_cas(s.settings.data_dir, *args)
        assert out.returncode == 0 and out.stderr == b"", (args, out.stderr)
