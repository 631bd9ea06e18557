"""S3BlockStore: one object per block in an S3-compatible store (MinIO, AWS S3, SeaweedFS, Ceph).

Stores written before packs (DESIGN §8) keep blocks this way; new stores keep them in packs
(``packs/s3files.py``). Layout: ``[PREFIX/]blocks/ab/<hex>`` in one bucket (``ab`` = the
first two hex digits of the id), so a listing of ``PREFIX/blocks/`` is the set of stored
blocks and nothing else lives there.

Guarantees (see ``base.py``) and how S3 gives them:

- put is atomic (S3 never exposes a half-uploaded object) and idempotent (the
  same id always carries the same bytes; re-putting overwrites them with
  themselves and refreshes LastModified, the block's creation time for GC's
  minimum age, as the local store refreshes its mtime).
- Readable right after put, durable on put: S3 (and MinIO, SeaweedFS) acknowledge
  a PUT only once stored and are read-after-write consistent, so ``sync`` is a
  no-op.
- Creation times are the backend's LastModified (server clock, UTC).

Requests go through an ``S3Bucket`` (``s3bucket.py``: the boto3 client, at most
``concurrency`` requests in flight, request counts, and the one mapping of failures:
missing key → ``BlockNotFound``, 5xx/throttling/resets/timeouts → ``TransientStoreError``,
anything else → ``PermanentStoreError``). Each method sends one request (a listing one per
page); transient failures are retried by the ``RetryingBlockStore`` layer (``layers.py``;
``from_settings`` builds the layered store). Thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import BlockNotFound, ConfigError, PermanentStoreError
from ..ids import ID_LEN, short
from .base import BlockStat, BlockStore
from .layers import layered
from .retry import RetryPolicy
from .s3bucket import S3Bucket, parse_s3_url

T = TypeVar("T")

_HEXCHARS = frozenset("0123456789abcdef")


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
        if not 1 <= page_size <= 1000:
            raise ConfigError("S3 block store: page size must be 1..1000")
        self._s3 = S3Bucket(
            bucket,
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            concurrency=concurrency,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent="cas-blockstore",
        )
        self._client = self._s3.client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.page_size = page_size
        self.kind = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._root = f"{self.prefix}/blocks/" if self.prefix else "blocks/"

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
        return self._s3.request(op, what, fn)

    def _where(self, op: str, key: str = "") -> str:
        return self._s3.where(op, key)

    def request_counts(self) -> dict[str, int]:
        """HTTP requests sent so far by operation (each retry of a layer above included)."""
        return self._s3.request_counts()

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
        self._s3.check()

    def prepare(self) -> None:
        self.ensure_bucket()

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (for ``cas init`` and tests); retried when transient
        by the layer above (``prepare``)."""
        self._s3.ensure()

    def close(self) -> None:
        self._s3.close()
