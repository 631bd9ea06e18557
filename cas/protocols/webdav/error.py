"""CasError -> WebDAV status: the one table, and the boundary that applies it.

Every Store call the WebDAV front makes runs inside :func:`dav_errors`, which
turns a :class:`~cas.errors.CasError` into a wsgidav ``DAVError`` carrying the
status below. wsgidav turns any *other* exception into a 500, so the mapping
must happen here, at the boundary, and not be left to the generic handler.

Client mistakes are 4xx; only failures of the server itself (a broken block,
a backend that refuses to work) are 5xx. A full disk is 507 Insufficient
Storage, as RFC 4918 asks.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from wsgidav import dav_error
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_INTERNAL_ERROR,
    HTTP_NOT_FOUND,
    HTTP_PRECONDITION_FAILED,
    HTTP_RANGE_NOT_SATISFIABLE,
    HTTP_REQUEST_URI_TOO_LONG,
    HTTP_SERVICE_UNAVAILABLE,
    DAVError,
)

from cas import errors

log = logging.getLogger(__name__)

# wsgidav prints "<code> Status" for codes it has no phrase for; give the ones we use.
for _code, _phrase in (
    (405, "405 Method Not Allowed"),
    (413, "413 Payload Too Large"),
    (414, "414 URI Too Long"),
    (429, "429 Too Many Requests"),
    (503, "503 Service Unavailable"),
    (507, "507 Insufficient Storage"),
):
    dav_error.ERROR_DESCRIPTIONS.setdefault(_code, _phrase)

#: Most specific class first: the first ``isinstance`` match wins.
STATUS: tuple[tuple[type[errors.CasError], int], ...] = (
    (errors.BlockNotFound, HTTP_INTERNAL_ERROR),  # the store is damaged, not the request
    (errors.NotFound, HTTP_NOT_FOUND),
    (errors.AlreadyExists, HTTP_CONFLICT),
    (errors.Conflict, HTTP_CONFLICT),
    (errors.PreconditionFailed, HTTP_PRECONDITION_FAILED),
    (errors.AccessDenied, HTTP_FORBIDDEN),
    (errors.KeyTooLong, HTTP_REQUEST_URI_TOO_LONG),
    (errors.InvalidRange, HTTP_RANGE_NOT_SATISFIABLE),
    (errors.BadRequest, HTTP_BAD_REQUEST),
    (errors.IntegrityError, HTTP_INTERNAL_ERROR),
    (errors.TransientStoreError, HTTP_SERVICE_UNAVAILABLE),
    (errors.StoreError, HTTP_INTERNAL_ERROR),
    (errors.CasError, HTTP_INTERNAL_ERROR),
)


def _disk_full(exc: BaseException) -> bool:
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 8:  # bounded walk of the cause chain
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        cause = cause.__cause__
        seen += 1
    return False


def status_of(exc: errors.CasError) -> int:
    """The DAV status for a CasError (see :data:`STATUS`)."""
    if isinstance(exc, errors.StoreError) and _disk_full(exc):
        return HTTP_INSUFFICIENT_STORAGE
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return HTTP_INTERNAL_ERROR


def to_dav_error(exc: errors.CasError) -> DAVError:
    status = status_of(exc)
    if status >= 500:
        # Log once here: wsgidav's printer would report only "500".
        log.error("webdav: store failed: %s", exc, exc_info=exc)
    return DAVError(status, context_info=exc.message)


@contextmanager
def dav_errors() -> Iterator[None]:
    """Run Store calls; a CasError leaves as the matching DAVError."""
    try:
        yield
    except errors.CasError as exc:
        raise to_dav_error(exc) from exc


def forbidden(reason: str) -> DAVError:
    return DAVError(HTTP_FORBIDDEN, context_info=reason)
