"""User isolation where earlier tests had gaps: multipart uploads, HeadObject, presigned URLs,
and the web API's upload endpoints.

Alice owns a bucket, an object and an open multipart upload; Bob is another ordinary user.
Over S3, each of Bob's attempts is 403 AccessDenied when it names Alice's bucket (as the
other operations are), and 404 NoSuchUpload when he names Alice's upload id under his own
bucket. A presigned URL is only as strong as its signer: Bob's URL for Alice's object does
not work. The web API answers 404 for someone else's upload, as for someone else's bucket.
Afterwards Alice's upload is intact and she can still complete it. Real servers throughout.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.s3api import empty_bucket, raw_request, unique_bucket

pytestmark = pytest.mark.integration

PART = 5 << 20


@pytest.fixture
def tenants(cas_s3):
    """(alice, bob, alice's bucket, bob's bucket, alice's open upload id) on the shared server."""
    alice = cas_s3.client(*cas_s3.add_user())
    bob_keys = cas_s3.add_user()
    bob = cas_s3.client(*bob_keys)
    bob.keys = bob_keys
    a_bucket, b_bucket = unique_bucket(), unique_bucket()
    alice.create_bucket(Bucket=a_bucket)
    bob.create_bucket(Bucket=b_bucket)
    alice.put_object(Bucket=a_bucket, Key="secret.txt", Body=b"alice's secret")
    bob.put_object(Bucket=b_bucket, Key="mine.txt", Body=b"b" * PART)
    upload = alice.create_multipart_upload(Bucket=a_bucket, Key="big.bin")["UploadId"]
    alice.upload_part(Bucket=a_bucket, Key="big.bin", UploadId=upload, PartNumber=1, Body=b"a" * PART)
    yield alice, bob, a_bucket, b_bucket, upload
    empty_bucket(alice, a_bucket)
    empty_bucket(bob, b_bucket)


def refused(call, status: int, code: str) -> None:
    with pytest.raises(ClientError) as e:
        call()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    if code:  # a HEAD answer has no body to carry a code
        assert e.value.response["Error"]["Code"] == code


def assert_upload_intact(alice, a_bucket: str, upload: str) -> None:
    parts = alice.list_parts(Bucket=a_bucket, Key="big.bin", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, PART)]
    assert alice.get_object(Bucket=a_bucket, Key="secret.txt")["Body"].read() == b"alice's secret"


def test_head_object_of_another_user(tenants):
    alice, bob, a_bucket, _, _ = tenants
    refused(lambda: bob.head_object(Bucket=a_bucket, Key="secret.txt"), 403, "")
    refused(lambda: bob.head_object(Bucket=a_bucket, Key="missing"), 403, "")  # no existence oracle


