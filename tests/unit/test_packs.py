"""Packs (cas/blocks/packs): the format, the pack store's write and read paths, group commit."""

from __future__ import annotations

import os
import threading

import pytest

from cas.blocks.packs import format as fmt
from cas.blocks.packs.files import LocalPackFiles, MemoryPackFiles
from cas.blocks.packs.store import PackedBlockStore, pack_totals
from cas.codec import Codec
from cas.errors import BlockNotFound, IntegrityError, TransientStoreError
from cas.ids import block_id
from cas.index.lmdb_index import LmdbIndex
from cas.index.schema import KIND_DATA, KIND_MANIFEST, PACK_OPEN, PACK_RETIRED, PACK_SEALED, PackRow

pytestmark = pytest.mark.unit

CODEC = Codec()


def _block(n: int = 2000) -> tuple[bytes, bytes]:
    raw = os.urandom(n)
    return block_id(raw), CODEC.encode(raw)


class CountingFiles(MemoryPackFiles):
    """Memory packs that count flushes and ranged reads."""

    def __init__(self):
        super().__init__()
        self.flushes = 0
        self.reads = 0

    def create(self, pack_id):
        sink = super().create(pack_id)
        files = self
        orig = sink.flush

        def flush():
            files.flushes += 1
            orig()

        sink.flush = flush
        return sink

    def read(self, pack_id, offset, length):
        self.reads += 1
        return super().read(pack_id, offset, length)


@pytest.fixture(params=["memory", "local"])
def packs(request, tmp_path):
    index = LmdbIndex(tmp_path / "index", map_size=1 << 30)
    files = CountingFiles() if request.param == "memory" else LocalPackFiles(tmp_path / "blocks")
    store = PackedBlockStore(files, index, target_size=1 << 20, seal_idle=0)
    yield store
    store.close()
    index.close()


@pytest.fixture
def mem_packs(tmp_path):
    """Packs in memory whose flushes and reads are counted."""
    index = LmdbIndex(tmp_path / "index", map_size=1 << 30)
    store = PackedBlockStore(CountingFiles(), index, target_size=1 << 20, seal_idle=0)
    yield store
    store.close()
    index.close()


def _rows(store):
    with store.index.read() as t:
        return dict(t.iter_packs())


# -- the format ---------------------------------------------------------------------------------
def test_format_round_trip_and_damage_is_detected():
    pid = os.urandom(16)
    items = [_block(100 + i) for i in range(5)]
    body = bytearray(fmt.header(pid))
    entries = []
    for bid, enc in items:
        entries.append(fmt.Entry(KIND_DATA, bid, len(body), len(enc), 100))
        body += enc
    entries.append(fmt.Entry(KIND_MANIFEST, os.urandom(32), len(body), 3, 3))
    body += b"mmm"
    pack = bytes(body) + fmt.footer(entries, len(body))
    assert fmt.parse_pack(pack, pid) == entries
    table_at = len(body)
    for pos in (table_at + 5, len(pack) - 20, len(pack) - 1):  # table, digest, magic
        bad = bytearray(pack)
        bad[pos] ^= 0x40
        with pytest.raises(fmt.PackDamaged):
            fmt.parse_pack(bytes(bad), pid)
    for cut in (len(pack) - 1, table_at, 30, 0):
        with pytest.raises(fmt.PackDamaged):
            fmt.parse_pack(pack[:cut], pid)
    with pytest.raises(fmt.PackDamaged):
        fmt.parse_pack(pack, os.urandom(16))  # another pack's header


def _v2_pack(pid: bytes, items: list[tuple[int, bytes, bytes, int]]) -> tuple[bytes, list]:
    """Header and entries (each after its entry header), no footer; the footer entries."""
    body = bytearray(fmt.header(pid))
    entries = []
    for kind, eid, data, raw_len in items:
        body += fmt.entry_header(kind, eid, len(data), raw_len)
        entries.append(fmt.Entry(kind, eid, len(body), len(data), raw_len))
        body += data
    return bytes(body), entries


def _scan(pack: bytes, pid: bytes, **kw) -> list:
    return [e for e, _ in fmt.scan_pack(lambda off, n: pack[off:off + n], len(pack), pid, **kw)]


