"""The web API's object and upload routes (a part of ``WebApp``; see cas/protocols/web/app.py).

Objects: list a folder, make a folder, download (Range; ``?link=TOKEN`` instead of a header),
upload, delete (a "dir/" with ``recursive``: the whole folder), download links and moves. Uploads:
the browser sends large files in parts and can resume them. Folders are ``cas.namespace``'s.
"""

from __future__ import annotations

import urllib.parse
from email.utils import formatdate

from ... import errors
from ...headers import check_content_type
from ...store import ReaderBody
from .. import headers as safe
from ..http import parse_range, unsatisfied_content_range
from .request import HttpError, Request, _object_json, _str, _unauthorized

PART_SIZE = 8 << 20
MAX_PARTS = 10_000
LIST_LIMIT = 1000


class ObjectRoutes:
    """Handlers of /api/buckets/B/object*, /folder, /link, /move and /api/uploads (mixed into WebApp)."""

    # -- objects --------------------------------------------------------------------------------
    def list_objects(self, req: Request, start_response):
        info = self._bucket(req)
        prefix = req.arg("prefix", "")
        delimiter = req.arg("delimiter", "/")
        listing = self.ns.list_dir(info.name, prefix, delimiter=delimiter, start_after=req.arg("after", ""),
                                   limit=req.int_arg("limit", LIST_LIMIT, 1, LIST_LIMIT))
        entries = [_object_json(e) for e in listing.entries]
        return self._json(start_response, {
            "bucket": info.name, "prefix": prefix, "entries": entries,
            "prefixes": listing.common_prefixes, "truncated": listing.truncated,
            "next": listing.next_start_after if listing.truncated else None})

    def create_folder(self, req: Request, start_response):
        self._writable(req)
        info = self._bucket(req)
        path = _str(req.json(), "path").strip("/")
        if not path:
            raise HttpError("400 Bad Request", "InvalidParameter", "the folder needs a name")
        obj = self.ns.make_folder(info.name, path, user=req.user, exclusive=True)
        return self._json(start_response, _object_json(obj), "201 Created")

    def get_object(self, req: Request, start_response):
        bucket, key = req.params["bucket"], req.arg("key")
        link = req.query.get("link")
        if link:
            try:
                req.user = self.tokens.verify_link(link, bucket, key)
            except errors.AccessDenied as exc:
                raise _unauthorized(str(exc)) from None
            req.root = self.store.users.is_root(req.user)
        else:
            self._authenticate(req)
        self._bucket(req, bucket)
        info = self.store.stat(bucket, key)
        try:
            rng = parse_range(req.header("Range"), info.size) if info.size else None
        except errors.InvalidRange as exc:
            raise HttpError("416 Range Not Satisfiable", "InvalidRange", str(exc),
                            [("Content-Range", unsatisfied_content_range(info.size))]) from None
        # always a download, never a page of the UI's origin (cas.protocols.headers)
        headers = [("Content-Type", safe.content_type(info.content_type)), ("ETag", f'"{info.etag}"'),
                   ("Last-Modified", formatdate(info.mtime, usegmt=True)), ("Accept-Ranges", "bytes"),
                   ("Content-Disposition", safe.attachment(key.rstrip("/").rsplit("/", 1)[-1])),
                   ("Cache-Control", "private, no-cache"), *safe.security_headers(ui_origin=True)]
        if req.method == "HEAD":
            start_response("200 OK", headers + [("Content-Length", str(info.size))])
            return []
        if info.size == 0:
            start_response("200 OK", headers + [("Content-Length", "0")])
            return []
        reader = self.store.open(bucket, key, range=None if rng is None else (rng.start, rng.stop))
        if rng is not None:
            headers += [("Content-Range", f"bytes {reader.start}-{reader.stop - 1}/{info.size}"),
                        ("Content-Length", str(reader.length))]
            start_response("206 Partial Content", headers)
        else:
            start_response("200 OK", headers + [("Content-Length", str(reader.length))])
        return ReaderBody(reader)

    def put_object(self, req: Request, start_response):
        self._writable(req)
        info = self._bucket(req)
        key = req.arg("key")
        # checked before the body is touched: a refusal can then keep the connection
        ctype = check_content_type(req.header("X-Content-Type") or req.environ.get("CONTENT_TYPE") or None)
        req.environ["cas.body_consumed"] = True
        obj = self.store.put(info.name, key, req.body(), user=req.user, content_type=ctype,
                             expected_size=req.content_length)
        return self._json(start_response, _object_json(obj), "201 Created")

    def delete_object(self, req: Request, start_response):
        self._writable(req)
        info = self._bucket(req)
        key = req.arg("key")
        if key.endswith("/") and req.query.get("recursive") in ("1", "true"):
            result = self.ns.delete_tree(info.name, key, user=req.user)
            if result.errors:
                raise result.errors[0][1]
            if not result.done:
                raise errors.ObjectNotFound(f"no objects under {key!r}")
            return self._json(start_response, {"deleted": result.done})
        self.ns.delete(info.name, key, user=req.user)  # its folder stays, as a marker if need be
        return self._empty(start_response)

    def make_link(self, req: Request, start_response):
        info = self._bucket(req)
        key = req.arg("key")
        self.store.stat(info.name, key)
        token = self.tokens.issue_link(req.user, info.name, key)
        url = (f"/api/buckets/{urllib.parse.quote(info.name, safe='')}/object?"
               + urllib.parse.urlencode({"key": key, "link": token}))
        return self._json(start_response, {"url": url})

    def move(self, req: Request, start_response):
        self._writable(req)
        src = self._bucket(req)
        body = req.json()
        old, new = _str(body, "from"), _str(body, "to")
        overwrite = body.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise HttpError("400 Bad Request", "InvalidParameter", "'overwrite' must be true or false")
        dst = self._bucket(req, body.get("to_bucket") or src.name)
        if old.endswith("/"):
            entry = self.ns.folder(src.name, old) if old.strip("/") else None
            if entry is None:
                raise errors.ObjectNotFound(f"no objects under {old!r}")
            result = self.ns.move(entry, dst.name, new, user=req.user, overwrite=overwrite)
            if result.errors:
                raise result.errors[0][1]
            return self._json(start_response, {"moved": result.done, "to": new.strip("/") + "/",
                                               "bucket": dst.name})
        entry = self.ns.file(src.name, old)
        if entry is None:
            raise errors.ObjectNotFound(f"{src.name}/{old} does not exist")
        self.ns.move(entry, dst.name, new, user=req.user, overwrite=overwrite)
        return self._json(start_response, _object_json(self.store.stat(dst.name, new)))

    # -- multipart uploads (the browser sends large files in parts; resumable) ------------------
    def create_upload(self, req: Request, start_response):
        self._writable(req)
        info = self._bucket(req)
        body = req.json()
        key = _str(body, "key")
        size = body.get("size")
        part_size = PART_SIZE
        if isinstance(size, int) and size > 0:
            part_size = max(PART_SIZE, -(-size // MAX_PARTS))
        upload_id = self.store.create_upload(info.name, key, user=req.user,
                                             content_type=body.get("content_type") or None)
        return self._json(start_response, {"upload_id": upload_id, "bucket": info.name, "key": key,
                                           "part_size": part_size}, "201 Created")

    def _upload(self, req: Request):
        up = self.store.upload(req.params["upload"])
        self._bucket(req, up.bucket)
        if not req.principal.may_use(up.owner):
            raise errors.UploadNotFound(f"upload {up.upload_id!r} does not exist")
        return up

    def get_upload(self, req: Request, start_response):
        up = self._upload(req)
        parts = self.store.list_parts(up.upload_id)
        return self._json(start_response, {"upload_id": up.upload_id, "bucket": up.bucket, "key": up.key,
                                           "parts": [{"number": p.number, "size": p.size, "etag": p.etag}
                                                     for p in parts]})

    def upload_part(self, req: Request, start_response):
        self._writable(req)
        up = self._upload(req)
        length = req.content_length
        if length is None and not req.environ.get("HTTP_TRANSFER_ENCODING"):
            raise HttpError("411 Length Required", "MissingContentLength", "parts need a Content-Length")
        req.environ["cas.body_consumed"] = True
        part = self.store.upload_part(up.upload_id, int(req.params["number"]), req.body(), expected_size=length)
        return self._json(start_response, {"number": part.number, "size": part.size, "etag": part.etag})

    def complete_upload(self, req: Request, start_response):
        self._writable(req)
        up = self._upload(req)
        parts = req.json().get("parts")
        if not isinstance(parts, list) or not parts:
            raise HttpError("400 Bad Request", "InvalidParameter", "'parts' must list the uploaded parts")
        try:
            wanted = [(int(p["number"]), str(p["etag"])) for p in parts]
        except (TypeError, KeyError, ValueError):
            raise HttpError("400 Bad Request", "InvalidParameter", "each part needs a number and an etag") from None
        obj = self.store.complete_upload(up.upload_id, wanted, user=req.user)
        return self._json(start_response, _object_json(obj))

    def abort_upload(self, req: Request, start_response):
        self._writable(req)
        up = self._upload(req)
        self.store.abort_upload(up.upload_id)
        return self._empty(start_response)