def test_multipart_operations_on_another_users_upload(tenants):
    alice, bob, a_bucket, b_bucket, upload = tenants
    attempts = [
        lambda: bob.upload_part(Bucket=a_bucket, Key="big.bin", UploadId=upload, PartNumber=2, Body=b"x"),
        lambda: bob.list_parts(Bucket=a_bucket, Key="big.bin", UploadId=upload),
        lambda: bob.complete_multipart_upload(Bucket=a_bucket, Key="big.bin", UploadId=upload,
                                              MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": "x"}]}),
        lambda: bob.abort_multipart_upload(Bucket=a_bucket, Key="big.bin", UploadId=upload),
    ]
    for call in attempts:
        refused(call, 403, "AccessDenied")
    # Alice's upload id under Bob's own bucket and key is no upload of his
    bob.create_multipart_upload(Bucket=b_bucket, Key="big.bin")
    attempts = [
        lambda: bob.upload_part(Bucket=b_bucket, Key="big.bin", UploadId=upload, PartNumber=2, Body=b"x"),
        lambda: bob.upload_part_copy(Bucket=b_bucket, Key="big.bin", UploadId=upload, PartNumber=2,
                                     CopySource={"Bucket": b_bucket, "Key": "mine.txt"}),
        lambda: bob.list_parts(Bucket=b_bucket, Key="big.bin", UploadId=upload),
        lambda: bob.complete_multipart_upload(Bucket=b_bucket, Key="big.bin", UploadId=upload,
                                              MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": "x"}]}),
        lambda: bob.abort_multipart_upload(Bucket=b_bucket, Key="big.bin", UploadId=upload),
    ]
    for call in attempts:
        refused(call, 404, "NoSuchUpload")
    assert_upload_intact(alice, a_bucket, upload)
    etag = alice.list_parts(Bucket=a_bucket, Key="big.bin", UploadId=upload)["Parts"][0]["ETag"]
    alice.complete_multipart_upload(Bucket=a_bucket, Key="big.bin", UploadId=upload,
                                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert alice.head_object(Bucket=a_bucket, Key="big.bin")["ContentLength"] == PART


def test_upload_part_copy_across_users(tenants):
    alice, bob, a_bucket, b_bucket, upload = tenants
    # Alice's object as the source of Bob's upload
    own = bob.create_multipart_upload(Bucket=b_bucket, Key="stolen.bin")["UploadId"]
    refused(lambda: bob.upload_part_copy(Bucket=b_bucket, Key="stolen.bin", UploadId=own, PartNumber=1,
                                         CopySource={"Bucket": a_bucket, "Key": "secret.txt"}), 403, "AccessDenied")
    refused(lambda: bob.upload_part_copy(Bucket=b_bucket, Key="stolen.bin", UploadId=own, PartNumber=1,
                                         CopySource={"Bucket": a_bucket, "Key": "secret.txt"},
                                         CopySourceRange="bytes=0-3"), 403, "AccessDenied")
    assert bob.list_parts(Bucket=b_bucket, Key="stolen.bin", UploadId=own).get("Parts", []) == []
    # Alice's upload as the destination of Bob's copy
    refused(lambda: bob.upload_part_copy(Bucket=a_bucket, Key="big.bin", UploadId=upload, PartNumber=2,
                                         CopySource={"Bucket": b_bucket, "Key": "mine.txt"}), 403, "AccessDenied")
    assert_upload_intact(alice, a_bucket, upload)


def test_presigned_urls_are_only_as_strong_as_their_signer(cas_s3, tenants):
    alice, bob, a_bucket, _, _ = tenants
    bob_v4 = cas_s3.client(*bob.keys, signature_version="s3v4")
    for signer in (bob, bob_v4):  # boto3's default (Signature V2) and SigV4
        url = signer.generate_presigned_url("get_object", Params={"Bucket": a_bucket, "Key": "secret.txt"},
                                            ExpiresIn=300)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=30)
        assert e.value.code == 403 and b"<Code>AccessDenied</Code>" in e.value.read()
        url = signer.generate_presigned_url("put_object", Params={"Bucket": a_bucket, "Key": "secret.txt"},
                                            ExpiresIn=300)
        parts = urlsplit(url)
        status, _, body = raw_request(cas_s3.port, "PUT", f"{parts.path}?{parts.query}",
                                      {"Host": parts.netloc, "Content-Length": "9"}, b"overwrite")
        assert status == 403 and b"<Code>AccessDenied</Code>" in body
    own = alice.generate_presigned_url("get_object", Params={"Bucket": a_bucket, "Key": "secret.txt"}, ExpiresIn=300)
    with urllib.request.urlopen(own, timeout=30) as resp:
        assert resp.read() == b"alice's secret"


# -- the web API's uploads


ALICE, ALICE_SECRET = "alice", "alice-secret-123"
BOB, BOB_SECRET = "bobby", "bobby-secret-456"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    from tests.fixtures.web import start_web, with_users

    server = start_web(with_users(tmp_path_factory.mktemp("isolation-web") / "data",
                                  {ALICE: ALICE_SECRET, BOB: BOB_SECRET}))
    yield server
    server.stop()


def test_web_api_uploads_of_another_user(web):
    alice, bob = web.login(ALICE, ALICE_SECRET), web.login(BOB, BOB_SECRET)
    web.json("POST", "/api/buckets", {"name": "alice-files"}, token=alice, expect=201)
    _, up = web.json("POST", "/api/buckets/alice-files/uploads", {"key": "doc.bin"}, token=alice, expect=201)
    uid = up["upload_id"]
    status, _, raw = web.request("PUT", f"/api/uploads/{uid}/parts/1", b"alice's part", token=alice)
    assert status == 200
    etag = json.loads(raw)["etag"]

    for method, path, body in [
        ("PUT", f"/api/uploads/{uid}/parts/1", b"bob's bytes"),
        ("PUT", f"/api/uploads/{uid}/parts/2", b"bob's bytes"),
        ("POST", f"/api/uploads/{uid}/complete", {"parts": [{"number": 1, "etag": etag}]}),
        ("DELETE", f"/api/uploads/{uid}", None),
        ("GET", f"/api/uploads/{uid}", None),
        ("POST", "/api/buckets/alice-files/uploads", {"key": "planted.bin"}),
    ]:
        status, _, raw = web.request(method, path, body, token=bob)
        assert status == 404, (method, path, raw)
        assert json.loads(raw)["error"] in ("BucketNotFound", "UploadNotFound"), raw

    _, state = web.json("GET", f"/api/uploads/{uid}", token=alice, expect=200)
    assert [(p["number"], p["size"], p["etag"]) for p in state["parts"]] == [(1, len(b"alice's part"), etag)]
    web.json("POST", f"/api/uploads/{uid}/complete", {"parts": [{"number": 1, "etag": etag}]}, token=alice, expect=200)
    status, _, got = web.request("GET", "/api/buckets/alice-files/object?key=doc.bin", token=alice)
    assert (status, got) == (200, b"alice's part")
