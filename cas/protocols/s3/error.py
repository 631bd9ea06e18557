"""S3 errors on the wire: the one table from ``CasError`` to S3 code and HTTP status.

Handlers raise ``CasError`` subclasses (from the Store, from ``cas.auth.sigv4``, from the
body readers) or, for conditions that only S3 has a name for, :class:`S3Error` with its
code. :func:`to_s3_error` resolves either to an :class:`S3Error` by walking the class's MRO
through :data:`TABLE`, so a subclass inherits its parent's wire form unless it has its own
row. The XML body always carries ``Code``, ``Message``, ``Resource`` and ``RequestId``.
"""

from __future__ import annotations

from cas import errors as e
from cas.auth import sigv4
from cas.protocols.s3 import checksum, chunked

# class -> (S3 code, HTTP status). Order does not matter: the most specific class wins.
TABLE: dict[type[BaseException], tuple[str, int]] = {
    e.CasError: ("InternalError", 500),
    e.NotFound: ("NoSuchKey", 404),
    e.BucketNotFound: ("NoSuchBucket", 404),
    e.ObjectNotFound: ("NoSuchKey", 404),
    e.UploadNotFound: ("NoSuchUpload", 404),
    e.UserNotFound: ("InvalidAccessKeyId", 403),
    e.BlockNotFound: ("InternalError", 500),
    e.AlreadyExists: ("OperationAborted", 409),
    e.BucketAlreadyExists: ("BucketAlreadyExists", 409),
    e.Conflict: ("OperationAborted", 409),
    e.BucketNotEmpty: ("BucketNotEmpty", 409),
    e.PreconditionFailed: ("PreconditionFailed", 412),
    e.AccessDenied: ("AccessDenied", 403),
    e.BadRequest: ("InvalidRequest", 400),
    e.InvalidName: ("InvalidArgument", 400),
    e.KeyTooLong: ("KeyTooLongError", 400),
    e.BadDigest: ("BadDigest", 400),
    e.InvalidRange: ("InvalidRange", 416),
    e.MalformedXML: ("MalformedXML", 400),
    e.InvalidPart: ("InvalidPart", 400),
    e.InvalidPartOrder: ("InvalidPartOrder", 400),
    e.EntityTooSmall: ("EntityTooSmall", 400),
    e.IncompleteBody: ("IncompleteBody", 400),
    e.InvalidHeaderValue: ("InvalidArgument", 400),
    e.InvalidTag: ("InvalidTag", 400),
    e.IntegrityError: ("InternalError", 500),  # ObjectDamaged too: a server-side integrity fault
    e.StoreError: ("InternalError", 500),
    e.TransientStoreError: ("ServiceUnavailable", 503),
    e.ConfigError: ("InternalError", 500),
    sigv4.InvalidAccessKey: ("InvalidAccessKeyId", 403),
    sigv4.SignatureMismatch: ("SignatureDoesNotMatch", 403),
    sigv4.RequestTimeSkewed: ("RequestTimeTooSkewed", 403),
    sigv4.RequestExpired: ("AccessDenied", 403),
    sigv4.HeadersNotSigned: ("AccessDenied", 403),
    sigv4.MalformedAuthorization: ("AuthorizationHeaderMalformed", 400),
    sigv4.MalformedPresign: ("AuthorizationQueryParametersError", 400),
    sigv4.UnsupportedAuthorization: ("InvalidRequest", 400),
    sigv4.InvalidPayloadHash: ("InvalidArgument", 400),
    sigv4.PayloadHashMismatch: ("XAmzContentSHA256Mismatch", 400),
    checksum.InvalidDigest: ("InvalidDigest", 400),
    chunked.MalformedChunk: ("InvalidRequest", 400),
    chunked.MalformedTrailer: ("MalformedTrailerError", 400),
}


class S3Error(Exception):
    """An error S3 has a name for that the store's error tree has no class for."""

    def __init__(self, code: str, message: str, status: int = 400, **fields: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields  # extra XML elements (BucketName, Key, ArgumentName, ...)


def not_implemented(what: str) -> S3Error:
    return S3Error("NotImplemented", f"{what} is not implemented by cas.", 501)


def invalid_argument(message: str, name: str | None = None, value: str | None = None) -> S3Error:
    fields = {}
    if name is not None:
        fields["ArgumentName"] = name
        fields["ArgumentValue"] = "" if value is None else value
    return S3Error("InvalidArgument", message, 400, **fields)


def to_s3_error(exc: BaseException) -> S3Error:
    """The S3 wire form of an exception (an unknown one is an InternalError)."""
    if isinstance(exc, S3Error):
        return exc
    for cls in type(exc).__mro__:
        row = TABLE.get(cls)
        if row is not None:
            code, status = row
            message = str(exc) if isinstance(exc, e.CasError) else "We encountered an internal error. Please try again."
            if status >= 500 and not isinstance(exc, (e.TransientStoreError, e.ObjectDamaged)):
                # Internal details stay in the log, not on the wire (a damaged object is named:
                # the client must know its object is damaged, not that it may simply retry).
                message = "We encountered an internal error. Please try again."
            error = S3Error(code, message, status)
            if isinstance(exc, e.HeadersNotSigned):
                error.fields["HeadersNotSigned"] = ", ".join(exc.headers)
            return error
    return S3Error("InternalError", "We encountered an internal error. Please try again.", 500)
