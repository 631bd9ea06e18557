"""Multipart uploads: create, parts (streamed or copied from an object), list, abort, complete
(a metadata operation binding the parts' manifests as one), expiry. A mixin of ``Store``."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping

from ..config import testonly_crash_point
from ..errors import (
    EntityTooSmall,
    InvalidPart,
    InvalidPartOrder,
    UploadNotFound,
)
from ..headers import check_content_type, check_headers, check_metadata
from ..manifest import Manifest
from ..names import check_key
from ..writer import WriteResult

log = logging.getLogger(__name__)
from .records import DEFAULT_CONTENT_TYPE, ObjectInfo, PartInfo, UploadInfo, _norm_etag
from .tags import Tags, check_tags

MIN_PART_SIZE = 5 << 20


class UploadsMixin:
    """Multipart uploads (see the module docstring); mixed into ``Store``."""

    # -- multipart uploads ----------------------------------------------------------------------
    def create_upload(self, bucket: str, key: str, *, user: str = "", content_type: str | None = None,
                      metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                      checksum_algorithm: str | None = None, checksum_type: str | None = None,
                      tags: Tags | None = None) -> str:
        """A new upload of bucket/key; what the object will carry (type, metadata, headers, tags)
        is kept on the upload and applied when it completes."""
        check_key(bucket, key)
        content_type = check_content_type(content_type)
        metadata, headers = check_metadata(metadata), check_headers(headers)
        tags = check_tags(tags or {})
        upload_id = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        with self.index.write() as t:
            owner = self._require_bucket(t, bucket)["owner"]
            t.put_upload(upload_id, {"bucket": bucket, "key": key, "owner": user or owner,
                                     "initiated": self.clock(), "ct": content_type or DEFAULT_CONTENT_TYPE,
                                     "meta": dict(metadata or {}), "hdr": dict(headers or {}),
                                     "ck_alg": checksum_algorithm, "ck_type": checksum_type,
                                     **({"tags": tags} if tags else {})})
        return upload_id

    def upload(self, upload_id: str) -> UploadInfo:
        with self.index.read() as t:
            rec = t.get_upload(upload_id)
        if rec is None:
            raise UploadNotFound(f"upload {upload_id!r} does not exist")
        return self._upload_info(upload_id, rec)

    @staticmethod
    def _upload_info(upload_id: str, r: dict) -> UploadInfo:
        return UploadInfo(upload_id, r["bucket"], r["key"], r["owner"], r["initiated"], r["ct"], r["meta"], r["hdr"],
                          r.get("ck_alg"), r.get("ck_type"), r.get("tags", {}))

    def _commit_part(self, t, upload_id: str, number: int, manifest: Manifest, size: int, etag: str,
                     checksums, now: float) -> PartInfo:
        if t.get_upload(upload_id) is None:
            raise UploadNotFound(f"upload {upload_id!r} does not exist")
        t.put_manifest(manifest.id, manifest.encode())
        t.put_part(upload_id, number, {"size": size, "etag": etag, "ck": dict(checksums or {}),
                                       "mtime": now, "m": manifest.id.hex()})
        t.add_ref(t.next_seq(), manifest.id)
        return PartInfo(number, size, etag, dict(checksums or {}), now, manifest.id)

    @staticmethod
    def _check_part_number(number: int) -> None:
        if not 1 <= number <= 10_000:
            from ..errors import BadRequest

            raise BadRequest(f"part number {number} is not between 1 and 10000")

    def upload_part(self, upload_id: str, number: int, body, *, expected_md5: bytes | None = None,
                    expected_size: int | None = None, hashers: Mapping[str, object] | None = None,
                    before_commit: Callable[[WriteResult], Mapping[str, str] | None] | None = None) -> PartInfo:
        """Store one part as blocks as it arrives; nothing is visible under a name yet."""
        self._check_part_number(number)
        self.upload(upload_id)

        def commit(t, result: WriteResult, checksums, now):
            return self._commit_part(t, upload_id, number, result.manifest, result.size, result.etag, checksums, now)

        return self._write(body, hashers, expected_size, expected_md5, before_commit, commit)

    def upload_part_copy(self, upload_id: str, number: int, src_bucket: str, src_key: str, *,
                         range: tuple[int, int] | None = None, checksums: Mapping[str, str] | None = None,
                         hashers: Mapping[str, object] | None = None,
                         before_commit: Callable[[WriteResult], Mapping[str, str] | None] | None = None) -> PartInfo:
        """A part taken from an existing object.

        The whole of a single-part object is bound as it is (metadata only; ``checksums``, if
        given, are recorded on the part); a range, or a multipart source whose ETag is not an
        MD5, is streamed through the write path, where ``hashers`` and ``before_commit`` work as
        in ``upload_part`` (only the cut edges become new blocks).
        """
        self._check_part_number(number)
        self.upload(upload_id)
        src = self.stat(src_bucket, src_key)
        if range is None and "-" not in src.etag and hashers is None:
            with self.index.write() as t:
                raw = t.get_manifest(src.manifest_id)
                return self._commit_part(t, upload_id, number, Manifest.decode(raw), src.size, src.etag,
                                         checksums, self.clock())
        reader = self.open(src_bucket, src_key, range=range)
        try:
            return self.upload_part(upload_id, number, iter(reader), hashers=hashers, before_commit=before_commit)
        finally:
            reader.close()

    def list_parts(self, upload_id: str) -> list[PartInfo]:
        with self.index.read() as t:
            if t.get_upload(upload_id) is None:
                raise UploadNotFound(f"upload {upload_id!r} does not exist")
            return [PartInfo(n, r["size"], r["etag"], r.get("ck", {}), r["mtime"], bytes.fromhex(r["m"]))
                    for _, n, r in t.iter_parts(upload_id)]

    def list_uploads(self, bucket: str, prefix: str = "") -> list[UploadInfo]:
        with self.index.read() as t:
            self._require_bucket(t, bucket)
            found = [self._upload_info(u, r) for u, r in t.iter_uploads()
                     if r["bucket"] == bucket and r["key"].startswith(prefix)]
        return sorted(found, key=lambda u: (u.key.encode(), u.initiated))

    def abort_upload(self, upload_id: str) -> None:
        with self.index.write() as t:
            if t.get_upload(upload_id) is None:
                raise UploadNotFound(f"upload {upload_id!r} does not exist")
            t.delete_upload(upload_id)

    def complete_upload(self, upload_id: str, parts: Iterable[tuple[int, str]], *, user: str = "",
                        min_part_size: int = MIN_PART_SIZE, checksums: Mapping[str, str] | None = None,
                        if_match: str | None = None, if_none_match: str | None = None) -> ObjectInfo:
        """Bind the listed parts, in order, as one object: a metadata operation."""
        wanted = list(parts)
        if not wanted:
            raise InvalidPart("you must specify at least one part")
        numbers = [n for n, _ in wanted]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise InvalidPartOrder("the list of parts was not in ascending order")
        self._store_parts_manifest(upload_id, numbers)
        with self.index.write() as t:
            up = t.get_upload(upload_id)
            if up is None:
                raise UploadNotFound(f"upload {upload_id!r} does not exist")
            bucket, key = up["bucket"], up["key"]
            self._require_bucket(t, bucket)
            self._check_conditions(t, bucket, key, if_match, if_none_match)
            manifests, md5s, size = [], b"", 0
            for i, (number, etag) in enumerate(wanted):
                rec = t.get_part(upload_id, number)
                if rec is None or _norm_etag(etag) != rec["etag"]:
                    raise InvalidPart(f"part {number} was not uploaded or its ETag does not match")
                if rec["size"] < min_part_size and i < len(wanted) - 1:
                    raise EntityTooSmall(f"part {number} is {rec['size']} bytes; all but the last "
                                         f"must be at least {min_part_size}")
                manifests.append(Manifest.decode(t.get_manifest(bytes.fromhex(rec["m"]))))
                md5s += bytes.fromhex(rec["etag"])
                size += rec["size"]
            manifest = Manifest().concat(manifests)
            t.put_manifest(manifest.id, manifest.encode())
            self.blocks.bind_manifest(t, manifest.id)
            etag = f"{hashlib.md5(md5s).hexdigest()}-{len(wanted)}"
            info = ObjectInfo(bucket, key, size, etag, up["ct"], self.clock(), up["meta"], up["hdr"],
                              dict(checksums or {}), {}, user or up["owner"], 0, manifest.id, len(wanted),
                              up.get("tags", {}))
            t.delete_upload(upload_id)
            out = self._bind(t, info, "put", user)
            testonly_crash_point("multipart.in_txn")
        testonly_crash_point("multipart.after_commit")
        self._notify()
        return out

    def _store_parts_manifest(self, upload_id: str, numbers: list[int]) -> None:
        """Before completing: the object's manifest goes to the backend too (a pack), like every
        writer's. Parts that change before the commit txn (or are missing: the txn refuses then)
        only leave a dead entry; the txn stores the manifest it builds in the index regardless."""
        with self.index.read() as t:
            manifests = []
            for number in numbers:
                rec = t.get_part(upload_id, number)
                raw = t.get_manifest(bytes.fromhex(rec["m"])) if rec is not None else None
                if raw is None:
                    return
                manifests.append(Manifest.decode(raw))
        manifest = Manifest().concat(manifests)
        self.blocks.put_manifest(manifest.id, manifest.encode())
        self.blocks.sync([manifest.id])

    def expire_uploads(self, max_age: float) -> int:
        """Abort uploads initiated more than ``max_age`` seconds ago; their blocks become garbage."""
        cutoff = self.clock() - max_age
        with self.index.write() as t:
            old = [u for u, r in t.iter_uploads() if r["initiated"] < cutoff]
            for u in old:
                t.delete_upload(u)
        return len(old)