def test_version_1_packs_are_still_read():
    pid = os.urandom(16)
    bid, enc = _block(300)
    v1 = b"CASPACK\x01" + pid + enc
    entries = [fmt.Entry(KIND_DATA, bid, fmt.HEADER_LEN, len(enc), 300)]
    table = fmt.footer(entries, len(v1))
    pack = v1 + table[:-1] + b"\x01"  # a version 1 trailer
    assert fmt.check_header(pack[:fmt.HEADER_LEN], pid) == 1
    assert fmt.parse_pack(pack, pid) == entries
    with pytest.raises(fmt.PackDamaged, match="cannot be scanned"):
        _scan(v1, pid)  # no entry headers to walk
    with pytest.raises(fmt.PackDamaged):
        fmt.check_header(b"CASPACK\x03" + pid, pid)  # a version this cas does not know


def test_a_pack_without_footer_is_scanned_up_to_its_first_bad_entry():
    pid = os.urandom(16)
    blocks = [_block(1000 + i) for i in range(4)]
    items = [(KIND_DATA, bid, enc, 1000 + i) for i, (bid, enc) in enumerate(blocks)]
    items.insert(2, (KIND_MANIFEST, block_id(b"mmm"), b"mmm", 3))
    pack, entries = _v2_pack(pid, items)
    assert _scan(pack, pid) == entries
    assert _scan(pack, pid, window=100) == entries  # entries larger than the read window
    sealed = pack + fmt.footer(entries, len(pack))
    assert fmt.parse_pack(sealed, pid) == entries  # the footer's offsets point past the entry headers
    assert _scan(sealed, pid) == entries  # the scan stops at the table
    for cut in (len(pack) - 1, entries[-1].offset - 1, entries[-1].offset - fmt.ENTRY_HEADER_LEN + 5):
        assert _scan(pack[:cut], pid) == entries[:-1]  # a torn last entry is left out
    bad = bytearray(pack)
    bad[entries[1].offset - fmt.ENTRY_HEADER_LEN] ^= 0xFF  # the second entry header's magic
    assert _scan(bytes(bad), pid) == entries[:1]

    def rehash(e, data):
        return block_id(data) == e.id if e.kind == KIND_MANIFEST else CODEC.decode(e.id, data) is not None

    assert _scan(pack, pid, check=rehash) == entries
    bad = bytearray(pack)
    bad[entries[3].offset + 20] ^= 0x01  # inside the payload of the fourth entry
    def checked(e, data):
        try:
            return rehash(e, data)
        except IntegrityError:
            return False

    assert _scan(bytes(bad), pid, check=checked) == entries[:3]
    with pytest.raises(fmt.PackDamaged):
        _scan(pack, os.urandom(16))


def test_the_store_writes_entry_headers_a_scan_reads_back(tmp_path):
    index = LmdbIndex(tmp_path / "index", map_size=1 << 30)
    files = LocalPackFiles(tmp_path / "blocks")
    store = PackedBlockStore(files, index, seal_idle=0)
    items = [_block(5000 + i) for i in range(6)]
    for bid, enc in items:
        store.put(bid, enc)
    store.sync([bid for bid, _ in items])  # flushed, located: no footer yet
    (pid, row), = _rows(store).items()
    assert row.state == PACK_OPEN
    raw = files.path(pid).read_bytes()
    scanned = list(fmt.scan_pack(lambda off, n: raw[off:off + n], len(raw), pid))
    assert [(e.id, d) for e, d in scanned] == items
    for e, _ in scanned:
        loc = store.location(e.id)
        assert (loc.pack, loc.offset, loc.length) == (pid, e.offset, e.length)
    store.close()
    index.close()


# -- writing ------------------------------------------------------------------------------------
def test_sealed_packs_describe_their_entries_and_match_the_locations(packs):
    items = [_block(100_000) for _ in range(25)]  # ~2.5 MB: several 1 MiB packs
    for bid, enc in items:
        packs.put(bid, enc)
    packs.sync([bid for bid, _ in items])
    packs.flush_all()
    rows = _rows(packs)
    assert len(rows) >= 3 and all(r.state == PACK_SEALED for r in rows.values())
    seen = {}
    for pid, row in rows.items():
        entries = fmt.read_footer(lambda off, n, pid=pid: packs.files.read(pid, off, n), row.size)
        assert row.entries == len(entries) and row.live_entries == len(entries)
        for e in entries:
            loc = packs.location(e.id)
            assert (loc.pack, loc.offset, loc.length) == (pid, e.offset, e.length)
            seen[e.id] = packs.files.read(pid, e.offset, e.length)
    assert seen == dict(items)
    with packs.index.read() as t:
        totals = pack_totals(t)
    assert totals["packs"] == len(rows) and totals["pack_bytes"] == sum(r.size for r in rows.values())


