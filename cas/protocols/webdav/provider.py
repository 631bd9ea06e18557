"""The WebDAV front over the Store: a wsgidav ``DAVProvider`` that only translates.

It resolves a path to a resource (``resources.py``) through ``cas.namespace`` (what a folder
is), decides nothing about who sees what but asks ``cas.access`` with the request's
``Principal`` (someone else's bucket is a 404 here, as if missing), and turns COPY and MOVE
into ``Namespace.copy`` / ``Namespace.move`` (metadata only, key by key). WebDAV's own
concerns stay here: 201 versus 204, locks, the dead properties of buckets (kv ``davprops``),
Range headers rewritten by the one parser, PROPFIND depth.

Every Store call runs inside ``dav_errors()``; resources are per request and hold no locks,
so the provider is safe for cheroot's thread pool.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from urllib.parse import quote

from wsgidav import util
from wsgidav.dav_error import HTTP_FORBIDDEN, HTTP_NOT_FOUND, DAVError
from wsgidav.dav_provider import DAVProvider

from cas import access, errors
from cas.access import Principal
from cas.namespace import Entry, Namespace
from cas.protocols.http import parse_range
from cas.store import BucketInfo, Store

from .error import dav_errors, forbidden, to_dav_error
from .resources import NS_PROPS, BucketCollection, FolderCollection, ObjectResource, RootCollection

log = logging.getLogger(__name__)

#: environ key set when COPY/MOVE created the destination (then 201, not 204)
CREATED_FLAG = "cas.dav.created"


# ======================================================================================
# the provider
# ======================================================================================


class CasProvider(DAVProvider):
    """WebDAV view of one Store (one instance per server)."""

    def __init__(self, store: Store, *, data_dir: Path | None = None):
        super().__init__()
        self.store = store
        self.ns = Namespace(store)
        #: where to measure free space for quota-available-bytes (local blocks only)
        self.data_dir = data_dir

    def __repr__(self) -> str:
        return "CasProvider()"

    def is_readonly(self) -> bool:
        return False

    # -- principal --------------------------------------------------------------------
    @staticmethod
    def user(environ: dict) -> str:
        """The name stores and locks record (wsgidav's; ``anonymous`` for the anonymous reader)."""
        return environ.get("wsgidav.auth.user_name") or ""

    def principal(self, environ: dict) -> Principal:
        """Who is asking, built once per request from what ``DavAuthenticator`` put in the environ."""
        cached = environ.get("cas.principal")
        if cached is None:
            if environ.get("cas.dav.anonymous"):
                cached = Principal.anonymous_reader()
            else:
                with dav_errors():
                    cached = Principal.of_user(self.store, self.user(environ))
            environ["cas.principal"] = cached
        return cached

    def _bucket_info(self, name: str, environ: dict) -> BucketInfo | None:
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

    def visible_bucket(self, name: str, environ: dict) -> BucketInfo | None:
        """BucketInfo of ``name`` if it exists and the caller may see it (``cas.access``), else None."""
        info = self._bucket_info(name, environ)
        if info is None:
            return None
        try:
            return access.check_bucket(info, self.principal(environ))
        except errors.BucketNotVisible:
            return None

    def _hidden_bucket(self, name: str, environ: dict) -> bool:
        """True when bucket ``name`` exists but the caller may not see it (answered 404)."""
        return self._bucket_info(name, environ) is not None and self.visible_bucket(name, environ) is None

    def forget_bucket(self, name: str, environ: dict) -> None:
        """Drop the cached lookup after creating or deleting ``name``."""
        environ.get("cas.dav.buckets", {}).pop(name, None)

    def check_writable(self, environ: dict) -> None:
        with dav_errors():
            self.principal(environ).require_writer()

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
        norm = "/" + "/".join(parts)
        with dav_errors():
            entry = self.ns.lookup(parts[0], "/".join(parts[1:]))
        if entry is None:
            return None
        if entry.folder:
            return FolderCollection(norm, environ, entry.bucket, entry.key, entry.info)
        return ObjectResource(norm, environ, entry.bucket, entry.key, entry.info)

    def custom_request_handler(self, environ, start_response, default_handler):
        method = environ["REQUEST_METHOD"]
        if self.principal(environ).anonymous and method not in ("GET", "HEAD", "OPTIONS", "PROPFIND"):
            raise forbidden("anonymous access is read-only")
        parts = [p for p in environ.get("PATH_INFO", "").split("/") if p]
        if parts and not (method == "MKCOL" and len(parts) == 1) and self._hidden_bucket(parts[0], environ):
            # another user's bucket: not found, whatever the method (MKCOL of the name itself: 403)
            raise DAVError(HTTP_NOT_FOUND)
        if method == "LOCK" and not parts and not self.principal(environ).root:
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

    def quota_available(self) -> int | None:
        if self.data_dir is None:
            return None
        try:
            return shutil.disk_usage(self.data_dir).free
        except OSError:
            return None

    def used_bytes(self, bucket: str, prefix: str) -> int:
        with dav_errors():
            return sum(info.size for info in self.ns.iter_tree(bucket, prefix))

    # -- COPY / MOVE ------------------------------------------------------------------------
    def transfer(self, src, dest_path: str, *, move: bool, depth_infinity: bool = True):
        """COPY or MOVE ``src`` to ``dest_path`` through ``cas.namespace``; True or an error list.

        wsgidav has already answered ``Overwrite: F`` onto an existing destination (412), so an
        existing destination is replaced here (RFC 4918 §9.8.4, §9.9.3). What stays WebDAV's:
        creating a bucket named as the destination, the dead properties of buckets (kv), locks.
        """
        environ = src.environ
        self.check_writable(environ)
        user = self.user(environ)
        dst_bucket, dst_key = self.split(dest_path)
        if not dst_bucket:
            raise forbidden("cannot replace the root")
        if not src.is_collection and not dst_key:
            raise forbidden("only buckets (collections) can live at the top level")
        if self.get_resource_inst(dest_path, environ) is None:
            environ[CREATED_FLAG] = True
        src_props = src._props() if src.is_collection else {}
        if src.is_collection and not dst_key and self.visible_bucket(dst_bucket, environ) is None:
            # a bucket as destination: create it (the user owns it)
            try:
                with dav_errors():
                    self.store.create_bucket(dst_bucket, owner=user)
                self.forget_bucket(dst_bucket, environ)
            except DAVError as exc:
                if isinstance(exc.__cause__, errors.AlreadyExists):
                    raise forbidden("that bucket name is taken") from exc
                raise
        entry = Entry(src.bucket, src.prefix, True, None) if src.is_collection \
            else Entry(src.bucket, src.key, False, src.info)
        try:
            with dav_errors():
                if move:
                    result = self.ns.move(entry, dst_bucket, dst_key, user=user, overwrite=True)
                else:
                    result = self.ns.copy(entry, dst_bucket, dst_key, user=user, overwrite=True,
                                          depth_infinity=depth_infinity)
        except DAVError as exc:
            if isinstance(exc.__cause__, errors.MoveIntoItself):
                raise forbidden(exc.__cause__.message) from exc
            raise
        errs = [(src.provider_href(key) if src.is_collection else src.get_href(), to_dav_error(exc))
                for key, exc in result.errors]
        with dav_errors():
            if src.is_collection and not dst_key:
                # the destination is a bucket: the collection's dead properties go to its kv record
                if src_props:
                    self.store.kv_put(NS_PROPS, dst_bucket, json.dumps(src_props).encode())
                else:
                    self.store.kv_delete(NS_PROPS, dst_bucket)
            elif src.is_collection and not src.prefix and src_props:
                # a bucket moved or copied into a folder: its kv properties go onto the marker
                self.store.set_props(dst_bucket, dst_key + "/", set=src_props, user=user)
        if move and not errs:
            self.drop_locks(src.path, environ)
            if src.is_collection and not src.prefix:
                with dav_errors():
                    self.ns.delete_bucket(src.bucket, user=user)
                self.forget_bucket(src.bucket, environ)
        return errs or True
