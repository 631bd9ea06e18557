"""Bad input over real sockets: each case gets its precise S3 error, never a 500, and stores nothing.

Requests no client would send are signed by hand (``tests.fixtures.s3api.sign_request``),
including STREAMING-AWS4-HMAC-SHA256-PAYLOAD bodies with chunk signatures.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import zlib

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.s3api import raw_request, sign_request, signed_chunked_body

pytestmark = pytest.mark.integration

EMPTY = hashlib.sha256(b"").hexdigest()


def code(body: bytes) -> str:
    start = body.index(b"<Code>") + 6
    return body[start:body.index(b"</Code>")].decode()


def assert_absent(client, bucket, key):
    with pytest.raises(ClientError) as e:
        client.head_object(Bucket=bucket, Key=key)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def put_signed(cas_s3, bucket, key, body, *, headers=None, payload_hash=None, send=None):
    host = f"127.0.0.1:{cas_s3.port}"
    payload_hash = payload_hash or hashlib.sha256(body).hexdigest()
    req = sign_request("PUT", host, f"/{bucket}/{key}", access_key=cas_s3.user, secret=cas_s3.secret,
                       headers=headers or {}, payload_hash=payload_hash)
    data = send(req) if send else body
    hdrs = dict(req.headers)
    hdrs.setdefault("content-length", str(len(data)))
    return raw_request(cas_s3.port, "PUT", req.path, hdrs, data)


def test_signed_streaming_upload_round_trips(cas_s3, s3_client, s3_bucket):
    data = os.urandom(300_000)
    status, headers, body = put_signed(
        cas_s3, s3_bucket, "streamed", data, payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        headers={"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))},
        send=lambda req: signed_chunked_body(req, data, 65536))
    assert status == 200, body
    assert headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert s3_client.get_object(Bucket=s3_bucket, Key="streamed")["Body"].read() == data


def test_signed_streaming_upload_with_signed_trailer(cas_s3, s3_client, s3_bucket):
    data = os.urandom(100_000)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    common = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
              "x-amz-trailer": "x-amz-checksum-crc32"}
    status, headers, body = put_signed(
        cas_s3, s3_bucket, "trailer-ok", data, payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        headers=common, send=lambda req: signed_chunked_body(req, data, 30000, [("x-amz-checksum-crc32", crc)]))
    assert status == 200, body
    assert headers["x-amz-checksum-crc32"] == crc
    wrong = base64.b64encode(b"\0\0\0\1").decode()
    status, _, body = put_signed(
        cas_s3, s3_bucket, "trailer-bad", data, payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        headers=common, send=lambda req: signed_chunked_body(req, data, 30000, [("x-amz-checksum-crc32", wrong)]))
    assert status == 400 and code(body) == "BadDigest"
    assert_absent(s3_client, s3_bucket, "trailer-bad")


def test_chunk_signature_off_by_one_byte(cas_s3, s3_client, s3_bucket):
    data = os.urandom(200_000)

    def forged(req):
        body = bytearray(signed_chunked_body(req, data, 65536))
        second = body.index(b"chunk-signature=", body.index(b"chunk-signature=") + 1) + len(b"chunk-signature=")
        body[second] = ord("0") if body[second] != ord("0") else ord("1")
        return bytes(body)

    status, _, body = put_signed(
        cas_s3, s3_bucket, "forged", data, payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        headers={"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))}, send=forged)
    assert status == 403 and code(body) == "SignatureDoesNotMatch"
    assert_absent(s3_client, s3_bucket, "forged")

    def payload_flipped(req):
        body = bytearray(signed_chunked_body(req, data, 65536))
        body[body.index(b"\r\n") + 10] ^= 0x01
        return bytes(body)

    status, _, body = put_signed(
        cas_s3, s3_bucket, "flipped", data, payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        headers={"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))},
        send=payload_flipped)
    assert status == 403 and code(body) == "SignatureDoesNotMatch"
    assert_absent(s3_client, s3_bucket, "flipped")


def test_unsigned_trailer_checksum_mismatch(cas_s3, s3_client, s3_bucket):
    data = os.urandom(70_000)
    wrong = base64.b64encode(zlib.crc32(data[:-1]).to_bytes(4, "big")).decode()

    def body_with(value):
        return (b"%x\r\n" % len(data)) + data + b"\r\n0\r\n" + f"x-amz-checksum-crc32:{value}\r\n\r\n".encode()

    headers = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
               "x-amz-trailer": "x-amz-checksum-crc32"}
    status, _, body = put_signed(cas_s3, s3_bucket, "bad-trailer", data, headers=headers,
                                 payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER", send=lambda req: body_with(wrong))
    assert status == 400 and code(body) == "BadDigest"
    assert_absent(s3_client, s3_bucket, "bad-trailer")
    good = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    status, _, body = put_signed(cas_s3, s3_bucket, "good-trailer", data, headers=headers,
                                 payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER", send=lambda req: body_with(good))
    assert status == 200, body


def test_signed_payload_hash_and_sha256_checksum_both_checked(cas_s3, s3_client, s3_bucket):
    # one SHA-256 of the body serves both promises; each is still held
    data = os.urandom(200_000)
    sha = hashlib.sha256(data)
    good = base64.b64encode(sha.digest()).decode()
    status, headers, body = put_signed(cas_s3, s3_bucket, "both", data, payload_hash=sha.hexdigest(),
                                       headers={"x-amz-checksum-sha256": good})
    assert status == 200, body
    assert headers["x-amz-checksum-sha256"] == good
    wrong = base64.b64encode(hashlib.sha256(data[:-1]).digest()).decode()
    status, _, body = put_signed(cas_s3, s3_bucket, "bad-checksum", data, payload_hash=sha.hexdigest(),
                                 headers={"x-amz-checksum-sha256": wrong})
    assert status == 400 and code(body) == "BadDigest"
    assert_absent(s3_client, s3_bucket, "bad-checksum")
    status, _, body = put_signed(cas_s3, s3_bucket, "bad-payload", data,
                                 payload_hash=hashlib.sha256(data[:-1]).hexdigest(),
                                 headers={"x-amz-checksum-sha256": wrong})
    assert status == 400 and code(body) == "XAmzContentSHA256Mismatch"
    assert_absent(s3_client, s3_bucket, "bad-payload")


def test_payload_hash_mismatch_and_short_content_length(cas_s3, s3_client, s3_bucket):
    data = os.urandom(10_000)
    status, _, body = put_signed(cas_s3, s3_bucket, "sha", data, payload_hash=hashlib.sha256(b"other").hexdigest())
    assert status == 400 and code(body) == "XAmzContentSHA256Mismatch"
    assert_absent(s3_client, s3_bucket, "sha")
    # Content-Length says less than the body: the signed hash no longer matches what was read
    status, _, body = put_signed(cas_s3, s3_bucket, "short", data, headers={"content-length": "5000"})
    assert status == 400 and code(body) == "XAmzContentSHA256Mismatch"
    assert_absent(s3_client, s3_bucket, "short")
    # decoded length that disagrees with the aws-chunked body
    status, _, body = put_signed(
        cas_s3, s3_bucket, "declen", data, payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        headers={"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data) + 1)},
        send=lambda req: signed_chunked_body(req, data))
    assert status == 400 and code(body) == "IncompleteBody"
    assert_absent(s3_client, s3_bucket, "declen")


def test_truncated_body(cas_s3, s3_client, s3_bucket):
    """The client announces 100 000 bytes, sends 30 000 and half-closes: IncompleteBody, nothing stored."""
    data = os.urandom(100_000)
    req = sign_request("PUT", f"127.0.0.1:{cas_s3.port}", f"/{s3_bucket}/truncated", access_key=cas_s3.user,
                       secret=cas_s3.secret, payload_hash="UNSIGNED-PAYLOAD",
                       headers={"content-length": str(len(data))})
    with socket.create_connection(("127.0.0.1", cas_s3.port), timeout=30) as sock:
        head = f"PUT {req.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in req.headers.items()) + "\r\n"
        sock.sendall(head.encode() + data[:30_000])
        sock.shutdown(socket.SHUT_WR)
        response = b""
        for _ in range(1000):
            piece = sock.recv(65536)
            if not piece:
                break
            response += piece
    assert response.startswith(b"HTTP/1.1 400"), response[:200]
    assert b"<Code>IncompleteBody</Code>" in response
    assert_absent(s3_client, s3_bucket, "truncated")


XML_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Delete><Object><Key>&lol3;</Key></Object></Delete>"""


