"""S3 under ``--anonymous``: unsigned requests may read objects, never write, never list all buckets.

Every write operation of the S3 API, sent unsigned, must be refused with 403 AccessDenied
and leave the store as it was. Anonymous ListBuckets is refused as well: it would name
every user's buckets (public sharing of chosen buckets arrives with ACLs). A real
``cas serve --anonymous``, raw HTTP.
"""

from __future__ import annotations

import pytest

from tests.fixtures.s3api import S3Serve, raw_request, unique_bucket

pytestmark = pytest.mark.integration

DELETE_BODY = b"<Delete><Object><Key>k</Key></Object></Delete>"
COMPLETE_BODY = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>"


@pytest.fixture(scope="module")
def anonymous_server(tmp_path_factory):
    server = S3Serve(tmp_path_factory.mktemp("anon") / "data", extra_args=("--anonymous",)).start()
    try:
        root = server.client()
        bucket = unique_bucket()
        root.create_bucket(Bucket=bucket)
        root.put_object(Bucket=bucket, Key="k", Body=b"original")
        upload = root.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        root.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"part one")
        yield server, root, bucket, upload
    finally:
        server.stop()


def unsigned(server: S3Serve, method: str, path: str, headers: dict | None = None, body: bytes = b""):
    return raw_request(server.port, method, path, {
        "Host": f"127.0.0.1:{server.port}", "Content-Length": str(len(body)), **(headers or {})}, body)


WRITES = [
    ("PutObject", "PUT", "/{b}/new", {}, b"intruder"),
    ("CopyObject", "PUT", "/{b}/copy", {"x-amz-copy-source": "/{b}/k"}, b""),
    ("CreateBucket", "PUT", "/{new}", {}, b""),
    ("DeleteBucket", "DELETE", "/{b}", {}, b""),
    ("DeleteObject", "DELETE", "/{b}/k", {}, b""),
    ("DeleteObjects", "POST", "/{b}?delete", {"Content-MD5": "9DGTXiaCwbNlTqTH8Lc24w=="}, DELETE_BODY),
    ("CreateMultipartUpload", "POST", "/{b}/new?uploads", {}, b""),
    ("UploadPart", "PUT", "/{b}/mp?partNumber=2&uploadId={u}", {}, b"part two"),
    ("UploadPartCopy", "PUT", "/{b}/mp?partNumber=2&uploadId={u}", {"x-amz-copy-source": "/{b}/k"}, b""),
    ("CompleteMultipartUpload", "POST", "/{b}/mp?uploadId={u}", {}, COMPLETE_BODY),
    ("AbortMultipartUpload", "DELETE", "/{b}/mp?uploadId={u}", {}, b""),
    ("PutBucketAcl", "PUT", "/{b}?acl", {"x-amz-acl": "public-read-write"}, b""),
    ("PutBucketPolicy", "PUT", "/{b}?policy", {}, b"{}"),
    ("PutBucketVersioning", "PUT", "/{b}?versioning", {}, b""),
    ("PutObjectTagging", "PUT", "/{b}/k?tagging", {}, b""),
    ("DeleteObjectTagging", "DELETE", "/{b}/k?tagging", {}, b""),
    ("PutBucketTagging", "PUT", "/{b}?tagging", {}, b""),
    ("DeleteBucketTagging", "DELETE", "/{b}?tagging", {}, b""),
    ("PutObjectAcl", "PUT", "/{b}/k?acl", {"x-amz-acl": "public-read"}, b""),
    ("PostObject", "POST", "/{b}", {"Content-Type": "multipart/form-data; boundary=x"}, b"--x--\r\n"),
]


@pytest.mark.parametrize("name, method, path, headers, body", WRITES, ids=[w[0] for w in WRITES])
def test_every_write_is_refused(anonymous_server, name, method, path, headers, body):
    server, root, bucket, upload = anonymous_server
    new_bucket = unique_bucket()
    fill = {"b": bucket, "u": upload, "new": new_bucket}
    status, _, reply = unsigned(server, method, path.format(**fill),
                                {k: v.format(**fill) for k, v in headers.items()}, body)
    assert status == 403, (name, reply)
    assert b"<Code>AccessDenied</Code>" in reply
    # nothing changed
    assert root.get_object(Bucket=bucket, Key="k")["Body"].read() == b"original"
    assert [o["Key"] for o in root.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["k"]
    assert [u["UploadId"] for u in root.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == [upload]
    assert [p["PartNumber"] for p in root.list_parts(Bucket=bucket, Key="mp", UploadId=upload)["Parts"]] == [1]
    assert new_bucket not in [b["Name"] for b in root.list_buckets()["Buckets"]]


def test_anonymous_list_buckets_is_refused(anonymous_server):
    server, root, bucket, _ = anonymous_server
    status, _, reply = unsigned(server, "GET", "/")
    assert status == 403, reply
    assert b"<Code>AccessDenied</Code>" in reply and bucket.encode() not in reply
    assert bucket in [b["Name"] for b in root.list_buckets()["Buckets"]]


def test_anonymous_reads_still_work(anonymous_server):
    server, _, bucket, _ = anonymous_server
    status, _, reply = unsigned(server, "GET", f"/{bucket}/k")
    assert (status, reply) == (200, b"original")
    status, headers, _ = unsigned(server, "HEAD", f"/{bucket}/k")
    assert status == 200 and headers["content-length"] == "8"
    status, _, reply = unsigned(server, "GET", f"/{bucket}?list-type=2")
    assert status == 200 and b"<Key>k</Key>" in reply
