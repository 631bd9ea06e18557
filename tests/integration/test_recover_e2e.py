"""The backend is the source of truth, end to end (issue 13): a real ``cas serve`` written to through
S3, WebDAV and the web API (overwrites, deletes, renames, copies, multipart), killed with -9 once
its metadata log has caught up; its index deleted; ``cas recover`` rebuilds it from the backend
alone; a new server then serves every acknowledged object byte-identical with its metadata,
deleted ones stay deleted, ``verify --deep`` is clean and gc deletes nothing referenced.

Run on the embedded local backend and on SeaweedFS.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.fixtures.core import bytes_of
from tests.fixtures.serve import CasServe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

KiB, MiB = 1 << 10, 1 << 20
BUCKET, DAV_BUCKET, WEB_BUCKET = "rec-s3", "rec-dav", "rec-web"


def _backend_env(kind: str, request) -> dict:
    if kind == "local":
        return {}
    seaweed = request.getfixturevalue("seaweed")
    return {"CAS_BLOCKS": f"s3://{seaweed.bucket}/rec-{uuid.uuid4().hex[:10]}",
            "CAS_BLOCKS_ENDPOINT": seaweed.endpoint, "CAS_BLOCKS_ACCESS_KEY": seaweed.access_key,
            "CAS_BLOCKS_SECRET_KEY": seaweed.secret_key}


def _cas(data, env: dict, *args) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CAS_", "AWS_"))}
    return subprocess.run([sys.executable, "-m", "cas", *args, "--data", str(data)], capture_output=True,
                          text=True, timeout=300, env={**base, **env})


def _unshipped(srv: CasServe) -> int | None:
    status, _, body = srv.request("GET", "/metrics", basic=(srv.user, srv.secret))
    m = re.search(rb"^cas_meta_log_unshipped_records(?:\{[^}]*\})? (\d+)", body, re.M) if status == 200 else None
    return int(m.group(1)) if m else None


def _wait_shipped(srv: CasServe) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _unshipped(srv) == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the metadata log did not catch up: {_unshipped(srv)} records unshipped")


def _listing(s3) -> dict[tuple[str, str], tuple[int, str]]:
    out = {}
    for b in s3.list_buckets()["Buckets"]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b["Name"]):
            for o in page.get("Contents", ()):
                out[b["Name"], o["Key"]] = (o["Size"], o["ETag"])
    return out


@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.s3backend)])
def test_lost_index_is_recovered_from_the_backend(tmp_path, request, backend):
    env = _backend_env(backend, request)
    data = tmp_path / "data"
    srv = CasServe(data, env=env, extra_args=["--meta-interval", "1"]).start()
    expect: dict[tuple[str, str], bytes] = {}
    meta: dict[tuple[str, str], dict] = {}
    gone: list[tuple[str, str]] = []
    try:
        s3 = srv.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        shared = bytes_of(700 * KiB, seed=1)
        for i in range(12):  # small and mid-sized, with dedup between them
            body = bytes_of(3 * KiB + i * 50_000, seed=100 + i) + (shared if i % 3 == 0 else b"")
            s3.put_object(Bucket=BUCKET, Key=f"obj/{i}.bin", Body=body, ContentType="application/x-test",
                          Metadata={"n": str(i)})
            expect[BUCKET, f"obj/{i}.bin"] = body
            meta[BUCKET, f"obj/{i}.bin"] = {"ContentType": "application/x-test", "Metadata": {"n": str(i)}}
        over = bytes_of(90 * KiB, seed=7)  # an overwrite: the newest bytes win
        s3.put_object(Bucket=BUCKET, Key="obj/1.bin", Body=over)
        expect[BUCKET, "obj/1.bin"] = over
        meta.pop((BUCKET, "obj/1.bin"))
        s3.delete_object(Bucket=BUCKET, Key="obj/2.bin")  # deleted: must stay deleted
        del expect[BUCKET, "obj/2.bin"]
        gone.append((BUCKET, "obj/2.bin"))
        s3.copy_object(Bucket=BUCKET, Key="copy/3.bin", CopySource={"Bucket": BUCKET, "Key": "obj/3.bin"})
        expect[BUCKET, "copy/3.bin"] = expect[BUCKET, "obj/3.bin"]
        up = s3.create_multipart_upload(Bucket=BUCKET, Key="big/multi.bin")
        parts, whole = [], b""
        for n in range(1, 4):
            piece = bytes_of(5 * MiB if n < 3 else 300 * KiB, seed=500 + n)
            whole += piece
            r = s3.upload_part(Bucket=BUCKET, Key="big/multi.bin", UploadId=up["UploadId"], PartNumber=n, Body=piece)
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        done = s3.complete_multipart_upload(Bucket=BUCKET, Key="big/multi.bin", UploadId=up["UploadId"],
                                            MultipartUpload={"Parts": parts})
        expect[BUCKET, "big/multi.bin"] = whole
        multi_etag = done["ETag"]

        dav = srv.dav_client()
        assert dav.mkcol(f"/{DAV_BUCKET}/").status == 201
        assert dav.mkcol(f"/{DAV_BUCKET}/docs/").status == 201
        for i in range(4):
            body = bytes_of(20 * KiB * (i + 1), seed=900 + i)
            assert dav.put(f"/{DAV_BUCKET}/docs/f{i}.txt", body).status in (201, 204)
            expect[DAV_BUCKET, f"docs/f{i}.txt"] = body
        assert dav.move(f"/{DAV_BUCKET}/docs/f0.txt", f"/{DAV_BUCKET}/moved.txt").status in (201, 204)
        expect[DAV_BUCKET, "moved.txt"] = expect.pop((DAV_BUCKET, "docs/f0.txt"))
        gone.append((DAV_BUCKET, "docs/f0.txt"))
        assert dav.delete(f"/{DAV_BUCKET}/docs/f1.txt").status == 204
        gone.append((DAV_BUCKET, "docs/f1.txt"))
        expect.pop((DAV_BUCKET, "docs/f1.txt"))

        token = srv.login()
        srv.json("POST", "/api/buckets", {"name": WEB_BUCKET}, token=token, expect=201)
        for i in range(3):
            body = bytes_of(40 * KiB + i, seed=1200 + i)
            status, _, _ = srv.request("PUT", f"/api/buckets/{WEB_BUCKET}/object?key=up/{i}.dat", body, token=token)
            assert status == 201
            expect[WEB_BUCKET, f"up/{i}.dat"] = body
        srv.json("POST", f"/api/buckets/{WEB_BUCKET}/move", {"from": "up/0.dat", "to": "renamed.dat"},
                 token=token, expect=200)
        expect[WEB_BUCKET, "renamed.dat"] = expect.pop((WEB_BUCKET, "up/0.dat"))
        gone.append((WEB_BUCKET, "up/0.dat"))
        before = {k: s3.head_object(Bucket=b, Key=k)["ETag"] for (b, k) in expect if b == BUCKET}
        listed = _listing(s3)  # what the server lists (WebDAV folders included)
        assert set(expect) <= set(listed)
        _wait_shipped(srv)
        os.kill(srv.pid, signal.SIGKILL)
    finally:
        srv.stop()

    shutil.rmtree(data / "index")
    # a server on a store whose index is gone refuses, and says how to recover
    probe = CasServe(data, env=env)
    try:
        with pytest.raises(RuntimeError, match="cas recover"):
            probe.start()
    finally:
        probe.stop()
    assert not (data / "index").exists() or not any((data / "index").iterdir())

    rec = _cas(data, env, "recover", "--json")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    report = json.loads(rec.stdout)
    assert report["objects"] == len(listed), report
    assert report["buckets"] == 3, report

    srv = CasServe(data, env=env).start()
    try:
        s3 = srv.s3_client()
        for (bucket, key), body in expect.items():
            got = s3.get_object(Bucket=bucket, Key=key)
            assert got["Body"].read() == body, (bucket, key)
            if (bucket, key) in meta:
                assert got["ContentType"] == meta[bucket, key]["ContentType"]
                assert got["Metadata"] == meta[bucket, key]["Metadata"]
            if bucket == BUCKET:
                assert got["ETag"] == before[key], key
        assert s3.head_object(Bucket=BUCKET, Key="big/multi.bin")["ETag"] == multi_etag
        assert _listing(s3) == listed  # sizes and ETags of every name, folders included
        for bucket, key in gone:
            with pytest.raises(s3.exceptions.ClientError) as err:
                s3.head_object(Bucket=bucket, Key=key)
            assert err.value.response["Error"]["Code"] in ("404", "NoSuchKey"), (bucket, key)
    finally:
        srv.stop()

    verify = _cas(data, env, "verify", "--deep", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["clean"], verify.stdout + verify.stderr
    gc = _cas(data, env, "gc", "--delete", "--min-age", "0", "--json")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    srv = CasServe(data, env=env).start()
    try:
        s3 = srv.s3_client()
        for (bucket, key), body in expect.items():
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, (bucket, key)
    finally:
        srv.stop()
