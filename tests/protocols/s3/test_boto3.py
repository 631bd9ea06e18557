"""boto3 with its default configuration against a real ``cas serve``, over HTTP and HTTPS.

Over HTTPS, current boto3 sends PutObject and UploadPart as
``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (aws-chunked, CRC32 trailer, no Content-Length);
over HTTP it signs the payload's SHA-256 and sends the CRC32 in a header. Both paths are
exercised by every test that takes ``cas_s3_any``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import os
import time
import urllib.error
import urllib.request
import zlib
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.s3api import code_of, empty_bucket, presign_url, raw_request, status_of, unique_bucket

pytestmark = pytest.mark.integration


# -- buckets


def test_bucket_lifecycle(client):
    name = unique_bucket()
    client.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in client.list_buckets()["Buckets"]]
    client.head_bucket(Bucket=name)
    assert client.get_bucket_location(Bucket=name)["LocationConstraint"] is None
    assert "Status" not in client.get_bucket_versioning(Bucket=name)
    with pytest.raises(ClientError) as e:
        client.create_bucket(Bucket=name)
    assert code_of(e) == "BucketAlreadyOwnedByYou"
    client.put_object(Bucket=name, Key="x", Body=b"1")
    with pytest.raises(ClientError) as e:
        client.delete_bucket(Bucket=name)
    assert code_of(e) == "BucketNotEmpty" and status_of(e) == 409
    client.delete_object(Bucket=name, Key="x")
    client.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        client.head_bucket(Bucket=name)
    assert status_of(e) == 404
    with pytest.raises(ClientError) as e:
        client.list_objects_v2(Bucket=name)
    assert code_of(e) == "NoSuchBucket"


@pytest.mark.parametrize("name", ["ab", "UPPER", "a_b_c", "-abc", "192.168.1.1", "a" * 64, "xn--abc"])
def test_invalid_bucket_names(s3_client, name):
    with pytest.raises(ClientError) as e:
        s3_client.create_bucket(Bucket=name)
    assert code_of(e) in ("InvalidBucketName",) or status_of(e) == 400


def test_create_bucket_with_location_constraint(s3_client):
    name = unique_bucket()
    s3_client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3_client.delete_bucket(Bucket=name)


# -- objects


def test_put_get_head_with_metadata_round_trip(client, bucket):
    body = os.urandom(300_000)
    put = client.put_object(
        Bucket=bucket, Key="dir/file.bin", Body=body, ContentType="application/x-test",
        ContentDisposition='attachment; filename="f.bin"', ContentEncoding="identity",
        CacheControl="max-age=60", ContentLanguage="de", Metadata={"colour": "blue", "Mixed-Case": "Yes"},
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert put["ChecksumCRC32"] == base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    got = client.get_object(Bucket=bucket, Key="dir/file.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test"
    assert got["ContentDisposition"] == 'attachment; filename="f.bin"'
    assert got["ContentEncoding"] == "identity"
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentLanguage"] == "de"
    assert got["Metadata"] == {"colour": "blue", "mixed-case": "Yes"}
    head = client.head_object(Bucket=bucket, Key="dir/file.bin", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]
    assert head["ChecksumCRC32"] == put["ChecksumCRC32"] and head["ChecksumType"] == "FULL_OBJECT"
    # boto3 validates the returned checksum on GET with checksum mode enabled
    assert client.get_object(Bucket=bucket, Key="dir/file.bin", ChecksumMode="ENABLED")["Body"].read() == body


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_every_checksum_algorithm(client, bucket, algorithm):
    body = os.urandom(100_000)
    put = client.put_object(Bucket=bucket, Key="c", Body=body, ChecksumAlgorithm=algorithm)
    value = put[f"Checksum{algorithm}"]
    got = client.get_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")
    assert got[f"Checksum{algorithm}"] == value
    assert got["Body"].read() == body


def test_wrong_checksum_header_is_bad_digest_and_stores_nothing(client, bucket):
    with pytest.raises(ClientError) as e:
        client.put_object(Bucket=bucket, Key="bad", Body=b"hello", ChecksumCRC32="AAAAAA==")
    assert code_of(e) == "BadDigest"
    with pytest.raises(ClientError) as e:
        client.put_object(Bucket=bucket, Key="bad", Body=b"hello", ContentMD5=base64.b64encode(b"0" * 16).decode())
    assert code_of(e) == "BadDigest"
    with pytest.raises(ClientError) as e:
        client.head_object(Bucket=bucket, Key="bad")
    assert status_of(e) == 404


def test_empty_object_and_unicode_keys(client, bucket):
    keys = ["empty", "ünï cødé/文件 name.txt", "a+b=c&d", "with%percent", "sp ace/trailing/"]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"" if key == "empty" else key.encode())
    for key in keys:
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == (b"" if key == "empty" else key.encode())
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode())


def test_ranges(client, bucket):
    body = os.urandom(1_000_000)
    client.put_object(Bucket=bucket, Key="r", Body=body)
    for spec, expected in [("bytes=0-0", body[:1]), ("bytes=10-99", body[10:100]), ("bytes=999990-", body[999990:]),
                           ("bytes=-5", body[-5:]), ("bytes=999999-2000000", body[999999:])]:
        got = client.get_object(Bucket=bucket, Key="r", Range=spec, ChecksumMode="ENABLED")
        assert got["Body"].read() == expected, spec
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert "ChecksumCRC32" not in got  # never a whole-object checksum on a range
        assert got["ContentRange"].endswith("/1000000")
    with pytest.raises(ClientError) as e:
        client.get_object(Bucket=bucket, Key="r", Range="bytes=1000000-")
    assert code_of(e) == "InvalidRange" and status_of(e) == 416
    # a malformed range is ignored: the whole object
    assert client.get_object(Bucket=bucket, Key="r", Range="bytes=abc")["Body"].read() == body


def test_conditional_get(client, bucket):
    client.put_object(Bucket=bucket, Key="c", Body=b"data")
    head = client.head_object(Bucket=bucket, Key="c")
    etag, mtime = head["ETag"], head["LastModified"]
    assert client.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"data"
    with pytest.raises(ClientError) as e:
        client.get_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert status_of(e) == 412 and code_of(e) == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        client.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert status_of(e) == 304
    with pytest.raises(ClientError) as e:
        client.get_object(Bucket=bucket, Key="c", IfModifiedSince=mtime + datetime.timedelta(seconds=1))
    assert status_of(e) == 304
    assert client.get_object(Bucket=bucket, Key="c", IfModifiedSince=mtime - datetime.timedelta(days=1))["Body"].read()
    with pytest.raises(ClientError) as e:
        client.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=mtime - datetime.timedelta(days=1))
    assert status_of(e) == 412
    # If-Match true wins over If-Unmodified-Since false (RFC 7232)
    assert client.get_object(Bucket=bucket, Key="c", IfMatch=etag,
                             IfUnmodifiedSince=mtime - datetime.timedelta(days=1))["Body"].read() == b"data"


def test_conditional_put(client, bucket):
    first = client.put_object(Bucket=bucket, Key="p", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        client.put_object(Bucket=bucket, Key="p", Body=b"two", IfNoneMatch="*")
    assert status_of(e) == 412
    with pytest.raises(ClientError) as e:
        client.put_object(Bucket=bucket, Key="p", Body=b"two", IfMatch='"ffff"')
    assert status_of(e) == 412
    client.put_object(Bucket=bucket, Key="p", Body=b"three", IfMatch=first["ETag"])
    assert client.get_object(Bucket=bucket, Key="p")["Body"].read() == b"three"
    with pytest.raises(ClientError) as e:
        client.put_object(Bucket=bucket, Key="absent", Body=b"x", IfMatch=first["ETag"])
    assert code_of(e) == "NoSuchKey"


def test_delete_and_delete_objects(client, bucket):
    for i in range(5):
        client.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x")
    client.delete_object(Bucket=bucket, Key="k0")
    client.delete_object(Bucket=bucket, Key="never-existed")  # 204 all the same
    out = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"k{i}"} for i in range(1, 4)] + [{"Key": "nope"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["k1", "k2", "k3", "nope"]
    quiet = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k4"}], "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_copy_object_is_metadata_only_with_directives(client, bucket, cas_s3_any):
    body = os.urandom(200_000)
    client.put_object(Bucket=bucket, Key="src", Body=body, ContentType="text/x-src", Metadata={"a": "1"})
    out = client.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert out["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    dst = client.get_object(Bucket=bucket, Key="dst")
    assert dst["Body"].read() == body and dst["Metadata"] == {"a": "1"} and dst["ContentType"] == "text/x-src"
    client.copy_object(Bucket=bucket, Key="dst2", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
                       Metadata={"b": "2"}, ContentType="text/plain")
    dst2 = client.head_object(Bucket=bucket, Key="dst2")
    assert dst2["Metadata"] == {"b": "2"} and dst2["ContentType"] == "text/plain"
    with pytest.raises(ClientError) as e:
        client.copy_object(Bucket=bucket, Key="src", CopySource=f"{bucket}/src")
    assert code_of(e) == "InvalidRequest"
    client.copy_object(Bucket=bucket, Key="src", CopySource=f"{bucket}/src", MetadataDirective="REPLACE", Metadata={"c": "3"})
    with pytest.raises(ClientError) as e:
        client.copy_object(Bucket=bucket, Key="d3", CopySource=f"{bucket}/src", CopySourceIfMatch='"0000"')
    assert status_of(e) == 412
    with pytest.raises(ClientError) as e:
        client.copy_object(Bucket=bucket, Key="d3", CopySource=f"{bucket}/missing")
    assert code_of(e) == "NoSuchKey"
    # across buckets
    other = unique_bucket()
    client.create_bucket(Bucket=other)
    try:
        client.copy_object(Bucket=other, Key="x", CopySource={"Bucket": bucket, "Key": "src"})
        assert client.get_object(Bucket=other, Key="x")["Body"].read() == body
    finally:
        empty_bucket(client, other)


# -- listings


def test_list_v2_pagination_prefix_delimiter(s3_client, s3_bucket):
    keys = [f"dir{d}/file{f:02d}" for d in range(3) for f in range(7)] + ["top1", "top2", "dir1/sub/x"]
    for key in keys:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"")
    seen, pages = [], 0
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, PaginationConfig={"PageSize": 5}):
        pages += 1
        seen += [o["Key"] for o in page.get("Contents", [])]
        assert page["KeyCount"] <= 5
    assert seen == sorted(keys) and pages == 5
    top = s3_client.list_objects_v2(Bucket=s3_bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["dir0/", "dir1/", "dir2/"]
    assert [o["Key"] for o in top["Contents"]] == ["top1", "top2"]
    # delimiter + pagination: a common prefix is one entry and is not repeated across pages
    entries = []
    token = None
    for _ in range(20):
        kwargs = {"ContinuationToken": token} if token else {}
        page = s3_client.list_objects_v2(Bucket=s3_bucket, Delimiter="/", MaxKeys=2, **kwargs)
        entries += [p["Prefix"] for p in page.get("CommonPrefixes", [])] + [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert entries == ["dir0/", "dir1/", "dir2/", "top1", "top2"]
    sub = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="dir1/", Delimiter="/")
    assert [p["Prefix"] for p in sub["CommonPrefixes"]] == ["dir1/sub/"]
    after = s3_client.list_objects_v2(Bucket=s3_bucket, StartAfter="dir2/file05")
    assert [o["Key"] for o in after["Contents"]] == ["dir2/file06", "top1", "top2"]
    zero = s3_client.list_objects_v2(Bucket=s3_bucket, MaxKeys=0)
    assert zero["KeyCount"] == 0 and not zero["IsTruncated"]
    with pytest.raises(ClientError) as e:
        s3_client.list_objects_v2(Bucket=s3_bucket, ContinuationToken="garbage!")
    assert code_of(e) == "InvalidArgument"


def test_list_v1_markers_and_url_encoding(s3_client, s3_bucket):
    keys = ["a b", "a+b", "c/d", "c/e", "ü", "\x01ctl"]
    for key in keys:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"")
    seen = []
    for page in s3_client.get_paginator("list_objects").paginate(Bucket=s3_bucket, PaginationConfig={"PageSize": 2}):
        seen += [o["Key"] for o in page.get("Contents", [])]
    assert seen == sorted(keys, key=lambda k: k.encode())
    page = s3_client.list_objects(Bucket=s3_bucket, Marker="a+b", Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["c/"]
    assert [o["Key"] for o in page["Contents"]] == ["ü"]


# -- multipart


def test_multipart_lifecycle(client, bucket):
    part1 = os.urandom(5 << 20)
    part2 = os.urandom(1000)
    up = client.create_multipart_upload(Bucket=bucket, Key="mp", ContentType="video/x-test", Metadata={"m": "1"})
    uid = up["UploadId"]
    assert [u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [uid]
    e1 = client.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=part1)
    e2 = client.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=2, Body=part2)
    parts = client.list_parts(Bucket=bucket, Key="mp", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, len(part1)), (2, len(part2))]
    with pytest.raises(ClientError) as e:
        client.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": [
            {"PartNumber": 2, "ETag": e2["ETag"]}, {"PartNumber": 1, "ETag": e1["ETag"]}]})
    assert code_of(e) == "InvalidPartOrder"
    with pytest.raises(ClientError) as e:
        client.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}, {"PartNumber": 2, "ETag": e2["ETag"]}]})
    assert code_of(e) == "InvalidPart"
    done = client.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": e1["ETag"], "ChecksumCRC32": e1.get("ChecksumCRC32")},
        {"PartNumber": 2, "ETag": e2["ETag"], "ChecksumCRC32": e2.get("ChecksumCRC32")}]})
    md5s = bytes.fromhex(e1["ETag"].strip('"')) + bytes.fromhex(e2["ETag"].strip('"'))
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-2"'
    got = client.get_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert got["Body"].read() == part1 + part2
    assert got["ContentType"] == "video/x-test" and got["Metadata"] == {"m": "1"}
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError) as e:
        client.list_parts(Bucket=bucket, Key="mp", UploadId=uid)
    assert code_of(e) == "NoSuchUpload"


def test_multipart_small_part_and_abort(client, bucket):
    uid = client.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    e1 = client.upload_part(Bucket=bucket, Key="small", UploadId=uid, PartNumber=1, Body=b"a" * 100)
    e2 = client.upload_part(Bucket=bucket, Key="small", UploadId=uid, PartNumber=2, Body=b"b" * 100)
    with pytest.raises(ClientError) as e:
        client.complete_multipart_upload(Bucket=bucket, Key="small", UploadId=uid, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": e1["ETag"]}, {"PartNumber": 2, "ETag": e2["ETag"]}]})
    assert code_of(e) == "EntityTooSmall"
    client.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=uid)
    with pytest.raises(ClientError) as e:
        client.upload_part(Bucket=bucket, Key="small", UploadId=uid, PartNumber=3, Body=b"c")
    assert code_of(e) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        client.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=uid)
    assert code_of(e) == "NoSuchUpload"


@pytest.mark.parametrize("algorithm, kind", [("CRC32", "COMPOSITE"), ("CRC32C", "FULL_OBJECT"), ("CRC64NVME", "FULL_OBJECT"), ("SHA256", "COMPOSITE")])
def test_multipart_checksums(client, bucket, algorithm, kind):
    parts = [os.urandom(5 << 20), os.urandom(12345)]
    up = client.create_multipart_upload(Bucket=bucket, Key="ck", ChecksumAlgorithm=algorithm, ChecksumType=kind)
    uid = up["UploadId"]
    done_parts = []
    for n, data in enumerate(parts, 1):
        r = client.upload_part(Bucket=bucket, Key="ck", UploadId=uid, PartNumber=n, Body=data, ChecksumAlgorithm=algorithm)
        done_parts.append({"PartNumber": n, "ETag": r["ETag"], f"Checksum{algorithm}": r[f"Checksum{algorithm}"]})
    done = client.complete_multipart_upload(Bucket=bucket, Key="ck", UploadId=uid, MultipartUpload={"Parts": done_parts})
    value = done[f"Checksum{algorithm}"]
    assert value.endswith("-2") == (kind == "COMPOSITE")
    got = client.get_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")  # boto3 validates FULL_OBJECT values
    assert got["Body"].read() == b"".join(parts)
    assert got[f"Checksum{algorithm}"] == value


def test_upload_part_copy_with_range(client, bucket):
    src = os.urandom(7 << 20)
    client.put_object(Bucket=bucket, Key="src", Body=src)
    uid = client.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    p1 = client.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=1,
                                 CopySource={"Bucket": bucket, "Key": "src"})
    p2 = client.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=2,
                                 CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange="bytes=100-199")
    with pytest.raises(ClientError) as e:
        client.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=3,
                                CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=f"bytes=0-{len(src)}")
    assert code_of(e) == "InvalidArgument"
    client.complete_multipart_upload(Bucket=bucket, Key="assembled", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]}]})
    assert client.get_object(Bucket=bucket, Key="assembled")["Body"].read() == src + src[100:200]


def test_transfer_manager_upload_and_download_file(client, bucket, tmp_path):
    from boto3.s3.transfer import TransferConfig

    data = os.urandom(24 << 20)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4)
    client.upload_file(str(src), bucket, "big/file.bin", Config=config)
    head = client.head_object(Bucket=bucket, Key="big/file.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    dst = tmp_path / "dst.bin"
    client.download_file(bucket, "big/file.bin", str(dst), Config=config)
    assert dst.read_bytes() == data


# -- presigned URLs over plain HTTP (urllib: no SDK on the other side)


@pytest.mark.parametrize("signature", ["default", "s3v4"])
def test_presigned_get_and_put(cas_s3, s3_bucket, signature):
    """boto3's default presigned URLs are Signature V2; with s3v4 they are query SigV4."""
    client = cas_s3.client() if signature == "default" else cas_s3.client(signature_version="s3v4")
    put_url = client.generate_presigned_url("put_object", Params={"Bucket": s3_bucket, "Key": "pre"}, ExpiresIn=300)
    assert ("X-Amz-Signature" in put_url) == (signature == "s3v4")
    parts = urlsplit(put_url)
    status, _, _ = raw_request(cas_s3.port, "PUT", f"{parts.path}?{parts.query}",
                               {"Host": parts.netloc, "Content-Length": "14"}, b"presigned body")
    assert status == 200
    get_url = client.generate_presigned_url("get_object", Params={"Bucket": s3_bucket, "Key": "pre"}, ExpiresIn=300)
    with urllib.request.urlopen(get_url, timeout=30) as resp:
        assert resp.read() == b"presigned body"
    tampered = get_url.replace("/pre?", "/pre2?")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(tampered, timeout=30)
    assert e.value.code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in e.value.read()
    override = client.generate_presigned_url(
        "get_object", Params={"Bucket": s3_bucket, "Key": "pre", "ResponseContentDisposition": "attachment"}, ExpiresIn=300)
    with urllib.request.urlopen(override, timeout=30) as resp:
        assert resp.headers["Content-Disposition"] == "attachment"
    # an expired URL without waiting for one: V2 names an absolute time (here a minute ago); a V4
    # URL is dated two minutes ago with a one-minute lifetime
    if signature == "default":
        expired = client.generate_presigned_url("get_object", Params={"Bucket": s3_bucket, "Key": "pre"},
                                                ExpiresIn=-60)
    else:
        expired = presign_url(cas_s3.endpoint, "GET", f"/{s3_bucket}/pre", access_key=cas_s3.user,
                              secret=cas_s3.secret, expires=60, when=time.time() - 120)
        with urllib.request.urlopen(presign_url(cas_s3.endpoint, "GET", f"/{s3_bucket}/pre",
                                                access_key=cas_s3.user, secret=cas_s3.secret,
                                                expires=60), timeout=30) as resp:
            assert resp.read() == b"presigned body"  # the same URL, made now, works
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(expired, timeout=30)
    assert e.value.code == 403 and b"<Code>AccessDenied</Code>" in e.value.read()


