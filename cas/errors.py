"""The one error tree of cas.

    CasError
    ├─ NotFound ─ BucketNotFound, ObjectNotFound, BlockNotFound, UploadNotFound, UserNotFound
    ├─ AlreadyExists ─ BucketAlreadyExists, UserAlreadyExists
    ├─ Conflict ─ BucketNotEmpty
    ├─ PreconditionFailed
    ├─ AccessDenied ─ InvalidAccessKey, SignatureMismatch, RequestTimeSkewed, RequestExpired,
    │                HeadersNotSigned, BucketNotVisible
    ├─ TooManyRequests         (failed logins from this address: wait ``retry_after`` seconds)
    ├─ BadRequest ─ InvalidName, KeyTooLong, BadDigest (─ PayloadHashMismatch), InvalidRange,
    │               MalformedXML, InvalidPart, InvalidPartOrder, EntityTooSmall, IncompleteBody,
    │               InvalidDigest, MalformedChunk, MalformedTrailer, MalformedAuthorization,
    │               MalformedPresign, UnsupportedAuthorization, InvalidPayloadHash,
    │               InvalidHeaderValue, MoveIntoItself, InvalidTag
    ├─ IntegrityError ─ ObjectDamaged   (a block does not hash to its id, cannot be decoded,
    │                                     or an object's block is missing)
    ├─ StoreError ─ TransientStoreError, PermanentStoreError ─ IndexDamaged
    ├─ ConfigError ─ CannotListen, NotAStore, IdentityMismatch
    └─ Refused                 (a safety check stopped a destructive run: gc's orphan guard)

Each class's docstring is its default message; ``exit_code`` is what the CLI
exits with when the error reaches it. Foreign exceptions (OSError, lmdb.Error,
botocore errors) are mapped at the lowest layer with ``raise X(...) from exc``;
each protocol maps these classes to its wire form in one table.
"""

from __future__ import annotations


class CasError(Exception):
    """cas failed."""

    exit_code = 1

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class NotFound(CasError):
    """Not found."""

    exit_code = 4


class BucketNotFound(NotFound):
    """The bucket does not exist."""


class ObjectNotFound(NotFound):
    """The object does not exist."""


class BlockNotFound(NotFound):
    """A block is missing from the block store."""


class UploadNotFound(NotFound):
    """The multipart upload does not exist (aborted, completed or expired)."""


class UserNotFound(NotFound):
    """The user does not exist."""


class AlreadyExists(CasError):
    """Already exists."""

    exit_code = 5


class BucketAlreadyExists(AlreadyExists):
    """The bucket already exists."""


class UserAlreadyExists(AlreadyExists):
    """The user already exists."""


class Conflict(CasError):
    """The request conflicts with the current state."""

    exit_code = 5


class BucketNotEmpty(Conflict):
    """The bucket is not empty."""


class PreconditionFailed(CasError):
    """A precondition does not hold."""

    exit_code = 6


class AccessDenied(CasError):
    """Access denied."""

    exit_code = 7


class InvalidAccessKey(AccessDenied):
    """The AWS Access Key Id you provided does not exist in our records."""


class SignatureMismatch(AccessDenied):
    """The request signature we calculated does not match the signature you provided. Check your key and signing method."""


class RequestTimeSkewed(AccessDenied):
    """The difference between the request time and the current time is too large."""


class RequestExpired(AccessDenied):
    """Request has expired."""


class BucketNotVisible(AccessDenied):
    """Access denied."""

    # the bucket exists but belongs to someone else (cas.access): S3 answers 403 AccessDenied,
    # as AWS does; WebDAV and the web API answer 404, as if it did not exist


class TooManyRequests(CasError):
    """Too many failed logins from this address; retry later."""

    exit_code = 7

    def __init__(self, message: str | None = None, *, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class HeadersNotSigned(AccessDenied):
    """There were headers present in the request which were not signed"""

    def __init__(self, headers=(), message: str | None = None):
        super().__init__(message)
        #: the lower-case names of the unsigned headers, in request order
        self.headers = tuple(headers)


class BadRequest(CasError):
    """Bad request."""

    exit_code = 2


class InvalidName(BadRequest):
    """The bucket name or key is not valid."""


class KeyTooLong(InvalidName):
    """The key is too long."""


class BadDigest(BadRequest):
    """The data does not match the checksum the client gave."""


class PayloadHashMismatch(BadDigest):
    """The provided 'x-amz-content-sha256' header does not match what was computed."""


class InvalidRange(BadRequest):
    """The requested range is not satisfiable."""


class MalformedXML(BadRequest):
    """The XML is not well formed or not valid."""


class InvalidPart(BadRequest):
    """A part is missing or its ETag does not match."""


class InvalidPartOrder(BadRequest):
    """The parts are not in ascending order."""


class EntityTooSmall(BadRequest):
    """A part other than the last is smaller than the minimum part size."""


class IncompleteBody(BadRequest):
    """The body ended before the announced length."""


class MalformedAuthorization(BadRequest):
    """The authorization header is malformed."""


class MalformedPresign(BadRequest):
    """The presigned URL's query parameters are malformed."""


class UnsupportedAuthorization(BadRequest):
    """The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."""


class InvalidPayloadHash(BadRequest):
    """x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-... value or a SHA-256 in hex."""


class InvalidDigest(BadRequest):
    """The checksum or Content-MD5 you specified is not valid."""


class MalformedChunk(BadRequest):
    """The aws-chunked body is not well formed."""


class MalformedTrailer(BadRequest):
    """The request contained trailing data that was not well-formed or did not conform to our published schema."""


class InvalidHeaderValue(BadRequest):
    """A header value (content type, user metadata, ...) is not one we can store and send back safely."""


class MoveIntoItself(BadRequest):
    """A folder cannot be moved or copied into itself."""


class InvalidTag(BadRequest):
    """A tag set breaks S3's rules (too many tags, a key or value too long, a key given twice)."""


class IntegrityError(CasError):
    """A block does not hash to its id: refusing to return wrong bytes."""

    exit_code = 3


class ObjectDamaged(IntegrityError):
    """The object is damaged in the store (a block of it is missing or corrupt): it cannot be read until its bytes are uploaded again."""


class StoreError(CasError):
    """The storage backend failed."""

    exit_code = 8


class TransientStoreError(StoreError):
    """The storage backend is unavailable; try again."""


class PermanentStoreError(StoreError):
    """The storage backend refused the request."""


class IndexDamaged(PermanentStoreError):
    """The index is damaged (cut short or not an index): rebuild it with `cas recover`."""


class ConfigError(CasError):
    """The configuration is not valid."""

    exit_code = 2


class NotAStore(ConfigError):
    """The data directory holds no cas store (only `cas init` and `cas serve` create one)."""


class IdentityMismatch(ConfigError):
    """The index and the block backend do not belong to the same store (or the index is older)."""


class Refused(CasError):
    """A safety check refused a destructive run (nothing was deleted)."""

    exit_code = 9


class CannotListen(ConfigError):
    """A listener cannot bind its address (in use, not local, or not permitted)."""

    def __init__(self, message: str | None = None, *, listener: str = ""):
        super().__init__(message)
        self.listener = listener
