"""S3BlockStore: one object per block in an S3-compatible store (MinIO, AWS S3, SeaweedFS, Ceph).

The only module of cas that uses boto3 for storage. Layout: ``[PREFIX/]blocks/ab/<hex>``
in one bucket (``ab`` = the first two hex digits of the id), so a listing of
``PREFIX/blocks/`` is the set of stored blocks and nothing else lives there.

Guarantees (see ``base.py``) and how S3 gives them:

- put is atomic (S3 never exposes a half-uploaded object) and idempotent (the
  same id always carries the same bytes; re-putting overwrites them with
  themselves and refreshes LastModified, the block's creation time for GC's
  minimum age, as the local store refreshes its mtime).
- Readable right after put, durable on put: S3 (and MinIO, SeaweedFS) acknowledge
  a PUT only once stored and are read-after-write consistent, so ``sync`` is a
  no-op.
- Creation times are the backend's LastModified (server clock, UTC).

Failures are mapped once, here: a missing key is ``BlockNotFound``; timeouts,
dropped or reset connections, 5xx, throttling (SlowDown, 429, ...) are
``TransientStoreError`` (the ``RetryingBlockStore`` layer retries them: ``layers.py``;
``from_settings`` builds the layered store); anything else (403, InvalidAccessKeyId,
SignatureDoesNotMatch, NoSuchBucket, ...) is ``PermanentStoreError``. Each method sends
one request (a listing one per page); botocore's own retries are off so that this
classification is the only one.

Concurrency: at most ``concurrency`` requests are in flight (a semaphore held per
request, never while a layer above backs off), and the HTTP connection pool has exactly that
many connections, so callers may use more threads without churning connections.
Thread-safe: a botocore client is thread-safe and the rest is counters under a lock.
A HEAD that answers 404 cannot tell a missing key from a missing bucket; ``check``
(a HEAD of the bucket) is the place that reports the bucket itself.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
import botocore.exceptions as bce
from botocore.config import Config

from ..errors import BlockNotFound, ConfigError, PermanentStoreError, StoreError, TransientStoreError
from ..ids import ID_LEN, short
from .base import BlockStat, BlockStore
from .layers import layered
from .retry import RetryPolicy

T = TypeVar("T")

_HEXCHARS = frozenset("0123456789abcdef")

#: error codes S3-compatible servers use for "try again later"
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "OperationAborted",
        "XMinioServerNotInitialized",
    }
)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: codes meaning "this key is not there" (HEAD has no body, so botocore reports the status)
MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
#: connection-level failures: nothing (or not all) came back; the request may be repeated
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    bce.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, SSLError, ...
    bce.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
    bce.IncompleteReadError,  # body shorter than Content-Length
    ConnectionError,  # a raw ConnectionResetError/BrokenPipeError that escaped botocore
    TimeoutError,
)


def _drop_expect_continue(model: Any, params: dict[str, Any], **_: Any) -> None:
    """botocore adds ``Expect: 100-continue`` to every PutObject (``handlers.add_expect_header``)."""
    if model.name == "PutObject":
        params.get("headers", {}).pop("Expect", None)


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://BUCKET[/PREFIX]`` into ``(bucket, prefix)``; the prefix has no outer slashes."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"not an S3 block store URL (want s3://BUCKET[/PREFIX]): {url!r}")
    return parts.netloc, parts.path.strip("/")


def map_error(exc: BaseException, what: str) -> BlockNotFound | StoreError:
    """The cas error for a boto3/botocore failure of the request described by ``what``."""
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = f"{what}: {code or status} {err.get('Message') or ''}".rstrip()
        if code in MISSING_KEY_CODES:
            return BlockNotFound(detail)
        if code in TRANSIENT_CODES or status in TRANSIENT_STATUS:
            return TransientStoreError(detail)
        return PermanentStoreError(detail)
    if isinstance(exc, TRANSIENT_EXCEPTIONS):
        return TransientStoreError(f"{what}: {exc}")
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return PermanentStoreError(f"{what}: no S3 credentials ({exc})")
    return PermanentStoreError(f"{what}: {exc}")


class S3BlockStore(BlockStore):
    """Blocks as objects ``[PREFIX/]blocks/ab/<hex>`` in one bucket of an S3-compatible store."""

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
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        page_size: int = 1000,
    ):
        if not bucket:
            raise ConfigError("S3 block store needs a bucket")
        if (access_key is None) != (secret_key is None):
            raise ConfigError("give both the S3 access key and the secret key, or neither")
        if concurrency < 1 or not 1 <= page_size <= 1000:
            raise ConfigError("S3 block store: concurrency must be >= 1 and page size 1..1000")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.page_size = page_size
        self.kind = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._root = f"{self.prefix}/blocks/" if self.prefix else "blocks/"
        self._slots = threading.BoundedSemaphore(concurrency)
        self._stats_lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        config = Config(
            region_name=region or "us-east-1",
            max_pool_connections=concurrency,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},  # the retrying layer retries, not botocore
            s3={"addressing_style": "path" if endpoint else "auto"},
            tcp_keepalive=True,
            user_agent_extra="cas-blockstore",
        )
        try:
            session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
            self._client = session.client("s3", endpoint_url=endpoint, config=config)
        except (bce.BotoCoreError, ValueError) as exc:
            raise ConfigError(f"cannot set up S3 client for {self.kind} at {endpoint or 'AWS'}: {exc}") from exc
        # Blocks are small (<= 256 KiB + header): waiting a round trip for "100 Continue" before
        # every body costs more than re-sending the odd body a server refuses.
        self._client.meta.events.register_last("before-call.s3", _drop_expect_continue)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3BlockStore:
        """``S3BlockStore`` for ``s3://BUCKET[/PREFIX]``; keyword arguments as for the constructor."""
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, **kwargs)

    @classmethod
    def from_settings(cls, blocks: Any) -> BlockStore:
        """The S3 store of a ``config.BlocksSettings`` (url, endpoint, keys, region, concurrency,
        retries), layered as the server uses it: counted, transient failures retried.

        ``retries`` counts retries after the first attempt. Keys left unset fall back to
        boto3's standard sources (AWS_* environment variables, ~/.aws, instance roles).
        """
        backend = cls.from_url(
            blocks.url,
            endpoint=blocks.endpoint or None,
            access_key=blocks.access_key or None,
            secret_key=blocks.secret_key or None,
            region=blocks.region or None,
            concurrency=blocks.concurrency,
        )
        return layered(backend, retry=RetryPolicy(attempts=max(0, blocks.retries) + 1))

    # -- keys ---------------------------------------------------------------------------------

    def key(self, block_id: bytes) -> str:
        """The object key of ``block_id``."""
        h = block_id.hex()
        return f"{self._root}{h[:2]}/{h}"

    def _id_of(self, key: str) -> bytes | None:
        rest = key[len(self._root) :] if key.startswith(self._root) else ""
        fan, _, name = rest.partition("/")
        if len(name) != 2 * ID_LEN or fan != name[:2] or not set(name) <= _HEXCHARS:
            return None  # not a block (a stray object under the prefix): not ours to report
        return bytes.fromhex(name)

    # -- requests -----------------------------------------------------------------------------

    def _request(self, op: str, what: str, fn: Callable[[], T]) -> T:
        """Send one request: bounded concurrency, counted by operation, failures mapped."""
        with self._slots:
            with self._stats_lock:
                self._requests[op] += 1
            try:
                return fn()
            except (bce.BotoCoreError, bce.ClientError, ConnectionError, TimeoutError) as exc:
                raise map_error(exc, what) from exc

    def _where(self, op: str, key: str = "") -> str:
        return f"S3 {op} s3://{self.bucket}/{key} at {self.endpoint or 'AWS'}"

    def request_counts(self) -> dict[str, int]:
        """HTTP requests sent so far by operation (each retry of a layer above included)."""
        with self._stats_lock:
            return dict(self._requests)

    # -- BlockStore ---------------------------------------------------------------------------

    def put(self, block_id: bytes, data: bytes) -> None:
        key = self.key(block_id)
        body = data if isinstance(data, bytes) else bytes(data)
        self._request(
            "PutObject",
            self._where("PutObject", key),
            lambda: self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/octet-stream"
            ),
        )

    def get(self, block_id: bytes) -> bytes:
        key = self.key(block_id)

        def fetch() -> bytes:
            resp = self._client.get_object(Bucket=self.bucket, Key=key)
            body = resp["Body"]
            try:
                return body.read()  # botocore checks the length against Content-Length
            finally:
                body.close()

        try:
            data = self._request("GetObject", self._where("GetObject", key), fetch)
        except BlockNotFound as exc:
            raise BlockNotFound(f"block {short(block_id)} is missing from {self.kind}") from exc
        return data

    def _head(self, block_id: bytes) -> dict[str, Any]:
        key = self.key(block_id)
        try:
            return self._request(
                "HeadObject",
                self._where("HeadObject", key),
                lambda: self._client.head_object(Bucket=self.bucket, Key=key),
            )
        except BlockNotFound as exc:
            raise BlockNotFound(f"block {short(block_id)} is missing from {self.kind}") from exc

    def has(self, block_id: bytes) -> bool:
        try:
            self._head(block_id)
        except BlockNotFound:
            return False
        return True

    def stat(self, block_id: bytes) -> BlockStat:
        head = self._head(block_id)
        return BlockStat(int(head["ContentLength"]), head["LastModified"].timestamp())

    def delete(self, block_id: bytes) -> None:
        key = self.key(block_id)
        try:
            self._request(
                "DeleteObject",
                self._where("DeleteObject", key),
                lambda: self._client.delete_object(Bucket=self.bucket, Key=key),
            )
        except BlockNotFound:
            pass  # some servers answer 404 instead of 204 for an absent key

    def iter_ids(self, start_after: bytes | None = None) -> Iterator[tuple[bytes, float]]:
        """Page through ``PREFIX/blocks/`` (``page_size`` keys per request) in key order, which is
        id order (``blocks/ab/<hex>``); ``start_after`` starts the listing after that id's key."""
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._root, "MaxKeys": self.page_size}
            if token is not None:
                kwargs["ContinuationToken"] = token
            elif start_after is not None:
                kwargs["StartAfter"] = self.key(start_after)
            page = self._request(
                "ListObjectsV2",
                self._where("ListObjectsV2", self._root),
                lambda kw=kwargs: self._client.list_objects_v2(**kw),
            )
            for entry in page.get("Contents", ()):
                bid = self._id_of(entry["Key"])
                if bid is not None:
                    yield bid, entry["LastModified"].timestamp()
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token or token in seen_tokens:  # a broken server must not make us loop forever
                raise PermanentStoreError(
                    f"{self._where('ListObjectsV2', self._root)}: truncated listing without a new continuation token"
                )
            seen_tokens.add(token)

    def sync(self, block_ids) -> None:
        """Nothing to do: an acknowledged S3 PUT is already durable."""

    def check(self) -> None:
        """One HEAD of the bucket, not retried: is the backend there and are we allowed in?"""
        where = self._where("HeadBucket")
        try:
            self._request(
                "HeadBucket",
                where,
                lambda: self._client.head_bucket(Bucket=self.bucket),
            )
        except BlockNotFound as exc:  # HEAD has no body: 404 is all we get
            raise PermanentStoreError(f"{where}: bucket {self.bucket!r} does not exist") from exc
        except PermanentStoreError as exc:
            raise PermanentStoreError(f"{exc} (check the bucket name and the S3 credentials)") from exc

    def prepare(self) -> None:
        self.ensure_bucket()

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (for ``cas init`` and tests); retried when transient."""
        where = self._where("CreateBucket")
        try:
            self._request("HeadBucket", where, lambda: self._client.head_bucket(Bucket=self.bucket))
            return
        except BlockNotFound:
            pass
        region = self._client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._request("CreateBucket", where, lambda: self._client.create_bucket(**kwargs))
        except PermanentStoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, bce.ClientError) and cause.response.get("Error", {}).get("Code") == (
                "BucketAlreadyOwnedByYou"
            ):
                return  # created concurrently by another of our processes
            raise

    def close(self) -> None:
        self._client.close()