def test_unknown_subresources_are_clean(cas_s3, s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="o", Body=b"1")
    assert s3_client.get_bucket_acl(Bucket=s3_bucket)["Grants"][0]["Permission"] == "FULL_CONTROL"
    assert s3_client.get_object_tagging(Bucket=s3_bucket, Key="o")["TagSet"] == []
    for call, code in [
        (lambda: s3_client.get_bucket_policy(Bucket=s3_bucket), "NoSuchBucketPolicy"),
        (lambda: s3_client.get_bucket_lifecycle_configuration(Bucket=s3_bucket), "NoSuchLifecycleConfiguration"),
        (lambda: s3_client.get_bucket_cors(Bucket=s3_bucket), "NoSuchCORSConfiguration"),
        (lambda: s3_client.get_bucket_tagging(Bucket=s3_bucket), "NoSuchTagSet"),
        (lambda: s3_client.put_object_acl(Bucket=s3_bucket, Key="o", ACL="public-read"), "NotImplemented"),
        (lambda: s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"}), "NotImplemented"),
    ]:
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) == code, code
        assert status_of(e) < 500 or code == "NotImplemented"


def test_https_uploads_use_unsigned_trailers_without_content_length(cas_s3_tls):
    """Proof that the HTTPS runs exercise aws-chunked trailers: look at what boto3 sent."""
    client = cas_s3_tls.client()
    sent = []
    client.meta.events.register("before-send.s3.PutObject", lambda request, **kw: sent.append(dict(request.headers)))
    bucket = unique_bucket()
    client.create_bucket(Bucket=bucket)
    try:
        body = os.urandom(3 << 20)
        client.put_object(Bucket=bucket, Key="t", Body=io.BytesIO(body))
        headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in sent[0].items()}
        assert headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        assert headers["x-amz-trailer"] == "x-amz-checksum-crc32" and "content-length" not in headers
        assert client.get_object(Bucket=bucket, Key="t")["Body"].read() == body
    finally:
        empty_bucket(client, bucket)
