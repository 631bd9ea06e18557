"""S3Bucket: one bucket of an S3-compatible store (MinIO, AWS S3, SeaweedFS, Ceph) as cas talks to it.

The only module of cas that imports boto3 for storage. The block store (``s3.py``) and the pack
files (``packs/s3files.py``) send every request through an ``S3Bucket``, which owns:

- the botocore client: path-style addressing when an endpoint is given, connect and read
  timeouts, botocore's own retries off (callers retry with ``retry.RetryPolicy``, so the
  classification below is the only one), no ``Expect: 100-continue`` on PutObject;
- bounded concurrency: at most ``concurrency`` requests in flight (a semaphore held per
  request, never while a caller backs off), and the HTTP connection pool has exactly that
  many connections, so callers may use more threads without churning connections;
- request counts by operation (each attempt counts);
- the error mapping, once: a missing key is ``BlockNotFound``; timeouts, dropped or reset
  connections, 5xx, throttling (SlowDown, 429, ...) are ``TransientStoreError``; anything
  else (403, InvalidAccessKeyId, SignatureDoesNotMatch, NoSuchBucket, ...) is
  ``PermanentStoreError``. ``error_code`` gives callers the S3 code behind a mapped error
  (NoSuchUpload, InvalidRange) without importing botocore;
- the bucket itself: ``check`` (HeadBucket) and ``ensure`` (create unless it exists).

A HEAD that answers 404 cannot tell a missing key from a missing bucket; ``check`` is the
place that reports the bucket. Thread-safe: a botocore client is thread-safe and the rest is
counters under a lock.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
import botocore.exceptions as bce
import urllib3.exceptions as u3e
from botocore.config import Config

from ..errors import BlockNotFound, ConfigError, PermanentStoreError, StoreError, TransientStoreError

T = TypeVar("T")

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
    # botocore reads an error response's body (a 404's XML) without wrapping urllib3's errors:
    # a connection reset there escapes as urllib3's ProtocolError
    u3e.HTTPError,
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


def error_code(exc: BaseException) -> str:
    """The S3 error code (or, without one, the HTTP status) behind an error ``map_error`` made;
    ``""`` when the failure was not an S3 error response."""
    cause = exc.__cause__
    if not isinstance(cause, bce.ClientError):
        return ""
    code = str(cause.response.get("Error", {}).get("Code", ""))
    return code or str(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")


class S3Bucket:
    """A client of one bucket: bounded, counted, mapped requests (``request``)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        concurrency: int = 8,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        user_agent: str = "cas",
    ):
        if not bucket:
            raise ConfigError("S3 storage needs a bucket")
        if (access_key is None) != (secret_key is None):
            raise ConfigError("give both the S3 access key and the secret key, or neither")
        if concurrency < 1:
            raise ConfigError("S3 storage: concurrency must be >= 1")
        self.bucket = bucket
        self.endpoint = endpoint
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._stats_lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        config = Config(
            region_name=region or "us-east-1",
            max_pool_connections=concurrency,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},  # callers retry, not botocore
            s3={"addressing_style": "path" if endpoint else "auto"},
            tcp_keepalive=True,
            user_agent_extra=user_agent,
        )
        try:
            session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
            self.client = session.client("s3", endpoint_url=endpoint, config=config)
        except (bce.BotoCoreError, ValueError) as exc:
            raise ConfigError(f"cannot set up S3 client for bucket {bucket!r} at {endpoint or 'AWS'}: {exc}") from exc
        # Blocks and small packs go up in one PutObject: waiting a round trip for "100 Continue"
        # before every body costs more than re-sending the odd body a server refuses.
        self.client.meta.events.register_last("before-call.s3", _drop_expect_continue)

    def request(self, op: str, what: str, fn: Callable[[], T]) -> T:
        """Send one request: bounded concurrency, counted by operation, failures mapped."""
        with self._slots:
            with self._stats_lock:
                self._requests[op] += 1
            try:
                return fn()
            except (bce.BotoCoreError, bce.ClientError, ConnectionError, TimeoutError, u3e.HTTPError) as exc:
                raise map_error(exc, what) from exc

    def where(self, op: str, key: str = "") -> str:
        """How error messages name a request."""
        return f"S3 {op} s3://{self.bucket}/{key} at {self.endpoint or 'AWS'}"

    def request_counts(self) -> dict[str, int]:
        """HTTP requests sent so far by operation (each retry included)."""
        with self._stats_lock:
            return dict(self._requests)

    def check(self) -> None:
        """One HEAD of the bucket: is the backend there and are we allowed in?"""
        where = self.where("HeadBucket")
        try:
            self.request("HeadBucket", where, lambda: self.client.head_bucket(Bucket=self.bucket))
        except BlockNotFound as exc:  # HEAD has no body: 404 is all we get
            raise PermanentStoreError(f"{where}: bucket {self.bucket!r} does not exist") from exc
        except PermanentStoreError as exc:
            raise PermanentStoreError(f"{exc} (check the bucket name and the S3 credentials)") from exc

    def ensure(self) -> None:
        """Create the bucket unless it exists (one attempt; callers retry)."""
        where = self.where("CreateBucket")
        try:
            self.request("HeadBucket", where, lambda: self.client.head_bucket(Bucket=self.bucket))
            return
        except BlockNotFound:
            pass
        region = self.client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.request("CreateBucket", where, lambda: self.client.create_bucket(**kwargs))
        except PermanentStoreError as exc:
            if error_code(exc) == "BucketAlreadyOwnedByYou":
                return  # created concurrently by another of our processes
            raise

    def close(self) -> None:
        self.client.close()
