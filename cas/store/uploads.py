"""Multipart uploads: create, parts (streamed or copied from an object), list, abort, complete
(the parts' blocks bound as one object, re-cut at the part boundaries so that the manifest is a
single PUT's: ``cas.recut``), expiry. A mixin of ``Store``."""

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
from ..recut import Recut
from ..writer import BlockWriter, WriteResult

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
        """Bind the listed parts, in order, as one object, whose manifest is a single PUT's.

        The parts were chunked one by one; the chunks around each part boundary are cut again
        (``cas.recut``: a few blocks read per boundary, the new chunks pinned and stored by a
        ``BlockWriter`` like any body's), so that the manifest does not depend on how the file
        was split. The parts' blocks no longer used become garbage once the upload is gone. The
        ETag and checksums stay S3's (MD5 of the parts' MD5s, ``-N``). The commit txn checks the
        upload and its parts again: a part replaced meanwhile fails the completion (``InvalidPart``).
        """
        wanted = list(parts)
        if not wanted:
            raise InvalidPart("you must specify at least one part")
        numbers = [n for n, _ in wanted]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise InvalidPartOrder("the list of parts was not in ascending order")
        with self.index.read() as t:  # refuse early, before reading any block
            _, recs = self._completed_parts(t, upload_id, wanted, min_part_size)
            part_manifests = [Manifest.decode(t.get_manifest(bytes.fromhex(rec["m"]))) for rec in recs]
        recut = Recut(part_manifests, self._read_blocks, self.chunker)
        w = BlockWriter(self)
        try:
            manifest = recut.manifest(w.write_chunks(recut.chunks()).manifest)
            w.finish(manifest)  # the new chunks and the manifest durable in the backend
            with self.index.write() as t:
                t.prefetch(**w.commit_rows(manifest))
                up, now_recs = self._completed_parts(t, upload_id, wanted, min_part_size)
                for (number, _), rec, was in zip(wanted, now_recs, recs):
                    if rec["m"] != was["m"]:
                        raise InvalidPart(f"part {number} was uploaded again while the upload was being completed")
                bucket, key = up["bucket"], up["key"]
                self._require_bucket(t, bucket)
                self._check_conditions(t, bucket, key, if_match, if_none_match)
                now = self.clock()
                w.commit_into(t, manifest, now)
                md5s = b"".join(bytes.fromhex(rec["etag"]) for rec in now_recs)
                etag = f"{hashlib.md5(md5s).hexdigest()}-{len(wanted)}"
                info = ObjectInfo(bucket, key, recut.size, etag, up["ct"], now, up["meta"], up["hdr"],
                                  dict(checksums or {}), {}, user or up["owner"], 0, manifest.id, len(wanted),
                                  up.get("tags", {}))
                t.delete_upload(upload_id)
                out = self._bind(t, info, "put", user)
                testonly_crash_point("multipart.in_txn")
        except BaseException:
            w.abort()
            raise
        finally:
            w.close()
        log.debug("upload %s completed: %d parts, %d chunks re-cut in %d regions from %d blocks read",
                  upload_id, len(wanted), recut.cut, recut.regions, recut.blocks_read)
        testonly_crash_point("multipart.after_commit")
        self._notify()
        return out

    @staticmethod
    def _completed_parts(t, upload_id: str, wanted: list[tuple[int, str]], min_part_size: int
                         ) -> tuple[dict, list[dict]]:
        """The upload's record and the records of the ``wanted`` parts, checked as S3 checks them."""
        up = t.get_upload(upload_id)
        if up is None:
            raise UploadNotFound(f"upload {upload_id!r} does not exist")
        recs = []
        for i, (number, etag) in enumerate(wanted):
            rec = t.get_part(upload_id, number)
            if rec is None or _norm_etag(etag) != rec["etag"]:
                raise InvalidPart(f"part {number} was not uploaded or its ETag does not match")
            if rec["size"] < min_part_size and i < len(wanted) - 1:
                raise EntityTooSmall(f"part {number} is {rec['size']} bytes; all but the last "
                                     f"must be at least {min_part_size}")
            recs.append(rec)
        return up, recs

    def _read_blocks(self, block_ids: list[bytes]) -> list[bytes]:
        """Verified bytes of the given blocks, in order (one coalesced read where they are neighbours)."""
        return [self.codec.decode(bid, raw) for bid, raw in zip(block_ids, self.blocks.get_many(block_ids))]

    def expire_uploads(self, max_age: float) -> int:
        """Abort uploads initiated more than ``max_age`` seconds ago; their blocks become garbage."""
        cutoff = self.clock() - max_age
        with self.index.write() as t:
            old = [u for u, r in t.iter_uploads() if r["initiated"] < cutoff]
            for u in old:
                t.delete_upload(u)
        return len(old)
