"""Store: the one definition of what a bucket, an object and an upload are.

Every protocol (S3, WebDAV, the web UI, the CLI) calls these methods and
nothing below them. Each mutation commits in one short LMDB write txn that
binds the name, appends to ``refs`` and ``events`` and adjusts the counters
(the index is a ``cas.meta.log.LoggedIndex``: the same txn appends the name's
metadata log record, which ``meta_log`` ships to the backend);
block I/O always happens outside transactions (see ``writer``). Reads look the
name up once and stream blocks, verifying each (``ObjectDamaged`` rather than
wrong bytes; the block's row is marked damaged, see ``blocklife``). The first
block of a read is fetched when the reader is opened, so a front end learns of
the damage before it starts its response. Thread-safe; open one Store per process, before starting threads.

The package: ``records.py`` (the dataclasses and record layouts), ``reader.py`` (ObjectReader and the
WSGI body), ``uploads.py`` (multipart), ``tags.py`` (object and bucket tags), ``journal.py`` (events
and the follow loop); this module is the typed ``Store`` facade. Open a store with ``Store.open_store(settings)``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from .. import __version__, blocklife
from ..blocks import open_packfiles, packed, packs_of
from ..blocks.base import BlockStore
from ..blocks.packs.store import pack_totals
from ..chunker import Chunker, ChunkerParams
from ..codec import Codec, CodecParams
from ..config import Settings, testonly_crash_point
from ..errors import (
    BlockNotFound,
    BucketAlreadyExists,
    BucketNotEmpty,
    BucketNotFound,
    ConfigError,
    IntegrityError,
    InvalidRange,
    ObjectDamaged,
    ObjectNotFound,
    PreconditionFailed,
)
from ..headers import check_content_type, check_headers, check_metadata
from ..ids import short
from ..index import Index, open_index
from ..index.schema import FORMAT_VERSION
from ..manifest import Manifest
from ..meta import identity
from ..meta.log import LoggedIndex
from ..meta.shipper import MetaShipper
from ..names import check_bucket, check_key
from ..writer import BlockWriter, WriteResult

log = logging.getLogger(__name__)
from .journal import JournalMixin
from .kv import KvSpace
from .reader import ObjectReader, ReaderBody
from .records import (
    BUCKET_KEYED_KV,
    DEFAULT_CONTENT_TYPE,
    BucketInfo,
    Event,
    Listing,
    ObjectInfo,
    PartInfo,
    UploadInfo,
    bucket_id,
    etag_matches,
    object_record,
)
from .tags import Tags, TagsMixin, check_tags
from .uploads import MIN_PART_SIZE, UploadsMixin

READ_AHEAD = 4
MANIFEST_CACHE = 64


class Store(UploadsMixin, TagsMixin, JournalMixin):
    """Buckets, objects, multipart uploads, users and the journal over one index and BlockStore."""

    def __init__(self, settings: Settings, index: Index, blocks: BlockStore,
                 clock: Callable[[], float] = time.time, owner: bytes = blocklife.PROCESS_OWNER):
        self.settings = settings
        # every durable-name change is also a metadata log record (cas.meta.log), shipped to the
        # backend by ``meta_log``; a store whose blocks are not in packs has nowhere to ship them
        self.index = index if isinstance(index, LoggedIndex) else LoggedIndex(index)
        self.index.clock = lambda: self.clock()
        self.blocks = blocks
        self.clock = clock
        self.chunker = Chunker(settings.chunker)
        self.codec = Codec(settings.codec)
        # a remote backend needs more requests in flight than a local disk to keep busy
        # blocks fetched ahead of a reader: none for a local disk (see ObjectReader._blocks)
        local = blocks.kind in ("local", "memory")
        self.read_ahead = 0 if local else max(READ_AHEAD, settings.blocks.concurrency)
        self.pool = ThreadPoolExecutor(max_workers=max(4, self.read_ahead), thread_name_prefix="cas-io")
        self._changed = threading.Condition()
        self._watching: bool | None = None  # whether the index wakes _changed (JournalMixin._watched)
        self._manifests: OrderedDict[bytes, Manifest] = OrderedDict()
        self._manifests_lock = threading.Lock()
        # renews the leases of this process's writers (their pins are honoured by GC while they run);
        # ``owner``: the identity their leases carry (blocklife.Heartbeat)
        self.heartbeat = blocklife.Heartbeat(index, lambda: self.clock(), lambda: self.settings.gc.pin_lease, owner)
        packs = packs_of(blocks)
        self.index.enabled = packs is not None and settings.meta.log
        self.meta_log = MetaShipper(self.index, packs.files, settings.meta, clock=lambda: self.clock()) \
            if packs is not None else None
        from ..auth.users import UserRegistry

        self.users = UserRegistry(self)

    # -- lifecycle --------------------------------------------------------------------------
    @classmethod
    def open_store(cls, settings: Settings, *, blocks: BlockStore | None = None, create: bool = True) -> Store:
        """Open the store under ``settings.data_dir``; with ``create``, create it when there is none.

        Only ``cas init`` and ``cas serve`` create: every other command refuses a DATA that is not
        a store (``NotAStore``) and creates nothing. A new store needs an empty backend, an
        existing one the backend holding its store id (``cas.meta.identity``); when opening
        fails, nothing this call created is left behind.
        """
        present = identity.index_present(settings)
        if not present and not create:
            raise identity.not_a_store(settings)
        files = None
        if not present:  # decide before creating anything: a backend with data is some store's
            files = cls._backend_files(settings, blocks)
            if files is not None:
                identity.check_new_backend(files, settings)
        made = [p for p in (settings.data_dir, None if settings.index.remote else settings.index_dir,
                            settings.blocks_dir) if p is not None and not p.exists()]
        try:
            settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create data directory {settings.data_dir}: {exc}") from exc
        index = blockstore = None
        try:
            index = LoggedIndex(open_index(settings))
            settings, created = cls._check_format(index, settings, create=create, checked=not present, blocks=blocks)
            if files is None or not created:
                files = None if blocks is not None else open_packfiles(settings)
            # packs (or a block store) handed in by tests get the layers of the ones settings name
            # packs keep no durable names: they get the index itself, without the log
            blockstore = packed(blocks if blocks is not None else files, index.inner, settings)
            if created:
                blockstore.prepare()
            if blocks is None:
                blockstore.check()  # a wrong bucket or bad credentials fail here, with a clear message
            packs = packs_of(blockstore)
            if packs is not None:  # a store of one object per block has no meta objects
                identity.establish(index, packs.files, settings)
        except BaseException:
            if blockstore is not None and blocks is None:
                blockstore.close()
            if index is not None:
                index.close()
            for path in made:  # undo what this call created
                shutil.rmtree(path, ignore_errors=True)
            raise
        return cls(settings, index, blockstore)

    @staticmethod
    def _backend_files(settings: Settings, blocks: BlockStore | None):
        """The ``PackFiles`` a new store would use, to look into before creating anything (None:
        a legacy block store, or a local directory that does not exist: nothing there)."""
        if blocks is not None:
            packs = packs_of(blocks) if isinstance(blocks, BlockStore) else None
            return packs.files if packs is not None else (None if isinstance(blocks, BlockStore) else blocks)
        if settings.blocks.url == "local" and not settings.blocks_dir.exists():
            return None
        files = open_packfiles(settings)
        files.prepare()  # an S3 bucket that does not exist yet is created (and empty)
        return files

    @staticmethod
    def _check_format(index: Index, settings: Settings, *, create: bool = True, checked: bool = False,
                      blocks=None) -> tuple[Settings, bool]:
        """Record chunker/codec/backend (and a pending store id) at creation; afterwards the
        record wins (or clashes). An index without a format record is a new store: refused
        unless ``create``, and its backend must be empty (``checked``: already looked at)."""
        with index.read() as t:
            fmt = t.get_meta("format")
        if fmt is None:
            if not create:
                raise identity.not_a_store(settings, "its index is empty")
            if not checked:  # an index file that was only ever opened: look at the backend now
                files = Store._backend_files(settings, blocks)
                if files is not None:
                    identity.check_new_backend(files, settings)
            with index.write() as t:
                if t.get_meta("format") is None:
                    t.put_meta("format", {"version": FORMAT_VERSION, "created": time.time(), "cas": __version__})
                    t.put_meta("chunker", settings.chunker.to_dict())
                    t.put_meta("codec", settings.codec.compression)
                    t.put_meta("blocks", {"url": settings.blocks.url, "endpoint": settings.blocks.endpoint})
                    t.put_meta(identity.PENDING_META, identity.new_id())
                    return settings, True
            with index.read() as t:
                fmt = t.get_meta("format")
        if fmt.get("version") == 1:
            raise ConfigError("this store keeps one file per block (format 1, before packs); this cas keeps "
                              "blocks in packs (format 2): stop the server and run "
                              f"`cas migrate --data {settings.data_dir}` to move its blocks into packs")
        if fmt.get("version") != FORMAT_VERSION:
            raise ConfigError(f"index format {fmt.get('version')} is not supported (this cas reads {FORMAT_VERSION})")
        return Store.recorded_settings(index, settings), False

    @staticmethod
    def recorded_settings(index: Index, settings: Settings) -> Settings:
        """``settings`` with the chunker, codec and backend recorded at creation (or a clash)."""
        with index.read() as t:
            chunker = t.get_meta("chunker")
            codec = t.get_meta("codec")
            blocks = t.get_meta("blocks")
        stored_chunker = ChunkerParams(chunker["avg"], chunker["min"], chunker["max"], chunker["algorithm"])
        if settings.explicit_format and (stored_chunker != settings.chunker or codec != settings.codec.compression):
            raise ConfigError(
                f"this store was created with chunker avg={stored_chunker.avg} min={stored_chunker.min} "
                f"max={stored_chunker.max} and compression {codec}; it cannot be opened with "
                f"avg={settings.chunker.avg} min={settings.chunker.min} max={settings.chunker.max} and "
                f"compression {settings.codec.compression} (other cut points would destroy dedup)"
            )
        if stored_chunker.algorithm != ChunkerParams().algorithm:
            raise ConfigError(f"this store was chunked with {stored_chunker.algorithm}; "
                              f"this cas chunks with {ChunkerParams().algorithm}")
        bsettings = settings.blocks
        if bsettings.url != blocks["url"]:
            if bsettings.url != "local":
                raise ConfigError(f"this store keeps its blocks in {blocks['url']}, not {bsettings.url}")
            bsettings = replace(bsettings, url=blocks["url"], endpoint=bsettings.endpoint or blocks.get("endpoint"))
        return replace(settings, chunker=stored_chunker, codec=CodecParams(codec), blocks=bsettings)

    def close(self) -> None:
        try:
            if self.meta_log is not None:
                self.meta_log.close()  # before the backend closes: a CLI command ends with its log shipped
        finally:
            self.heartbeat.stop()
            self.pool.shutdown(wait=True)
            self.blocks.close()
            self.index.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def health(self) -> dict:
        """Liveness/readiness figures: index readable, backend reachable."""
        status = {"version": __version__, "index": "ok", "blocks": "ok", "backend": self.blocks.kind}
        try:
            with self.index.read() as t:
                t.last_seq()
        except Exception as exc:  # reported, not raised: this is a health probe
            status["index"] = f"error: {exc}"
        try:
            self.blocks.check()
        except Exception as exc:  # reported, not raised
            status["blocks"] = f"error: {exc}"
        status["status"] = "ok" if status["index"] == status["blocks"] == "ok" else "degraded"
        try:
            status["meta_log"] = self.meta_log_status()
        except Exception as exc:  # reported, not raised
            status["meta_log"] = {"error": str(exc)}
        return status

    def meta_log_status(self) -> dict:
        """The metadata log's lag: records not yet in the backend and the age of the oldest."""
        if self.meta_log is None:
            return {"lag_seconds": 0.0, "unshipped_records": 0, "enabled": False}
        return self.meta_log.status()

    # -- commit helpers -------------------------------------------------------------------------
    def _event(self, t, seq: int, user: str, op: str, bucket: str, key: str, size: int = 0, etag: str = "") -> None:
        rec = t.get_bucket(bucket) if bucket else None
        t.add_event(seq, {"seq": seq, "time": self.clock(), "user": user, "op": op,
                          "bucket": bucket, "key": key, "size": size, "etag": etag,
                          "bucket_id": bucket_id(rec) if rec else "", "owner": rec["owner"] if rec else ""})

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _bind(self, t, info: ObjectInfo, op: str, user: str) -> ObjectInfo:
        """Bind ``info`` to its name inside a write txn (counters, refs, journal)."""
        seq = t.next_seq()
        info = replace(info, seq=seq)
        old = t.get_object(info.bucket, info.key)
        t.put_object(info.bucket, info.key, object_record(info))
        t.add_counter("objects", 0 if old else 1)
        t.add_counter("logical_bytes", info.size - (old["size"] if old else 0))
        t.add_ref(seq, info.manifest_id)
        self._event(t, seq, user, op, info.bucket, info.key, info.size, info.etag)
        return info

    def _unbind(self, t, bucket: str, key: str, user: str, op: str = "delete") -> dict:
        old = self._require_object(t, bucket, key)
        t.delete_object(bucket, key)
        t.add_counter("objects", -1)
        t.add_counter("logical_bytes", -old["size"])
        self._event(t, t.next_seq(), user, op, bucket, key, old["size"], old["etag"])
        return old

    @staticmethod
    def _require_bucket(t, bucket: str) -> dict:
        rec = t.get_bucket(bucket)
        if rec is None:
            raise BucketNotFound(f"bucket {bucket!r} does not exist")
        return rec

    @classmethod
    def _require_object(cls, t, bucket: str, key: str) -> dict:
        """The object's record; ``ObjectNotFound`` (or ``BucketNotFound``) when there is none."""
        rec = t.get_object(bucket, key)
        if rec is None:
            cls._require_bucket(t, bucket)
            raise ObjectNotFound(f"no object {key!r} in bucket {bucket!r}")
        return rec

    @staticmethod
    def _check_conditions(t, bucket: str, key: str, if_match: str | None, if_none_match: str | None) -> None:
        if if_match is None and if_none_match is None:
            return
        cur = t.get_object(bucket, key)
        if if_match is not None and (cur is None or not etag_matches(if_match, cur["etag"])):
            raise PreconditionFailed(f"If-Match {if_match} does not hold for {bucket}/{key}")
        if if_none_match is not None and cur is not None and etag_matches(if_none_match, cur["etag"]):
            raise PreconditionFailed(f"If-None-Match {if_none_match} does not hold for {bucket}/{key}")

    def _write(self, body, hashers, expected_size, expected_md5, before_commit,
               commit: Callable[[object, WriteResult, dict | None, float], object], rows: dict | None = None):
        """Stream ``body`` to blocks, run ``before_commit``, then ``commit`` in one write txn
        (``rows``: what ``commit`` reads, as ``IndexTxn.prefetch`` keywords)."""
        w = BlockWriter(self, hashers)
        try:
            result = w.write(body, expected_size=expected_size, expected_md5=expected_md5)
            w.finish(result.manifest)
            checksums = before_commit(result) if before_commit else None
            with self.index.write() as t:
                t.prefetch(**w.commit_rows(result.manifest), **(rows or {}))
                now = self.clock()
                w.commit_into(t, result.manifest, now)
                out = commit(t, result, checksums, now)
        except BaseException:
            w.abort()
            raise
        finally:
            w.close()
        self._notify()
        return out

    # -- buckets --------------------------------------------------------------------------------
    def create_bucket(self, name: str, *, owner: str = "root") -> BucketInfo:
        check_bucket(name)
        with self.index.write() as t:
            if t.get_bucket(name) is not None:
                raise BucketAlreadyExists(f"bucket {name!r} already exists")
            rec = {"owner": owner, "created": self.clock(), "id": secrets.token_hex(8)}
            t.put_bucket(name, rec)
            self._event(t, t.next_seq(), owner, "create_bucket", name, "")
        self._notify()
        return BucketInfo.from_record(name, rec)

    def delete_bucket(self, name: str, *, user: str = "") -> None:
        with self.index.write() as t:
            self._require_bucket(t, name)
            if not t.bucket_is_empty(name):
                raise BucketNotEmpty(f"bucket {name!r} is not empty")
            for upload_id, rec in list(t.iter_uploads()):
                if rec["bucket"] == name:
                    t.delete_upload(upload_id)
            for ns in BUCKET_KEYED_KV:
                t.kv_delete(ns, name)
            self._event(t, t.next_seq(), user, "delete_bucket", name, "")
            t.delete_bucket(name)
        self._notify()

    def bucket(self, name: str) -> BucketInfo:
        with self.index.read(snapshot=False) as t:
            rec = self._require_bucket(t, name)
        return BucketInfo.from_record(name, rec)

    def buckets(self, owner: str | None = None) -> list[BucketInfo]:
        with self.index.read() as t:
            return [BucketInfo.from_record(n, r) for n, r in t.iter_buckets()
                    if owner is None or r["owner"] == owner]

    # -- objects --------------------------------------------------------------------------------
    def put(self, bucket: str, key: str, body, *, user: str = "", content_type: str | None = None,
            metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
            props: Mapping[str, str] | None = None, tags: Tags | None = None,
            mtime: float | None = None, expected_md5: bytes | None = None, expected_size: int | None = None,
            hashers: Mapping[str, object] | None = None,
            before_commit: Callable[[WriteResult], Mapping[str, str] | None] | None = None,
            if_match: str | None = None, if_none_match: str | None = None) -> ObjectInfo:
        """Store ``body`` under bucket/key; the name changes only once everything is durable."""
        check_key(bucket, key)
        # before the body is read: a value we could not send back safely is refused (cas.headers)
        content_type = check_content_type(content_type)
        metadata, headers = check_metadata(metadata), check_headers(headers)
        tags = check_tags(tags or {})
        conditional = if_match is not None or if_none_match is not None
        with self.index.read(snapshot=False) as t:  # fail fast, before reading a body we would refuse
            t.prefetch(buckets=[bucket], objects=[(bucket, key)] if conditional else [])
            owner = self._require_bucket(t, bucket)["owner"]
            self._check_conditions(t, bucket, key, if_match, if_none_match)

        def commit(t, result: WriteResult, checksums, now):
            self._require_bucket(t, bucket)
            self._check_conditions(t, bucket, key, if_match, if_none_match)
            info = ObjectInfo(bucket, key, result.size, result.etag, content_type or DEFAULT_CONTENT_TYPE,
                              mtime if mtime is not None else now, dict(metadata or {}), dict(headers or {}),
                              dict(checksums or {}), dict(props or {}), user or owner, 0, result.manifest.id,
                              tags=tags)
            return self._bind(t, info, "put", user)

        return self._write(body, hashers, expected_size, expected_md5, before_commit, commit,
                           {"buckets": [bucket], "objects": [(bucket, key)]})

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        with self.index.read(snapshot=False) as t:  # one read (two when there is no such object)
            rec = self._require_object(t, bucket, key)
        return ObjectInfo.from_record(bucket, key, rec)

    def open(self, bucket: str, key: str, *, range: tuple[int, int] | None = None,
             prefetch: bool = True) -> ObjectReader:
        """A reader of the object, or of bytes [start, stop) of it (stop clipped to the size).

        With ``prefetch`` (the default) the first block is read now, so a damaged object raises
        ``ObjectDamaged`` here; without it (HEAD, conditional GETs) call ``reader.prefetch()``
        before starting a response. Called on the class, ``Store.open_store(settings)`` opens a store
        (``open_store``)."""
        # no snapshot: a manifest never changes, and one the record names outlives a reader's
        # two statements (GC drops it only a grace after no name uses it)
        with self.index.read(snapshot=False) as t:
            rec = self._require_object(t, bucket, key)
            raw = t.get_manifest(bytes.fromhex(rec["m"]))
        info = ObjectInfo.from_record(bucket, key, rec)
        if raw is None:
            from ..errors import IntegrityError

            raise IntegrityError(f"the manifest of {bucket}/{key} is missing from the index")
        manifest = self._manifest(info.manifest_id, raw)
        start, stop = 0, info.size
        if range is not None:
            start, stop = range[0], min(range[1], info.size)
            if start < 0 or start >= info.size or stop <= start:
                raise InvalidRange(f"range {range[0]}-{range[1]} is not satisfiable for {info.size} bytes")
        return ObjectReader(self, info, manifest, start, stop, prefetch=prefetch)

    def get_bytes(self, bucket: str, key: str, *, range: tuple[int, int] | None = None) -> bytes:
        return self.open(bucket, key, range=range).read_all()

    def _manifest(self, manifest_id: bytes, raw: bytes) -> Manifest:
        """The decoded manifest, from a small cache: manifests never change (content-addressed),
        and ranged GETs of one large object would otherwise decode it once per range."""
        with self._manifests_lock:
            m = self._manifests.get(manifest_id)
            if m is not None:
                self._manifests.move_to_end(manifest_id)
                return m
        m = Manifest.decode(raw)
        with self._manifests_lock:
            self._manifests[manifest_id] = m
            while len(self._manifests) > MANIFEST_CACHE:
                self._manifests.popitem(last=False)
        return m

    def read_block(self, block_id: bytes) -> bytes:
        """One block's verified, uncompressed bytes."""
        return self.codec.decode(block_id, self.blocks.get(block_id))

    def read_object_blocks(self, info: ObjectInfo, block_ids: list[bytes]) -> list[bytes]:
        """Blocks of ``info``'s object, verified, fetched with coalesced reads; a block that
        fails is read again on its own and, failing again, marks the object damaged."""
        try:
            stored = list(self.blocks.get_many(block_ids))
        except (BlockNotFound, IntegrityError):
            return [self.read_object_block(info, bid) for bid in block_ids]
        out = []
        for bid, raw in zip(block_ids, stored):
            try:
                out.append(self.codec.decode(bid, raw))
            except IntegrityError:
                out.append(self.read_object_block(info, bid))
        return out

    def read_object_block(self, info: ObjectInfo, block_id: bytes) -> bytes:
        """A block of ``info``'s object; ``ObjectDamaged`` (and the row marked) if it cannot be read.

        A failed block is read once more before it is marked: a writer may have just replaced
        a damaged copy (block puts are atomic)."""
        try:
            return self.read_block(block_id)
        except (BlockNotFound, IntegrityError):
            pass
        try:
            return self.read_block(block_id)
        except (BlockNotFound, IntegrityError) as exc:
            why = "missing" if isinstance(exc, BlockNotFound) else "corrupt"
            blocklife.mark_damaged(self.index, block_id, self.clock, why)
            raise ObjectDamaged(f"the object {info.bucket}/{info.key} is damaged in the store (block "
                                f"{short(block_id)} is {why}): it cannot be read until its bytes are "
                                "uploaded again") from exc

    def list(self, bucket: str, *, prefix: str = "", delimiter: str = "", start_after: str = "",
             limit: int = 1000) -> Listing:
        """One page of keys (and common prefixes) in UTF-8 binary order."""
        limit = max(0, min(int(limit), 100_000))
        with self.index.read(snapshot=False) as t:  # a page is one statement
            self._require_bucket(t, bucket)
            if limit == 0:
                return Listing([], [], False, start_after)
            entries, prefixes, truncated = t.list_objects(bucket, prefix, delimiter, start_after, limit)
        infos = [ObjectInfo.from_record(bucket, k, r) for k, r in entries]
        last = max([i.key for i in infos[-1:]] + prefixes[-1:], default=start_after)
        return Listing(infos, prefixes, truncated, last)

    def iter_keys(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, paging through the index."""
        after = ""
        while True:
            page = self.list(bucket, prefix=prefix, start_after=after, limit=1000)
            yield from page.entries
            if not page.truncated:
                return
            after = page.next_start_after

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, *, user: str = "",
             metadata: Mapping[str, str] | None = None, content_type: str | None = None,
             headers: Mapping[str, str] | None = None, tags: Tags | None = None,
             if_match: str | None = None, if_none_match: str | None = None) -> ObjectInfo:
        """Bind the source's manifest to a second name: no block is read or written.

        ``metadata``, ``content_type``, ``headers`` and ``tags`` replace the source's when given
        (None: the copy keeps the source's)."""
        check_key(dst_bucket, dst_key)
        if content_type is not None:
            content_type = check_content_type(content_type) or ""
        if metadata is not None:
            metadata = check_metadata(metadata)
        if headers is not None:
            headers = check_headers(headers)
        if tags is not None:
            tags = check_tags(tags)
        with self.index.write() as t:
            src = self._require_object(t, src_bucket, src_key)
            owner = self._require_bucket(t, dst_bucket)["owner"]
            self._check_conditions(t, dst_bucket, dst_key, if_match, if_none_match)
            info = ObjectInfo.from_record(dst_bucket, dst_key, src)
            changes = {"mtime": self.clock(), "owner": user or owner}
            if metadata is not None:
                changes["metadata"] = dict(metadata)
            if headers is not None:
                changes["headers"] = dict(headers)
            if content_type is not None:
                changes["content_type"] = content_type
            if tags is not None:
                changes["tags"] = tags
            out = self._bind(t, replace(info, **changes), "copy", user)
            testonly_crash_point("copy.in_txn")
        self._notify()
        return out

    def move(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, *, user: str = "",
             overwrite: bool = True) -> ObjectInfo:
        """Rename an object (metadata only); keeps its mtime and properties."""
        check_key(dst_bucket, dst_key)
        with self.index.write() as t:
            src = self._require_object(t, src_bucket, src_key)
            self._require_bucket(t, dst_bucket)
            if (src_bucket, src_key) == (dst_bucket, dst_key):
                return ObjectInfo.from_record(src_bucket, src_key, src)
            if not overwrite and t.get_object(dst_bucket, dst_key) is not None:
                raise PreconditionFailed(f"{dst_bucket}/{dst_key} exists and overwrite is off")
            self._unbind(t, src_bucket, src_key, user, op="move_from")
            out = self._bind(t, ObjectInfo.from_record(dst_bucket, dst_key, src), "move", user)
            testonly_crash_point("move.in_txn")
        self._notify()
        return out

    def delete(self, bucket: str, key: str, *, user: str = "") -> None:
        with self.index.write() as t:
            self._unbind(t, bucket, key, user)
        self._notify()

    def _update(self, bucket: str, key: str, op: str, user: str, change: Callable[[ObjectInfo], ObjectInfo]) -> ObjectInfo:
        with self.index.write() as t:
            rec = self._require_object(t, bucket, key)
            info = change(ObjectInfo.from_record(bucket, key, rec))
            t.put_object(bucket, key, object_record(info))
            self._event(t, t.next_seq(), user, op, bucket, key, info.size, info.etag)
        self._notify()
        return info

    def set_props(self, bucket: str, key: str, set: Mapping[str, str] | None = None,
                  remove: Iterable[str] = (), *, user: str = "") -> ObjectInfo:
        """Change WebDAV dead properties of an object (they move, copy and die with it)."""
        def change(info: ObjectInfo) -> ObjectInfo:
            props = dict(info.props)
            props.update(set or {})
            for name in remove:
                props.pop(name, None)
            return replace(info, props=props)

        return self._update(bucket, key, "props", user, change)

    def touch(self, bucket: str, key: str, mtime: float, *, user: str = "") -> ObjectInfo:
        """Set an object's modification time (rclone's X-OC-Mtime)."""
        return self._update(bucket, key, "touch", user, lambda info: replace(info, mtime=float(mtime)))

    def meta_once(self, name: str, make: Callable[[], object]) -> object:
        """The value kept in index meta ``name``; when there is none, ``make()``'s, recorded first
        (``make`` runs outside any txn; when several processes or nodes make one at once, the first
        recorded is everybody's). Meta never reaches the backend: for what every node must share
        and the backend must not hold (the login-token key)."""
        with self.index.read() as t:
            value = t.get_meta(name)
        if value is not None:
            return value
        made = make()
        with self.index.write() as t:
            value = t.get_meta(name)
            if value is None:
                t.put_meta(name, made)
                value = made
        return value

    # -- small key-value space for protocol state -----------------------------------------------
    @contextlib.contextmanager
    def kv_write(self) -> Iterator[KvSpace]:
        """The kv space inside one write txn: its reads and writes are one atomic step for every
        node (``cas.store.kv``)."""
        with self.index.write() as t:
            yield KvSpace(t, writable=True)

    @contextlib.contextmanager
    def kv_read(self) -> Iterator[KvSpace]:
        """The kv space as of one snapshot (``cas.store.kv``)."""
        with self.index.read() as t:
            yield KvSpace(t, writable=False)

    def kv_get(self, ns: str, key: str) -> bytes | None:
        with self.index.read() as t:
            return t.kv_get(ns, key)

    def kv_put(self, ns: str, key: str, value: bytes) -> None:
        with self.index.write() as t:
            t.kv_put(ns, key, value)

    def kv_delete(self, ns: str, key: str) -> bool:
        with self.index.write() as t:
            return t.kv_delete(ns, key)

    def kv_scan(self, ns: str, prefix: str = "") -> list[tuple[str, bytes]]:
        with self.index.read() as t:
            return list(t.kv_scan(ns, prefix))

    def stats(self) -> dict:
        with self.index.read() as t:
            c = {name: t.counter(name) for name in ("objects", "logical_bytes", "unique_blocks",
                                                     "stored_bytes", "raw_bytes")}
            packs = pack_totals(t) if packs_of(self.blocks) is not None else None
        raw = c.pop("raw_bytes")
        c["dedup_ratio"] = round(c["logical_bytes"] / raw, 4) if raw else 1.0
        c["compression_ratio"] = round(raw / c["stored_bytes"], 4) if c["stored_bytes"] else 1.0
        if packs is not None:  # packs, their bytes, and the dead bytes in them awaiting repack
            c.update(packs)
        # what the index costs per object (names, manifests, block rows, journal, ...)
        c["index_bytes"] = self.index.disk_usage()
        c["index_bytes_per_object"] = round(c["index_bytes"] / c["objects"]) if c["objects"] else 0
        return c


__all__ = [
    "BUCKET_KEYED_KV", "DEFAULT_CONTENT_TYPE", "MIN_PART_SIZE", "BucketInfo", "Event", "Listing", "ObjectInfo",
    "ObjectReader", "PartInfo", "ReaderBody", "Store", "UploadInfo", "bucket_id", "etag_matches", "object_record",
]
