"""Re-cutting a multipart upload at its part boundaries, so that its manifest is a single PUT's.

Each part is chunked on its own as it arrives, so FastCDC restarts at every part boundary:
without this, the same file sent by one PUT, by multipart with 5 MiB parts and with 8 MiB
parts would get three different manifests, and an edited copy would dedup worse by multipart
(about two extra blocks per boundary). Completing an upload re-cuts the bytes around each
boundary, reading only a few blocks there, and splices the new chunks between the parts'
blocks that the single stream would cut too.

Why the result is the single stream's cuts (``cas.chunker``: pyfastcdc's FastCDC 2020):

* **The next cut depends only on the window.** From a cut at ``p`` the chunker looks at the
  window ``w = D[p : min(len(D), p + max)]`` and nothing else: if ``len(w) <= min`` it cuts at
  the end of ``w``; otherwise it hashes pairs of bytes from ``min`` on, with the strict mask
  below ``center`` and the loose one above (``center = avg``, or ``len(w)`` when the window is
  shorter than ``avg``), and cuts at the first position whose hash matches, or at the end of
  ``w``. The gear hash starts from zero at every cut.
* **Lemma (a part's inner cuts are the stream's).** Let ``p`` be a cut of both the part's
  chunking and the single stream's, and let the part's chunking cut next at ``c`` strictly
  before the part's end. The part's window ``u`` is a prefix of the stream's window ``w``
  (same bytes; shorter only when the part ends within ``max``). If ``c - p = max``, ``u`` was a
  full window, equal to ``w``: same cut. Otherwise ``c`` is a hash match at a position that
  ``u`` scanned; every position ``u`` scans is scanned by ``w`` with the same mask (when ``u``
  is shorter than ``avg`` it scans only below its own length, which is below ``w``'s
  ``center``, where ``w`` uses the strict mask too), and the hashes agree (same bytes, same
  start). So ``w``'s first match is ``u``'s: the stream cuts at ``c`` too. By induction from a
  common cut, every cut of a part but its last (forced by the part's end) is the stream's.
  The last one is the stream's too when it is a ``max`` cut (the part's window had ``max``
  bytes: equal to the stream's), or when it ends the object.
* **Re-cut.** The object's start is a common cut. Walking the parts' blocks in order, a block
  whose start is a common cut and whose end is a common cut by the lemma is kept. At a block
  whose end is a part's forced end, the bytes from its start (a common cut) are chunked again
  as the stream would: each next cut is taken on a buffer that holds ``max`` bytes or the rest
  of the object (exactly the stream's window), or on a shorter buffer whose first cut falls
  strictly inside it (the same cut, by the lemma's argument: blocks are read one at a time,
  only until the next cut is settled). Re-cutting stops at the first new cut that
  falls on the start of a part's block (a cut of that part's chunking, now common), or at the
  object's end; from there the lemma applies again.

Reading: one boundary costs the part's last block and the next part's blocks up to the first
common cut (usually one to three: chunkings that start at different offsets agree after a cut
or two), plus at most ``max`` bytes of look-ahead where no cut falls sooner; the rest of the object is not read. Data without any
content-defined cut (e.g. runs of zeros, cut only at ``max``) may never agree again when the part
size is not a multiple of ``max``: the re-cut then runs on to the object's end, in bounded memory,
which is what a single PUT of those bytes would have cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .chunker import Chunker
from .errors import IntegrityError
from .manifest import Manifest


@dataclass(frozen=True)
class _Block:
    id: bytes
    length: int
    start: int  # offset in the object
    forced_end: bool  # its end is its part's end, where the part's chunking stopped for want of bytes


class Recut:
    """The re-cut of a multipart upload's part manifests (see the module docstring).

    Iterate ``chunks()`` once (e.g. through ``BlockWriter.write_chunks``, which pins and stores
    them): it yields the new chunks, in order, and records where they go among the parts' blocks.
    Then ``manifest(written)`` splices the manifest of the written chunks in. ``read_blocks``
    returns the verified bytes of the given block ids, in order.
    """

    def __init__(self, parts: Sequence[Manifest], read_blocks: Callable[[list[bytes]], list[bytes]],
                 chunker: Chunker):
        self._chunker = chunker
        self._max = chunker.params.max
        self._read = read_blocks
        self._blocks: list[_Block] = []
        offset = 0
        for part in parts:
            for n, (bid, length) in enumerate(part.entries()):
                self._blocks.append(_Block(bid, length, offset, n == len(part) - 1))
                offset += length
        self.size = offset
        self._at = {b.start: i for i, b in enumerate(self._blocks)}
        self._entries: list[tuple[bytes | None, int]] = []  # None: the next written chunk
        self.blocks_read = 0
        self.regions = 0  # runs of re-cut chunks
        self.cut = 0  # re-cut chunks

    def _keeps(self, i: int) -> bool:
        """Whether block ``i``'s end is certainly a cut of the single stream (its start is one)."""
        b = self._blocks[i]
        return not b.forced_end or i == len(self._blocks) - 1 or b.length == self._max

    def chunks(self) -> Iterator[bytes]:
        """The re-cut chunks, in object order; parts' blocks kept are recorded between them."""
        blocks, n = self._blocks, len(self._blocks)
        # invariant: ``buf`` holds the bytes of blocks [i, j) (read ahead by an earlier re-cut)
        i = j = 0
        buf = b""
        while i < n:
            if self._keeps(i):
                self._entries.append((blocks[i].id, blocks[i].length))
                if j > i:
                    buf = buf[blocks[i].length:]
                else:
                    j = i + 1
                i += 1
                continue
            self.regions += 1
            pos = blocks[i].start  # a cut of the single stream
            while True:
                cut = self._chunker.first_cut(buf)
                while not 0 < cut < len(buf) and len(buf) < self._max and j < n:
                    buf += self._read_block(j)  # the bytes so far do not settle the next cut
                    j += 1
                    cut = self._chunker.first_cut(buf)
                chunk, buf = buf[:cut], buf[cut:]
                pos += cut
                self._entries.append((None, cut))
                self.cut += 1
                yield chunk
                if pos == self.size:
                    i = n
                    break
                k = self._at.get(pos)
                if k is not None:  # a part's block starts at a cut of the stream: in sync again
                    i = k
                    break

    def _read_block(self, j: int) -> bytes:
        b = self._blocks[j]
        data = self._read([b.id])[0]
        if len(data) != b.length:
            raise IntegrityError(f"block {b.id.hex()[:16]} has {len(data)} bytes, its manifest says {b.length}")
        self.blocks_read += 1
        return data

    def manifest(self, written: Manifest) -> Manifest:
        """The object's manifest: the kept blocks with ``written`` (the chunks' ids) spliced in."""
        new = iter(written.entries())
        ids, lengths = [], []
        for bid, length in self._entries:
            if bid is None:
                bid, got = next(new)
                if got != length:
                    raise IntegrityError("the re-cut chunks were written with other lengths")
            ids.append(bid)
            lengths.append(length)
        if next(new, None) is not None:
            raise IntegrityError("more re-cut chunks were written than were cut")
        return Manifest(tuple(ids), tuple(lengths))
