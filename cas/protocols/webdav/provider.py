"""The WebDAV namespace over the Store: a wsgidav ``DAVProvider``.

Mapping (DESIGN §1):

- ``/``                     the buckets the user may see (root sees all); MKCOL here creates a bucket
- ``/BUCKET``               a bucket
- ``/BUCKET/dir/file``      the object ``dir/file`` in BUCKET
- ``/BUCKET/dir``           a folder: implied by any key below ``dir/``, or by the
                            zero-byte marker object ``dir/`` (what MKCOL creates)

When a key ``x`` and keys below ``x/`` both exist (possible through S3), the
object wins: ``/BUCKET/x`` is the file and the folder is not shown.

Nothing is copied here: GET streams blocks from ``store.open``; PUT hands the
request body, as an iterator, to ``store.put`` through wsgidav's
``begin_write`` seam (``writelines``), so the body is never buffered whole;
COPY and MOVE are ``store.copy`` / ``store.move`` per key (metadata only).

Dead properties live with their resource: in the object record
(``store.set_props``) for files, on the folder's marker object for folders
(the marker is created when a folder without one gets a property), and in
``store.kv_*`` (namespace ``davprops``) for buckets. They therefore move,
copy and vanish with the resource without extra bookkeeping.

Every Store call runs inside ``dav_errors()``; resources are per request and
hold no locks, so the provider is safe for cheroot's thread pool.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

from wsgidav import util, xml_tools
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_NOT_FOUND,
    HTTP_PRECONDITION_FAILED,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider
from wsgidav.util import etree

from cas import errors
from cas.protocols.http import parse_range

from .error import dav_errors, forbidden, to_dav_error

log = logging.getLogger(__name__)

NS_PROPS = "davprops"  # bucket name -> JSON {clark name: xml}
QUOTA_USED = "{DAV:}quota-used-bytes"
QUOTA_AVAILABLE = "{DAV:}quota-available-bytes"
#: ownCloud's checksum property (rclone with vendor=owncloud reads it to verify transfers)
OC_CHECKSUMS = "{http://owncloud.org/ns}checksums"
MAX_PROP_VALUE = 64 << 10  # bytes of one dead property value
MAX_PROPS = 1 << 20  # bytes of all dead properties of one resource
PAGE = 1000  # keys per store.list call

#: object headers (stored lower-case) that GET passes on, with their wire spelling
_PASSED_HEADERS = {
    "content-disposition": "Content-Disposition",
    "content-encoding": "Content-Encoding",
    "content-language": "Content-Language",
    "cache-control": "Cache-Control",
    "expires": "Expires",
}

#: environ key set when COPY/MOVE created the destination (then 201, not 204)
CREATED_FLAG = "cas.dav.created"


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


def _parse_mtime(environ: dict) -> float | None:
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


# ======================================================================================
# dead properties
# ======================================================================================


def _prop_text(value) -> str:
    text = etree.tostring(value, encoding="unicode")
    if len(text.encode()) > MAX_PROP_VALUE:
        raise DAVError(HTTP_INSUFFICIENT_STORAGE, context_info="property value too large")
    return text


class _DeadProps:
    """Mixin: dead properties kept by the resource (``_props`` / ``_write_props``)."""

    def _props(self) -> dict[str, str]:
        raise NotImplementedError

    def _write_props(self, set_: dict[str, str], remove: list[str]) -> None:
        raise NotImplementedError

    def get_property_names(self, *, is_allprop):
        names = super().get_property_names(is_allprop=is_allprop)
        # RFC 4331: quota properties are not returned by allprop / propname
        names = [n for n in names if n not in (QUOTA_USED, QUOTA_AVAILABLE)]
        names.extend(self._props())
        return names

    def get_property_value(self, name):
        if name in (QUOTA_USED, QUOTA_AVAILABLE):
            value = self._quota(name)
            if value is None:
                raise DAVError(HTTP_NOT_FOUND)
            return str(value)
        if not name.startswith("{DAV:}"):
            value = self._props().get(name)
            if value is None:
                raise DAVError(HTTP_NOT_FOUND)
            return xml_tools.string_to_xml(value)
        return super().get_property_value(name)

    def set_property_value(self, name, value, *, dry_run=False):
        if name.startswith("{DAV:}"):
            return super().set_property_value(name, value, dry_run=dry_run)
        if value is None:
            if not dry_run:
                self._write_props({}, [name])
            return True
        text = _prop_text(value)
        current = self._props()
        total = sum(len(k) + len(v) for k, v in current.items() if k != name) + len(name) + len(text)
        if total > MAX_PROPS:
            raise DAVError(HTTP_INSUFFICIENT_STORAGE, context_info="too many properties")
        if not dry_run:
            self._write_props({name: text}, [])
        return True

    def _quota(self, name: str) -> int | None:
        return None


# ======================================================================================
# the provider
# ======================================================================================


class CasProvider(DAVProvider):
    """WebDAV view of one Store (one instance per server)."""

    def __init__(self, store, *, data_dir: Path | None = None):
        super().__init__()
        self.store = store
        #: where to measure free space for quota-available-bytes (local blocks only)
        self.data_dir = data_dir

    def __repr__(self) -> str:
        return "CasProvider()"

    def is_readonly(self) -> bool:
        return False

    # -- principal --------------------------------------------------------------------
    @staticmethod
    def user(environ: dict) -> str:
        return environ.get("wsgidav.auth.user_name") or ""

    def is_root(self, environ: dict) -> bool:
        cached = environ.get("cas.dav.is_root")
        if cached is None:
            user = self.user(environ)
            cached = bool(user) and bool(self.store.users.is_root(user))
            environ["cas.dav.is_root"] = cached
        return cached

    def _bucket_info(self, name: str, environ: dict):
        """BucketInfo of ``name`` or None, looked up once per request."""
        cache = environ.setdefault("cas.dav.buckets", {})
        if name not in cache:
            try:
                cache[name] = self.store.bucket(name)
            except errors.BucketNotFound:
                cache[name] = None
            except errors.CasError as exc:
                raise to_dav_error(exc) from exc
        return cache[name]

    def _sees_all(self, environ: dict) -> bool:
        return bool(environ.get("cas.dav.anonymous")) or self.is_root(environ)

    def visible_bucket(self, name: str, environ: dict):
        """BucketInfo of ``name`` if it exists and the user may see it, else None."""
        info = self._bucket_info(name, environ)
        if info is None or self._sees_all(environ) or info.owner == self.user(environ):
            return info
        return None

    def _hidden_bucket(self, name: str, environ: dict) -> bool:
        """True when bucket ``name`` exists but belongs to someone this user may not see."""
        info = self._bucket_info(name, environ)
        return info is not None and not self._sees_all(environ) and info.owner != self.user(environ)

    def forget_bucket(self, name: str, environ: dict) -> None:
        """Drop the cached lookup after creating or deleting ``name``."""
        environ.get("cas.dav.buckets", {}).pop(name, None)

    def check_writable(self, environ: dict) -> None:
        if environ.get("cas.dav.anonymous"):
            raise forbidden("anonymous access is read-only")

    # -- resolution -------------------------------------------------------------------
    def get_resource_inst(self, path: str, environ: dict):
        parts = [p for p in path.split("/") if p]
        if not parts:
            return RootCollection("/", environ)
        binfo = self.visible_bucket(parts[0], environ)
        if binfo is None:
            return None
        if len(parts) == 1:
            return BucketCollection("/" + parts[0], environ, binfo)
        bucket, key = parts[0], "/".join(parts[1:])
        norm = "/" + "/".join(parts)
        with dav_errors():
            try:
                return ObjectResource(norm, environ, bucket, key, self.store.stat(bucket, key))
            except (errors.ObjectNotFound, errors.InvalidName):
                pass
            prefix = key + "/"
            try:
                marker = self.store.stat(bucket, prefix)
            except (errors.ObjectNotFound, errors.InvalidName):
                marker = None
            if marker is not None:
                return FolderCollection(norm, environ, bucket, prefix, marker)
            listing = self.store.list(bucket, prefix=prefix, limit=1)
            if listing.entries or listing.common_prefixes:
                return FolderCollection(norm, environ, bucket, prefix, None)
        return None

    def custom_request_handler(self, environ, start_response, default_handler):
        method = environ["REQUEST_METHOD"]
        if environ.get("cas.dav.anonymous") and method not in ("GET", "HEAD", "OPTIONS", "PROPFIND"):
            raise forbidden("anonymous access is read-only")
        parts = [p for p in environ.get("PATH_INFO", "").split("/") if p]
        if parts and not (method == "MKCOL" and len(parts) == 1) and self._hidden_bucket(parts[0], environ):
            # another user's bucket: not found, whatever the method (MKCOL of the name itself: 403)
            raise DAVError(HTTP_NOT_FOUND)
        if method == "LOCK" and not parts and not self.is_root(environ):
            # a depth-infinity lock on / would block every write of every user: a user
            # locks only what it may write (its own buckets, which the check above ensures)
            raise forbidden("only the root user may lock the root collection")
        if method in ("GET", "HEAD") and "HTTP_RANGE" in environ:
            self._canonical_range(environ)
        if method == "PROPFIND" and environ.get("HTTP_DEPTH", "infinity").strip().lower() == "infinity":
            # RFC 4918 §9.1: a server may refuse Depth: infinity; a bucket can hold millions of keys
            raise DAVError(HTTP_FORBIDDEN, err_condition="{DAV:}propfind-finite-depth")
        if method in ("COPY", "MOVE"):

            def created_start_response(status, headers, exc_info=None):
                if status.startswith("204") and environ.get(CREATED_FLAG):
                    status = "201 Created"
                return start_response(status, headers, exc_info)

            return default_handler(environ, created_start_response)
        return default_handler(environ, start_response)

    def _canonical_range(self, environ: dict) -> None:
        """Interpret ``Range`` with the one parser (``cas.protocols.http``), not wsgidav's.

        wsgidav's own parser searches the header for anything range-like (``items=0-1``,
        the ``-2`` of ``bytes=5-2``) and serves the last of several ranges. Here the
        header is replaced by what ``parse_range`` decided: removed (200, whole body),
        one canonical ``bytes=first-last`` (206), or a start at the end of the object,
        which wsgidav answers with 416 and ``Content-Range: bytes */SIZE`` after the
        If-* conditions, as RFC 9110 orders them.
        """
        res = self.get_resource_inst(environ.get("PATH_INFO", "/"), environ)
        if res is None or res.is_collection:
            return  # 404 / 403 follow from wsgidav; the header does not matter
        size = res.get_content_length()
        try:
            rng = parse_range(environ["HTTP_RANGE"], size)
        except errors.InvalidRange:
            environ["HTTP_RANGE"] = f"bytes={size}-"
            return
        if rng is None:
            del environ["HTTP_RANGE"]
        else:
            environ["HTTP_RANGE"] = f"bytes={rng.start}-{rng.stop - 1}"

    # -- helpers shared by resources ------------------------------------------------------
    def iter_keys(self, bucket: str, prefix: str) -> Iterator:
        """Every ObjectInfo under ``prefix`` (no delimiter), in key order, page by page."""
        start_after = ""
        for _ in range(1 << 40):  # bounded: each page advances start_after
            with dav_errors():
                page = self.store.list(bucket, prefix=prefix, start_after=start_after, limit=PAGE)
            yield from page.entries
            if not page.truncated or not page.entries:
                return
            start_after = page.next_start_after or page.entries[-1].key

    def check_tree_unlocked(self, res, environ: dict, depth: str) -> None:
        """Raise 423 if ``res`` (and for depth infinity anything below) is locked against us."""
        lm = self.lock_manager
        if lm is None:
            return
        if "wsgidav.conditions.if" not in environ:
            util.parse_if_header_dict(environ)
        lm.check_write_permission(
            url=res.get_ref_url(),
            depth=depth,
            token_list=environ["wsgidav.ifLockTokenList"],
            principal=environ["wsgidav.user_name"],
        )

    def drop_locks(self, path: str, environ: dict) -> None:
        lm = self.lock_manager
        if lm is None:
            return
        lm.remove_all_locks_from_url(quote(path), recursive=True)

    def split(self, path: str) -> tuple[str, str]:
        """'/b/x/y' -> ('b', 'x/y'); '/b' -> ('b', '')."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            return "", ""
        return parts[0], "/".join(parts[1:])

    def keep_parent(self, bucket: str, key: str, user: str) -> None:
        """After ``key`` left, keep its folder as a folder (a marker), as a file system would."""
        head, sep, _ = key.rstrip("/").rpartition("/")
        if not sep:
            return  # the bucket itself
        prefix = head + "/"
        with dav_errors():
            page = self.store.list(bucket, prefix=prefix, limit=1)
            if not page.entries and not page.common_prefixes:
                self.store.put(bucket, prefix, b"", user=user, content_type="application/x-directory")

    def quota_available(self) -> int | None:
        if self.data_dir is None:
            return None
        try:
            return shutil.disk_usage(self.data_dir).free
        except OSError:
            return None

    def used_bytes(self, bucket: str, prefix: str) -> int:
        return sum(info.size for info in self.iter_keys(bucket, prefix))

    # -- COPY / MOVE ------------------------------------------------------------------------
    def transfer(self, src, dest_path: str, *, move: bool, depth_infinity: bool = True):
        """COPY or MOVE ``src`` to ``dest_path`` as metadata operations; an error list."""
        environ = src.environ
        self.check_writable(environ)
        user = self.user(environ)
        store = self.store
        dst_bucket, dst_key = self.split(dest_path)
        if not dst_bucket:
            raise forbidden("cannot replace the root")
        dest_res = self.get_resource_inst(dest_path, environ)
        src_norm = src.path.rstrip("/") or "/"
        dest_norm = "/" + "/".join(p for p in dest_path.split("/") if p)
        if util.is_child_uri(dest_norm, src_norm) and dest_res is not None:
            raise forbidden("the destination contains the source")
        if dest_res is None:
            environ[CREATED_FLAG] = True

        if not src.is_collection:
            if not dst_key:
                raise forbidden("only buckets (collections) can live at the top level")
            if dest_res is not None and dest_res.is_collection:
                errs = dest_res.delete_tree()
                if errs:
                    return errs
            with dav_errors():
                if move:
                    store.move(src.bucket, src.key, dst_bucket, dst_key, user=user, overwrite=True)
                else:
                    store.copy(src.bucket, src.key, dst_bucket, dst_key, user=user)
            if move:
                self.drop_locks(src.path, environ)
                self.keep_parent(src.bucket, src.key, user)
            return True

        # collections: the source is a bucket (prefix "") or a folder
        src_bucket, src_prefix = src.bucket, src.prefix
        dst_prefix = dst_key + "/" if dst_key else ""
        if dest_res is not None:
            errs = dest_res.delete_tree(keep_bucket=True)
            if errs:
                return errs
        if not dst_prefix and self.visible_bucket(dst_bucket, environ) is None:
            # a bucket as destination: create it (the user owns it)
            try:
                with dav_errors():
                    store.create_bucket(dst_bucket, owner=user)
                self.forget_bucket(dst_bucket, environ)
            except DAVError as exc:
                if isinstance(exc.__cause__, errors.AlreadyExists):
                    raise forbidden("that bucket name is taken") from exc
                raise
        errs: list = []
        src_props = src._props()
        if depth_infinity:
            # pages are separate reads, and the destination is never below the
            # source (wsgidav refuses that), so iterating while moving is safe
            for info in self.iter_keys(src_bucket, src_prefix):
                rel = info.key[len(src_prefix):]
                if not rel:
                    continue  # the source's own marker: its props are written below
                new_key = dst_prefix + rel
                try:
                    with dav_errors():
                        if move:
                            store.move(src_bucket, info.key, dst_bucket, new_key, user=user, overwrite=True)
                        else:
                            store.copy(src_bucket, info.key, dst_bucket, new_key, user=user)
                except DAVError as exc:
                    errs.append((src.provider_href(info.key), exc))
        # the destination collection itself, with the source's dead properties
        if dst_prefix:
            with dav_errors():
                store.put(dst_bucket, dst_prefix, b"", user=user, content_type="application/x-directory",
                          props=src_props or None)
        else:
            with dav_errors():
                if src_props:
                    store.kv_put(NS_PROPS, dst_bucket, json.dumps(src_props).encode())
                else:
                    store.kv_delete(NS_PROPS, dst_bucket)
        if move and not errs:
            self.drop_locks(src.path, environ)
            with dav_errors():
                if src_prefix:
                    try:
                        store.delete(src_bucket, src_prefix, user=user)
                    except errors.ObjectNotFound:
                        pass
                    self.keep_parent(src_bucket, src_prefix, user)
                else:
                    store.delete_bucket(src_bucket, user=user)
                    store.kv_delete(NS_PROPS, src_bucket)
                    self.forget_bucket(src_bucket, environ)
        return errs or True


