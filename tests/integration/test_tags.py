"""Tags in the Store: object tags in the object record, bucket tags in the ``buckettags`` kv namespace.

Tags change with a record-only write (no block, no counter, no manifest changes), travel with an
object through copy, move and multipart completion, die with it or with their bucket, work on
both index kinds (the ``store`` fixture includes "pg"), and come back whole from ``cas recover``
(they reach the metadata log with the records that hold them).
"""

from __future__ import annotations

import json
import shutil

import pytest

from cas.errors import InvalidTag
from cas.store import Store
from cas.store.tags import NS_BUCKET_TAGS, check_tags
from tests.fixtures.gc import data, run_cas

pytestmark = pytest.mark.integration

MiB = 1 << 20


def _block_counters(store) -> dict:
    stats = store.stats()
    return {k: stats[k] for k in ("objects", "logical_bytes", "unique_blocks", "stored_bytes")}


def test_tags_change_only_the_record(store):
    store.create_bucket("bkt")
    store.put("bkt", "o", data(300_000, 1), tags={"a": "1"})
    before, counters = store.stat("bkt", "o"), _block_counters(store)
    after = store.set_tags("bkt", "o", [("project", "cas"), ("stage", "")])
    assert store.stat("bkt", "o").tags == {"project": "cas", "stage": ""} == after.tags
    got = store.stat("bkt", "o")
    assert (got.manifest_id, got.etag, got.size, got.mtime, got.seq) == \
           (before.manifest_id, before.etag, before.size, before.mtime, before.seq)
    assert _block_counters(store) == counters
    assert [e.op for e in store.events(after=before.seq)][-1] == "tagging"
    store.set_tags("bkt", "o", {})
    assert store.stat("bkt", "o").tags == {}
    assert store.get_bytes("bkt", "o") == data(300_000, 1)


def test_tags_travel_with_the_object(store):
    store.create_bucket("bkt")
    store.create_bucket("cbk")
    store.put("bkt", "src", b"body", tags=[("k", "v"), ("x", "y")])
    assert store.copy("bkt", "src", "cbk", "kept").tags == {"k": "v", "x": "y"}
    assert store.copy("bkt", "src", "cbk", "replaced", tags=[("n", "1")]).tags == {"n": "1"}
    assert store.copy("bkt", "src", "cbk", "cleared", tags=[]).tags == {}
    store.move("cbk", "kept", "cbk", "moved")
    assert store.stat("cbk", "moved").tags == {"k": "v", "x": "y"}
    assert [i.tags for i in store.list("cbk").entries] == [{}, {"k": "v", "x": "y"}, {"n": "1"}]
    store.put("bkt", "src", b"overwritten")
    assert store.stat("bkt", "src").tags == {}
    up = store.create_upload("bkt", "mp", tags={"from": "upload"})
    assert store.upload(up).tags == {"from": "upload"}
    etag = store.upload_part(up, 1, b"one part").etag
    assert store.complete_upload(up, [(1, etag)]).tags == {"from": "upload"}
    assert store.stat("bkt", "mp").tags == {"from": "upload"}


def test_bucket_tags_die_with_their_bucket(store):
    store.create_bucket("bkt")
    assert store.bucket_tags("bkt") is None
    store.set_bucket_tags("bkt", [("team", "storage"), ("cost", "7")])
    assert list(store.bucket_tags("bkt").items()) == [("team", "storage"), ("cost", "7")]  # order kept
    store.set_bucket_tags("bkt", [])
    assert store.bucket_tags("bkt") is None
    store.set_bucket_tags("bkt", {"again": "1"})
    store.delete_bucket("bkt")
    assert store.kv_get(NS_BUCKET_TAGS, "bkt") is None
    store.create_bucket("bkt")
    assert store.bucket_tags("bkt") is None


@pytest.mark.parametrize("tags, limit", [
    ([(f"k{i}", "v") for i in range(11)], 10),
    ([(f"k{i}", "v") for i in range(51)], 50),
    ([("k" * 129, "v")], 10),
    ([("k", "v" * 257)], 10),
    ([("k", "1"), ("k", "2")], 10),
    ([("", "v")], 10),
    ([("aws:x", "v")], 10),
    ([("k", "a\nb")], 10),
])
def test_tag_rules(tags, limit):
    with pytest.raises(InvalidTag):
        check_tags(tags, limit=limit)


