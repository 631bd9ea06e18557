"""The index contract (cas/index/base.py), run against every implementation: LMDB and PostgreSQL.

Each test opens a fresh index of each kind (``index``); ``index_target`` says how to open the same
index again, from this process or another one. What is checked: every ``IndexTxn`` method's
semantics, keys in UTF-8 byte order, listings with delimiter/start_after/limit and their paging,
snapshot reads while a writer commits, abort on exception, serialised read-modify-write from
threads, iterators over many pages while their transaction deletes rows, durable and lazy
commits, ``other_processes``, ``disk_usage`` and named locks (across threads and processes).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cas.errors import Conflict, PermanentStoreError
from cas.index.lmdb_index import LmdbIndex
from cas.index.pg_index import PgIndex
from cas.index.schema import CONDEMNED, KIND_DATA, KIND_MANIFEST, LIVE, PACK_SEALED, BlockRow, Loc, PackRow

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
#: more rows than one page of a PostgreSQL iterator (32, 256, then 1024 a query)
MANY = 2500


def open_target(kind: str, target: str):
    return LmdbIndex(target, map_size=1 << 30) if kind == "lmdb" else PgIndex(target, pool_size=8)


@pytest.fixture(params=["lmdb", "pg"])
def index_target(request, tmp_path) -> tuple[str, str]:
    """(kind, where): an LMDB directory or a PostgreSQL URL of a fresh, empty database."""
    if request.param == "lmdb":
        return "lmdb", str(tmp_path / "data" / "index")
    return "pg", request.getfixturevalue("pg_url")


@pytest.fixture
def index(index_target):
    ix = open_target(*index_target)
    yield ix
    ix.close()


# A process of its own that opens the index, reads once, takes a lock when told, says "ready" and
# holds on until its stdin closes (or releases the lock first when it reads "release").
HOLDER = r"""
import sys
kind, target, lock = sys.argv[1:4]
if kind == "lmdb":
    from cas.index.lmdb_index import LmdbIndex
    index = LmdbIndex(target, map_size=1 << 30)
else:
    from cas.index.pg_index import PgIndex
    index = PgIndex(target, pool_size=1)
with index.read() as t:
    t.last_seq()
held = index.lock(lock) if lock else None
if held:
    held.__enter__()
print("ready", flush=True)
if sys.stdin.readline() == "release\n":
    held.__exit__(None, None, None)
    print("released", flush=True)