@pytest.mark.parametrize("document", [b"<Delete><Object><Key>a</Key>", b"not xml at all", XML_BOMB,
                                      b"<Wrong><Object><Key>a</Key></Object></Wrong>", b""])
def test_malformed_xml_for_delete_objects(cas_s3, s3_bucket, document):
    md5 = base64.b64encode(hashlib.md5(document).digest()).decode()
    req = sign_request("POST", f"127.0.0.1:{cas_s3.port}", f"/{s3_bucket}", query="delete=", access_key=cas_s3.user,
                       secret=cas_s3.secret, payload_hash=hashlib.sha256(document).hexdigest(),
                       headers={"content-md5": md5})
    status, _, body = raw_request(cas_s3.port, "POST", f"{req.path}?delete=",
                                  {**req.headers, "content-length": str(len(document))}, document)
    assert status == 400 and code(body) == "MalformedXML", body


def test_delete_objects_requires_an_integrity_header(cas_s3, s3_bucket):
    document = b"<Delete><Object><Key>a</Key></Object></Delete>"
    req = sign_request("POST", f"127.0.0.1:{cas_s3.port}", f"/{s3_bucket}", query="delete=", access_key=cas_s3.user,
                       secret=cas_s3.secret, payload_hash=hashlib.sha256(document).hexdigest())
    status, _, body = raw_request(cas_s3.port, "POST", f"{req.path}?delete=",
                                  {**req.headers, "content-length": str(len(document))}, document)
    assert status == 400 and code(body) == "InvalidRequest"


