"""WebDAV and S3 are two views of one store; WebDAV state survives a restart.

Locks are a WebDAV agreement: S3 requests do not consult them (an S3 PUT to a
name locked over WebDAV succeeds). They are kept in the index, so a restart of
``cas serve`` keeps them, and their tokens, valid.
"""

from __future__ import annotations

import hashlib
import http.client
import os
from xml.etree import ElementTree

import pytest

from tests.fixtures.webdav import unique_bucket

from .test_dav_protocol import LOCK_BODY, PROPGET, PROPPATCH, lock, names

pytestmark = pytest.mark.integration


def s3_client(server, user, secret):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=server.s3_url, aws_access_key_id=user, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(s3={"addressing_style": "path"},
                                                               retries={"max_attempts": 1}))


def s3_available(server) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", server.s3_port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status != 501
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture
def s3_and_dav(dav_server):
    assert s3_available(dav_server), "the S3 API of cas serve does not answer"  # a product failure: never a skip
    user, secret = dav_server.add_user()
    return s3_client(dav_server, user, secret), dav_server.client(user, secret)


def test_dav_put_reads_back_over_s3_and_back(s3_and_dav):
    s3, dav = s3_and_dav
    bucket = unique_bucket("x")
    assert dav.mkcol(f"/{bucket}").status == 201
    assert dav.mkcol(f"/{bucket}/dir").status == 201
    data = os.urandom(700_000)
    assert dav.put(f"/{bucket}/dir/from-dav.bin", data).status == 201
    got = s3.get_object(Bucket=bucket, Key="dir/from-dav.bin")
    assert got["Body"].read() == data
    assert got["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    # the other way: an S3 upload appears in the WebDAV tree, implied folders included
    other = os.urandom(123_456)
    s3.put_object(Bucket=bucket, Key="s3/deep/from-s3.bin", Body=other, ContentType="application/x-test",
                  ContentDisposition='attachment; filename="x.bin"')
    got = dav.get(f"/{bucket}/s3/deep/from-s3.bin")
    assert got.body == other
    assert got.header("Content-Type") == "application/x-test"
    assert got.header("Content-Disposition") == 'attachment; filename="x.bin"'
    assert names(dav.propfind(f"/{bucket}/"), f"/dav/{bucket}/") == {"dir", "s3"}
    # an empty WebDAV folder is the zero-byte marker S3 consoles use
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert "dir/" in keys


def test_dav_move_shows_in_s3_listing_at_once(s3_and_dav):
    s3, dav = s3_and_dav
    bucket = unique_bucket("mv")
    assert dav.mkcol(f"/{bucket}").status == 201
    assert dav.mkcol(f"/{bucket}/a").status == 201
    for i in range(5):
        assert dav.put(f"/{bucket}/a/f{i}", b"%d" % i).status == 201
    assert dav.move(f"/{bucket}/a", f"/{bucket}/b").status == 201
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["b/"] + [f"b/f{i}" for i in range(5)]


def test_s3_tags_survive_a_dav_overwrite_and_move(s3_and_dav):
    s3, dav = s3_and_dav
    bucket = unique_bucket("tg")
    assert dav.mkcol(f"/{bucket}").status == 201
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"v1", Tagging="project=cas&stage=draft")
    assert dav.put(f"/{bucket}/doc.txt", b"v2 from a drive").status == 204  # a drive cannot see the tags
    assert dav.move(f"/{bucket}/doc.txt", f"/{bucket}/renamed.txt").status == 201
    got = s3.get_object(Bucket=bucket, Key="renamed.txt")
    assert got["Body"].read() == b"v2 from a drive" and got["TagCount"] == 2
    assert s3.get_object_tagging(Bucket=bucket, Key="renamed.txt")["TagSet"] == [
        {"Key": "project", "Value": "cas"}, {"Key": "stage", "Value": "draft"}]


def test_dav_lock_does_not_block_s3(s3_and_dav):
    s3, dav = s3_and_dav
    bucket = unique_bucket("lk")
    assert dav.mkcol(f"/{bucket}").status == 201
    assert dav.put(f"/{bucket}/locked.txt", b"dav").status == 201
    lock(dav, f"/{bucket}/locked.txt")
    assert dav.put(f"/{bucket}/locked.txt", b"dav2").status == 423
    s3.put_object(Bucket=bucket, Key="locked.txt", Body=b"s3 wins")  # documented: S3 ignores DAV locks
    assert dav.get(f"/{bucket}/locked.txt").body == b"s3 wins"


def test_locks_and_properties_survive_restart(dav_server_factory):
    server = dav_server_factory()
    dav = server.client()
    bucket = unique_bucket("rs")
    assert dav.mkcol(f"/{bucket}").status == 201
    assert dav.put(f"/{bucket}/f.txt", b"before").status == 201
    assert dav.request("PROPPATCH", f"/{bucket}/f.txt", body=PROPPATCH).status == 207
    token = lock(dav, f"/{bucket}/f.txt")
    assert dav.mkcol(f"/{bucket}/d").status == 201
    coll_token = lock(dav, f"/{bucket}/d", depth="infinity")
    server.restart()
    dav = server.client()
    assert token in dav.propfind(f"/{bucket}/f.txt", depth="0").body.decode()
    assert coll_token in dav.propfind(f"/{bucket}/d", depth="0").body.decode()
    assert dav.put(f"/{bucket}/f.txt", b"after").status == 423
    assert dav.put(f"/{bucket}/d/new.txt", b"x").status == 423  # the collection lock holds too
    assert dav.put(f"/{bucket}/d/new.txt", b"x", headers={"If": f"(<{coll_token}>)"}).status == 201
    assert dav.put(f"/{bucket}/f.txt", b"after", headers={"If": f"(<{token}>)"}).status == 204
    assert dav.request("UNLOCK", f"/{bucket}/f.txt", headers={"Lock-Token": f"<{token}>"}).status == 204
    assert dav.request("UNLOCK", f"/{bucket}/d", headers={"Lock-Token": f"<{coll_token}>"}).status == 204
    assert dav.put(f"/{bucket}/d/new.txt", b"y").status == 204
    assert dav.put(f"/{bucket}/f.txt", b"free").status == 204
    root = ElementTree.fromstring(dav.propfind(f"/{bucket}/f.txt", depth="0", body=PROPGET).body)
    assert root.find(".//{urn:cas-test}color").text == "blue"
    assert dav.request("LOCK", f"/{bucket}/f.txt", body=LOCK_BODY).status == 200
