"""Request and response bodies of the WebDAV front: PUT streamed into the Store, GET out of it.

PUT hands the request body, as an iterator, to ``store.put`` through wsgidav's ``begin_write``
seam (``PutWriter.writelines``), so the body is never buffered whole; the name is bound only
when ``store.put`` commits. GET reads ``store.open`` through ``ObjectStream`` (seek once, then
read). The headers that shape a PUT (X-OC-Mtime, OC-Checksum, If-Match, Content-Length) are
parsed here. Per request; no shared state.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from wsgidav import util
from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_FORBIDDEN, HTTP_PRECONDITION_FAILED, DAVError

from cas import errors

from .error import dav_errors, to_dav_error

if TYPE_CHECKING:
    from .resources import ObjectResource


class _Body:
    """The request body as the iterator ``store.put`` consumes.

    Errors while reading it are the client's (a broken chunked encoding, a
    connection that closed early): they are re-raised as ``ClientBodyError``
    so that they are not confused with the store's own failures.
    """

    def __init__(self, chunks: Iterable[bytes]):
        self._it = iter(chunks)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._it)
        except StopIteration:
            raise
        except (OSError, ValueError) as exc:
            raise ClientBodyError(str(exc)) from exc


class ClientBodyError(Exception):
    """The request body could not be read (malformed or cut short)."""


def parse_mtime(environ: dict) -> float | None:
    value = environ.get("HTTP_X_OC_MTIME")
    if value is None:
        return None
    value = value.strip()
    try:
        mtime = float(value)
    except ValueError:
        raise DAVError(HTTP_BAD_REQUEST, context_info="invalid X-OC-Mtime header") from None
    if not 0 <= mtime < 1 << 40:
        raise DAVError(HTTP_BAD_REQUEST, context_info="X-OC-Mtime out of range")
    return mtime


def _content_length(environ: dict) -> int | None:
    value = environ.get("CONTENT_LENGTH", "").strip()
    if not value or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    try:
        n = int(value)
    except ValueError:
        raise DAVError(HTTP_BAD_REQUEST, context_info="invalid Content-Length") from None
    if n < 0:
        raise DAVError(HTTP_BAD_REQUEST, context_info="invalid Content-Length")
    return n


def _oc_checksum(environ: dict) -> tuple[bytes | None, bytes | None]:
    """(md5, sha1) digests announced by an ``OC-Checksum: SHA1:<hex>`` / ``MD5:<hex>`` header."""
    md5 = sha1 = None
    for token in environ.get("HTTP_OC_CHECKSUM", "").split():
        alg, _, value = token.partition(":")
        try:
            digest = bytes.fromhex(value)
        except ValueError:
            raise DAVError(HTTP_BAD_REQUEST, context_info="invalid OC-Checksum header") from None
        if alg.upper() == "MD5" and len(digest) == 16:
            md5 = digest
        elif alg.upper() == "SHA1" and len(digest) == 20:
            sha1 = digest
    return md5, sha1


def _single_etag(value: str | None) -> str | None:
    """The tag of an If-Match with exactly one strong entity tag, else None."""
    if not value:
        return None
    value = value.strip()
    if "," in value or value == "*" or value.startswith("W/"):
        return None
    return value.strip('"')


class PutWriter:
    """wsgidav's PUT seam: ``writelines`` hands the body iterator to ``store.put``.

    wsgidav calls ``writelines(stream)`` when it exists, so the request body
    flows chunk by chunk into the write path; nothing here holds more than the
    chunk being passed on. The name is bound only when ``store.put`` commits.
    """

    def __init__(self, res: ObjectResource, content_type: str | None):
        self._res = res
        self._content_type = content_type

    def writelines(self, chunks: Iterable[bytes]) -> None:
        res = self._res
        environ = res.environ
        store = res.provider.store
        ctype = self._content_type
        if not ctype or ctype == "application/octet-stream":
            ctype = util.guess_mime_type(res.path)
        kwargs = {}
        if res.info is not None and res.info.props:
            kwargs["props"] = dict(res.info.props)  # PUT replaces the content, not the properties
        if res.info is not None and res.info.tags:
            kwargs["tags"] = dict(res.info.tags)  # nor the S3 tags a drive cannot see or set
        if_match = _single_etag(environ.get("HTTP_IF_MATCH"))
        if if_match:
            kwargs["if_match"] = if_match
        if environ.get("HTTP_IF_NONE_MATCH", "").strip() == "*":
            kwargs["if_none_match"] = "*"
        md5, sha1 = _oc_checksum(environ)
        if md5 is not None:
            kwargs["expected_md5"] = md5
        if sha1 is not None:
            kwargs["hashers"] = {"sha1": hashlib.sha1()}

            def before_commit(result):
                if result.digests["sha1"] != sha1:
                    raise errors.BadDigest("the body does not match the SHA1 of OC-Checksum")
                return {"sha1": base64.b64encode(sha1).decode()}

            kwargs["before_commit"] = before_commit
        try:
            with dav_errors():
                res.info = store.put(
                    res.bucket, res.key, _Body(chunks), user=res._user(), content_type=ctype,
                    mtime=parse_mtime(environ), expected_size=_content_length(environ), **kwargs)
        except ClientBodyError as exc:
            raise DAVError(HTTP_BAD_REQUEST, context_info=f"request body: {exc}") from exc
        except DAVError as exc:
            cause = exc.__cause__
            if isinstance(cause, errors.PreconditionFailed):
                raise DAVError(HTTP_PRECONDITION_FAILED, context_info=cause.message) from cause
            body_error = _find_cause(cause, ClientBodyError)
            if body_error is not None:
                raise DAVError(HTTP_BAD_REQUEST, context_info=f"request body: {body_error}") from exc
            raise

    def write(self, data: bytes) -> None:  # pragma: no cover - wsgidav prefers writelines
        raise DAVError(HTTP_FORBIDDEN, context_info="streaming writes only")

    def close(self) -> None:
        pass


def _find_cause(exc: BaseException | None, cls: type) -> BaseException | None:
    for _ in range(8):
        if exc is None:
            return None
        if isinstance(exc, cls):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class ObjectStream:
    """File-like view of an object for wsgidav's GET: ``seek`` once, then ``read``.

    Opens ``store.open`` lazily with the range that starts at the seek offset;
    ``read`` joins whole stored chunks up to the size asked for, so memory
    stays at one read plus one chunk.
    """

    def __init__(self, store, bucket: str, key: str, info):
        self._store = store
        self._bucket = bucket
        self._key = key
        self._info = info
        self._pos = 0
        self._reader = None
        self._it = None
        self._buf = b""

    def seek(self, pos: int, whence: int = 0) -> int:
        if self._reader is not None:
            raise OSError("seek after read is not supported")
        self._pos = pos
        return pos

    def _open(self) -> None:
        size = self._info.size
        with dav_errors():
            if self._pos:
                self._reader = self._store.open(self._bucket, self._key, range=(self._pos, size))
            else:
                self._reader = self._store.open(self._bucket, self._key)
        if self._reader.info.etag != self._info.etag:
            # replaced between the lookup that made the headers and now: do not
            # send other bytes under those headers (the connection is cut instead)
            self.close()
            raise to_dav_error(errors.PreconditionFailed("the object changed while being read"))
        self._it = iter(self._reader)

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes: whole stored chunks joined until ``size`` is reached.

        Fewer, larger pieces keep the per-piece cost of the WSGI layers low; at
        most ``size`` plus one chunk is held.
        """
        if self._reader is None:
            self._open()
        limit = size if size is not None and size > 0 else 1 << 62
        pieces: list[bytes] = []
        have = 0
        while have < limit:
            if not self._buf:
                with dav_errors():
                    self._buf = next(self._it, b"")
                if not self._buf:
                    break
            take = self._buf if len(self._buf) <= limit - have else self._buf[: limit - have]
            self._buf = self._buf[len(take):]
            pieces.append(take)
            have += len(take)
        if len(pieces) == 1:
            return bytes(pieces[0])
        return b"".join(pieces)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
