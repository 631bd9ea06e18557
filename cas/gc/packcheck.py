"""Verify over packs: the pack checks of ``cas verify``, and its reads in pack order (DESIGN §8).

``verify.py`` runs this when the store keeps its blocks in packs, inside its one read-txn snapshot
of the index and under the GC lock (no pack is retired, repacked or deleted meanwhile).

1. **Packs** (``scan_packs``): the ``packs`` rows merged with the backend's listing (both in pack
   id order). A ``SEALED`` pack must be there (``missing_pack``), have its row's size
   (``pack_size_mismatch``) and a footer that parses (``pack_footer_damaged``; two ranged reads,
   ``format.read_footer``); each footer entry a location points at (same kind, id and offset)
   must agree with it on the length (``location_not_in_footer``). ``OPEN`` packs (of live
   writers, or abandoned by dead ones: gc repacks those) and ``RETIRED`` packs (gc deletes them
   after the grace) are counted, not checked. A pack file without a row is ``unknown_pack`` once
   a fresh txn confirms it (a writer may have created it after the snapshot); it is reported,
   never deleted.
2. **Locations** (``scan_locations``): block rows merged with data locations (both in id order),
   then manifest locations. A row without a location, or whose location lies in a missing pack or
   past the end of a pack cut short, is ``missing_block`` (the pack's finding names the objects
   too); a location whose length is not the row's is ``size_mismatch``; one into a retired pack
   is ``location_in_retired_pack`` (gc would delete the bytes). Every location counts towards its
   pack's live figures, which must be the row's (``pack_live_mismatch``: gc retires a pack whose
   row says nothing in it is live).
3. **Strays**: a sealed pack with more locations than matched footer entries is scanned again to
   name the locations that point at no entry (``location_not_in_footer``).
4. **Reads** (``read_blocks``): ``--deep`` reads every located block, and every manifest's copy,
   pack by pack in offset order, in ranges of up to ``READ_RANGE`` bytes on ``workers`` threads
   (instead of one random read per block); without it only blocks marked damaged are read. A block
   is decoded and re-hashed (``corrupt_block``); a manifest copy must hash to its id
   (``damaged_manifest_copy``; the index's copy is what readers use).

What repair may do about each finding is kept in ``PackFixes`` for ``repair.py``.

Memory: one small record per pack, the located entries of packs whose footer cannot be used (open
or damaged packs, each below the target pack size) and one range per worker in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import blocklife
from ..blocks.packs import format as fmt
from ..errors import BlockNotFound, IntegrityError
from ..ids import block_id
from ..index.schema import (
    DAMAGED,
    DELETING,
    KIND_DATA,
    KIND_MANIFEST,
    PACK_OPEN,
    PACK_RETIRED,
    BlockRow,
    Loc,
    PackRow,
)
from .report import Finding, human_size

log = logging.getLogger(__name__)

READ_RANGE = 8 << 20  # one ranged read of a deep verify at most
READ_GAP = 1 << 20  # dead bytes a range may span rather than start another read

# what verify found a pack to be
OK, MISSING, CUT, FOOTER, OPEN, RETIRED, NOROW = "ok", "missing", "cut", "footer", "open", "retired", "norow"

KINDS = {
    "missing_pack": "a pack that locations point into is not in the backend",
    "pack_size_mismatch": "a pack's stored size differs from its row (cut short or overwritten)",
    "pack_footer_damaged": "a sealed pack's footer does not parse or fails its checksum",
    "location_not_in_footer": "a location points at no entry of its pack's footer (or into a pack without row)",
    "location_in_retired_pack": "a location points into a retired pack, which gc deletes after the grace",
    "pack_live_mismatch": "a pack's live figures differ from the locations pointing into it",
    "damaged_manifest_copy": "a manifest's copy in a pack does not hash to its id",
    "unknown_pack": "a pack in the backend has no row in the index (left in place)",
}

# an item to read: (kind, id, offset, length, row or None for a manifest)
Item = tuple[int, bytes, int, int, "BlockRow | None"]


class _Pack:
    """One pack as verify saw it."""

    __slots__ = ("row", "state", "size", "matched", "entries", "bytes", "lost", "manifests_lost", "finding",
                 "reads")

    def __init__(self, row: PackRow | None, state: str, size: int | None):
        self.row = row
        self.state = state
        self.size = size  # the stored size (None when missing)
        self.matched = 0  # footer entries a location points at
        self.entries = 0  # locations into it
        self.bytes = 0
        self.lost: list[bytes] = []  # block ids (with rows) whose bytes are gone with it
        self.manifests_lost = 0
        self.finding: Finding | None = None
        self.reads: list[Item] = []  # located entries to read without its footer


@dataclass
class PackFixes:
    """What ``repair.py`` may do about the pack findings of one run (ids in bytes)."""

    live_delta: dict[bytes, tuple[int, int, Finding]] = field(default_factory=dict)  # pack -> entries, bytes
    relocate: list[tuple[int, bytes, bytes, Finding]] = field(default_factory=list)  # kind, id, pack
    evacuate: dict[bytes, Finding] = field(default_factory=dict)  # packs to move every location out of
    manifests: dict[bytes, list[Finding]] = field(default_factory=dict)  # manifest -> findings putting it fixes


class PackCheck:
    """The pack passes of one verify run (``v`` is the ``verify._Verify`` that owns the report)."""

    def __init__(self, v, packs):
        self.v = v
        self.packs = packs  # the PackedBlockStore
        self.files = packs.files
        self.report = v.report
        self.deep = v.deep
        self.state: dict[bytes, _Pack] = {}
        self.unrowed: dict[bytes, tuple[int, float]] = {}  # pack files without a row in the snapshot
        self._manifests_located = 0  # referenced manifests with a copy in a pack
        self.fixes = PackFixes()

    def _pack_finding(self, kind: str, pid: bytes, detail: str) -> Finding:
        return self.v._add(Finding(kind, "", (), detail, pack=pid.hex()))

    def _block_finding(self, kind: str, eid: bytes, row: BlockRow | None, detail: str, pid: bytes) -> Finding:
        """A finding about one located entry; a data block with a row is traced to its names."""
        f = Finding(kind, eid.hex(), (), detail, pack=pid.hex())
        if row is not None:
            self.v._add(f, eid)
            self.v._rows.setdefault(eid, row)
        else:
            self.v._add(f)
        return f

    # -- 1: packs ----------------------------------------------------------------------------------
    def scan_packs(self, t) -> None:
        r = self.report
        now = self.v.store.clock()
        alive = {w for w, expiry, owner in t.iter_writer_owners() if blocklife.writer_alive(expiry, owner, now)}
        total = sum(1 for _ in t.iter_packs())
        bar = self.v.progress("verify: packs", total)
        try:
            for pid, row, listed in _merge(t.iter_packs(), ((p, (s, c)) for p, s, c in self.files.iter_packs())):
                if row is None:
                    self.unrowed[pid] = listed
                    continue
                size = listed[0] if listed is not None else None
                r.packs += 1
                if row.state != PACK_RETIRED:
                    r.pack_bytes += row.size
                if row.state == PACK_RETIRED:
                    r.packs_retired += 1
                    self.state[pid] = _Pack(row, RETIRED, size)
                elif row.state == PACK_OPEN:
                    r.packs_open += 1
                    if pid not in alive:
                        r.packs_abandoned += 1
                    self._open(pid, row, size)
                else:
                    self._sealed(t, pid, row, size)
                bar.update(1)
        finally:
            bar.close()

    def _open(self, pid: bytes, row: PackRow, size: int | None) -> None:
        if size is None:
            self.state[pid] = _Pack(row, MISSING, None)
        elif size < row.size:  # what was flushed and located is gone
            p = self.state[pid] = _Pack(row, CUT, size)
            p.finding = self._pack_finding("pack_size_mismatch", pid, f"open pack {pid.hex()} is {size} bytes, "
                                           f"its row says {row.size} were flushed")
        else:
            self.state[pid] = _Pack(row, OPEN, size)

    def _sealed(self, t, pid: bytes, row: PackRow, size: int | None) -> None:
        if size is None:
            self.state[pid] = _Pack(row, MISSING, None)
            return
        if size != row.size:
            p = self.state[pid] = _Pack(row, CUT, size)
            p.finding = self._pack_finding("pack_size_mismatch", pid,
                                           f"pack {pid.hex()} is {size} bytes, its row says {row.size}")
            self.fixes.evacuate[pid] = p.finding
            return
        try:
            entries = self._footer(pid, size)
        except BlockNotFound:  # gone since the listing
            self.state[pid] = _Pack(row, MISSING, None)
            return
        except IntegrityError as exc:
            p = self.state[pid] = _Pack(row, FOOTER, size)
            p.finding = self._pack_finding("pack_footer_damaged", pid, str(exc))
            self.fixes.evacuate[pid] = p.finding
            return
        p = self.state[pid] = _Pack(row, OK, size)
        self.report.packs_checked += 1
        for e in entries:
            loc = t.get_loc(e.kind, e.id)
            if loc is None or loc.pack != pid or loc.offset != e.offset:
                continue
            p.matched += 1
            if loc.length != e.length or loc.raw_len != e.raw_len:
                row_ = t.get_block(e.id) if e.kind == KIND_DATA else None
                f = self._block_finding("location_not_in_footer", e.id, row_,
                                        f"its location says {loc.length} bytes ({loc.raw_len} raw) at offset "
                                        f"{loc.offset} of pack {pid.hex()}, the footer {e.length} ({e.raw_len})",
                                        pid)
                self.fixes.relocate.append((e.kind, e.id, pid, f))

    def _footer(self, pid: bytes, size: int) -> list[fmt.Entry]:
        def read(offset: int, length: int) -> bytes:
            data = self.files.read(pid, offset, length)
            self.report.pack_bytes_read += len(data)
            return data

        return fmt.read_footer(read, size, f"pack {pid.hex()}")

    def _pack(self, pid: bytes) -> _Pack:
        """The record of a pack a location points into (made for a pack without a row)."""
        p = self.state.get(pid)
        if p is None:
            listed = self.unrowed.get(pid)
            p = self.state[pid] = _Pack(None, NOROW if listed is not None else MISSING,
                                        listed[0] if listed is not None else None)
        return p

    # -- 2: locations --------------------------------------------------------------------------------
    def scan_locations(self, t, tally) -> None:
        """Block rows against their locations (and the rows' figures, as ``verify._blocks`` counts them)."""
        v, r = self.v, self.report
        bar = v.progress("verify: blocks", blocklife.block_count(t))
        try:
            for bid, row, loc in _merge(t.iter_blocks(), t.iter_locs(KIND_DATA)):
                if loc is not None:
                    r.locations += 1
                    p = self._pack(loc.pack)
                    p.entries += 1
                    p.bytes += loc.length
                if row is None:
                    r.orphans += 1  # located without a row: garbage for gc
                    continue
                v._count_row(bid, row, tally)
                bar.update(1)
                if row.state == DELETING:
                    continue  # on its way out
                if loc is None:
                    self._missing(bid, row, "not in any pack")
                    continue
                self._located(bid, row, loc, p)
        finally:
            bar.close()
        for mid, loc in t.iter_locs(KIND_MANIFEST):
            r.locations += 1
            p = self._pack(loc.pack)
            p.entries += 1
            p.bytes += loc.length
            self._located_manifest(t, mid, loc, p)
        self._strays(t)
        self._live_figures()

    def _missing(self, bid: bytes, row: BlockRow, detail: str, pid: bytes | None = None) -> None:
        f = Finding("missing_block", bid.hex(), (), detail, pack=pid.hex() if pid else "")
        self.v._add(f, bid)
        self.v._rows[bid] = row

    def _located(self, bid: bytes, row: BlockRow, loc: Loc, p: _Pack) -> None:
        v = self.v
        pid = loc.pack
        if loc.length != row.stored_size:
            v._add(Finding("size_mismatch", bid.hex(), (),
                           f"its location in pack {pid.hex()} has {loc.length} bytes, the row says "
                           f"{row.stored_size}", pack=pid.hex()), bid)
            v._rows[bid] = row
        if p.state == MISSING:
            p.lost.append(bid)
            self._missing(bid, row, f"its pack {pid.hex()} is missing", pid)
            return
        if p.state in (CUT, OPEN) and loc.offset + loc.length > self._size(pid, p, loc):
            p.lost.append(bid)
            self._missing(bid, row, f"its pack {pid.hex()} ends at {p.size} bytes, before the block's "
                                    f"{loc.length} bytes at offset {loc.offset}", pid)
            if p.finding is None:
                p.finding = self._pack_finding("pack_size_mismatch", pid, f"pack {pid.hex()} ends at {p.size} "
                                               "bytes, before blocks located in it")
            return
        if p.state == RETIRED:
            f = self._block_finding("location_in_retired_pack", bid, row, f"it is located in pack {pid.hex()}, "
                                    "which is retired (gc deletes it after the grace)", pid)
            self.fixes.relocate.append((KIND_DATA, bid, pid, f))
        elif p.state == NOROW:
            f = self._block_finding("location_not_in_footer", bid, row,
                                    f"it is located in pack {pid.hex()}, which has no row in the index", pid)
            self.fixes.relocate.append((KIND_DATA, bid, pid, f))
        # with --deep an intact sealed pack is read through its footer (read_blocks); a damaged
        # block is read either way
        if (self.deep and p.state != OK) or (row.state == DAMAGED and not self.deep):
            p.reads.append((KIND_DATA, bid, loc.offset, loc.length, row))

    def _size(self, pid: bytes, p: _Pack, loc: Loc) -> int:
        """The pack's size; an open pack grows while verify runs, so look again when ``loc`` is past it."""
        if p.state == OPEN and loc.offset + loc.length > (p.size or 0):
            try:
                p.size = self.files.size(pid)
            except BlockNotFound:
                p.state, p.size = MISSING, 0
        return p.size or 0

    def _located_manifest(self, t, mid: bytes, loc: Loc, p: _Pack) -> None:
        pid = loc.pack
        if mid in self.v.manifests:
            self._manifests_located += 1
        if p.state == MISSING or (p.state in (CUT, OPEN) and loc.offset + loc.length > self._size(pid, p, loc)):
            p.manifests_lost += 1  # repair puts it again from the index (evacuating the pack)
            if p.state == OPEN and p.finding is None:
                p.finding = self._pack_finding("pack_size_mismatch", pid, f"pack {pid.hex()} ends at {p.size} "
                                               "bytes, before entries located in it")
            return
        if p.state == RETIRED:
            f = self._block_finding("location_in_retired_pack", mid, None, f"manifest {mid.hex()} is located in "
                                    f"pack {pid.hex()}, which is retired (gc deletes it after the grace)", pid)
            self.fixes.manifests.setdefault(mid, []).append(f)
        elif p.state == NOROW:
            f = self._block_finding("location_not_in_footer", mid, None, f"manifest {mid.hex()} is located in "
                                    f"pack {pid.hex()}, which has no row in the index", pid)
            self.fixes.manifests.setdefault(mid, []).append(f)
        if self.deep and p.state != OK:
            p.reads.append((KIND_MANIFEST, mid, loc.offset, loc.length, None))

    # -- 3: strays and live figures ---------------------------------------------------------------
    def _strays(self, t) -> None:
        suspects = {pid: p for pid, p in self.state.items() if p.state == OK and p.entries != p.matched}
        if not suspects:
            return
        listed: dict[bytes, set[tuple[int, bytes, int]]] = {}
        for pid, p in suspects.items():
            try:
                listed[pid] = {(e.kind, e.id, e.offset) for e in self._footer(pid, p.size or 0)}
            except (BlockNotFound, IntegrityError) as exc:  # changed under us: say so, do not guess
                listed[pid] = set()
                log.warning("cannot read the footer of pack %s again: %s", pid.hex(), exc)
        for kind in (KIND_DATA, KIND_MANIFEST):
            for eid, loc in t.iter_locs(kind):
                entries = listed.get(loc.pack)
                if entries is None or (kind, eid, loc.offset) in entries:
                    continue
                row = t.get_block(eid) if kind == KIND_DATA else None
                what = "block" if kind == KIND_DATA else f"manifest {eid.hex()}"
                f = self._block_finding("location_not_in_footer", eid, row,
                                        f"the {what}'s location ({loc.length} bytes at offset {loc.offset}) is no "
                                        f"entry of pack {loc.pack.hex()}'s footer", loc.pack)
                if kind == KIND_MANIFEST:
                    if t.get_manifest(eid) is not None:
                        self.fixes.manifests.setdefault(eid, []).append(f)
                    continue
                self.fixes.relocate.append((kind, eid, loc.pack, f))
                if self.deep and row is not None and row.state != DELETING:
                    suspects[loc.pack].reads.append((kind, eid, loc.offset, loc.length, row))

    def _live_figures(self) -> None:
        for pid, p in self.state.items():
            row = p.row
            if row is None or (row.live_entries, row.live_bytes) == (p.entries, p.bytes):
                continue
            f = self._pack_finding("pack_live_mismatch", pid,
                                   f"pack {pid.hex()}'s row counts {row.live_entries} live entries "
                                   f"({row.live_bytes} bytes); {p.entries} locations ({p.bytes} bytes) point into it")
            self.fixes.live_delta[pid] = (p.entries - row.live_entries, p.bytes - row.live_bytes, f)

    # -- 4: reads ----------------------------------------------------------------------------------
    def read_blocks(self, t) -> None:
        """Read and re-hash what needs reading, pack by pack (every located entry with ``deep``)."""
        v = self.v
        total = blocklife.block_count(t) if self.deep else sum(
            1 for p in self.state.values() for item in p.reads if item[4] is not None)
        if not (self.deep or total):
            return
        bar = v.progress("verify: blocks (deep)" if self.deep else "verify: damaged blocks", total)
        v._tick = bar.update
        pool = ThreadPoolExecutor(max_workers=v.workers, thread_name_prefix="cas-verify")
        inflight: list[Future] = []
        try:
            for pid in sorted(self.state):
                p = self.state[pid]
                items = list(p.reads)
                if self.deep and p.state == OK:
                    items.extend(self._footer_items(t, pid, p))
                items.sort(key=lambda item: item[2])
                for group in _groups(items):
                    inflight.append(pool.submit(self._read_group, pid, group))
                    if len(inflight) > 2 * v.workers:
                        self._collect(inflight.pop(0).result())
            for fut in inflight:
                self._collect(fut.result())
            inflight = []
        finally:
            for fut in inflight:
                fut.cancel()
            pool.shutdown(wait=True)
            bar.close()

    def _footer_items(self, t, pid: bytes, p: _Pack) -> list[Item]:
        try:
            entries = self._footer(pid, p.size or 0)
        except (BlockNotFound, IntegrityError) as exc:
            log.warning("cannot read the footer of pack %s again: %s", pid.hex(), exc)
            return []
        items: list[Item] = []
        for e in entries:
            loc = t.get_loc(e.kind, e.id)
            if loc is None or loc.pack != pid or loc.offset != e.offset:
                continue
            if e.kind == KIND_MANIFEST:
                items.append((e.kind, e.id, loc.offset, loc.length, None))
                continue
            row = t.get_block(e.id)
            if row is not None and row.state != DELETING:  # else an orphan, or on its way out
                items.append((e.kind, e.id, loc.offset, loc.length, row))
        return items

    def _read_group(self, pid: bytes, group: list[Item]) -> list[tuple]:
        """In a worker: read one range of ``pid`` and check each item in it."""
        v = self.v
        start = group[0][2]
        end = max(item[2] + item[3] for item in group)
        try:
            data = self.files.read(pid, start, end - start)
        except (BlockNotFound, IntegrityError) as exc:  # gone or cut short since: item by item
            if len(group) > 1:
                return [out for item in group for out in self._read_group(pid, [item])]
            kind, eid, offset, length, row = group[0]
            if row is not None:
                v._tick(1)
                return [("block", eid, row, "missing_block", f"cannot read it from pack {pid.hex()}: {exc}", 0)]
            return [("manifest", eid, f"cannot read its copy from pack {pid.hex()}: {exc}")]
        v.limit.take(len(data))
        out: list[tuple] = [("read", len(data))]
        view = memoryview(data)
        for kind, eid, offset, length, row in group:
            raw = bytes(view[offset - start:offset - start + length])
            if kind == KIND_MANIFEST:
                if block_id(raw) != eid:
                    out.append(("manifest", eid, f"its copy in pack {pid.hex()} does not hash to its id"))
                continue
            problem = None
            try:
                v.codec.decode(eid, raw)
            except IntegrityError as exc:
                problem = ("corrupt_block", f"{exc} (in pack {pid.hex()} at offset {offset})")
            if problem is None and row.state == DAMAGED:
                problem = ("stale_damage_mark", "marked damaged, but it reads back correctly")
            out.append(("block", eid, row, *(problem or (None, None)), length))
            v._tick(1)
        return out

    def _collect(self, results: list[tuple]) -> None:
        v = self.v
        for res in results:
            if res[0] == "read":
                self.report.pack_bytes_read += res[1]
            elif res[0] == "manifest":
                _, mid, detail = res
                f = v._add(Finding("damaged_manifest_copy", mid.hex(), (), f"manifest {mid.hex()}: {detail}"))
                self.fixes.manifests.setdefault(mid, []).append(f)
            else:
                _, bid, row, kind, detail, nread = res
                v.report.bytes_read += nread
                if kind is None:
                    continue
                referenced = bid in v.marked
                v._add(Finding(kind, bid.hex(), (), detail + ("" if referenced else " (unreferenced)")), bid)
                v._rows[bid] = row

    # -- the end ---------------------------------------------------------------------------------
    def finish(self) -> None:
        """Pack findings for missing packs; ``manifests_not_in_packs``."""
        self.report.manifests_not_in_packs = max(0, len(self.v.manifests) - self._manifests_located)
        for pid, p in sorted(self.state.items()):
            if p.state != MISSING or not p.entries:
                continue
            how = "has no row and is not" if p.row is None else "is not"
            p.finding = self._pack_finding("missing_pack", pid, f"pack {pid.hex()} {how} in {self.files.kind}: "
                                           f"{len(p.lost)} blocks and {p.manifests_lost} manifest copies "
                                           "located in it are lost")
            self.fixes.evacuate[pid] = p.finding

    def name_objects(self) -> None:
        """After verify traced block findings to names: a pack's finding names its lost blocks' objects."""
        for p in self.state.values():
            if p.finding is None or not p.lost:
                continue
            names: set[str] = set()
            for bid in p.lost:
                for f in self.v._by_block.get(bid, ()):
                    names.update(f.objects)
            p.finding.objects = tuple(sorted(names))

    def unknown_packs(self) -> None:
        """Pack files without a row: confirmed in a fresh txn (a writer may have added the row since)."""
        if not self.unrowed:
            return
        with self.v.index.read() as t:
            unknown = [(pid, listed) for pid, listed in sorted(self.unrowed.items()) if t.get_pack(pid) is None]
        for pid, (size, _created) in unknown:
            self._pack_finding("unknown_pack", pid, f"pack {pid.hex()} ({human_size(size)}) in {self.files.kind} has "
                               "no row in the index; left in place (cas never deletes it on its own)")


def _merge(left: Iterator[tuple[bytes, object]], right: Iterator[tuple[bytes, object]]
           ) -> Iterator[tuple[bytes, object, object]]:
    """``(key, left value or None, right value or None)`` of two iterators sorted by key."""
    a = next(left, None)
    b = next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            yield a[0], a[1], None
            a = next(left, None)
        elif a is None or b[0] < a[0]:
            yield b[0], None, b[1]
            b = next(right, None)
        else:
            yield a[0], a[1], b[1]
            a = next(left, None)
            b = next(right, None)


def _groups(items: list[Item]) -> Iterator[list[Item]]:
    """Items in offset order, grouped into ranges of at most ``READ_RANGE`` bytes."""
    group: list[Item] = []
    end = 0
    for item in items:
        _, _, offset, length, _ = item
        if group and (offset + length - group[0][2] > READ_RANGE or offset - end > READ_GAP or offset < end):
            yield group
            group = []
        group.append(item)
        end = max(end, offset + length) if len(group) > 1 else offset + length
    if group:
        yield group