# ======================================================================================
# resources
# ======================================================================================


class _Collection(_DeadProps, DAVCollection):
    """A bucket or a folder: the keys under ``prefix`` in ``bucket``."""

    bucket: str
    prefix: str

    def provider_href(self, key: str) -> str:
        return quote(self.provider.mount_path + "/" + self.bucket + "/" + key)

    def _user(self) -> str:
        return self.provider.user(self.environ)

    # -- members ------------------------------------------------------------------------
    def _members(self) -> Iterator[tuple[str, object]]:
        """(name, ObjectInfo | None for a folder) for each direct member, file wins a tie."""
        store = self.provider.store
        start_after = ""
        for _ in range(1 << 40):  # bounded: each page advances start_after
            with dav_errors():
                page = store.list(self.bucket, prefix=self.prefix, delimiter="/",
                                  start_after=start_after, limit=PAGE)
            files = {}
            for info in page.entries:
                name = info.key[len(self.prefix):]
                if name and not name.endswith("/"):
                    files[name] = info
            for name, info in files.items():
                yield name, info
            for cp in page.common_prefixes:
                name = cp[len(self.prefix):-1]
                if name and name not in files and not self._shadowed(name):
                    yield name, None
            if not page.truncated:
                return
            last = [info.key for info in page.entries] + list(page.common_prefixes)
            nxt = page.next_start_after or (max(last) if last else "")
            if not nxt or nxt <= start_after:
                return
            start_after = nxt

    def _shadowed(self, name: str) -> bool:
        """A folder ``name/`` is hidden when an object ``name`` exists (it may sit on another page)."""
        try:
            self.provider.store.stat(self.bucket, self.prefix + name)
        except errors.CasError:
            return False
        return True

    def get_member_names(self):
        return [name for name, _ in self._members()]

    def get_member_list(self):
        out = []
        base = self.path.rstrip("/")
        for name, info in self._members():
            path = base + "/" + name
            if info is None:
                out.append(FolderCollection(path, self.environ, self.bucket, self.prefix + name + "/"))
            else:
                out.append(ObjectResource(path, self.environ, self.bucket, info.key, info))
        return out

    # -- creating members ---------------------------------------------------------------
    def create_empty_resource(self, name: str):
        self.provider.check_writable(self.environ)
        key = self.prefix + name
        path = self.path.rstrip("/") + "/" + name
        if self.environ["REQUEST_METHOD"] == "LOCK":
            # RFC 4918 §7.3: LOCK on an unmapped URL creates an empty resource. wsgidav
            # checks for conflicting locks only after this call: check the parent first,
            # so a collection locked by someone else does not gain a member.
            self.provider.check_tree_unlocked(self, self.environ, "0")
            with dav_errors():
                info = self.provider.store.put(
                    self.bucket, key, b"", user=self._user(),
                    content_type=util.guess_mime_type(name))
            return ObjectResource(path, self.environ, self.bucket, key, info)
        # PUT: nothing is bound until the body has arrived (see ObjectResource.begin_write)
        return ObjectResource(path, self.environ, self.bucket, key, None)

    def create_collection(self, name: str):
        self.provider.check_writable(self.environ)
        mtime = _parse_mtime(self.environ)
        with dav_errors():
            self.provider.store.put(self.bucket, self.prefix + name + "/", b"", user=self._user(),
                                    content_type="application/x-directory", mtime=mtime)

    # -- DELETE / COPY / MOVE -----------------------------------------------------------
    def support_recursive_delete(self):
        return True

    def handle_delete(self):
        self.provider.check_writable(self.environ)
        self.provider.check_tree_unlocked(self, self.environ, "infinity")
        errs = self.delete_tree()
        self.provider.drop_locks(self.path, self.environ)
        return errs or True

    def delete(self):
        return self.delete_tree()

    def delete_tree(self, keep_bucket: bool = False) -> list:
        """Delete every key under the prefix (and a bucket itself unless ``keep_bucket``)."""
        store = self.provider.store
        user = self._user()
        errs = []
        for info in self.provider.iter_keys(self.bucket, self.prefix):
            try:
                with dav_errors():
                    store.delete(self.bucket, info.key, user=user)
            except DAVError as exc:
                if exc.value != HTTP_NOT_FOUND:
                    errs.append((self.provider_href(info.key), exc))
        if not errs and not self.prefix and not keep_bucket:
            with dav_errors():
                store.delete_bucket(self.bucket, user=user)
                store.kv_delete(NS_PROPS, self.bucket)
            self.provider.forget_bucket(self.bucket, self.environ)
        if not errs and self.prefix and not keep_bucket:
            self.provider.keep_parent(self.bucket, self.prefix, user)
        return errs

    def handle_copy(self, dest_path, *, depth_infinity):
        return self.provider.transfer(self, dest_path, move=False, depth_infinity=depth_infinity)

    def handle_move(self, dest_path):
        return self.provider.transfer(self, dest_path, move=True)

    def support_recursive_move(self, dest_path):
        return False

    # -- quota ----------------------------------------------------------------------------
    def _quota(self, name: str) -> int | None:
        if name == QUOTA_AVAILABLE:
            return self.provider.quota_available()
        return self.provider.used_bytes(self.bucket, self.prefix)


