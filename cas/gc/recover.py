"""Rebuild a store's index from its backend: ``cas recover`` (DESIGN §8).

The backend holds everything but transient state: blocks and manifests in packs, the store's
identity in ``store.json``, names in the metadata log (``cas/meta``). ``recover(settings)``:

1. **Refuse** while another process has the index open (a ``cas serve``: the LMDB reader table,
   or the sessions of a PostgreSQL database, as ``cas migrate`` checks) and hold the GC lock for the whole run (no gc, verify or
   second recover beside it). A backend with no pack and no meta object is an error: there is
   nothing to recover (a mistyped ``--blocks``), and nothing is created.
2. **A fresh index** in ``DATA/index.recover`` (one a crashed run left is deleted first); for a
   PostgreSQL index, in the schema ``cas_recover`` of the same database.
3. **Packs**, streamed one at a time. A sealed pack's footer (two ranged reads) gives its entries;
   a pack without a valid footer — the open pack of a ``cas serve`` killed with -9, whose flushed
   entries were acknowledged — is scanned entry by entry (pack format v2 entry headers) up to its
   first incomplete or unverifiable entry: every scanned block is decoded with the store's codec
   (which re-hashes it against its id), every manifest re-hashed. A scanned pack that was never
   sealed is then **sealed in place** where the backend allows it (local files: cut after its
   last good entry, footer appended, fsync — ``PackFiles.reseal``), so the next gc and verify see
   an ordinary sealed pack; S3 packs are never readable unsealed, so there a footer that fails is
   damage, and the pack is indexed from its scan as it is (verify reports its footer). Each entry
   gets a location, each data block a ``LIVE`` row, each manifest its ``manifests`` row (its
   encoding, exactly as a writer stores it). An id found in several packs keeps one location:
   the one in a sealed (footer-read) pack, then the newest pack, wins (any copy is correct:
   content-addressed). Every pack gets a ``SEALED`` row whose size, entry count and live figures
   are what verify and gc compute (live = the locations pointing into it). Packs that cannot be
   read at all (bad header) get no row and are reported (verify calls them ``unknown_pack``).
4. **Names**: the newest complete snapshot (``snap/<n>/done`` and all its parts), then every log
   segment after it in position order, replayed with ``records.apply``. Missing or damaged
   segments are reported as gaps and replay goes on (a later record of a name still wins).
   Objects whose manifest is not in any pack, or whose bucket is gone, are dropped and reported;
   objects with blocks missing are kept and reported (verify names them).
5. **Counters and meta**: objects, logical_bytes, unique_blocks, stored_bytes, raw_bytes (as
   verify sums them); ``seq`` above every record's; the ``mlog`` counter and ``mlog_shipped`` at
   the recovered log position; format/chunker/codec/blocks as ``Store._check_format`` records
   them, chunker and codec from the backend's ``store.json`` (the command's settings when there is
   none), ``store_id`` from it too.
6. **Swap**: ``DATA/index`` (if any) is renamed ``DATA/index.old-<time>``, then
   ``DATA/index.recover`` becomes ``DATA/index``. A crash anywhere leaves either the old index in
   place, or no ``DATA/index`` at all (commands refuse); running ``cas recover`` again gives the
   same result. A PostgreSQL index swaps in one transaction: the old tables move to the schema
   ``cas_old_<time>`` (dropped when they held nothing), the recovered ones take their place.
   Crash points: ``recover.after_packs``, ``recover.before_swap``, ``recover.after_old_renamed``.

Users come back without secrets (they never reach the backend): ``cas user reset-secret``.
Multipart uploads in flight, events, GC references and WebDAV locks are not recovered.

Memory: per pack a small record (size, entries, creation, live figures: ~200 bytes), one pack's
entry list and manifests at a time; block locations go straight into the new index (no map of
every block in memory). Names stream in batches of ``BATCH`` records.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__, blocklife
from ..blocks import open_packfiles
from ..blocks.packs import format as fmt
from ..chunker import ChunkerParams
from ..codec import Codec, CodecParams
from ..config import Settings, testonly_crash_point
from ..errors import BlockNotFound, ConfigError, Conflict, IntegrityError, StoreError
from ..ids import block_id, short
from ..index import Index, adopt_staged_index, index_exists, lock_unopened, open_index, open_staged_index
from ..index.schema import FORMAT_VERSION, KIND_DATA, KIND_MANIFEST, PACK_SEALED, Loc, PackRow
from ..manifest import entry_count, iter_entries
from ..meta import objects, records
from ..meta.objects import MetaDamaged
from .progress import no_progress
from .report import human_size
from .safety import GC_LOCK, held

log = logging.getLogger(__name__)

BATCH = 1000  # records (or objects) per write txn
PACK_READERS = 16  # packs read at once at most (fewer when blocks.concurrency says so)
MANIFEST_RANGE = 8 << 20  # manifests of a pack read together when they lie within this span
SHOWN = 1000  # skipped/damaged names listed in the report (all are counted)
SHIPPED = "mlog_shipped"


@dataclass
class RecoverReport:
    """What one ``cas recover`` rebuilt, and what it could not."""

    store_id: str | None = None
    position: int = 0  # the metadata log position the names were recovered to
    snapshot: int = 0  # the snapshot replayed first (0: none)
    segments: int = 0
    records: int = 0
    log_gaps: list[str] = field(default_factory=list)  # positions missing or segments damaged
    buckets: int = 0
    objects: int = 0
    bytes: int = 0  # logical bytes of the objects
    users: list[str] = field(default_factory=list)  # recovered without secrets
    packs: int = 0
    packs_scanned: int = 0  # read entry by entry (no valid footer)
    packs_resealed: int = 0  # of those, sealed in place
    packs_unreadable: list[dict] = field(default_factory=list)  # {"pack", "reason"}: no row
    entries_rejected: int = 0  # scanned entries that did not verify (their scan stopped there)
    blocks: int = 0
    manifests: int = 0
    names_skipped: int = 0
    skipped: list[dict] = field(default_factory=list)  # {"bucket", "key", "reason"} (first SHOWN)
    names_damaged: int = 0  # kept, but blocks of their manifest are in no pack
    damaged: list[dict] = field(default_factory=list)
    old_index: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        line = (f"recover: {self.buckets} buckets, {self.objects} objects ({_size(self.bytes)}), "
                f"{len(self.users)} users, {self.blocks} blocks and {self.manifests} manifests in "
                f"{self.packs} packs ({self.packs_scanned} without footer, {self.packs_resealed} sealed); "
                f"log position {self.position}; {self.seconds:.1f}s")
        problems = []
        if self.names_skipped:
            problems.append(f"{self.names_skipped} names skipped (manifest or bucket missing)")
        if self.names_damaged:
            problems.append(f"{self.names_damaged} names with blocks missing (kept; run `cas verify`)")
        if self.packs_unreadable:
            problems.append(f"{len(self.packs_unreadable)} packs unreadable")
        if self.log_gaps:
            problems.append(f"{len(self.log_gaps)} gaps in the metadata log")
        if self.users:
            problems.append("users have no secret until `cas user reset-secret NAME`")
        return line + ("; " + "; ".join(problems) if problems else "")


def _size(n: int) -> str:
    return human_size(n)


def recover(settings: Settings, *, progress=None, lock_wait: float = 0.0, clock=time.time) -> RecoverReport:
    """Rebuild ``DATA/index`` from the backend of ``settings`` (see the module docstring)."""
    data = Path(settings.data_dir)
    settings = _settings_of_old_index(settings)
    if settings.blocks.url == "memory":
        raise ConfigError("a store in memory cannot be recovered: recover reads a persistent backend")
    if settings.blocks.url == "local" and not (settings.blocks_dir / "packs").is_dir():
        raise ConfigError(f"no store at {data}: {settings.blocks_dir / 'packs'} does not exist "
                          "(for blocks in S3, give --blocks s3://BUCKET[/PREFIX] and --blocks-endpoint)")
    files = open_packfiles(settings)
    try:
        files.check()
        if next(iter(files.iter_packs()), None) is None and next(iter(files.list_meta("")), None) is None:
            raise ConfigError(f"the backend {_where(settings)} holds no store (no pack, no metadata): "
                              "nothing to recover")
        try:
            data.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create data directory {data}: {exc}") from exc
        with held(lock_unopened(settings, GC_LOCK, wait=lock_wait)):
            _refuse_if_in_use(settings)
            return _Recovery(settings, files, progress or no_progress, clock).run()
    finally:
        files.close()


def _where(settings: Settings) -> str:
    return str(settings.blocks_dir) if settings.blocks.url == "local" else settings.blocks.url


def _old_index(settings: Settings) -> Index | None:
    if not index_exists(settings):
        return None
    try:
        return open_index(settings)
    except StoreError as exc:  # damaged: nothing can have it open usefully; it is replaced
        log.warning("the old index at %s does not open (%s); it is kept aside", settings.index_where, exc)
        return None


def _settings_of_old_index(settings: Settings) -> Settings:
    """Without ``--blocks``, the backend the old index (if it still opens) names."""
    if settings.blocks.url != "local":
        return settings
    index = _old_index(settings)
    if index is None:
        return settings
    try:
        with index.read() as t:
            blocks = t.get_meta("blocks")
    finally:
        index.close()
    if not blocks or blocks.get("url") in (None, "local"):
        return settings
    from dataclasses import replace

    return replace(settings, blocks=replace(settings.blocks, url=blocks["url"],
                                            endpoint=settings.blocks.endpoint or blocks.get("endpoint")))


def _refuse_if_in_use(settings: Settings) -> None:
    index = _old_index(settings)
    if index is None:
        return
    try:
        others = index.other_processes()
    finally:
        index.close()
    if others:
        raise Conflict(f"other processes have the store at {settings.data_dir} open (pid "
                       f"{', '.join(map(str, others))}): stop `cas serve` and every other cas command first")


class _Pack:
    __slots__ = ("size", "entries", "created", "footer", "live_bytes", "live_entries")

    def __init__(self, size: int, entries: int, created: float, footer: bool):
        self.size, self.entries, self.created, self.footer = size, entries, created, footer
        self.live_bytes = self.live_entries = 0

    def rank(self, pid: bytes) -> tuple:
        """Which copy of an id wins: a footer-read pack, then the newest."""
        return (self.footer, self.created, pid)


class _Recovery:
    def __init__(self, settings: Settings, files, progress, clock):
        self.settings = settings
        self.files = files
        self.progress = progress
        self.clock = clock
        self.report = RecoverReport()
        self.packs: dict[bytes, _Pack] = {}
        self.max_seq = 0
        self._report_lock = threading.Lock()  # pack readers add to the report's figures

    def run(self) -> RecoverReport:
        t0 = time.monotonic()
        ident = self._identity()
        index = open_staged_index(self.settings)
        try:
            self._all_packs(index)
            testonly_crash_point("recover.after_packs")
            self._names(index)
            self._finish(index, ident)
        finally:
            index.close()
        testonly_crash_point("recover.before_swap")
        self.report.old_index = adopt_staged_index(
            self.settings, stamp=time.strftime("%Y%m%d-%H%M%S"),
            between=lambda: testonly_crash_point("recover.after_old_renamed"))
        self.report.seconds = round(time.monotonic() - t0, 3)
        log.info("%s", self.report.summary())
        return self.report

    # -- identity -----------------------------------------------------------------------------
    def _identity(self) -> dict:
        """``store.json`` (chunker, codec, store id), or the command's settings where it says nothing."""
        raw = self.files.get_meta(objects.STORE_NAME)
        ident: dict = {}
        if raw is not None:
            try:
                ident = json.loads(raw)
            except ValueError as exc:
                raise IntegrityError(f"{objects.STORE_NAME} in the backend is damaged ({exc})") from exc
        ch = ident.get("chunker")
        chunker = (ChunkerParams(ch["avg"], ch["min"], ch["max"], ch.get("algorithm", ChunkerParams().algorithm))
                   if ch else self.settings.chunker)
        codec = CodecParams(ident.get("codec") or self.settings.codec.compression)
        codec.validate()
        self.chunker, self.codec_params, self.codec = chunker, codec, Codec(codec)
        self.report.store_id = ident.get("store_id")
        return ident

    # -- packs --------------------------------------------------------------------------------
    def _all_packs(self, index) -> None:
        """Every pack of the backend into ``index``: packs are read by ``blocks.concurrency``
        threads (footers, coalesced manifest reads, scans), at most ``2 × concurrency`` ahead of
        the one thread that writes their locations in listing order (memory stays bounded)."""
        total = sum(1 for _ in self.files.iter_packs())
        bar = self.progress("recover: packs", total)
        workers = max(1, min(PACK_READERS, self.settings.blocks.concurrency))
        pending: deque = deque()
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cas-recover") as pool:
                for pid, size, created in self.files.iter_packs():
                    pending.append(pool.submit(self._read_pack, pid, size, created))
                    while len(pending) >= 2 * workers:
                        self._index_pack(index, *pending.popleft().result())
                        bar.update(1)
                while pending:
                    self._index_pack(index, *pending.popleft().result())
                    bar.update(1)
        finally:
            for f in pending:
                f.cancel()
            bar.close()

    def _read(self, pid: bytes):
        return lambda offset, length: self.files.read(pid, offset, length)

    def _read_pack(self, pid: bytes, size: int, created: float):
        """What one pack holds: ``(pid, size, created, entries, located, manifests, footer)``;
        ``entries`` None when the pack cannot be read (reported)."""
        r = self.report
        try:
            try:
                entries = fmt.read_footer(self._read(pid), size, f"pack {pid.hex()}")
                footer = True
                manifests = self._read_manifests(pid, entries)
                located = [e for e in entries if e.kind == KIND_DATA or e.id in manifests]
            except fmt.PackDamaged:
                footer = False
                entries, manifests = [], {}
                for e, raw in fmt.scan_pack(self._read(pid), size, pid, check=self._scanned_ok):
                    entries.append(e)
                    if e.kind == KIND_MANIFEST:
                        manifests[e.id] = raw
                located = entries
                with self._report_lock:
                    r.packs_scanned += 1
                size = self._reseal(pid, size, entries)
        except (fmt.PackDamaged, BlockNotFound, IntegrityError) as exc:
            log.warning("pack %s cannot be read (%s): left without a row", pid.hex(), exc)
            with self._report_lock:
                r.packs_unreadable.append({"pack": pid.hex(), "reason": str(exc)})
            return pid, size, created, None, [], {}, False
        return pid, size, created, entries, located, manifests, footer

    def _read_manifests(self, pid: bytes, entries: list[fmt.Entry]) -> dict[bytes, bytes]:
        """The manifest entries of a sealed pack that verify, read in coalesced ranges (one
        request per ``MANIFEST_RANGE`` bytes of the pack, not one per manifest)."""
        out: dict[bytes, bytes] = {}
        groups: list[list[fmt.Entry]] = []
        for e in entries:
            if e.kind != KIND_MANIFEST:
                continue
            if groups and e.offset + e.length - groups[-1][0].offset <= MANIFEST_RANGE:
                groups[-1].append(e)
            else:
                groups.append([e])
        for group in groups:
            start = group[0].offset
            buf = self.files.read(pid, start, group[-1].offset + group[-1].length - start)
            for e in group:
                raw = buf[e.offset - start:e.offset - start + e.length]
                if self._manifest_ok(e, raw):
                    out[e.id] = raw
                else:
                    with self._report_lock:
                        self.report.entries_rejected += 1
        return out

    def _index_pack(self, index, pid: bytes, size: int, created: float, entries, located, manifests,
                    footer: bool) -> None:
        if entries is None:
            return
        p = self.packs[pid] = _Pack(size, len(entries), created, footer)
        now = self.clock()
        with index.write(durable=False) as t:
            for e in located:
                old = t.get_loc(e.kind, e.id)
                if old is not None and (old.pack == pid or self.packs[old.pack].rank(old.pack) > p.rank(pid)):
                    continue
                t.put_loc(e.kind, e.id, Loc(pid, e.offset, e.length, e.raw_len, created))
                if e.kind == KIND_DATA:
                    blocklife.record_recovered(t, e.id, e.length, e.raw_len, created, now)
                else:
                    t.put_manifest(e.id, manifests[e.id])
        self.report.packs += 1

    @staticmethod
    def _manifest_ok(e: fmt.Entry, raw: bytes) -> bool:
        try:
            entry_count(raw)
        except IntegrityError:
            return False
        return block_id(raw) == e.id

    def _scanned_ok(self, e: fmt.Entry, raw: bytes) -> bool:
        if e.kind == KIND_MANIFEST:
            ok = self._manifest_ok(e, raw)
        else:
            try:
                self.codec.decode(e.id, raw)
                ok = True
            except IntegrityError:
                ok = False
        if not ok:
            log.warning("entry %s at offset %d does not verify: the scan stops there", short(e.id), e.offset)
            with self._report_lock:
                self.report.entries_rejected += 1
        return ok

    def _reseal(self, pid: bytes, size: int, entries: list[fmt.Entry]) -> int:
        """Seal a pack that never was (no end magic), in place where the backend can; its size."""
        tail = self.files.read(pid, size - 8, 8) if size >= fmt.HEADER_LEN + 8 else b""
        if tail[:7] == b"CASPEND" or not self.files.can_reseal:
            return size  # a sealed pack whose footer is damaged: indexed as it is; verify reports it
        keep = entries[-1].offset + entries[-1].length if entries else fmt.HEADER_LEN
        footer = fmt.footer(entries, keep)
        self.files.reseal(pid, keep, footer)
        self.report.packs_resealed += 1
        log.info("pack %s had no footer: %d entries scanned, sealed in place", pid.hex(), len(entries))
        return keep + len(footer)

    # -- names --------------------------------------------------------------------------------
    def _names(self, index) -> None:
        r = self.report
        bar = self.progress("recover: names", None)
        try:
            pos = self._snapshot(index, bar)
            r.snapshot = pos
            for first, last, name in objects.log_segments(self.files):
                if last <= r.snapshot:
                    continue
                if first > pos + 1:
                    r.log_gaps.append(f"positions {pos + 1}..{first - 1} are in no segment")
                try:
                    recs = objects.decode(self.files.get_meta(name) or b"", name)
                except MetaDamaged as exc:
                    r.log_gaps.append(f"{name}: {exc}")
                    log.warning("metadata log segment %s is damaged: skipped (%s)", name, exc)
                    continue
                r.segments += 1
                recs = [rec for rec in recs if rec.get("n", 0) > pos]
                self._apply(index, recs, bar)
                pos = max([pos, last] + [rec.get("n", 0) for rec in recs])
            r.position = pos
        finally:
            bar.close()

    def _snapshot(self, index, bar) -> int:
        """Replay the newest complete snapshot (done and every part present); its position."""
        snaps = objects.snapshots(self.files)
        for n in sorted((n for n, rest in snaps.items() if "done" in rest), reverse=True):
            done_name = objects.snap_done_name(n)
            try:
                done = objects.decode(self.files.get_meta(done_name) or b"", done_name)[0]
            except (MetaDamaged, IndexError) as exc:
                self.report.log_gaps.append(f"{done_name}: {exc}")
                continue
            parts = [objects.snap_part_name(n, i) for i in range(int(done.get("parts", 0)))]
            if not set(parts) <= {f"{objects.SNAP_PREFIX}{n:016x}/{rest}" for rest in snaps[n]}:
                self.report.log_gaps.append(f"snapshot {n} lacks parts: an older one is used")
                continue
            for part in parts:
                self._apply(index, objects.decode(self.files.get_meta(part) or b"", part), bar)
            return n
        return 0

    def _apply(self, index, recs: list[dict], bar) -> None:
        for i in range(0, len(recs), BATCH):
            with index.write(durable=False) as t:
                for rec in recs[i:i + BATCH]:
                    records.apply(t, rec)
                    # every record carries the commit sequence as of its change (``seq``); the
                    # commit that made it may have taken one more (a delete's event)
                    self.max_seq = max(self.max_seq, int(rec.get("seq", 0)) + 1)
                    if rec.get("op") == "put_object":
                        self.max_seq = max(self.max_seq, int(rec["rec"].get("seq", 0)))
            self.report.records += len(recs[i:i + BATCH])
            bar.update(len(recs[i:i + BATCH]))

    # -- counters, rows, meta -------------------------------------------------------------------
    def _finish(self, index, ident: dict) -> None:
        r = self.report
        self._check_names(index)
        with index.read() as t:
            for kind in (KIND_DATA, KIND_MANIFEST):
                for _, loc in t.iter_locs(kind):
                    p = self.packs[loc.pack]
                    p.live_bytes += loc.length
                    p.live_entries += 1
            r.blocks = t.counter("unique_blocks")  # kept by blocklife.record_recovered, row by row
            r.manifests = sum(1 for _ in t.iter_locs(KIND_MANIFEST))
            r.buckets = sum(1 for _ in t.iter_buckets())
            r.users = [name for name, _ in t.iter_users()]
            objects_, logical = 0, 0
            for _, _, rec in t.iter_objects():
                objects_ += 1
                logical += rec.get("size", 0)
        r.objects, r.bytes = objects_, logical
        now = self.clock()
        with index.write() as t:
            for pid, p in self.packs.items():
                t.put_pack(pid, PackRow(PACK_SEALED, p.size, p.entries, p.live_bytes, p.live_entries, p.created, now))
            for name, value in dict(objects=objects_, logical_bytes=logical, seq=self.max_seq,
                                    mlog=r.position).items():
                t.add_counter(name, value - t.counter(name))
            t.put_meta(SHIPPED, r.position)
            created = ident.get("created") or now
            t.put_meta("format", {"version": FORMAT_VERSION, "created": created, "cas": __version__,
                                  "recovered": now})
            t.put_meta("chunker", self.chunker.to_dict())
            t.put_meta("codec", self.codec_params.compression)
            t.put_meta("blocks", {"url": self.settings.blocks.url, "endpoint": self.settings.blocks.endpoint})
            if r.store_id:
                t.put_meta("store_id", r.store_id)
            t.put_meta("recovery", {"time": now, "position": r.position, "packs": r.packs, "objects": objects_})

    def _check_names(self, index) -> None:
        """Drop names whose manifest or bucket is missing; count those with blocks missing."""
        r = self.report
        drop: list[tuple[str, str]] = []
        checked: dict[bytes, bool] = {}  # manifest id -> all its blocks located
        with index.read() as t:
            buckets = {name for name, _ in t.iter_buckets()}
            for bucket, key, rec in t.iter_objects():
                reason = None
                mid = bytes.fromhex(rec["m"]) if rec.get("m") else None
                raw = t.get_manifest(mid) if mid is not None else None
                if bucket not in buckets:
                    reason = "bucket missing"
                elif raw is None:
                    reason = f"manifest {mid.hex() if mid else '(none)'} is in no pack"
                if reason is not None:
                    drop.append((bucket, key))
                    r.names_skipped += 1
                    if len(r.skipped) < SHOWN:
                        r.skipped.append({"bucket": bucket, "key": key, "reason": reason})
                    continue
                whole = checked.get(mid)
                if whole is None:
                    whole = checked[mid] = all(t.get_loc(KIND_DATA, bid) is not None for bid, _ in iter_entries(raw))
                if not whole:
                    r.names_damaged += 1
                    if len(r.damaged) < SHOWN:
                        r.damaged.append({"bucket": bucket, "key": key, "reason": "blocks missing from every pack"})
        for i in range(0, len(drop), BATCH):
            with index.write(durable=False) as t:
                for bucket, key in drop[i:i + BATCH]:
                    t.delete_object(bucket, key)
        for b, k in drop[:20]:
            log.warning("name %s/%s is not recovered (its manifest or bucket is missing)", b, k)
