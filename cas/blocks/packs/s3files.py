"""S3PackFiles: packs as objects ``[PREFIX/]packs/ab/<32 hex>`` in one bucket of an S3-compatible store.

The ``PackFiles`` contract (``files.py``) and how S3 gives it:

- ``finish()`` returns once the pack is one complete object: S3 never exposes a partial
  object (a multipart upload is invisible until CompleteMultipartUpload), acknowledges a
  write only once stored, and is read-after-write consistent. After that a pack is never
  written again. ``can_flush`` is False: nothing of an unfinished pack is readable or durable,
  so a store over S3 finishes a pack wherever a writer needs its blocks durable.
- A sink buffers writes. A pack that ends below the part size goes up in one PutObject. Once
  the buffer reaches the part size (default 8 MiB, at least S3's 5 MiB), the sink starts a
  multipart upload and hands each full part to a thread pool shared by the whole store, so
  one pack keeps several connections busy; ``finish`` sends the last part (any size), waits
  for all, and completes the upload.
- Memory is bounded: a sink holds its buffer (< one part) plus at most ``parts_per_sink``
  parts waiting or uploading; ``write`` blocks while that many are pending.
  ``buffered_bytes`` / ``peak_buffered`` report it.
- A failed upload is aborted (AbortMultipartUpload) and the error raised (from ``write`` once
  a background part has failed, or from ``finish``); ``abort()`` does the same on request.
  A process killed mid-pack leaves an incomplete multipart upload, invisible to reads and
  listings; ``abort_stale_uploads`` (called by GC) aborts those older than a cutoff.
- ``read`` is one ranged GetObject; ``size`` a HeadObject; ``delete`` a DeleteObject (absent
  is fine); ``iter_packs`` pages through ListObjectsV2, which lists keys in ascending order,
  i.e. pack ids in ascending order; ``created`` is the server's LastModified.

Requests go through an ``S3Bucket`` (``../s3bucket.py``): at most ``concurrency`` in flight
across the whole store (reads and part uploads alike), counted by operation, failures mapped
once (missing key → ``BlockNotFound``; 5xx, throttling, resets, timeouts, a cut response
body → ``TransientStoreError``; anything else → ``PermanentStoreError``). Each request that
fails transiently is retried under ``retry`` (a ``RetryPolicy``), a part from the bytes held
in memory; a listing resumes after the last pack it yielded. A retry may repeat a request
that had succeeded; every request here is safe to repeat (a part or a whole pack is
re-sent with the same bytes; completing or aborting an upload that is already gone is
checked, not trusted blindly).

Thread-safe; a sink is used by one thread at a time (its parts upload on the pool).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from ...errors import BlockNotFound, ConfigError, IntegrityError, PermanentStoreError, StoreError
from ..retry import RetryPolicy
from ..s3bucket import S3Bucket, error_code, parse_s3_url
from .files import PackFiles, PackSink, check_meta_name, pack_name
from .format import PACK_ID_LEN

log = logging.getLogger(__name__)

T = TypeVar("T")

_HEXCHARS = frozenset("0123456789abcdef")
MiB = 1 << 20
#: S3's smallest part (all but the last)
MIN_PART_SIZE = 5 * MiB
#: S3's largest part
MAX_PART_SIZE = 5 << 30
#: S3's most parts per upload
MAX_PARTS = 10_000
_GONE_UPLOAD = frozenset({"NoSuchUpload", "404"})


class S3PackFiles(PackFiles):
    """Packs as objects ``[PREFIX/]packs/ab/<hex>`` in one bucket of an S3-compatible store."""

    can_flush = False

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        concurrency: int = 8,
        part_size: int = 8 * MiB,
        parts_per_sink: int = 2,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        page_size: int = 1000,
    ):
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ConfigError(f"S3 pack part size must be {MIN_PART_SIZE} .. {MAX_PART_SIZE} bytes, not {part_size}")
        if parts_per_sink < 1 or not 1 <= page_size <= 1000:
            raise ConfigError("S3 packs: parts per sink must be >= 1 and page size 1..1000")
        self._s3 = S3Bucket(
            bucket,
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            concurrency=concurrency,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent="cas-packs",
        )
        self._client = self._s3.client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.part_size = part_size
        self.parts_per_sink = parts_per_sink
        self.page_size = page_size
        self.retry = retry or RetryPolicy()
        self.kind = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._root = f"{self.prefix}/packs/" if self.prefix else "packs/"
        self._meta_root = f"{self.prefix}/meta/" if self.prefix else "meta/"
        # parts of every sink share these workers; the bucket's semaphore bounds the requests
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cas-s3-part")

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3PackFiles:
        """``S3PackFiles`` for ``s3://BUCKET[/PREFIX]``; keyword arguments as for the constructor."""
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, **kwargs)

    @classmethod
    def from_settings(cls, blocks: Any) -> S3PackFiles:
        """The packs of a ``config.BlocksSettings`` (url, endpoint, keys, region, concurrency,
        retries). ``retries`` counts retries after the first attempt. Keys left unset fall back
        to boto3's standard sources (AWS_* environment variables, ~/.aws, instance roles)."""
        return cls.from_url(
            blocks.url,
            endpoint=blocks.endpoint or None,
            access_key=blocks.access_key or None,
            secret_key=blocks.secret_key or None,
            region=blocks.region or None,
            concurrency=blocks.concurrency,
            retry=RetryPolicy(attempts=max(0, blocks.retries) + 1),
        )

    # -- keys ---------------------------------------------------------------------------------

    def key(self, pack_id: bytes) -> str:
        """The object key of ``pack_id``."""
        h = pack_name(pack_id)
        return f"{self._root}{h[:2]}/{h}"

    def _id_of(self, key: str) -> bytes | None:
        rest = key[len(self._root):] if key.startswith(self._root) else ""
        fan, _, name = rest.partition("/")
        if len(name) != 2 * PACK_ID_LEN or fan != name[:2] or not set(name) <= _HEXCHARS:
            return None  # not a pack (a stray object under the prefix): not ours to report
        return bytes.fromhex(name)

    # -- requests -----------------------------------------------------------------------------

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """One request, retried while it fails transiently (the slot is not held while waiting)."""
        where = self._s3.where(op, key)
        return self.retry.run(where, lambda: self._s3.request(op, where, fn))

    def request_counts(self) -> dict[str, int]:
        """HTTP requests sent so far by operation (each retry included)."""
        return self._s3.request_counts()

    def _missing(self, pack_id: bytes) -> BlockNotFound:
        return BlockNotFound(f"pack {pack_name(pack_id)} is missing from {self.kind}")

    # -- PackFiles ----------------------------------------------------------------------------

    def create(self, pack_id: bytes) -> S3PackSink:
        if len(pack_id) != PACK_ID_LEN:
            raise ValueError("a pack id has 16 bytes")
        return S3PackSink(self, pack_id)

    def read(self, pack_id: bytes, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range {offset}+{length}")
        if length == 0:
            self.size(pack_id)  # an absent pack is an error, whatever the length
            return b""
        key = self.key(pack_id)

        def fetch() -> bytes:
            resp = self._client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
            body = resp["Body"]
            try:
                data = body.read()  # botocore checks the length against Content-Length: a cut body is transient
            finally:
                body.close()
            if "ContentRange" not in resp:  # a server that ignores Range sends the whole object
                data = data[offset:offset + length]
            return data

        try:
            data = self._call("GetObject", key, fetch)
        except BlockNotFound as exc:
            raise self._missing(pack_id) from exc
        except PermanentStoreError as exc:
            if error_code(exc) not in ("InvalidRange", "416"):
                raise
            data = b""  # the range starts at or after the end
        if len(data) != length:
            raise IntegrityError(f"pack {pack_name(pack_id)} in {self.kind} is truncated: "
                                 f"{len(data)} of {length} bytes at offset {offset}")
        return data

    def size(self, pack_id: bytes) -> int:
        key = self.key(pack_id)
        try:
            head = self._call("HeadObject", key, lambda: self._client.head_object(Bucket=self.bucket, Key=key))
        except BlockNotFound as exc:
            raise self._missing(pack_id) from exc
        return int(head["ContentLength"])

    def delete(self, pack_id: bytes) -> None:
        key = self.key(pack_id)
        try:
            self._call("DeleteObject", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=key))
        except BlockNotFound:
            pass  # some servers answer 404 instead of 204 for an absent key

    def iter_packs(self) -> Iterator[tuple[bytes, int, float]]:
        """Every pack, in id order, streaming; a failed page is retried and the listing resumes
        after the last pack yielded."""
        return self.retry.run_iter("list packs", self._list_from, key=lambda item: item[0])

    def _list_from(self, start_after: bytes | None) -> Iterator[tuple[bytes, int, float]]:
        for entry in self._list_keys(self._root, None if start_after is None else self.key(start_after)):
            pid = self._id_of(entry["Key"])
            if pid is not None:
                yield pid, int(entry["Size"]), entry["LastModified"].timestamp()

    def _list_keys(self, prefix: str, start_after: str | None) -> Iterator[dict]:
        """The listing entries of the keys under ``prefix`` after key ``start_after``, page by page."""
        token: str | None = None
        seen_tokens: set[str] = set()
        where = self._s3.where("ListObjectsV2", prefix)
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": self.page_size}
            if token is not None:
                kwargs["ContinuationToken"] = token
            elif start_after is not None:
                kwargs["StartAfter"] = start_after
            page = self._s3.request("ListObjectsV2", where, lambda kw=kwargs: self._client.list_objects_v2(**kw))
            yield from page.get("Contents", ())
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token or token in seen_tokens:  # a broken server must not make us loop forever
                raise PermanentStoreError(f"{where}: truncated listing without a new continuation token")
            seen_tokens.add(token)

    # -- meta objects: ``[PREFIX/]meta/<name>``, one PutObject each (atomic on S3) -----------------
    def put_meta(self, name: str, data: bytes) -> None:
        self._put(self._meta_root + check_meta_name(name), data)

    def get_meta(self, name: str) -> bytes | None:
        key = self._meta_root + check_meta_name(name)

        def fetch() -> bytes:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return body.read()
            finally:
                body.close()

        try:
            return self._call("GetObject", key, fetch)
        except BlockNotFound:
            return None

    def list_meta(self, prefix: str = "") -> Iterator[str]:
        root = self._meta_root + check_meta_name(prefix, prefix=True)
        return self.retry.run_iter("list meta objects", lambda after: self._list_meta(root, after), key=lambda n: n)

    def _list_meta(self, root: str, start_after: str | None) -> Iterator[str]:
        after = None if start_after is None else self._meta_root + start_after
        for entry in self._list_keys(root, after):
            yield entry["Key"][len(self._meta_root):]

    def delete_meta(self, name: str) -> None:
        key = self._meta_root + check_meta_name(name)
        try:
            self._call("DeleteObject", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=key))
        except BlockNotFound:
            pass

    def check(self) -> None:
        """One HEAD of the bucket, not retried: is the backend there and are we allowed in?"""
        self._s3.check()

    def prepare(self) -> None:
        """Create the bucket unless it exists."""
        self.retry.run(self._s3.where("CreateBucket"), self._s3.ensure)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._s3.close()

    # -- multipart uploads --------------------------------------------------------------------

    def iter_uploads(self) -> Iterator[tuple[bytes, str, float]]:
        """``(pack id, upload id, initiated)`` of the incomplete multipart uploads of packs.

        Pages follow NextKeyMarker/NextUploadIdMarker, or the last upload of a page where a server
        leaves them out. Not every server pages this listing correctly (SeaweedFS 4 lists its
        first page only), so a caller that must see every upload repeats it (see
        ``abort_stale_uploads``)."""
        where = self._s3.where("ListMultipartUploads", self._root)
        markers: dict[str, str] = {}
        seen: set[tuple[str, str]] = set()
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._root, "MaxUploads": self.page_size,
                                      **markers}
            page = self._call("ListMultipartUploads", self._root,
                              lambda kw=kwargs: self._client.list_multipart_uploads(**kw))
            uploads = page.get("Uploads", ())
            for upload in uploads:
                pid = self._id_of(upload["Key"])
                if pid is not None:
                    yield pid, upload["UploadId"], upload["Initiated"].timestamp()
            if not page.get("IsTruncated") or not uploads:
                return
            nxt = (page.get("NextKeyMarker") or uploads[-1]["Key"],
                   page.get("NextUploadIdMarker") or uploads[-1]["UploadId"])
            if nxt in seen:  # a broken server must not make us loop forever
                raise PermanentStoreError(f"{where}: truncated listing without a new marker")
            seen.add(nxt)
            markers = {"KeyMarker": nxt[0], "UploadIdMarker": nxt[1]}

    def abort_stale_uploads(self, older_than: float, *, now: float | None = None) -> int:
        """Abort the incomplete multipart uploads of packs initiated more than ``older_than``
        seconds before ``now`` (what a process killed mid-pack leaves behind; a live writer
        finishes a pack long before the cutoff). Returns how many were aborted.

        Lists again after aborting until a listing finds nothing stale, so that uploads a
        server's paging missed are found (one extra listing where paging works)."""
        cutoff = (time.time() if now is None else now) - older_than
        aborted = 0
        for _ in range(1000):  # bounded: each pass aborts at least one upload
            stale = [(pid, upload_id) for pid, upload_id, initiated in self.iter_uploads() if initiated < cutoff]
            for pid, upload_id in stale:
                self._abort_upload(self.key(pid), upload_id)
            aborted += len(stale)
            if not stale:
                break
        if aborted:
            log.info("aborted %d incomplete pack uploads older than %.0f s in %s", aborted, older_than, self.kind)
        return aborted

    def _create_upload(self, key: str) -> str:
        resp = self._call(
            "CreateMultipartUpload",
            key,
            lambda: self._client.create_multipart_upload(Bucket=self.bucket, Key=key,
                                                         ContentType="application/octet-stream"),
        )
        return str(resp["UploadId"])

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        resp = self._call(
            "UploadPart",
            key,
            lambda: self._client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                             Body=data),
        )
        return str(resp["ETag"])

    def _complete_upload(self, key: str, upload_id: str, etags: list[str], size: int) -> None:
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, 1)]
        try:
            self._call(
                "CompleteMultipartUpload",
                key,
                lambda: self._client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                               MultipartUpload={"Parts": parts}),
            )
        except PermanentStoreError as exc:
            # A retry after a completion whose answer was lost finds the upload gone: the object
            # of the expected size is the proof that it did complete.
            if error_code(exc) not in _GONE_UPLOAD or self._object_size(key) != size:
                raise

    def _object_size(self, key: str) -> int | None:
        try:
            head = self._call("HeadObject", key, lambda: self._client.head_object(Bucket=self.bucket, Key=key))
        except BlockNotFound:
            return None
        return int(head["ContentLength"])

    def _abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self._call(
                "AbortMultipartUpload",
                key,
                lambda: self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id),
            )
        except (BlockNotFound, PermanentStoreError) as exc:
            if not isinstance(exc, BlockNotFound) and error_code(exc) not in _GONE_UPLOAD:
                raise  # gone already (a retried abort, or another process's GC) is what we wanted

    def _put(self, key: str, data: bytes) -> None:
        self._call(
            "PutObject",
            key,
            lambda: self._client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                            ContentType="application/octet-stream"),
        )