class RootCollection(_DeadProps, DAVCollection):
    """``/``: the buckets the user may see."""

    def get_display_name(self):
        return ""

    def _buckets(self):
        store = self.provider.store
        with dav_errors():
            if self.provider.is_root(self.environ) or self.environ.get("cas.dav.anonymous"):
                return store.buckets()
            return store.buckets(owner=self.provider.user(self.environ))

    def get_member_names(self):
        return [b.name for b in self._buckets()]

    def get_member_list(self):
        return [BucketCollection("/" + b.name, self.environ, b) for b in self._buckets()]

    def create_collection(self, name: str):
        self.provider.check_writable(self.environ)
        try:
            with dav_errors():
                self.provider.store.create_bucket(name, owner=self.provider.user(self.environ))
            self.provider.forget_bucket(name, self.environ)
        except DAVError as exc:
            if isinstance(exc.__cause__, errors.AlreadyExists):
                # exists, but not for this user (else MKCOL would have said 405)
                raise forbidden("that bucket name is taken") from exc
            if isinstance(exc.__cause__, errors.InvalidName):
                raise forbidden(exc.__cause__.message) from exc
            raise

    def create_empty_resource(self, name: str):
        raise forbidden("only buckets (collections) can live at the top level")

    def _props(self):
        return {}

    def _write_props(self, set_, remove):
        raise forbidden("the root collection has no properties")

    def set_property_value(self, name, value, *, dry_run=False):
        if not name.startswith("{DAV:}"):
            self._write_props({}, [])  # refuses, in the dry run already
        return super().set_property_value(name, value, dry_run=dry_run)

    def _quota(self, name: str) -> int | None:
        if name == QUOTA_AVAILABLE:
            return self.provider.quota_available()
        return sum(self.provider.used_bytes(b.name, "") for b in self._buckets())

    def handle_delete(self):
        raise forbidden("cannot delete the root")

    def handle_copy(self, dest_path, *, depth_infinity):
        raise forbidden("cannot copy the root")

    def handle_move(self, dest_path):
        raise forbidden("cannot move the root")

    def support_recursive_delete(self):
        return False