sys.stdin.read()
"""


def start_holder(index_target, lock: str = "") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *index_target, lock], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline() == b"ready\n"
    return proc


def block(n: int, state: int = LIVE) -> BlockRow:
    return BlockRow(state, 100 + n, 200 + n, 1000.0 + n, 2000.0 + n)


def ids(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") * 8 for i in range(n)]


#: keys whose UTF-8 byte order differs from code unit (UTF-16) order and from locale collation
UNICODE_KEYS = ["a", "B", "b", "z", "é", "€", "\uffff", "𝄞", "a b", "a-b", "a/b", "A"]


def utf8_sorted(keys):
    return sorted(keys, key=str.encode)


# -- every method ------------------------------------------------------------------------------

def test_meta_values_and_counters(index):
    with index.write() as t:
        assert t.get_meta("format") is None
        t.put_meta("format", {"version": 2, "name": "é"})
        assert t.counter("blocks") == 0
        assert t.add_counter("blocks", 5) == 5
        assert t.add_counter("blocks", -2) == 3
        assert t.add_counter("floor", -4) == -4  # reported, but the stored counter stops at 0
        assert [t.next_seq() for _ in range(3)] == [1, 2, 3]
    with index.read() as t:
        assert t.get_meta("format") == {"version": 2, "name": "é"}
        assert (t.counter("blocks"), t.counter("floor"), t.last_seq()) == (3, 0, 3)
    with index.write() as t:
        assert t.next_seq() == 4


def test_buckets(index):
    with index.write() as t:
        t.put_bucket("b2", {"created": 2})
        t.put_bucket("b", {"created": 1})
        t.put_object("b2", "k", {"m": 1})
    with index.write() as t:
        assert t.get_bucket("b") == {"created": 1} and t.get_bucket("nope") is None
        assert list(t.iter_buckets()) == [("b", {"created": 1}), ("b2", {"created": 2})]
        assert t.bucket_is_empty("b") and not t.bucket_is_empty("b2")  # "b" is a prefix of "b2"
        assert t.delete_bucket("b") is True
        assert t.delete_bucket("b") is False
    with index.read() as t:
        assert [name for name, _ in t.iter_buckets()] == ["b2"]


def test_objects_and_their_order(index):
    with index.write() as t:
        for key in UNICODE_KEYS:
            t.put_object("bk", key, {"k": key})
        t.put_object("bk2", "a", {"other": True})
        t.put_object("b", "zz", {"other": True})
    with index.write() as t:
        assert t.get_object("bk", "€") == {"k": "€"} and t.get_object("bk", "nope") is None
        assert [k for _, k, _ in t.iter_objects("bk")] == utf8_sorted(UNICODE_KEYS)
        assert [k for _, k, _ in t.iter_objects("bk", "a")] == ["a", "a b", "a-b", "a/b"]
        assert [(b, k) for b, k, _ in t.iter_objects()][:1] == [("b", "zz")]
        assert len(list(t.iter_objects())) == len(UNICODE_KEYS) + 2
        t.put_object("bk", "a", {"k": "a", "v": 2})
        assert t.delete_object("bk", "z") is True and t.delete_object("bk", "z") is False
    with index.read() as t:
        assert t.get_object("bk", "a") == {"k": "a", "v": 2}
        assert t.get_object("bk", "z") is None


def test_manifests_are_stored_once(index):
    mids = ids(3)
    with index.write() as t:
        assert t.put_manifest(mids[1], b"first") is True
        assert t.put_manifest(mids[1], b"second") is False
        assert t.put_manifest(mids[0], b"zero") is True
    with index.write() as t:
        assert t.get_manifest(mids[1]) == b"first" and t.get_manifest(mids[2]) is None
        assert list(t.iter_manifests()) == [(mids[0], b"zero"), (mids[1], b"first")]
        assert t.delete_manifest(mids[0]) is True and t.delete_manifest(mids[0]) is False
    with index.read() as t:
        assert [m for m, _ in t.iter_manifests()] == [mids[1]]


def test_blocks(index):
    bids = ids(5)
    with index.write() as t:
        for n, bid in enumerate(reversed(bids)):
            t.put_block(bid, block(n))
        t.put_block(bids[0], block(9, CONDEMNED))
    with index.write() as t:
        assert t.get_block(bids[0]) == block(9, CONDEMNED) and t.get_block(b"\x01" * 32) is None
        assert [b for b, _ in t.iter_blocks()] == bids
        assert [b for b, _ in t.iter_blocks(bids[2])] == bids[2:]  # from start, inclusive
        assert t.delete_block(bids[1]) is True and t.delete_block(bids[1]) is False
    with index.read() as t:
        assert [b for b, _ in t.iter_blocks()] == [bids[0], *bids[2:]]


def test_pins_and_writers(index):
    b1, b2, w1, w2 = ids(4)
    with index.write(durable=False) as t:
        t.add_pin(b2, w1)
        t.add_pin(b1, w2)
        t.add_pin(b1, w1)
        t.put_writer(w1, 1234.5, b"owner-1")
        t.put_writer(w2, 99.0)
    with index.write() as t:
        assert t.pin_writers(b1) == [w1, w2] and t.pin_writers(b"\x07" * 32) == []
        assert list(t.iter_pins()) == [(b1, w1), (b1, w2), (b2, w1)]
        t.drop_pin(b1, w1)
        assert t.writer_expiry(w1) == 1234.5 and t.writer_expiry(b1) is None
        assert list(t.iter_writers()) == [(w1, 1234.5), (w2, 99.0)]
        assert list(t.iter_writer_owners()) == [(w1, 1234.5, b"owner-1"), (w2, 99.0, b"")]
        t.delete_writer(w2)
    with index.read() as t:
        assert list(t.iter_pins()) == [(b1, w2), (b2, w1)]
        assert [w for w, _ in t.iter_writers()] == [w1]


def test_locations_and_packs(index):
    e = ids(4)
    p1, p2 = b"p" * 16, b"q" * 16
    loc = [Loc(p1, 100 * n, 10 + n, 20 + n, 5.0 + n) for n in range(4)]
    with index.write() as t:
        for n in (3, 0, 2, 1):
            t.put_loc(KIND_DATA, e[n], loc[n])
        t.put_loc(KIND_MANIFEST, e[0], loc[3])
        t.put_pack(p2, PackRow(PACK_SEALED, 10, 2, 8, 1, 1.0, 2.0))
        t.put_pack(p1, PackRow(PACK_SEALED, 20, 4, 20, 4, 1.0, 2.0))
    with index.write() as t:
        assert t.get_loc(KIND_DATA, e[0]) == loc[0] and t.get_loc(KIND_MANIFEST, e[0]) == loc[3]
        assert t.get_loc(KIND_MANIFEST, e[1]) is None
        assert [i for i, _ in t.iter_locs(KIND_DATA)] == e
        assert list(t.iter_locs(KIND_DATA, e[1])) == [(e[2], loc[2]), (e[3], loc[3])]  # after, exclusive
        assert list(t.iter_locs(KIND_MANIFEST)) == [(e[0], loc[3])]
        assert t.delete_loc(KIND_DATA, e[2]) is True and t.delete_loc(KIND_DATA, e[2]) is False
        assert t.get_pack(p2).dead_bytes == 2 and t.get_pack(b"x" * 16) is None
        assert [p for p, _ in t.iter_packs()] == [p1, p2]
        assert t.delete_pack(p1) is True and t.delete_pack(p1) is False
    with index.read() as t:
        assert [i for i, _ in t.iter_locs(KIND_DATA)] == [e[0], e[1], e[3]]
        assert [p for p, _ in t.iter_packs()] == [p2]


def test_refs_mlog_and_events_by_sequence_number(index):
    m = ids(4)
    with index.write() as t:
        for seq, mid in ((5, m[0]), (2, m[1]), (2, m[2]), (300, m[3])):
            t.add_ref(seq, mid)
        for n in (3, 1, 2, 10):
            t.put_mlog(n, {"n": n})
        for seq in (1, 2, 5, 256):
            t.add_event(seq, {"seq": seq})
    with index.write() as t:
        assert list(t.iter_refs(0)) == [(2, m[1]), (2, m[2]), (5, m[0]), (300, m[3])]
        assert list(t.iter_refs(2)) == [(5, m[0]), (300, m[3])]
        assert [r["n"] for r in t.iter_mlog(0)] == [1, 2, 3, 10] and [r["n"] for r in t.iter_mlog(2)] == [3, 10]
        assert [e["seq"] for e in t.iter_events()] == [1, 2, 5, 256]
        assert [e["seq"] for e in t.iter_events(5)] == [256]
        assert t.trim_refs(4) == 2 and t.trim_refs(4) == 0
        assert t.trim_mlog(3) == 3
        assert t.trim_events(255) == 3
    with index.read() as t:
        assert list(t.iter_refs(0)) == [(5, m[0]), (300, m[3])]
        assert [r["n"] for r in t.iter_mlog(0)] == [10]
        assert [e["seq"] for e in t.iter_events()] == [256]
    with index.write() as t:
        assert t.trim_refs(-1) == 0
        assert t.trim_refs(2**64 - 1) == 2 and t.trim_mlog(1 << 40) == 1
        assert list(t.iter_refs(0)) == [] and list(t.iter_mlog(0)) == []


def test_uploads_and_parts(index):
    with index.write() as t:
        t.put_upload("u1", {"bucket": "b", "key": "k1"})
        t.put_upload("u10", {"bucket": "b", "key": "k10"})
        for n in (10, 2, 1):
            t.put_part("u1", n, {"n": n})
        t.put_part("u10", 1, {"n": 1})
    with index.write() as t:
        assert t.get_upload("u1") == {"bucket": "b", "key": "k1"} and t.get_upload("u2") is None
        assert [u for u, _ in t.iter_uploads()] == ["u1", "u10"]
        assert t.get_part("u1", 10) == {"n": 10} and t.get_part("u1", 3) is None
        assert [(u, n) for u, n, _ in t.iter_parts("u1")] == [("u1", 1), ("u1", 2), ("u1", 10)]
        assert [(u, n) for u, n, _ in t.iter_parts()] == [("u1", 1), ("u1", 2), ("u1", 10), ("u10", 1)]
        t.delete_upload("u1")  # and its parts, but not those of u10
    with index.read() as t:
        assert [u for u, _ in t.iter_uploads()] == ["u10"]
        assert [(u, n) for u, n, _ in t.iter_parts()] == [("u10", 1)]


def test_users(index):
    with index.write() as t:
        t.put_user("zoë", {"key": "1"})
        t.put_user("adam", {"key": "2"})
    with index.write() as t:
        assert t.get_user("zoë") == {"key": "1"} and t.get_user("eve") is None
        assert [u for u, _ in t.iter_users()] == ["adam", "zoë"]
        assert t.delete_user("adam") is True and t.delete_user("adam") is False
    with index.read() as t:
        assert [u for u, _ in t.iter_users()] == ["zoë"]


def test_small_protocol_state(index):
    with index.write() as t:
        t.kv_put("lock", "/a/b", b"1")
        t.kv_put("lock", "/a", b"2")
        t.kv_put("lock", "/b", b"")
        t.kv_put("lockx", "/a/c", b"other namespace")
    with index.write() as t:
        assert t.kv_get("lock", "/a") == b"2" and t.kv_get("lock", "/c") is None
        assert t.kv_get("lock", "/b") == b""
        assert list(t.kv_scan("lock")) == [("/a", b"2"), ("/a/b", b"1"), ("/b", b"")]
        assert list(t.kv_scan("lock", "/a/")) == [("/a/b", b"1")]
        assert t.kv_delete("lock", "/a") is True and t.kv_delete("lock", "/a") is False
    with index.read() as t:
        assert [k for k, _ in t.kv_scan("lock")] == ["/a/b", "/b"]


def test_large_values_round_trip(index):
    big = secrets.token_bytes(3 << 20)
    with index.write() as t:
        t.put_manifest(b"m" * 32, big)
    with index.read() as t:
        assert t.get_manifest(b"m" * 32) == big


# -- listings -----------------------------------------------------------------------------------

LISTED = ["a/1", "a/2", "a/b/1", "b", "c/x/1", "c/y", "d", "é/1", "€", "𝄞", "\uffff/x", "a"]


@pytest.fixture
def listed(index):
    with index.write() as t:
        for key in LISTED:
            t.put_object("bk", key, {"k": key})
        t.put_object("bk2", "a/0", {})  # another bucket, right after
        t.put_object("bj", "zzz", {})  # and right before
    return index


def names(page):
    entries, prefixes, truncated = page
    return [k for k, _ in entries], prefixes, truncated


def test_listing_without_delimiter_is_in_utf8_byte_order(listed):
    with listed.read() as t:
        assert names(t.list_objects("bk", "", "", "", 1000)) == (utf8_sorted(LISTED), [], False)
        assert names(t.list_objects("bk", "a/", "", "", 1000)) == (["a/1", "a/2", "a/b/1"], [], False)
        assert names(t.list_objects("bk", "", "", "", 3)) == (["a", "a/1", "a/2"], [], True)
        assert names(t.list_objects("bk", "", "", "d", 3)) == (["é/1", "€", "\uffff/x"], [], True)
        assert names(t.list_objects("bk", "a/", "", "a/1", 1000)) == (["a/2", "a/b/1"], [], False)
        assert names(t.list_objects("bk", "", "", "𝄞", 1000)) == ([], [], False)
        assert names(t.list_objects("nobucket", "", "", "", 10)) == ([], [], False)
        entries, _, _ = t.list_objects("bk", "d", "", "", 10)
        assert entries == [("d", {"k": "d"})]


def test_listing_with_a_delimiter_rolls_up_common_prefixes(listed):
    with listed.read() as t:
        assert names(t.list_objects("bk", "", "/", "", 1000)) == (
            ["a", "b", "d", "€", "𝄞"], ["a/", "c/", "é/", "\uffff/"], False)
        assert names(t.list_objects("bk", "a/", "/", "", 1000)) == (["a/1", "a/2"], ["a/b/"], False)
        assert names(t.list_objects("bk", "c/", "/", "", 1000)) == (["c/y"], ["c/x/"], False)
        # keys and prefixes share the limit; a prefix given as start_after skips its group
        assert names(t.list_objects("bk", "", "/", "", 2)) == (["a"], ["a/"], True)
        assert names(t.list_objects("bk", "", "/", "a/", 2)) == (["b"], ["c/"], True)
        assert names(t.list_objects("bk", "", "/x/", "", 1000)) == (
            [k for k in utf8_sorted(LISTED) if "/x/" not in k], ["c/x/"], False)


@pytest.mark.parametrize("delimiter", ["", "/"])
@pytest.mark.parametrize("prefix", ["", "a", "a/", "c/", "é"])
def test_paging_a_listing_gives_what_one_call_gives(listed, prefix, delimiter):
    """Page by page with start_after = the last key or prefix returned (S3's NextMarker)."""
    with listed.read() as t:
        whole_entries, whole_prefixes, _ = t.list_objects("bk", prefix, delimiter, "", 1000)
        whole = sorted([k for k, _ in whole_entries] + whole_prefixes, key=str.encode)
        for limit in (1, 2, 3):
            got, after = [], ""
            while True:
                entries, prefixes, truncated = t.list_objects("bk", prefix, delimiter, after, limit)
                page = sorted([k for k, _ in entries] + prefixes, key=str.encode)
                assert len(page) <= limit
                got += page
                if not truncated:
                    break
                after = page[-1]
            assert got == whole, limit


# -- transactions -------------------------------------------------------------------------------

def test_an_exception_aborts_the_whole_write(index):
    with index.write() as t:
        t.put_bucket("kept", {})
    with pytest.raises(KeyError, match="boom"), index.write() as t:
        t.put_bucket("new", {})
        t.delete_bucket("kept")
        t.next_seq()
        t.kv_put("ns", "k", b"v")
        raise KeyError("boom")
    with index.read() as t:
        assert [b for b, _ in t.iter_buckets()] == ["kept"]
        assert t.last_seq() == 0 and t.kv_get("ns", "k") is None


def test_a_write_sees_its_own_changes(index):
    with index.write() as t:
        t.put_bucket("b", {"n": 1})
        assert t.get_bucket("b") == {"n": 1}
        for key in ("k2", "k1"):
            t.put_object("b", key, {})
        assert [k for _, k, _ in t.iter_objects("b")] == ["k1", "k2"]
        t.delete_object("b", "k1")
        assert names(t.list_objects("b", "", "", "", 10)) == (["k2"], [], False)


def test_prefetched_rows_read_as_they_would_without(index):
    """``prefetch`` is a hint: the rows read after it are the ones read without it, the
    transaction's own writes (and deletes, and counters) included, and rows that are not there
    read as missing."""
    a, b, gone = bytes(32), b"\x01" * 32, b"\x02" * 32
    row = BlockRow(LIVE, 10, 20, 1.0, 1.0)
    with index.write() as t:
        t.put_bucket("b", {"n": 1})
        t.put_object("b", "k", {"v": 1})
        t.put_block(a, row)
        t.put_block(gone, row)
        t.add_counter("c", 5)
    with index.write() as t:
        t.put_block(b, row)  # written before the prefetch, and one deleted
        t.delete_block(gone)
        t.add_counter("c", 2)
        t.prefetch(counters=True, buckets=["b", "nob"], objects=[("b", "k"), ("b", "nok")],
                   blocks=[a, b, gone, b"\x03" * 32], manifests=[a], writers=[a], locs=[(KIND_DATA, a)],
                   packs=[a], pins=[(a, b)])
        assert t.get_bucket("b") == {"n": 1} and t.get_bucket("nob") is None
        assert t.get_object("b", "k") == {"v": 1} and t.get_object("b", "nok") is None
        assert t.get_block(a) == row == t.get_block(b)
        assert t.get_block(gone) is None and t.get_block(b"\x03" * 32) is None
        assert t.get_manifest(a) is None and t.writer_expiry(a) is None and t.get_loc(KIND_DATA, a) is None
        assert t.get_pack(a) is None and t.pin_writers(a) == []
        assert t.counter("c") == 7 and t.counter("other") == 0
        assert t.put_manifest(a, b"m") is True  # was missing: stored
        t.add_counter("c", 1)
    with index.read() as t:
        t.prefetch(counters=True, blocks=[a, b, gone])
        assert t.get_block(a) == row == t.get_block(b) and t.get_block(gone) is None
        assert t.counter("c") == 8 and t.get_manifest(a) == b"m"


def test_a_read_transaction_refuses_writes(index):
    with pytest.raises(PermanentStoreError), index.read() as t:
        t.put_bucket("b", {})
    with pytest.raises(PermanentStoreError), index.read() as t:
        t.delete_bucket("b")
    with index.read() as t:
        assert t.get_bucket("b") is None


def _in_thread(fn):
    """Run ``fn`` in another thread (as another writer would) and re-raise what it raised."""
    failure = []

    def run():
        try:
            fn()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    if failure:
        raise failure[0]


def test_a_read_is_a_snapshot_from_when_it_opens(index):
    bids = ids(MANY)
    with index.write() as t:
        t.put_bucket("b", {"v": 1})
        for n, bid in enumerate(bids):
            t.put_block(bid, block(n))

    def writer():
        with index.write() as t:
            t.put_bucket("b", {"v": 2})
            t.put_bucket("new", {})
            t.next_seq()
            for bid in bids[::2]:
                t.delete_block(bid)

    with index.read() as r:
        _in_thread(writer)  # commits after r opened, before r's first read
        assert r.get_bucket("b") == {"v": 1} and r.get_bucket("new") is None and r.last_seq() == 0
        seen = []
        for n, (bid, row) in enumerate(r.iter_blocks()):
            seen.append(bid)
            if n == 100:  # mid-iteration, between pages: another commit
                _in_thread(writer)
        assert seen == bids
    with index.read() as t:
        assert t.get_bucket("b") == {"v": 2} and t.last_seq() == 2
        assert [b for b, _ in t.iter_blocks()] == bids[1::2]


def test_a_read_without_snapshot_reads_the_rows_and_refuses_writes(index, index_target):
    """``read(snapshot=False)``: the rows as committed (LMDB still gives a snapshot; PostgreSQL
    reads each statement's latest commits), and no writes."""
    with index.write() as t:
        t.put_bucket("b", {"v": 1})
        t.put_object("b", "k", {"o": 1})
    with index.read(snapshot=False) as r:
        r.prefetch(buckets=["b"], objects=[("b", "k")])
        assert r.get_bucket("b") == {"v": 1} and r.get_object("b", "k") == {"o": 1}
        with index.write() as t:
            t.put_bucket("later", {})
        later = r.get_bucket("later")
        assert later == ({} if index_target[0] == "pg" else None)
        with pytest.raises(PermanentStoreError):
            r.put_bucket("x", {})
    with index.read() as t:
        assert t.get_bucket("x") is None


def test_writers_are_serialised_and_lose_no_update(index):
    """Read-modify-write from threads: every increment lands, and sequence numbers commit in
    order with no gap (the journal, read in key order, is 1..N)."""
    threads, rounds = 6, 15

    def work():
        for _ in range(rounds):
            with index.write(durable=False) as t:
                n = t.get_meta("n") or 0
                time.sleep(0.001)  # widen the window a lost update would need
                t.put_meta("n", n + 1)
                seq = t.next_seq()
                t.add_event(seq, {"seq": seq, "n": n + 1})

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    with index.read() as t:
        assert t.get_meta("n") == threads * rounds
        events = list(t.iter_events())
        assert [e["seq"] for e in events] == list(range(1, threads * rounds + 1))
        assert [e["n"] for e in events] == list(range(1, threads * rounds + 1))  # commit order


def test_iterators_stream_over_rows_their_transaction_deletes(index):
    bids = ids(MANY)
    with index.write() as t:
        for n, bid in enumerate(bids):
            t.put_block(bid, block(n))
            t.add_event(n + 1, {"n": n})
    position = {bid: n for n, bid in enumerate(bids)}
    with index.write() as t:
        seen = []
        for bid, row in t.iter_blocks():
            n = position[bid]
            seen.append(bid)
            assert row == block(n)
            t.delete_block(bid)  # the row under the iterator
            if n % 3 == 0 and n + 1 < MANY:
                t.delete_block(bids[n + 1])  # and the next one, not reached yet: skipped
        assert seen == [b for n, b in enumerate(bids) if n % 3 != 1]
        assert list(t.iter_blocks()) == []
        assert t.trim_events(MANY // 2) == MANY // 2
        assert [e["n"] for e in t.iter_events()] == list(range(MANY // 2, MANY))
    with index.read() as t:
        assert list(t.iter_blocks()) == []


def test_iterators_skip_rows_deleted_ahead(index):
    bids = ids(MANY)
    with index.write() as t:
        for n, bid in enumerate(bids):
            t.put_block(bid, block(n))
    ahead = set(bids[1::7]) | set(bids[-300:])
    with index.write() as t:
        seen = []
        for bid, _ in t.iter_blocks():
            if not seen:
                for gone in ahead:
                    t.delete_block(gone)
            seen.append(bid)
        assert seen == [b for b in bids if b not in ahead]


def test_iterators_return_rows_their_transaction_adds_ahead(index):
    bids = ids(MANY)
    with index.write() as t:
        for n, bid in enumerate(bids):
            t.put_block(bid, block(n))
    added = [bid + b"\x01" for bid in bids[::5]]  # each right after a row (some in the page held)
    last = bids[-1] + b"\x02"
    with index.write() as t:
        seen = []
        for bid, _ in t.iter_blocks():
            if not seen:
                for new in added:
                    t.put_block(new, block(0))
            if bid == bids[-1]:
                t.put_block(last, block(0))  # past the last row
            seen.append(bid)
        assert seen == sorted(bids + added + [last])


def test_lazy_and_durable_commits_are_both_visible_to_a_reopened_index(index_target):
    index = open_target(*index_target)
    with index.write(durable=False) as t:
        t.add_pin(b"b" * 32, b"w" * 32)
    with index.write() as t:
        t.put_bucket("b", {})
    index.close()
    index = open_target(*index_target)
    try:
        with index.read() as t:
            assert list(t.iter_pins()) == [(b"b" * 32, b"w" * 32)] and t.get_bucket("b") == {}
    finally:
        index.close()


def test_many_threads_read_while_one_writes(index):
    """Each read is one snapshot, and a later read never sees an older state."""
    with index.write() as t:
        t.put_meta("n", 0)
    stop = threading.Event()
    seen: dict[int, list[int]] = {}

    def reader(me: int):
        mine = seen.setdefault(me, [])
        while not stop.is_set():
            with index.read() as t:
                n = t.get_meta("n")
                assert t.counter("n") == n
                mine.append(n)

    readers = [threading.Thread(target=reader, args=(me,)) for me in range(4)]
    for r in readers:
        r.start()
    try:
        for n in range(1, 31):
            with index.write() as t:
                t.put_meta("n", n)
                t.add_counter("n", 1)
    finally:
        stop.set()
        for r in readers:
            r.join(60)
    assert len(seen) == 4
    for values in seen.values():
        assert values and values == sorted(values) and set(values) <= set(range(31))


# -- processes, size and locks -------------------------------------------------------------------

def test_other_processes_lists_another_process_with_the_index_open(index, index_target):
    with index.read() as t:
        t.last_seq()
    assert index.other_processes() == []
    holder = start_holder(index_target)
    try:
        assert index.other_processes() == [holder.pid]
    finally:
        holder.stdin.close()
        holder.wait(30)
    deadline = time.monotonic() + 10
    while index.other_processes() and time.monotonic() < deadline:
        time.sleep(0.05)  # a server notices a closed session shortly after
    assert index.other_processes() == []


def test_disk_usage_grows_with_the_rows(index):
    before = index.disk_usage()
    assert before > 0
    with index.write() as t:
        for n, mid in enumerate(ids(64)):
            t.put_manifest(mid, secrets.token_bytes(32 << 10))  # 2 MiB that no one compresses
    assert index.disk_usage() >= before + (2 << 20)


def test_a_lock_excludes_a_second_holder_in_this_process(index):
    with index.lock("gc"):
        with pytest.raises(Conflict, match="gc"), index.lock("gc"):
            pass
        with index.lock("meta-ship"):  # another name: another lock
            pass
        t0 = time.monotonic()
        with pytest.raises(Conflict), index.lock("gc", wait=0.3):
            pass
        assert 0.3 <= time.monotonic() - t0 < 5
    for _ in range(20):  # released by the time the block is left, again and again
        with index.lock("gc"):
            pass


def test_a_lock_released_within_the_wait_is_taken(index):
    held, release = threading.Event(), threading.Event()

    def holder():
        with index.lock("gc"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        threading.Timer(0.3, release.set).start()
        t0 = time.monotonic()
        with index.lock("gc", wait=20):
            assert time.monotonic() - t0 >= 0.25
    finally:
        release.set()
        thread.join(30)


def test_a_lock_another_process_released_is_free_at_once(index, index_target):
    holder = start_holder(index_target, lock="gc")
    try:
        with pytest.raises(Conflict), index.lock("gc"):
            pass
        holder.stdin.write(b"release\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == b"released\n"
        with index.lock("gc"):
            pass
    finally:
        holder.stdin.close()
        holder.wait(30)
        holder.stdout.close()


def test_a_lock_excludes_another_process_until_it_dies(index, index_target):
    holder = start_holder(index_target, lock="gc")
    try:
        with pytest.raises(Conflict), index.lock("gc"):
            pass
        with index.lock("meta-ship"):
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        with index.lock("gc", wait=20):  # the dead holder's lock went with it
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)
        holder.stdin.close()
        holder.stdout.close()


def test_postgresql_listings_match_lmdb_listings_page_for_page(tmp_path, pg_url):
    """PostgreSQL answers a delimiter listing with one recursive statement and LMDB with one
    cursor: over random keys (multi-byte UTF-8, nested groups, delimiters of one and more
    characters) every page of every listing — prefix, delimiter, start_after, limit — agrees."""
    import random

    rng = random.Random(1602)
    parts = ["a", "b", "ä", "日本", "x-y", "z", "a/b", "", "0", "ö/"]
    keys = sorted({"/".join(rng.choice(parts) for _ in range(rng.randint(1, 4))) + rng.choice(["", ".txt", "/"])
                   for _ in range(400)} - {""})
    lm, pg = LmdbIndex(tmp_path / "lmdb", map_size=1 << 30), PgIndex(pg_url, pool_size=2)
    try:
        for ix in (lm, pg):
            with ix.write() as t:
                for i, k in enumerate(keys):
                    t.put_object("bk", k, {"i": i})
                t.put_object("bj", "a/outside", {"i": -1})
                t.put_object("bl", "a/outside", {"i": -2})
        cases = 0
        for _ in range(150):
            prefix = rng.choice(["", "a", "a/", "ä/", "日本/", "b", "zz", "a/b/"])
            delimiter = rng.choice(["/", "/", "b", "/a", "日本", ""])
            limit = rng.choice([1, 2, 3, 7, 50, 1000])
            after = ""
            for _page in range(len(keys) + 2):
                with lm.read() as t:
                    want = t.list_objects("bk", prefix, delimiter, after, limit)
                with pg.read() as t:
                    got = pg_page = t.list_objects("bk", prefix, delimiter, after, limit)
                assert got == want, (prefix, delimiter, after, limit)
                cases += 1
                entries, prefixes, truncated = pg_page
                if not truncated:
                    break
                after = max([k for k, _ in entries] + prefixes)
            else:
                pytest.fail("the listing never ended")
        assert cases > 150
    finally:
        lm.close()
        pg.close()