def test_malformed_complete_multipart(s3_client, s3_bucket, cas_s3):
    uid = s3_client.create_multipart_upload(Bucket=s3_bucket, Key="mp")["UploadId"]
    document = XML_BOMB.replace(b"<Delete>", b"<CompleteMultipartUpload>").replace(b"</Delete>", b"</CompleteMultipartUpload>")
    query = f"uploadId={uid}"
    req = sign_request("POST", f"127.0.0.1:{cas_s3.port}", f"/{s3_bucket}/mp", query=query, access_key=cas_s3.user,
                       secret=cas_s3.secret, payload_hash=hashlib.sha256(document).hexdigest())
    status, _, body = raw_request(cas_s3.port, "POST", f"{req.path}?{query}",
                                  {**req.headers, "content-length": str(len(document))}, document)
    assert status == 400 and code(body) == "MalformedXML"
    s3_client.abort_multipart_upload(Bucket=s3_bucket, Key="mp", UploadId=uid)


def test_huge_metadata_header(s3_client, s3_bucket):
    with pytest.raises(ClientError) as e:
        s3_client.put_object(Bucket=s3_bucket, Key="meta", Body=b"x", Metadata={"big": "v" * 10_000})
    assert e.value.response["Error"]["Code"] == "MetadataTooLarge"
    assert_absent(s3_client, s3_bucket, "meta")


@pytest.mark.parametrize("key", ["a/../b", "..", "./x", "a/./b", "nul\x00byte"])
def test_keys_that_cannot_be_names(s3_client, s3_bucket, key):
    with pytest.raises(ClientError) as e:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert s3_client.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0