def test_concurrent_commits_share_one_flush(mem_packs):
    """Group commit: writers that appended before a flush started ride along with it."""
    packs = mem_packs
    n = 16
    barrier = threading.Barrier(n)
    errors = []

    def writer():
        try:
            bid, enc = _block(4000)
            packs.put(bid, enc)
            barrier.wait(timeout=30)
            packs.sync([bid])
            assert packs.get(bid) == enc
        except Exception as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert 1 <= packs.files.flushes < n / 2, packs.files.flushes


def test_putting_an_id_again_moves_its_location_and_kills_the_old_entry(packs):
    bid, enc = _block(5000)
    packs.put(bid, enc)
    packs.sync([bid])
    first = packs.location(bid)
    packs.flush_all()
    packs.put(bid, enc)  # a damaged block written again, or two writers racing
    packs.sync([bid])
    second = packs.location(bid)
    assert second.pack != first.pack
    rows = _rows(packs)
    assert rows[first.pack].live_entries == 0 and rows[second.pack].live_entries == 1
    assert packs.get(bid) == enc


def test_delete_drops_the_location_and_the_live_bytes(packs):
    a, b = _block(3000), _block(3000)
    for bid, enc in (a, b):
        packs.put(bid, enc)
    packs.sync([a[0], b[0]])
    pid = packs.location(a[0]).pack
    before = _rows(packs)[pid]
    packs.delete(a[0])
    after = _rows(packs)[pid]
    assert after.live_entries == before.live_entries - 1
    assert after.live_bytes == before.live_bytes - len(a[1])
    with pytest.raises(BlockNotFound):
        packs.get(a[0])
    assert packs.get(b[0]) == b[1]


def test_an_entry_a_writer_bound_and_gc_deleted_is_not_located_again(packs):
    """A writer binds its entry in its commit txn (``flush`` + ``bind``, no locate); GC deletes the
    block while its pack is still open; a later locate of that pack (another writer's ``sync``,
    the seal) must not bring the location back: it would be an orphan without a row, and many of
    them make GC refuse to run (guard: "a damaged or wrong index")."""
    (a, enc_a), (b, enc_b) = _block(3000), _block(3000)
    token = packs.put(a, enc_a)
    packs.flush([token])
    with packs.index.write() as t:
        packs.bind(t, [token])
    assert packs.location(a) is not None
    packs.delete(a)  # what GC's sweep does to an unreferenced block
    packs.put(b, enc_b)
    packs.sync([b])  # locates everything appended to the (local) open pack so far
    assert packs.location(b) is not None and packs.location(a) is None
    packs.flush_all()  # the seal, too
    assert packs.location(a) is None
    with pytest.raises(BlockNotFound):
        packs.get(a)


def test_a_writer_whose_open_pack_was_retired_fails_instead_of_pointing_at_it(packs):
    """GC retires the open pack of a writer whose lease it reaped; the stalled writer must not
    commit locations into a pack about to be deleted."""
    if not packs.files.can_flush:
        pytest.skip("only flushable packs have open rows")
    a = _block(3000)
    packs.put(*a)
    packs.sync([a[0]])
    pid = packs.location(a[0]).pack
    with packs.index.write() as t:
        row = t.get_pack(pid)
        assert row.state == PACK_OPEN
        t.put_pack(pid, PackRow(PACK_RETIRED, row.size, row.entries, row.live_bytes, row.live_entries,
                                row.created, row.state_time))
    b = _block(3000)
    packs.put(*b)
    with pytest.raises(TransientStoreError):
        packs.sync([b[0]])
    c = _block(3000)  # the next write goes to a new pack
    packs.put(*c)
    packs.sync([c[0]])
    assert packs.location(c[0]).pack != pid


