"""Marking: which manifests and blocks the names, open uploads and recent commits rely on.

``MarkSet`` is the compact set GC and verify keep in memory: an id is reduced to
its first byte (one of 256 buckets) and the next 8 bytes (a u64 in a sorted
``array('Q')``). That is 8 bytes per marked id once compacted (up to about 17
while a bucket fills between compactions), against ~100 for a Python set of
32-byte ``bytes``. Two ids that share their first 9 bytes look the same: the
only consequence is that a garbage id sharing a prefix with a live one is kept
(never the other way round), which for 72 bits of prefix is negligible.

``mark_snapshot`` marks from one read transaction: every object's manifest and
every part's manifest of an open multipart upload, then the blocks of each
marked manifest (each manifest is decoded once, whatever number of names share
it). ``Marker.remark`` adds the manifests committed after the snapshot (the
``refs`` log, keyed by commit sequence) and is called inside every GC write
transaction that condemns or deletes, so "condemned ⇒ unreferenced at that
moment" holds (DESIGN §4, "commit after mark").

Not thread-safe: one GC or verify run owns its sets.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Callable, Iterable

from ..errors import IntegrityError
from ..ids import ID_LEN
from ..manifest import ENTRIES_OFFSET, ENTRY_SIZE, entry_count

# per manifest entry: first id byte, next 8 bytes as u64, skip the other 23 id bytes and the length
_ENTRY_KEY = struct.Struct(">BQ27x")  # one manifest entry: first id byte, next 8 bytes, rest skipped
assert _ENTRY_KEY.size == ENTRY_SIZE
_MIN_COMPACT = 1024


class MarkSet:
    """A set of 32-byte ids, 8 bytes each once compacted (see the module docstring).

    While marking, ids are appended and each bucket is sorted and deduplicated
    whenever it has doubled; ``freeze`` compacts the rest. After that, adds keep
    the buckets sorted (re-marks are few) and membership is a binary search.
    """

    __slots__ = ("_buckets", "_clean", "_frozen")

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(256)]
        self._clean = [0] * 256  # length of each bucket right after its last compaction
        self._frozen = False

    @staticmethod
    def _key(id_: bytes) -> tuple[int, int]:
        return id_[0], int.from_bytes(id_[1:9], "big")

    def add(self, id_: bytes) -> None:
        b, q = self._key(id_)
        self._add_key(b, q)

    def _add_key(self, b: int, q: int) -> None:
        arr = self._buckets[b]
        if self._frozen:
            i = bisect.bisect_left(arr, q)
            if i == len(arr) or arr[i] != q:
                arr.insert(i, q)
            return
        arr.append(q)
        if len(arr) >= 2 * self._clean[b] + _MIN_COMPACT:
            self._compact(b)

    def add_manifest(self, encoded: bytes) -> int:
        """Mark every block of an encoded manifest; returns how many entries it has."""
        count = entry_count(encoded)  # IntegrityError when damaged
        add = self._add_key
        # each entry unpacked straight into (bucket byte, key): the ids are not needed as bytes
        for b, q in _ENTRY_KEY.iter_unpack(memoryview(encoded)[ENTRIES_OFFSET:]):
            add(b, q)
        return count

    def _compact(self, b: int) -> None:
        arr = array("Q", sorted(set(self._buckets[b])))
        self._buckets[b] = arr
        self._clean[b] = len(arr)

    def freeze(self) -> None:
        """Sort and deduplicate every bucket (membership tests need it; adds stay allowed)."""
        if not self._frozen:
            for b in range(256):
                if len(self._buckets[b]) != self._clean[b]:
                    self._compact(b)
            self._frozen = True

    def __contains__(self, id_: bytes) -> bool:
        self.freeze()
        b, q = self._key(id_)
        arr = self._buckets[b]
        i = bisect.bisect_left(arr, q)
        return i < len(arr) and arr[i] == q

    def __len__(self) -> int:
        self.freeze()
        return sum(len(a) for a in self._buckets)

    def nbytes(self) -> int:
        """Bytes held by the id arrays (the per-id cost; fixed overhead not counted)."""
        return sum(a.buffer_info()[1] * a.itemsize for a in self._buckets)


def manifest_ids_of(record: dict) -> bytes | None:
    """The manifest id an object or part record points at (``None`` when it has none)."""
    m = record.get("m")
    return bytes.fromhex(m) if m else None


class Marker:
    """The marks of one GC or verify run: manifests and blocks, plus re-marking after the snapshot.

    ``expired_uploads`` names uploads whose parts are not marked (a dry run that
    predicts what expiring them would free).
    """

    def __init__(self) -> None:
        self.manifests = MarkSet()
        self.blocks = MarkSet()
        self.snapshot_seq = 0
        self.remarked_seq = 0

    def mark_snapshot(self, t, *, skip_uploads: Iterable[str] = (),
                      tick: Callable[[int], None] | None = None) -> None:
        """Mark from one read txn ``t``: names and open uploads → manifests → blocks."""
        skip = set(skip_uploads)
        self.snapshot_seq = self.remarked_seq = t.last_seq()
        for _, _, rec in t.iter_objects():
            mid = manifest_ids_of(rec)
            if mid is not None:
                self.manifests.add(mid)
        for upload_id, _, rec in t.iter_parts():
            if upload_id in skip:
                continue
            mid = manifest_ids_of(rec)
            if mid is not None:
                self.manifests.add(mid)
        self.manifests.freeze()
        for mid, raw in t.iter_manifests():
            if mid in self.manifests:
                try:
                    n = self.blocks.add_manifest(raw)
                except IntegrityError:
                    continue  # verify reports it; its blocks stay unmarked
                if tick is not None:
                    tick(n)
        self.blocks.freeze()

    def remark(self, t) -> int:
        """Inside a txn: mark every manifest bound after what was marked so far; returns how many."""
        n = 0
        last = self.remarked_seq
        for seq, mid in t.iter_refs(self.remarked_seq):
            self.manifests.add(mid)
            raw = t.get_manifest(mid)
            if raw is not None:
                try:
                    self.blocks.add_manifest(raw)
                except IntegrityError:
                    pass  # as above
            n += 1
            last = max(last, seq)
        # commits that bound no manifest (deletes, bucket changes) also advance the sequence
        self.remarked_seq = max(last, t.last_seq())
        return n

    def is_marked(self, block_id: bytes) -> bool:
        return block_id in self.blocks


assert ID_LEN >= 9
