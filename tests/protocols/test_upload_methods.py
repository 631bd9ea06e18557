"""One file, one manifest, however it was uploaded (issue 14: dedup independent of upload method).

Against a real ``cas serve``: the same bytes sent by S3 PutObject, by boto3's multipart transfer
with 5 MiB and with 8 MiB parts, by a WebDAV PUT and by the web UI's resumable multipart API end
up under one manifest id (read from the store once the server has stopped), while each keeps the
ETag its protocol gives (MD5, or S3's ``-N`` for multipart). An edited copy sent by multipart then
costs as few new blocks as it would by one PUT.
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from boto3.s3.transfer import TransferConfig

from cas.config import load_settings
from cas.gc.sweep import collect
from cas.store import Store
from tests.fixtures.core import bytes_of
from tests.fixtures.gc import manifest_ids

pytestmark = pytest.mark.integration

MiB = 1 << 20
BUCKET = "methods"


def web_multipart(server, token: str, key: str, body: bytes) -> dict:
    """Upload ``body`` as the browser does: create, PUT each part of the size the server asks, complete."""
    _, up = server.json("POST", f"/api/buckets/{BUCKET}/uploads", {"key": key, "size": len(body)},
                        token=token, expect=201)
    uid, size = up["upload_id"], up["part_size"]
    parts = []
    for n, pos in enumerate(range(0, len(body), size), start=1):
        status, _, raw = server.request("PUT", f"/api/uploads/{uid}/parts/{n}", body[pos:pos + size], token=token)
        assert status == 200, raw
        parts.append({"number": n, "etag": json.loads(raw)["etag"]})
    _, obj = server.json("POST", f"/api/uploads/{uid}/complete", {"parts": parts}, token=token, expect=200)
    return obj


def upload_every_way(server, body: bytes, prefix: str) -> dict[str, str]:
    """``body`` under one key per upload method; returns key -> the ETag the protocol answered."""
    s3 = server.s3_client()
    etags = {}
    etags[f"{prefix}put"] = s3.put_object(Bucket=BUCKET, Key=f"{prefix}put", Body=body)["ETag"]
    for mib in (5, 8):
        key = f"{prefix}mp{mib}"
        config = TransferConfig(multipart_threshold=mib * MiB, multipart_chunksize=mib * MiB)
        s3.upload_fileobj(io.BytesIO(body), BUCKET, key, Config=config)
        etags[key] = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
    assert server.dav_client().put(f"/{BUCKET}/{prefix}dav", body).status in (201, 204)
    web_multipart(server, server.login(), f"{prefix}web", body)
    for key in (f"{prefix}dav", f"{prefix}web"):
        etags[key] = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
    return {key: etag.strip('"') for key, etag in etags.items()}


def test_the_same_file_has_one_manifest_whatever_the_upload_method(start_web_server, tmp_path):
    server = start_web_server(tmp_path / "data")
    server.s3_client().create_bucket(Bucket=BUCKET)
    body = bytes_of(21 * MiB + 777, 14)
    etags = upload_every_way(server, body, "")
    md5 = hashlib.md5(body).hexdigest()
    assert etags["put"] == md5 and etags["dav"] == md5
    assert etags["mp5"].endswith("-5") and etags["mp8"].endswith("-3")
    assert etags["web"].endswith("-3")  # the web UI sends 8 MiB parts

    edited = body[:3 * MiB] + b"an edit" + body[3 * MiB + 100:11 * MiB] + b"another" + body[11 * MiB:]
    s3 = server.s3_client()
    s3.upload_fileobj(io.BytesIO(edited), BUCKET, "edited-mp", Config=TransferConfig(
        multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    assert s3.get_object(Bucket=BUCKET, Key="edited-mp")["Body"].read() == edited
    server.stop()

    settings = load_settings(server.data_dir, env={"CAS_ROOT_USER": server.user, "CAS_ROOT_PASSWORD": server.secret})
    with Store.open_store(settings) as store:
        ids = {key: store.stat(BUCKET, key).manifest_id for key in etags}
        assert len(set(ids.values())) == 1, {k: v.hex()[:12] for k, v in ids.items()}
        for key in etags:
            assert hashlib.sha256(store.get_bytes(BUCKET, key)).digest() == hashlib.sha256(body).digest()
        # the edited copy by multipart costs what it costs by one PUT: the edits' neighbourhoods
        collect(store, delete=True, min_age=0)  # the parts' own boundary blocks are garbage
        by_multipart = store.stats()["unique_blocks"]
        store.put(BUCKET, "edited-put", edited)
        assert store.stat(BUCKET, "edited-put").manifest_id == store.stat(BUCKET, "edited-mp").manifest_id
        assert store.stats()["unique_blocks"] == by_multipart  # nothing new: the same blocks
        original = len(manifest_ids(store, BUCKET, "put"))
        assert by_multipart - original <= 6