class BucketCollection(_Collection):
    """``/BUCKET``."""

    def __init__(self, path: str, environ: dict, binfo):
        super().__init__(path, environ)
        self.bucket = binfo.name
        self.prefix = ""
        self.binfo = binfo

    def get_creation_date(self):
        return self.binfo.created

    def get_last_modified(self):
        return self.binfo.created

    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        return True  # a bucket has no settable time

    def _props(self) -> dict[str, str]:
        with dav_errors():
            raw = self.provider.store.kv_get(NS_PROPS, self.bucket)
        return json.loads(raw) if raw else {}

    def _write_props(self, set_, remove):
        # read-modify-write of one kv record: concurrent PROPPATCHes of one bucket may race
        props = self._props()
        props.update(set_)
        for name in remove:
            props.pop(name, None)
        with dav_errors():
            if props:
                self.provider.store.kv_put(NS_PROPS, self.bucket, json.dumps(props).encode())
            else:
                self.provider.store.kv_delete(NS_PROPS, self.bucket)


_UNKNOWN = object()


class FolderCollection(_Collection):
    """``/BUCKET/dir``: keys under ``dir/``; ``marker`` is the ``dir/`` object, if any."""

    def __init__(self, path: str, environ: dict, bucket: str, prefix: str, marker=_UNKNOWN):
        super().__init__(path, environ)
        self.bucket = bucket
        self.prefix = prefix
        self._marker = marker

    @property
    def marker(self):
        """The ``dir/`` marker object (looked up on first use), or None."""
        if self._marker is _UNKNOWN:
            try:
                self._marker = self.provider.store.stat(self.bucket, self.prefix)
            except errors.NotFound:
                self._marker = None
            except errors.CasError as exc:
                raise to_dav_error(exc) from exc
        return self._marker

    def get_creation_date(self):
        m = self.marker
        return m.mtime if m is not None else None

    def get_last_modified(self):
        m = self.marker
        return m.mtime if m is not None else None

    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        secs = time_stamp if isinstance(time_stamp, (int, float)) else util.parse_time_string(time_stamp)
        if secs is None:
            raise DAVError(HTTP_BAD_REQUEST, context_info="invalid time")
        if not dry_run:
            with dav_errors():
                if self.marker is None:
                    self._marker = self.provider.store.put(
                        self.bucket, self.prefix, b"", user=self._user(),
                        content_type="application/x-directory", mtime=float(secs))
                else:
                    self._marker = self.provider.store.touch(self.bucket, self.prefix, float(secs))
        return True

    def _props(self) -> dict[str, str]:
        m = self.marker
        return dict(m.props or {}) if m is not None else {}

    def _write_props(self, set_, remove):
        store = self.provider.store
        with dav_errors():
            if self.marker is None:
                if not set_:
                    return
                self._marker = store.put(self.bucket, self.prefix, b"", user=self._user(),
                                         content_type="application/x-directory", props=set_)
            else:
                self._marker = store.set_props(self.bucket, self.prefix, set=set_ or None, remove=remove)


