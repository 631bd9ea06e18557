"""Migrate a format-1 store (one file or S3 object per block) into packs (format 2), offline.

``migrate(settings)``:

1. **Refuse** unless the store is format 1 (format 2: nothing to do) and nothing else uses it: the
   GC lock is held for the whole run (no gc, verify or second migrate), and the index must show no
   other process (its reader table: a ``cas serve`` of an older cas, say) and no live writer lease.
2. **Blocks**: every legacy block (``LocalBlockStore``, ``DATA/blocks/ab/<hex>``; or
   ``S3BlockStore``, ``PREFIX/blocks/ab/<hex>``), in id order, is read, decoded against its id and
   appended to a pack (``PackedBlockStore``, as any writer does). Every ``batch`` blocks the packs
   are synced (their locations committed), a durable index commit follows (so the locations are on
   disk, whatever befalls the machine), and only then are that batch's legacy blocks deleted. A
   block that does not decode is not moved: its legacy file or object stays where it is, counted
   and named in the report (``cas verify`` reports its row as ``missing_block``; an upload of the
   same bytes heals it). Legacy blocks without a row are moved too: gc decides about garbage.
3. **Manifests**: every manifest in the index without a copy in a pack is put into one.
4. The open pack is sealed, then the index's format is set to 2 in one durable commit; the
   legacy leftovers go (temp files of interrupted writes, empty fan-out directories).

Resumable: killed at any point, a re-run finds each block either still a legacy block (it is put
again; a copy an earlier run appended without locating it is dead bytes in that pack) or located
(its legacy copy is deleted now), so nothing is lost and no block is moved twice. The open pack a
killed run leaves is an abandoned pack (its lease's process is dead): the first gc after the
migration repacks it. Crash points ``migrate.after_sync``, ``migrate.after_delete`` and
``migrate.before_format``.

Memory: one batch of ids; the blocks stream (one in hand at a time).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

from .. import __version__, blocklife
from ..blocks import open_packfiles
from ..blocks.packs.store import PackedBlockStore
from ..codec import Codec
from ..config import Settings, testonly_crash_point
from ..errors import BlockNotFound, Conflict, ConfigError, IntegrityError
from ..ids import block_id, short
from ..index import open_index
from ..meta import identity
from ..index.schema import FORMAT_VERSION, KIND_MANIFEST
from ..store import Store
from .progress import ProgressFactory, no_progress
from .report import human_size
from .safety import gc_lock

log = logging.getLogger(__name__)

LEGACY_VERSION = 1
BATCH = 512
SHOWN = 20  # corrupt block ids listed in the report


@dataclass
class MigrateReport:
    """What one ``cas migrate`` did."""

    already: bool = False  # the store was in packs already
    blocks_moved: int = 0
    bytes_moved: int = 0
    blocks_found_located: int = 0  # moved by an earlier, interrupted run
    blocks_corrupt: int = 0  # not moved: their legacy copies stay
    corrupt: list[str] = field(default_factory=list)  # the first few of them (hex ids)
    manifests_moved: int = 0
    manifests_damaged: int = 0  # not moved: verify reports them
    packs: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.already:
            return "migrate: the store keeps its blocks in packs already; nothing to do"
        line = (f"migrate: moved {self.blocks_moved} blocks ({human_size(self.bytes_moved)}) and "
                f"{self.manifests_moved} manifests into {self.packs} packs"
                + (f" ({self.blocks_found_located} blocks moved by an earlier run)"
                   if self.blocks_found_located else "")
                + f"; the store is format {FORMAT_VERSION}; {self.seconds:.1f}s")
        if self.blocks_corrupt or self.manifests_damaged:
            line += (f"; {self.blocks_corrupt} corrupt blocks left where they were and "
                     f"{self.manifests_damaged} damaged manifests not copied (run `cas verify`)")
        return line


def migrate(settings: Settings, *, batch: int = BATCH, progress: ProgressFactory | None = None,
            lock_wait: float = 0.0) -> MigrateReport:
    """Move the blocks of the format-1 store in ``settings`` into packs (see the module docstring)."""
    if not identity.index_present(settings):
        raise identity.not_a_store(settings)
    index = open_index(settings)
    try:
        with gc_lock(index, wait=lock_wait):
            return _Migration(settings, index, max(1, batch), progress or no_progress).run()
    finally:
        index.close()


class _Migration:
    def __init__(self, settings: Settings, index, batch: int, progress: ProgressFactory):
        self.settings = settings
        self.index = index
        self.batch = batch
        self.progress = progress
        self.report = MigrateReport()

    def run(self) -> MigrateReport:
        t0 = time.monotonic()
        with self.index.read() as t:
            fmt = t.get_meta("format")
        if fmt is None:
            raise ConfigError(f"no store at {self.settings.data_dir}")
        if fmt.get("version") == FORMAT_VERSION:
            self.report.already = True
            return self.report
        if fmt.get("version") != LEGACY_VERSION:
            raise ConfigError(f"index format {fmt.get('version')} cannot be migrated (this cas migrates "
                              f"format {LEGACY_VERSION} to {FORMAT_VERSION})")
        self._refuse_if_in_use()
        settings = Store.recorded_settings(self.index, self.settings)
        self.codec = Codec(settings.codec)
        legacy = _legacy(settings)
        packs = PackedBlockStore(open_packfiles(settings), self.index, target_size=settings.blocks.pack_size,
                                 lease=settings.gc.pin_lease)
        try:
            packs.prepare()
            with self.index.read() as t:
                before = {pid for pid, _ in t.iter_packs()}
            self._blocks(legacy, packs)
            self._manifests(packs)
            packs.close()  # seals the open pack
            with self.index.read() as t:
                self.report.packs = sum(1 for pid, _ in t.iter_packs() if pid not in before)
            testonly_crash_point("migrate.before_format")
            with self.index.write() as t:
                t.put_meta("format", {**fmt, "version": FORMAT_VERSION, "migrated": time.time(), "cas": __version__})
                t.put_meta("migration", {"moved": self.report.blocks_moved, "finished": time.time()})
        finally:
            packs.close()
            legacy.close()
        self._tidy(settings)
        self.report.seconds = round(time.monotonic() - t0, 3)
        log.info("%s", self.report.summary())
        return self.report

    def _refuse_if_in_use(self) -> None:
        others = self.index.other_processes()
        if others:
            raise Conflict(f"other processes have the store at {self.settings.data_dir} open (pid "
                           f"{', '.join(map(str, others))}): stop `cas serve` and every other cas command first")
        now = time.time()
        with self.index.read() as t:
            live = [w for w, expiry, owner in t.iter_writer_owners() if blocklife.writer_alive(expiry, owner, now)]
        if live:
            raise Conflict(f"{len(live)} writers hold leases on the store at {self.settings.data_dir} (a server "
                           "is uploading): stop it first, or wait for the leases to lapse")

    # -- blocks ------------------------------------------------------------------------------
    def _blocks(self, legacy, packs: PackedBlockStore) -> None:
        r = self.report
        with self.index.read() as t:
            total = blocklife.block_count(t)
        bar = self.progress("migrate: blocks", total or None)
        put: list[bytes] = []  # appended in this batch
        moved: list[bytes] = []  # located already (an earlier run): only the legacy copy goes
        try:
            for bid, _created in legacy.iter_ids():
                bar.update(1)
                if packs.location(bid) is not None:
                    r.blocks_found_located += 1
                    moved.append(bid)
                else:
                    try:
                        stored = legacy.get(bid)
                    except BlockNotFound:
                        continue  # gone since the listing
                    try:
                        self.codec.decode(bid, stored)
                    except IntegrityError as exc:
                        log.warning("block %s does not decode (%s): left where it is", short(bid), exc)
                        r.blocks_corrupt += 1
                        if len(r.corrupt) < SHOWN:
                            r.corrupt.append(bid.hex())
                        continue
                    packs.put(bid, stored)
                    put.append(bid)
                    r.blocks_moved += 1
                    r.bytes_moved += len(stored)
                if len(put) + len(moved) >= self.batch:
                    self._commit(legacy, packs, put, moved)
                    put, moved = [], []
            self._commit(legacy, packs, put, moved)
        finally:
            bar.close()

    def _commit(self, legacy, packs: PackedBlockStore, put: list[bytes], moved: list[bytes]) -> None:
        """Locate the batch, make that durable, then delete its legacy copies."""
        if not (put or moved):
            return
        packs.sync(put)
        testonly_crash_point("migrate.after_sync")
        with self.index.write() as t:  # durable: every location committed before it is on disk now
            t.put_meta("migration", {"moved": self.report.blocks_moved, "time": time.time()})
        legacy.delete_many(put + moved)
        testonly_crash_point("migrate.after_delete")

    # -- manifests ---------------------------------------------------------------------------
    def _manifests(self, packs: PackedBlockStore) -> None:
        r = self.report
        bar = self.progress("migrate: manifests", None)
        batch: list[bytes] = []
        try:
            with self.index.read() as t:
                for mid, raw in t.iter_manifests():
                    bar.update(1)
                    if t.get_loc(KIND_MANIFEST, mid) is not None:
                        continue
                    if block_id(raw) != mid:
                        log.warning("manifest %s does not hash to its id: not copied", short(mid))
                        r.manifests_damaged += 1
                        continue
                    packs.put_manifest(mid, bytes(raw))
                    batch.append(mid)
                    r.manifests_moved += 1
                    if len(batch) >= self.batch:
                        packs.sync(batch)
                        batch = []
            packs.sync(batch)
        finally:
            bar.close()

    # -- leftovers -----------------------------------------------------------------------------
    def _tidy(self, settings: Settings) -> None:
        """Temp files of interrupted format-1 writes and empty fan-out directories (local only)."""
        if settings.blocks.url != "local":
            return
        root = settings.blocks_dir
        shutil.rmtree(root / "tmp", ignore_errors=True)
        for entry in os.scandir(root):
            if len(entry.name) == 2 and entry.is_dir():
                try:
                    os.rmdir(entry.path)
                except OSError:  # not empty: a corrupt block left where it was
                    continue


def _legacy(settings: Settings):
    """The format-1 BlockStore of ``settings``: one file or S3 object per block."""
    if settings.blocks.url.startswith("s3://"):
        from ..blocks.s3 import S3BlockStore

        return S3BlockStore.from_settings(settings.blocks)
    if settings.blocks.url == "local":
        from ..blocks.local import LocalBlockStore

        return LocalBlockStore(settings.blocks_dir)
    raise ConfigError(f"a format-1 store on {settings.blocks.url!r} cannot be migrated")
