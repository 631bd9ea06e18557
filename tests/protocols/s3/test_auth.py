"""Authentication, users and tenancy over a real server: exact S3 error codes, isolation, the CLI."""

from __future__ import annotations

import json
import stat
import time

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.s3api import code_of, empty_bucket, raw_request, sign_request, unique_bucket

pytestmark = pytest.mark.integration


def test_wrong_key_and_wrong_secret(cas_s3):
    with pytest.raises(ClientError) as e:
        cas_s3.client("nobody-here", "whatever-secret").list_buckets()
    assert code_of(e) == "InvalidAccessKeyId"
    with pytest.raises(ClientError) as e:
        cas_s3.client(cas_s3.user, "not-the-secret").list_buckets()
    assert code_of(e) == "SignatureDoesNotMatch"


def test_clock_skew_is_refused(cas_s3):
    host = f"127.0.0.1:{cas_s3.port}"
    for offset, expected in [(0, 200), (-16 * 60, 403), (16 * 60, 403)]:
        req = sign_request("GET", host, "/", access_key=cas_s3.user, secret=cas_s3.secret,
                           payload_hash="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                           when=time.time() + offset)
        status, _, body = raw_request(cas_s3.port, "GET", "/", req.headers)
        assert status == expected, body
        if expected == 403:
            assert b"<Code>RequestTimeTooSkewed</Code>" in body


def test_anonymous_requests_are_refused(cas_s3, s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="k", Body=b"x")
    for method, path in [("GET", "/"), ("GET", f"/{s3_bucket}"), ("GET", f"/{s3_bucket}/k"),
                         ("PUT", f"/{s3_bucket}/new"), ("DELETE", f"/{s3_bucket}/k")]:
        status, _, body = raw_request(cas_s3.port, method, path, {"Host": f"127.0.0.1:{cas_s3.port}",
                                                                        "Content-Length": "0"})
        assert status == 403, (method, path)
        assert b"<Code>AccessDenied</Code>" in body and b"<RequestId>" in body and b"<Resource>" in body
    assert s3_client.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"x"


def test_users_see_and_touch_only_their_buckets(cas_s3):
    alice = cas_s3.client(*cas_s3.add_user())
    bob = cas_s3.client(*cas_s3.add_user())
    root = cas_s3.client()
    a_bucket = unique_bucket()
    alice.create_bucket(Bucket=a_bucket)
    try:
        alice.put_object(Bucket=a_bucket, Key="secret.txt", Body=b"alice's")
        assert a_bucket not in [b["Name"] for b in bob.list_buckets()["Buckets"]]
        assert a_bucket in [b["Name"] for b in root.list_buckets()["Buckets"]]
        denied = [
            lambda: bob.list_objects_v2(Bucket=a_bucket),
            lambda: bob.list_objects(Bucket=a_bucket),
            lambda: bob.get_object(Bucket=a_bucket, Key="secret.txt"),
            lambda: bob.head_bucket(Bucket=a_bucket),
            lambda: bob.put_object(Bucket=a_bucket, Key="intruder", Body=b"x"),
            lambda: bob.delete_object(Bucket=a_bucket, Key="secret.txt"),
            lambda: bob.delete_objects(Bucket=a_bucket, Delete={"Objects": [{"Key": "secret.txt"}]}),
            lambda: bob.copy_object(Bucket=a_bucket, Key="c", CopySource=f"{a_bucket}/secret.txt"),
            lambda: bob.create_multipart_upload(Bucket=a_bucket, Key="mp"),
            lambda: bob.list_multipart_uploads(Bucket=a_bucket),
            lambda: bob.delete_bucket(Bucket=a_bucket),
        ]
        for call in denied:
            with pytest.raises(ClientError) as e:
                call()
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        # copying out of someone else's bucket into one's own is refused too
        b_bucket = unique_bucket()
        bob.create_bucket(Bucket=b_bucket)
        with pytest.raises(ClientError) as e:
            bob.copy_object(Bucket=b_bucket, Key="stolen", CopySource=f"{a_bucket}/secret.txt")
        assert code_of(e) == "AccessDenied"
        empty_bucket(bob, b_bucket)
        # root reaches everything
        assert root.get_object(Bucket=a_bucket, Key="secret.txt")["Body"].read() == b"alice's"
        assert [o["Key"] for o in alice.list_objects_v2(Bucket=a_bucket)["Contents"]] == ["secret.txt"]
    finally:
        empty_bucket(root, a_bucket)


def test_user_cli_while_server_runs(cas_s3):
    name = f"cli-user-{int(time.time() * 1000)}"
    added = cas_s3.cas("user", "add", name, "--json")
    creds = json.loads(added.stdout)
    assert creds["access_key"] == name and len(creds["secret_key"]) >= 20
    client = cas_s3.client(creds["access_key"], creds["secret_key"])
    client.list_buckets()
    listed = json.loads(cas_s3.cas("user", "list", "--json").stdout)
    assert name in [u["name"] for u in listed]
    assert cas_s3.cas("user", "add", name, check=False).returncode != 0  # exists already
    cas_s3.cas("user", "remove", name)
    with pytest.raises(ClientError) as e:
        client.list_buckets()
    assert code_of(e) == "InvalidAccessKeyId"
    for path in (cas_s3.data_dir / "index").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_given_secret(cas_s3):
    name = f"given-{int(time.time() * 1000)}"
    cas_s3.cas("user", "add", name, "--secret", "a-secret-of-my-own")
    cas_s3.client(name, "a-secret-of-my-own").list_buckets()
    cas_s3.cas("user", "remove", name)


@pytest.fixture
def private_server(tmp_path):
    """A server of the test's own: virtual-host domain, uploads expire at once; stopped by PID."""
    from tests.fixtures.s3api import start_s3

    server = start_s3(tmp_path / "data", extra_args=("--domain", "s3.test"), toml='[gc]\nupload_expiry = "0s"\n')
    yield server
    server.stop()


def test_virtual_host_style_and_upload_expiry(private_server):
    server = private_server
    client = server.client()
    bucket = unique_bucket()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="dir/obj", Body=b"virtual")
    host = f"{bucket}.s3.test:{server.port}"
    req = sign_request("GET", host, "/dir/obj", access_key=server.user, secret=server.secret,
                       payload_hash="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    status, _, body = raw_request(server.port, "GET", req.path, req.headers)
    assert status == 200 and body == b"virtual"
    req = sign_request("GET", host, "/", query="list-type=2", access_key=server.user, secret=server.secret,
                       payload_hash="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    status, _, body = raw_request(server.port, "GET", "/?list-type=2", req.headers)
    assert status == 200 and b"<Key>dir/obj</Key>" in body
    # an upload left open longer than gc.upload_expiry (here 0 s: no waiting) is aborted on the next
    # CreateMultipartUpload
    old = client.create_multipart_upload(Bucket=bucket, Key="left-open")["UploadId"]
    client.upload_part(Bucket=bucket, Key="left-open", UploadId=old, PartNumber=1, Body=b"x" * 1000)
    client.create_multipart_upload(Bucket=bucket, Key="trigger")
    with pytest.raises(ClientError) as e:
        client.list_parts(Bucket=bucket, Key="left-open", UploadId=old)
    assert code_of(e) == "NoSuchUpload"