class ObjectResource(_DeadProps, DAVNonCollection):
    """``/BUCKET/key``: one object; ``info`` is None for a PUT target not yet written."""

    def __init__(self, path: str, environ: dict, bucket: str, key: str, info):
        super().__init__(path, environ)
        self.bucket = bucket
        self.key = key
        self.info = info

    def _user(self) -> str:
        return self.provider.user(self.environ)

    # -- live properties ----------------------------------------------------------------
    def get_content_length(self):
        return self.info.size if self.info is not None else 0

    def get_content_type(self):
        ctype = self.info.content_type if self.info is not None else None
        return ctype or util.guess_mime_type(self.path)

    def get_creation_date(self):
        return self.info.mtime if self.info is not None else None

    def get_last_modified(self):
        return self.info.mtime if self.info is not None else None

    def get_etag(self):
        return self.info.etag if self.info is not None else None

    def support_etag(self):
        return True

    def finalize_headers(self, environ, response_headers):
        """GET/HEAD: the representation headers stored with the object (e.g. set over S3)."""
        if self.info is None:
            return
        present = {k.lower() for k, _ in response_headers}
        for name, value in (self.info.headers or {}).items():
            if name.lower() in _PASSED_HEADERS and name.lower() not in present:
                response_headers.append((_PASSED_HEADERS[name.lower()], value))

    def get_property_value(self, name):
        if name == "{DAV:}getetag" and self.info is not None:
            return f'"{self.info.etag}"'  # RFC 4918 §15.6: the entity tag, quotes included
        if name == OC_CHECKSUMS and self.info is not None:
            sums = []
            sha1 = (self.info.checksums or {}).get("sha1")
            if sha1:
                try:
                    sums.append("SHA1:" + base64.b64decode(sha1).hex())
                except (binascii.Error, ValueError):
                    pass
            if "-" not in self.info.etag:  # a single-part object's ETag is the MD5 of its bytes
                sums.append("MD5:" + self.info.etag)
            if not sums:
                raise DAVError(HTTP_NOT_FOUND)
            el = etree.Element(OC_CHECKSUMS)
            etree.SubElement(el, "{http://owncloud.org/ns}checksum").text = " ".join(sums)
            return el
        return super().get_property_value(name)

    def support_ranges(self):
        return True

    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        secs = time_stamp if isinstance(time_stamp, (int, float)) else util.parse_time_string(time_stamp)
        if secs is None:
            raise DAVError(HTTP_BAD_REQUEST, context_info="invalid time")
        if not dry_run and self.info is not None and self.info.mtime != float(secs):
            with dav_errors():
                self.info = self.provider.store.touch(self.bucket, self.key, float(secs))
        return True

    # -- dead properties ----------------------------------------------------------------
    def _props(self) -> dict[str, str]:
        return dict(self.info.props or {}) if self.info is not None else {}

    def _write_props(self, set_, remove):
        with dav_errors():
            self.info = self.provider.store.set_props(self.bucket, self.key, set=set_ or None, remove=remove)

    # -- content --------------------------------------------------------------------------
    def get_content(self):
        return ObjectStream(self.provider.store, self.bucket, self.key, self.info)

    def begin_write(self, *, content_type=None):
        self.provider.check_writable(self.environ)
        return PutWriter(self, content_type)

    def end_write(self, *, with_errors):
        pass

    # -- DELETE / COPY / MOVE -----------------------------------------------------------
    def handle_delete(self):
        self.provider.check_writable(self.environ)
        self.provider.check_tree_unlocked(self, self.environ, "0")
        user = self._user()
        with dav_errors():
            self.provider.store.delete(self.bucket, self.key, user=user)
        self.provider.drop_locks(self.path, self.environ)
        self.provider.keep_parent(self.bucket, self.key, user)
        return True

    def delete(self):
        with dav_errors():
            self.provider.store.delete(self.bucket, self.key, user=self._user())
        self.provider.drop_locks(self.path, self.environ)

    def delete_tree(self, keep_bucket: bool = False) -> list:
        self.delete()
        return []

    def handle_copy(self, dest_path, *, depth_infinity):
        return self.provider.transfer(self, dest_path, move=False)

    def handle_move(self, dest_path):
        return self.provider.transfer(self, dest_path, move=True)

    def support_recursive_move(self, dest_path):
        return False


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
                    mtime=_parse_mtime(environ), expected_size=_content_length(environ), **kwargs)
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
