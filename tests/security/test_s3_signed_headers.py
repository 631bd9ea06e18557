"""Every x-amz-* header that changes what an S3 request does or stores must be signed.

A presigned URL or a signed request is a grant for exactly what was signed: an
``x-amz-copy-source`` or ``x-amz-meta-*`` added afterwards must not turn a presigned PUT into
a CopyObject of anything the signer can read, or store metadata the signer never saw. S3
answers 403 AccessDenied "There were headers present in the request which were not signed"
with a ``HeadersNotSigned`` element, for header and query auth alike. Against a real
``cas serve`` with raw HTTP (no SDK would send such a request).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from cas.auth import sigv4
from tests.fixtures.s3api import raw_request, sign_request

pytestmark = pytest.mark.integration

EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def error_of(body: bytes) -> dict[str, str]:
    return {child.tag: child.text or "" for child in ET.fromstring(body)}


def assert_not_signed(status: int, body: bytes, *names: str) -> None:
    assert status == 403, body
    error = error_of(body)
    assert error["Code"] == "AccessDenied"
    assert error["Message"] == "There were headers present in the request which were not signed"
    assert sorted(error["HeadersNotSigned"].split(", ")) == sorted(names)


def assert_missing(client, bucket: str, key: str) -> None:
    with pytest.raises(ClientError) as e:
        client.head_object(Bucket=bucket, Key=key)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def presigned_put(cas_s3, bucket: str, key: str, *, v4: bool = True, **params) -> tuple[str, str]:
    client = cas_s3.client(signature_version="s3v4") if v4 else cas_s3.client()
    url = client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key, **params}, ExpiresIn=300)
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}", parts.netloc


def test_presigned_put_with_unsigned_copy_source_is_refused(cas_s3, s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="private.txt", Body=b"only for the signer")
    target, host = presigned_put(cas_s3, s3_bucket, "upload-here")
    status, _, body = raw_request(cas_s3.port, "PUT", target, {
        "Host": host, "Content-Length": "0", "x-amz-copy-source": f"/{s3_bucket}/private.txt"})
    assert_not_signed(status, body, "x-amz-copy-source")
    assert_missing(s3_client, s3_bucket, "upload-here")


def test_presigned_put_with_unsigned_metadata_is_refused(cas_s3, s3_client, s3_bucket):
    target, host = presigned_put(cas_s3, s3_bucket, "meta")
    status, _, body = raw_request(cas_s3.port, "PUT", target, {
        "Host": host, "Content-Length": "4", "x-amz-meta-owner": "mallory", "X-Amz-Meta-Role": "admin"}, b"data")
    assert_not_signed(status, body, "x-amz-meta-owner", "x-amz-meta-role")
    assert_missing(s3_client, s3_bucket, "meta")


def test_presigned_put_with_signed_metadata_works(cas_s3, s3_client, s3_bucket):
    target, host = presigned_put(cas_s3, s3_bucket, "meta", Metadata={"owner": "alice"})
    assert "x-amz-meta-owner" in target
    status, _, body = raw_request(cas_s3.port, "PUT", target, {
        "Host": host, "Content-Length": "4", "x-amz-meta-owner": "alice"}, b"data")
    assert status == 200, body
    assert s3_client.head_object(Bucket=s3_bucket, Key="meta")["Metadata"] == {"owner": "alice"}


def test_presigned_put_may_carry_the_exempt_headers_unsigned(cas_s3, s3_client, s3_bucket):
    target, host = presigned_put(cas_s3, s3_bucket, "plain")
    status, _, body = raw_request(cas_s3.port, "PUT", target, {
        "Host": host, "Content-Length": "4", "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "x-amz-user-agent": "aws-sdk-js/3", "x-amz-date": "20200101T000000Z"}, b"data")
    assert status == 200, body
    assert s3_client.get_object(Bucket=s3_bucket, Key="plain")["Body"].read() == b"data"


def test_v2_presigned_put_signs_every_amz_header(cas_s3, s3_client, s3_bucket):
    """Signature V2 covers every x-amz-* header by construction: an added one breaks it."""
    s3_client.put_object(Bucket=s3_bucket, Key="private.txt", Body=b"secret")
    target, host = presigned_put(cas_s3, s3_bucket, "v2-target", v4=False)
    assert "AWSAccessKeyId=" in target
    status, _, body = raw_request(cas_s3.port, "PUT", target, {
        "Host": host, "Content-Length": "0", "x-amz-copy-source": f"/{s3_bucket}/private.txt"})
    assert status == 403 and error_of(body)["Code"] == "SignatureDoesNotMatch", body
    assert_missing(s3_client, s3_bucket, "v2-target")


@pytest.mark.parametrize("extra", [
    {"x-amz-meta-injected": "1"},
    {"x-amz-copy-source": "/{b}/private.txt"},
    {"x-amz-metadata-directive": "REPLACE", "x-amz-meta-a": "b"},
])
def test_header_auth_with_unsigned_amz_headers_is_refused(cas_s3, s3_client, s3_bucket, extra):
    s3_client.put_object(Bucket=s3_bucket, Key="private.txt", Body=b"secret")
    host = f"127.0.0.1:{cas_s3.port}"
    req = sign_request("PUT", host, f"/{s3_bucket}/target", access_key=cas_s3.user, secret=cas_s3.secret,
                       payload_hash=EMPTY)
    headers = dict(req.headers, **{k: v.format(b=s3_bucket) for k, v in extra.items()})
    status, _, body = raw_request(cas_s3.port, "PUT", req.path, {**headers, "Content-Length": "0"})
    assert_not_signed(status, body, *extra)
    assert_missing(s3_client, s3_bucket, "target")


def test_header_auth_with_every_amz_header_signed_works(cas_s3, s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="private.txt", Body=b"secret")
    host = f"127.0.0.1:{cas_s3.port}"
    req = sign_request("PUT", host, f"/{s3_bucket}/copy", access_key=cas_s3.user, secret=cas_s3.secret,
                       payload_hash=EMPTY, headers={"x-amz-copy-source": f"/{s3_bucket}/private.txt"})
    status, _, body = raw_request(cas_s3.port, "PUT", req.path, {**req.headers, "Content-Length": "0"})
    assert status == 200, body
    assert s3_client.get_object(Bucket=s3_bucket, Key="copy")["Body"].read() == b"secret"


@pytest.mark.unit
def test_which_amz_headers_need_a_signature():
    headers = {"host": "h", "x-amz-date": "d", "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
               "x-amz-user-agent": "ua", "x-amzn-trace-id": "t", "content-type": "text/plain",
               "x-amz-meta-a": "1", "x-amz-acl": "public-read", "x-amz-decoded-content-length": "5"}
    assert sigv4.unsigned_amz_headers(headers, ["host"]) == ["x-amz-meta-a", "x-amz-acl", "x-amz-decoded-content-length"]
    assert sigv4.unsigned_amz_headers(headers, ["host", "x-amz-meta-a", "x-amz-acl", "x-amz-decoded-content-length"]) == []