def test_invalid_utf8_in_path(cas_s3, s3_bucket):
    req = sign_request("GET", f"127.0.0.1:{cas_s3.port}", f"/{s3_bucket}/x", access_key=cas_s3.user,
                       secret=cas_s3.secret, payload_hash=EMPTY)
    status, _, body = raw_request(cas_s3.port, "GET", f"/{s3_bucket}/%FF%FE", req.headers)
    assert status == 400 and code(body) == "InvalidURI"


def test_put_without_length_is_411(cas_s3, s3_bucket):
    req = sign_request("PUT", f"127.0.0.1:{cas_s3.port}", f"/{s3_bucket}/nolen", access_key=cas_s3.user,
                       secret=cas_s3.secret, payload_hash="UNSIGNED-PAYLOAD")
    status, _, body = raw_request(cas_s3.port, "PUT", req.path, req.headers)
    assert status == 411 and code(body) == "MissingContentLength"


def test_errors_have_full_xml(cas_s3, s3_client, s3_bucket):
    req = sign_request("GET", f"127.0.0.1:{cas_s3.port}", f"/{s3_bucket}/missing/key", access_key=cas_s3.user,
                       secret=cas_s3.secret, payload_hash=EMPTY)
    status, headers, body = raw_request(cas_s3.port, "GET", req.path, req.headers)
    assert status == 404 and headers["content-type"] == "application/xml"
    for element in (b"<Code>NoSuchKey</Code>", b"<Message>", b"<Resource>/" + s3_bucket.encode() + b"/missing/key</Resource>",
                    b"<RequestId>", b"<Key>missing/key</Key>"):
        assert element in body
    assert headers["x-amz-request-id"].encode() in body


def test_method_not_allowed_and_cors(cas_s3, s3_bucket):
    host = {"Host": f"127.0.0.1:{cas_s3.port}"}
    status, headers, _ = raw_request(cas_s3.port, "OPTIONS", f"/{s3_bucket}/k", {
        **host, "Origin": "http://localhost:3000", "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization,x-amz-date"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "PUT" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "authorization,x-amz-date"
    req = sign_request("PATCH", f"127.0.0.1:{cas_s3.port}", f"/{s3_bucket}/k", access_key=cas_s3.user,
                       secret=cas_s3.secret, payload_hash=EMPTY)
    status, _, body = raw_request(cas_s3.port, "PATCH", req.path, req.headers)
    assert status == 405 and code(body) == "MethodNotAllowed"


@pytest.mark.parametrize("method, path, query", [
    ("GET", "/{b}", "list-type=2&max-keys=abc"),
    ("GET", "/{b}", "max-keys=-1"),
    ("GET", "/{b}", "encoding-type=base64"),
    ("GET", "/{b}", "uploads&max-uploads=x"),
    ("PUT", "/{b}/k", "partNumber=abc&uploadId=nope"),
    ("PUT", "/{b}/k", "partNumber=1&uploadId=nope"),
    ("POST", "/{b}/k", "uploadId=nope"),
    ("GET", "/{b}/k", "uploadId=nope&part-number-marker=x"),
    ("GET", "/{b}/" + "k" * 2000, ""),
    ("PUT", "/{b}/" + "k" * 2000, ""),
    ("GET", "/{b}/k", "versionId=123"),
    ("DELETE", "/{b}/k", "tagging"),
    ("POST", "/{b}", ""),
    ("PUT", "/", ""),
    ("GET", "/no-such-bucket-here/k", ""),
    ("GET", "//", ""),
])
def test_odd_requests_are_client_errors(cas_s3, s3_bucket, method, path, query):
    path = path.format(b=s3_bucket)
    req = sign_request(method, f"127.0.0.1:{cas_s3.port}", path, query=query, access_key=cas_s3.user,
                       secret=cas_s3.secret, payload_hash=EMPTY)
    target = req.path + (f"?{query}" if query else "")
    status, _, body = raw_request(cas_s3.port, method, target, {**req.headers, "content-length": "0"})
    assert 400 <= status < 500 or (status == 501 and code(body) == "NotImplemented"), (status, body[:300])