def test_refused_tags_store_nothing(local_store):
    local_store.create_bucket("bkt")
    with pytest.raises(InvalidTag):
        local_store.put("bkt", "o", b"x", tags=[(f"k{i}", "v") for i in range(11)])
    with pytest.raises(InvalidTag):
        local_store.create_upload("bkt", "o", tags={"aws:x": "v"})
    assert local_store.list("bkt").entries == [] and local_store.list_uploads("bkt") == []
    local_store.put("bkt", "o", b"x", tags={"keep": "me"})
    with pytest.raises(InvalidTag):
        local_store.set_tags("bkt", "o", {"k" * 129: "v"})
    with pytest.raises(InvalidTag):
        local_store.set_bucket_tags("bkt", [(f"k{i}", "v") for i in range(51)])
    assert local_store.stat("bkt", "o").tags == {"keep": "me"} and local_store.bucket_tags("bkt") is None


# -- cas recover -------------------------------------------------------------------------------------


def _tagged_history(store) -> dict:
    """Objects and buckets with tags set every way; returns what must come back."""
    store.create_bucket("alpha")
    store.create_bucket("gone")
    store.create_bucket("snapped")
    store.set_bucket_tags("snapped", {"in": "snapshot"})
    store.put("alpha", "put", data(200_000, 1), tags={"via": "put"})
    store.put("alpha", "later", data(MiB, 2))
    store.meta_log.ship()
    store.meta_log.snapshot()  # some tags in the snapshot, the rest in the log after it
    store.set_tags("alpha", "later", [("via", "set_tags"), ("ü", "välue")])
    store.copy("alpha", "put", "alpha", "copied")
    store.move("alpha", "later", "alpha", "moved")
    up = store.create_upload("alpha", "mp", tags={"via": "upload"})
    store.complete_upload(up, [(1, store.upload_part(up, 1, data(100_000, 3)).etag)])
    store.put("alpha", "untagged", b"x", tags={"dropped": "yes"})
    store.set_tags("alpha", "untagged", {})
    store.set_bucket_tags("alpha", [("team", "storage"), ("cost", "7")])
    store.set_bucket_tags("gone", {"dies": "with it"})
    store.delete_bucket("gone")
    store.meta_log.ship()
    want = {("alpha", k): store.stat("alpha", k).tags for k in ("put", "moved", "copied", "mp", "untagged")}
    assert want == {("alpha", "put"): {"via": "put"}, ("alpha", "moved"): {"via": "set_tags", "ü": "välue"},
                    ("alpha", "copied"): {"via": "put"}, ("alpha", "mp"): {"via": "upload"},
                    ("alpha", "untagged"): {}}
    return want


def _assert_tags_back(settings, want: dict) -> None:
    with Store.open_store(settings) as s:
        assert {(b, k): s.stat(b, k).tags for b, k in want} == want
        assert list(s.bucket_tags("alpha").items()) == [("team", "storage"), ("cost", "7")]
        assert s.bucket_tags("snapped") == {"in": "snapshot"}
        assert s.kv_get(NS_BUCKET_TAGS, "gone") is None
        assert [b.name for b in s.buckets()] == ["alpha", "snapped"]


def test_tags_survive_recover(settings):
    with Store.open_store(settings) as s:
        want = _tagged_history(s)
    shutil.rmtree(settings.index_dir)
    out = run_cas(settings.data_dir, "recover", "--json", timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["objects"] == len(want)
    _assert_tags_back(settings, want)


def test_tags_survive_recover_of_a_postgresql_index(settings, pg_url):
    from tests.fixtures.core import with_index
    from tests.integration.test_recover import _pg_run, _pg_tables

    settings = with_index(settings, pg_url)
    with Store.open_store(settings) as s:
        want = _tagged_history(s)
    _pg_run(pg_url, *(f"DROP TABLE {t}" for t in _pg_tables(pg_url)))
    out = run_cas(settings.data_dir, "recover", "--json", "--index", pg_url, timeout=300)
    assert out.returncode == 0, out.stderr
    _assert_tags_back(settings, want)