class S3PackSink(PackSink):
    """One pack going up: buffered, then one PutObject or a multipart upload (see the module)."""

    def __init__(self, files: S3PackFiles, pack_id: bytes):
        self._files = files
        self.pack_id = pack_id
        self.key = files.key(pack_id)
        self._buf = bytearray()
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[Future[str]] = []
        self._pending = threading.BoundedSemaphore(files.parts_per_sink)
        self._lock = threading.Lock()  # the fields below change in pool threads
        self._held = 0  # bytes of parts handed to the pool and not uploaded yet
        self._error: BaseException | None = None
        self.peak_buffered = 0
        self._state = "open"  # open -> finished | aborted | failed

    @property
    def buffered_bytes(self) -> int:
        """Bytes of this pack held in memory now (buffer and parts not yet uploaded)."""
        with self._lock:
            return len(self._buf) + self._held

    def _note_peak(self) -> None:
        with self._lock:
            self.peak_buffered = max(self.peak_buffered, len(self._buf) + self._held)

    def _require_open(self) -> None:
        if self._state == "failed" and self._error is not None:
            raise self._error
        if self._state != "open":
            raise RuntimeError(f"pack {pack_name(self.pack_id)} is {self._state}: no more writes")

    def write(self, data: bytes) -> None:
        self._require_open()
        view = memoryview(data).cast("B")
        n = view.nbytes
        part_size = self._files.part_size
        try:
            while view:
                room = part_size - len(self._buf)
                self._buf += view[:room]
                view = view[room:]
                self._note_peak()
                if len(self._buf) >= part_size:
                    self._send_part()
        except BaseException as exc:
            self._abandon(exc)
            raise
        self._size += n

    def _send_part(self) -> None:
        """Hand the buffer to the pool as the next part (after starting the upload); blocks while
        ``parts_per_sink`` parts are pending."""
        self._raise_part_error()
        if len(self._parts) >= MAX_PARTS:
            raise PermanentStoreError(f"pack {pack_name(self.pack_id)} would exceed {MAX_PARTS} parts")
        if self._upload_id is None:
            self._upload_id = self._files._create_upload(self.key)
        self._pending.acquire()
        try:
            self._raise_part_error()  # a part that failed while we waited
        except BaseException:
            self._pending.release()
            raise
        # botocore copies a bytearray body (into each attempt); bytes it sends as they are
        part = bytes(self._buf)
        self._buf = bytearray()
        with self._lock:
            self._held += len(part)
        try:
            future = self._files._pool.submit(self._files._upload_part, self.key, self._upload_id,
                                              len(self._parts) + 1, part)
        except BaseException:
            self._part_done(len(part), None)
            raise
        self._parts.append(future)
        future.add_done_callback(lambda f, n=len(part): self._part_done(n, f))

    def _part_done(self, size: int, future: Future[str] | None) -> None:
        with self._lock:
            self._held -= size
            if future is not None and self._error is None and not future.cancelled():
                self._error = future.exception()
        self._pending.release()

    def _raise_part_error(self) -> None:
        with self._lock:
            error = self._error
        if error is not None:
            raise error

    def finish(self) -> None:
        self._require_open()
        try:
            if self._upload_id is None:
                body = bytes(self._buf)
                self._buf = bytearray()
                self._files._put(self.key, body)
            else:
                if self._buf:
                    self._send_part()  # the last part may be of any size
                wait(self._parts)
                self._raise_part_error()
                self._files._complete_upload(self.key, self._upload_id, [f.result() for f in self._parts],
                                             self._size)
        except BaseException as exc:
            self._abandon(exc)
            raise
        self._state = "finished"
        self._parts = []

    def _abandon(self, exc: BaseException) -> None:
        """After a failure: wait for the parts in flight, then abort the upload (best effort: the
        caller sees the failure; an upload left behind is GC's ``abort_stale_uploads``). Later
        calls raise the first failure again."""
        self._state = "failed"
        with self._lock:
            if self._error is None:
                self._error = exc
        self._drop()

    def _drop(self) -> None:
        self._buf = bytearray()
        wait(self._parts)
        self._parts = []
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            try:
                self._files._abort_upload(self.key, upload_id)
            except StoreError as exc:
                log.warning("pack %s: could not abort its upload (%s); GC will", pack_name(self.pack_id), exc)

    def abort(self) -> None:
        """Forget the pack: abort its upload, or delete it when it was already finished."""
        if self._state == "aborted":
            return
        finished = self._state == "finished"
        self._state = "aborted"
        self._drop()
        if finished:
            self._files.delete(self.pack_id)