def test_get_many_coalesces_neighbours_into_one_read(mem_packs):
    packs = mem_packs
    items = [_block(10_000) for _ in range(20)]
    for bid, enc in items:
        packs.put(bid, enc)
    packs.sync([bid for bid, _ in items])
    packs.files.reads = 0
    assert list(packs.get_many([bid for bid, _ in items])) == [enc for _, enc in items]
    assert packs.files.reads == 1
    packs.files.reads = 0  # in any order: neighbours in the pack, not in the list, share a read
    shuffled = [bid for bid, _ in items][::-1]
    assert list(packs.get_many(shuffled)) == [dict(items)[b] for b in shuffled]
    assert packs.files.reads == 1


def test_manifests_live_in_packs_too(packs):
    mid, encoded = os.urandom(32), b"manifest bytes"
    packs.put_manifest(mid, encoded)
    packs.sync([mid])
    assert packs.get_manifest(mid) == encoded
    assert [bid for bid, _ in packs.iter_ids()] == []  # not a data block
    packs.delete_manifest(mid)
    with pytest.raises(BlockNotFound):
        packs.get_manifest(mid)


def test_close_seals_the_open_pack(tmp_path):
    index = LmdbIndex(tmp_path / "index", map_size=1 << 30)
    files = LocalPackFiles(tmp_path / "blocks")
    store = PackedBlockStore(files, index, seal_idle=0)
    a = _block(3000)
    store.put(*a)
    store.sync([a[0]])
    store.close()
    with index.read() as t:
        rows = dict(t.iter_packs())
        assert list(t.iter_writers()) == []  # the pack's lease is gone with it
    (pid, row), = rows.items()
    assert row.state == PACK_SEALED
    with open(files.path(pid), "rb") as f:
        entries = fmt.parse_pack(f.read(), pid)
    assert [e.id for e in entries] == [a[0]]
    index.close()


def test_an_idle_open_pack_is_sealed(tmp_path):
    index = LmdbIndex(tmp_path / "index", map_size=1 << 30)
    store = PackedBlockStore(MemoryPackFiles(), index, seal_idle=0.2)
    try:
        a = _block(3000)
        store.put(*a)
        store.sync([a[0]])
        deadline = threading.Event()
        for _ in range(50):
            if all(r.state == PACK_SEALED for r in _rows(store).values()):
                break
            deadline.wait(0.1)
        assert [r.state for r in _rows(store).values()] == [PACK_SEALED]
    finally:
        store.close()
        index.close()


# -- the store over packs -------------------------------------------------------------------------
def test_every_name_has_its_manifest_in_a_pack(local_store):
    """Everything needed to read an object but its name is in the backend: put, multipart, copy."""
    from cas.blocks import packs_of

    s = local_store
    s.create_bucket("bkt")
    s.put("bkt", "one", os.urandom(300_000))
    up = s.create_upload("bkt", "multi")
    parts = [s.upload_part(up, n, os.urandom(5 << 20 if n == 1 else 1000)) for n in (1, 2)]
    s.complete_upload(up, [(p.number, p.etag) for p in parts])
    s.copy("bkt", "one", "bkt", "copied")
    packs = packs_of(s.blocks)
    for key in ("one", "multi", "copied"):
        info = s.stat("bkt", key)
        with s.index.read() as t:
            in_index = t.get_manifest(info.manifest_id)
        assert packs.get_manifest(info.manifest_id) == in_index, key


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_reseal_cuts_an_unfinished_pack_and_appends_its_footer(kind, tmp_path):
    files = MemoryPackFiles() if kind == "memory" else LocalPackFiles(tmp_path / "blocks")
    assert files.can_reseal
    pid = os.urandom(16)
    items = [(KIND_DATA, bid, enc, 777) for bid, enc in (_block(777), _block(777))]
    body, entries = _v2_pack(pid, items)
    sink = files.create(pid)
    sink.write(body + b"torn bytes of an entry never flushed")
    sink.flush()  # the writer dies here: no finish, no footer
    for _ in range(2):  # idempotent: a second reseal (a recover run again) gives the same pack
        files.reseal(pid, len(body), fmt.footer(entries, len(body)))
        size = files.size(pid)
        assert size == len(body) + fmt.footer_len(len(entries))
        assert fmt.read_footer(lambda off, n: files.read(pid, off, n), size) == entries
    with pytest.raises(BlockNotFound):
        files.reseal(os.urandom(16), 0, b"")
    files.close()
