"""Tags, GetObjectAttributes and CopyObject's directives, through boto3 (default settings) and the aws cli.

Object tags: Put/Get/DeleteObjectTagging, ``x-amz-tagging`` on PutObject, CreateMultipartUpload
and CopyObject (``x-amz-tagging-directive``), ``x-amz-tagging-count`` on GET/HEAD, S3's limits and
errors. Bucket tags: Put/Get/DeleteBucketTagging. Tagging changes only the object's record: its
ETag, Last-Modified and bytes stay as they were. Run against the HTTP, HTTPS and PostgreSQL-index
servers where the behaviour could differ (the record travels through both index kinds).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.s3api import code_of, empty_bucket, raw_request, sign_request, status_of, unique_bucket
from tests.protocols.s3.test_clients import aws

pytestmark = pytest.mark.integration


def tagset(pairs: dict) -> dict:
    return {"TagSet": [{"Key": k, "Value": v} for k, v in pairs.items()]}


def tags_of(client, bucket: str, key: str) -> dict:
    return {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


# -- object tags


def test_object_tags_round_trip_without_touching_the_object(client, bucket):
    client.put_object(Bucket=bucket, Key="o", Body=b"tagged body")
    before = client.head_object(Bucket=bucket, Key="o")
    assert "TagCount" not in client.get_object(Bucket=bucket, Key="o")
    assert tags_of(client, bucket, "o") == {}
    client.put_object_tagging(Bucket=bucket, Key="o", Tagging=tagset({"project": "cas", "Ünïcode key": "välue", "empty": ""}))
    assert tags_of(client, bucket, "o") == {"project": "cas", "Ünïcode key": "välue", "empty": ""}
    got = client.get_object(Bucket=bucket, Key="o")
    assert got["TagCount"] == 3 and got["Body"].read() == b"tagged body"
    after = client.head_object(Bucket=bucket, Key="o")
    assert after["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "3"
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])
    # a new tag set replaces the old one whole
    client.put_object_tagging(Bucket=bucket, Key="o", Tagging=tagset({"only": "one"}))
    assert tags_of(client, bucket, "o") == {"only": "one"}
    client.delete_object_tagging(Bucket=bucket, Key="o")
    assert tags_of(client, bucket, "o") == {}
    assert "TagCount" not in client.head_object(Bucket=bucket, Key="o")
    # an overwrite without tags has none (as in S3)
    client.put_object_tagging(Bucket=bucket, Key="o", Tagging=tagset({"a": "1"}))
    client.put_object(Bucket=bucket, Key="o", Body=b"new body")
    assert tags_of(client, bucket, "o") == {}


def test_tagging_a_missing_object_or_bucket(s3_client, s3_bucket):
    for call in (lambda: s3_client.get_object_tagging(Bucket=s3_bucket, Key="nope"),
                 lambda: s3_client.put_object_tagging(Bucket=s3_bucket, Key="nope", Tagging=tagset({"a": "1"})),
                 lambda: s3_client.delete_object_tagging(Bucket=s3_bucket, Key="nope")):
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) == "NoSuchKey" and status_of(e) == 404
    with pytest.raises(ClientError) as e:
        s3_client.put_object_tagging(Bucket="no-such-bucket-x", Key="k", Tagging=tagset({"a": "1"}))
    assert code_of(e) == "NoSuchBucket"


def test_tagging_header_on_put(client, bucket):
    client.put_object(Bucket=bucket, Key="h", Body=b"x", Tagging="a=1&two%20words=b%2Bc&k%C3%BC=v+w&novalue")
    assert tags_of(client, bucket, "h") == {"a": "1", "two words": "b+c", "kü": "v w", "novalue": ""}
    assert client.head_object(Bucket=bucket, Key="h")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "4"


def test_tagging_header_on_multipart_is_applied_at_complete(client, bucket):
    up = client.create_multipart_upload(Bucket=bucket, Key="mp", Tagging="stage=raw&owner=me")["UploadId"]
    first = os.urandom(5 << 20)
    etag1 = client.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=first)["ETag"]
    etag2 = client.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=2, Body=b"tail")["ETag"]
    with pytest.raises(ClientError):  # nothing under the name before complete
        client.get_object_tagging(Bucket=bucket, Key="mp")
    client.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": etag2}]})
    assert tags_of(client, bucket, "mp") == {"stage": "raw", "owner": "me"}
    assert client.get_object(Bucket=bucket, Key="mp")["TagCount"] == 2


def test_copy_keeps_or_replaces_tags(client, bucket):
    client.put_object(Bucket=bucket, Key="src", Body=b"s", Tagging="a=1&b=2")
    source = {"Bucket": bucket, "Key": "src"}
    client.copy_object(Bucket=bucket, Key="kept", CopySource=source, Tagging="ignored=yes")
    assert tags_of(client, bucket, "kept") == {"a": "1", "b": "2"}  # COPY is the default
    client.copy_object(Bucket=bucket, Key="explicit", CopySource=source, TaggingDirective="COPY")
    assert tags_of(client, bucket, "explicit") == {"a": "1", "b": "2"}
    client.copy_object(Bucket=bucket, Key="replaced", CopySource=source, TaggingDirective="REPLACE", Tagging="c=3")
    assert tags_of(client, bucket, "replaced") == {"c": "3"}
    client.copy_object(Bucket=bucket, Key="cleared", CopySource=source, TaggingDirective="REPLACE")
    assert tags_of(client, bucket, "cleared") == {}
    assert tags_of(client, bucket, "src") == {"a": "1", "b": "2"}
    with pytest.raises(ClientError) as e:
        client.copy_object(Bucket=bucket, Key="bad", CopySource=source, TaggingDirective="MERGE")
    assert code_of(e) == "InvalidArgument" and status_of(e) == 400


def test_tag_limits_and_errors(s3_client, s3_bucket):
    c, b = s3_client, s3_bucket
    c.put_object(Bucket=b, Key="o", Body=b"x")
    c.put_object_tagging(Bucket=b, Key="o", Tagging=tagset({"a" * 128: "ü" * 256, **{f"k{i}": str(i) for i in range(9)}}))
    assert len(tags_of(c, b, "o")) == 10
    bad = [
        [{"Key": f"k{i}", "Value": "v"} for i in range(11)],  # more than 10
        [{"Key": "k" * 129, "Value": "v"}],
        [{"Key": "ü" * 129, "Value": "v"}],  # characters, not bytes
        [{"Key": "k", "Value": "v" * 257}],
        [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}],  # a key twice
        [{"Key": "aws:reserved", "Value": "v"}],
    ]
    for tags in bad:
        with pytest.raises(ClientError) as e:
            c.put_object_tagging(Bucket=b, Key="o", Tagging={"TagSet": tags})
        assert (code_of(e), status_of(e)) == ("InvalidTag", 400), tags
    assert len(tags_of(c, b, "o")) == 10  # a refused set changed nothing
    # on PUT: the same rules, and nothing is stored
    many = "&".join(f"k{i}=v" for i in range(11))
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="refused", Body=b"x", Tagging=many)
    assert code_of(e) == "InvalidTag"
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="refused", Body=b"x", Tagging="=no-key")
    assert code_of(e) == "InvalidTag"
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="refused", Body=b"x", Tagging="k=1&k=2")
    assert code_of(e) == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        c.create_multipart_upload(Bucket=b, Key="refused", Tagging="k=%FF")
    assert code_of(e) == "InvalidArgument"
    assert "Contents" not in c.list_objects_v2(Bucket=b, Prefix="refused")
    assert c.list_multipart_uploads(Bucket=b).get("Uploads", []) == []


def _raw_tagging(server, bucket: str, key: str, body: bytes, *, md5: bool = True):
    path = f"/{bucket}/{key}" if key else f"/{bucket}"
    headers = {"content-md5": base64.b64encode(hashlib.md5(body).digest()).decode()} if md5 else {}
    req = sign_request("PUT", f"127.0.0.1:{server.port}", path, query="tagging", headers=headers,
                       access_key=server.user, secret=server.secret, payload_hash=hashlib.sha256(body).hexdigest())
    status, _, reply = raw_request(server.port, "PUT", req.path + "?tagging",
                                   {**req.headers, "content-length": str(len(body))}, body)
    return status, reply


@pytest.mark.parametrize("body", [
    b"<Tagging><TagSet><Tag><Key>a</Key><Value>1</Value></Tag>",  # not well-formed
    b"<Other><TagSet/></Other>",  # wrong root
    b"<Tagging></Tagging>",  # no TagSet
    b"<Tagging><TagSet><Tag><Value>1</Value></Tag></TagSet></Tagging>",  # a Tag without Key
    b'<!DOCTYPE t [<!ENTITY e "x">]><Tagging><TagSet><Tag><Key>&e;</Key><Value>1</Value></Tag></TagSet></Tagging>',
])
def test_malformed_tagging_documents(cas_s3, s3_client, s3_bucket, body):
    s3_client.put_object(Bucket=s3_bucket, Key="o", Body=b"x", Tagging="keep=me")
    for key in ("o", ""):
        status, reply = _raw_tagging(cas_s3, s3_bucket, key, body)
        assert status == 400 and b"<Code>MalformedXML</Code>" in reply, reply
    assert tags_of(s3_client, s3_bucket, "o") == {"keep": "me"}


def test_tagging_documents_need_an_integrity_header(cas_s3, s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="o", Body=b"x")
    good = b"<Tagging><TagSet><Tag><Key>a</Key><Value>1</Value></Tag></TagSet></Tagging>"
    status, reply = _raw_tagging(cas_s3, s3_bucket, "o", good, md5=False)
    assert status == 400 and b"<Code>InvalidRequest</Code>" in reply and b"Content-MD5" in reply
    status, reply = _raw_tagging(cas_s3, s3_bucket, "o", good)
    assert status == 200, reply
    assert tags_of(s3_client, s3_bucket, "o") == {"a": "1"}


# -- bucket tags


def test_bucket_tags(client, bucket):
    with pytest.raises(ClientError) as e:
        client.get_bucket_tagging(Bucket=bucket)
    assert code_of(e) == "NoSuchTagSet" and status_of(e) == 404
    client.put_bucket_tagging(Bucket=bucket, Tagging=tagset({"team": "storage", "cost": "42"}))
    assert client.get_bucket_tagging(Bucket=bucket)["TagSet"] == tagset({"team": "storage", "cost": "42"})["TagSet"]
    fifty = {"€" * 126 + f"{i:02}": "€" * 256 for i in range(50)}  # the largest document: ~60 KB of text
    client.put_bucket_tagging(Bucket=bucket, Tagging=tagset(fifty))
    assert client.get_bucket_tagging(Bucket=bucket)["TagSet"] == tagset(fifty)["TagSet"]
    with pytest.raises(ClientError) as e:
        client.put_bucket_tagging(Bucket=bucket, Tagging=tagset({**fifty, "one-more": "v"}))
    assert code_of(e) == "InvalidTag"
    with pytest.raises(ClientError) as e:
        client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]})
    assert code_of(e) == "InvalidTag"
    assert len(client.get_bucket_tagging(Bucket=bucket)["TagSet"]) == 50
    client.delete_bucket_tagging(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        client.get_bucket_tagging(Bucket=bucket)
    assert code_of(e) == "NoSuchTagSet"


def test_bucket_tags_die_with_the_bucket(s3_client):
    name = unique_bucket()
    s3_client.create_bucket(Bucket=name)
    s3_client.put_bucket_tagging(Bucket=name, Tagging=tagset({"old": "bucket"}))
    s3_client.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_tagging(Bucket=name)
    assert code_of(e) == "NoSuchBucket"
    s3_client.create_bucket(Bucket=name)
    try:
        with pytest.raises(ClientError) as e:
            s3_client.get_bucket_tagging(Bucket=name)
        assert code_of(e) == "NoSuchTagSet"
    finally:
        empty_bucket(s3_client, name)


def test_only_who_may_write_changes_tags(cas_s3, s3_client, s3_bucket):
    alice = cas_s3.client(*cas_s3.add_user())
    s3_client.put_object(Bucket=s3_bucket, Key="o", Body=b"x", Tagging="owner=root")
    s3_client.put_bucket_tagging(Bucket=s3_bucket, Tagging=tagset({"owner": "root"}))
    for call in (lambda: alice.put_object_tagging(Bucket=s3_bucket, Key="o", Tagging=tagset({"owner": "alice"})),
                 lambda: alice.delete_object_tagging(Bucket=s3_bucket, Key="o"),
                 lambda: alice.get_object_tagging(Bucket=s3_bucket, Key="o"),
                 lambda: alice.put_bucket_tagging(Bucket=s3_bucket, Tagging=tagset({"owner": "alice"})),
                 lambda: alice.delete_bucket_tagging(Bucket=s3_bucket),
                 lambda: alice.get_bucket_tagging(Bucket=s3_bucket),
                 lambda: alice.get_object_attributes(Bucket=s3_bucket, Key="o", ObjectAttributes=["ETag"])):
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) == "AccessDenied"
    assert tags_of(s3_client, s3_bucket, "o") == {"owner": "root"}
    assert s3_client.get_bucket_tagging(Bucket=s3_bucket)["TagSet"] == [{"Key": "owner", "Value": "root"}]


# -- GetObjectAttributes


def test_object_attributes_of_a_single_put(client, bucket):
    body = os.urandom(70_000)
    put = client.put_object(Bucket=bucket, Key="one", Body=body, ChecksumAlgorithm="SHA256")
    got = client.get_object_attributes(Bucket=bucket, Key="one",
                                       ObjectAttributes=["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"])
    assert got["ETag"] == put["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    assert got["ObjectSize"] == len(body) and got["StorageClass"] == "STANDARD"
    assert got["Checksum"]["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert got["Checksum"]["ChecksumType"] == "FULL_OBJECT"
    assert "ObjectParts" not in got  # not a multipart object
    assert got["LastModified"] == client.head_object(Bucket=bucket, Key="one")["LastModified"]
    only = client.get_object_attributes(Bucket=bucket, Key="one", ObjectAttributes=["ObjectSize"])
    assert only["ObjectSize"] == len(body) and "ETag" not in only and "Checksum" not in only


def test_object_attributes_of_a_multipart_object(client, bucket):
    up = client.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32")["UploadId"]
    parts = [os.urandom(5 << 20), b"last part"]
    done = [{"PartNumber": n, **{k: v for k, v in client.upload_part(
        Bucket=bucket, Key="mp", UploadId=up, PartNumber=n, Body=p, ChecksumAlgorithm="CRC32").items()
        if k in ("ETag", "ChecksumCRC32")}} for n, p in enumerate(parts, start=1)]
    client.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={"Parts": done})
    got = client.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ETag", "ObjectParts", "ObjectSize", "Checksum"])
    assert got["ETag"].endswith("-2") and got["ObjectSize"] == sum(map(len, parts))
    assert got["ObjectParts"]["TotalPartsCount"] == 2 and got["ObjectParts"]["IsTruncated"] is False
    assert got["Checksum"]["ChecksumType"] == "COMPOSITE" and "-" not in got["Checksum"]["ChecksumCRC32"]
    head = client.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"].split("-")[0] == got["Checksum"]["ChecksumCRC32"]


def test_object_attributes_errors(cas_s3, s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="o", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3_client.get_object_attributes(Bucket=s3_bucket, Key="o", ObjectAttributes=["ETag", "Owner"])
    assert code_of(e) == "InvalidArgument" and status_of(e) == 400
    with pytest.raises(ClientError) as e:
        s3_client.get_object_attributes(Bucket=s3_bucket, Key="missing", ObjectAttributes=["ETag"])
    assert code_of(e) == "NoSuchKey"
    req = sign_request("GET", f"127.0.0.1:{cas_s3.port}", f"/{s3_bucket}/o", query="attributes",
                       access_key=cas_s3.user, secret=cas_s3.secret)
    status, _, reply = raw_request(cas_s3.port, "GET", req.path + "?attributes", dict(req.headers))
    assert status == 400 and b"<Code>InvalidRequest</Code>" in reply and b"x-amz-object-attributes" in reply


# -- CopyObject's metadata directive


def test_copy_metadata_directive(s3_client, s3_bucket):
    c, b = s3_client, s3_bucket
    c.put_object(Bucket=b, Key="src", Body=b"s", Metadata={"color": "red"}, ContentType="text/plain", Tagging="t=1")
    source = {"Bucket": b, "Key": "src"}
    c.copy_object(Bucket=b, Key="copy", CopySource=source, Metadata={"color": "ignored"})
    head = c.head_object(Bucket=b, Key="copy")
    assert head["Metadata"] == {"color": "red"} and head["ContentType"] == "text/plain"
    c.copy_object(Bucket=b, Key="repl", CopySource=source, MetadataDirective="REPLACE", Metadata={"shape": "round"},
                  ContentType="image/png")
    head = c.head_object(Bucket=b, Key="repl")
    assert head["Metadata"] == {"shape": "round"} and head["ContentType"] == "image/png"
    assert tags_of(c, b, "repl") == {"t": "1"}  # the tagging directive is its own
    with pytest.raises(ClientError) as e:
        c.copy_object(Bucket=b, Key="bad", CopySource=source, MetadataDirective="MOVE")
    assert code_of(e) == "InvalidArgument"
    for extra in ({}, {"MetadataDirective": "COPY"}, {"TaggingDirective": "REPLACE", "Tagging": "t=2"}):
        with pytest.raises(ClientError) as e:
            c.copy_object(Bucket=b, Key="src", CopySource=source, **extra)
        assert code_of(e) == "InvalidRequest" and status_of(e) == 400, extra
    assert tags_of(c, b, "src") == {"t": "1"}
    c.copy_object(Bucket=b, Key="src", CopySource=source, MetadataDirective="REPLACE", Metadata={"color": "blue"})
    assert c.head_object(Bucket=b, Key="src")["Metadata"] == {"color": "blue"}
    assert c.get_object(Bucket=b, Key="src")["Body"].read() == b"s"


# -- the aws cli


def test_aws_cli_tagging_and_attributes(cas_s3, s3_client, s3_bucket, tmp_path):
    def api(*args):
        out = aws(cas_s3, tmp_path, "s3api", *args).stdout
        return json.loads(out) if out.strip() else None

    b = s3_bucket
    body = tmp_path / "body.bin"
    body.write_bytes(os.urandom(20_000))
    api("put-object", "--bucket", b, "--key", "k", "--body", str(body), "--tagging", "from=cli&x=y")
    assert api("get-object-tagging", "--bucket", b, "--key", "k")["TagSet"] == [
        {"Key": "from", "Value": "cli"}, {"Key": "x", "Value": "y"}]
    assert api("head-object", "--bucket", b, "--key", "k")["TagCount"] == 2
    api("put-object-tagging", "--bucket", b, "--key", "k", "--tagging", "TagSet=[{Key=env,Value=prod}]")
    assert tags_of(s3_client, b, "k") == {"env": "prod"}
    api("delete-object-tagging", "--bucket", b, "--key", "k")
    assert api("get-object-tagging", "--bucket", b, "--key", "k")["TagSet"] == []
    api("put-bucket-tagging", "--bucket", b, "--tagging", "TagSet=[{Key=team,Value=a},{Key=cost,Value=b}]")
    assert api("get-bucket-tagging", "--bucket", b)["TagSet"] == [{"Key": "team", "Value": "a"}, {"Key": "cost", "Value": "b"}]
    api("delete-bucket-tagging", "--bucket", b)
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_tagging(Bucket=b)
    assert code_of(e) == "NoSuchTagSet"
    got = api("get-object-attributes", "--bucket", b, "--key", "k", "--object-attributes", "ETag", "ObjectSize", "StorageClass")
    assert got["ETag"] == hashlib.md5(body.read_bytes()).hexdigest() and got["ObjectSize"] == 20_000
    assert got["StorageClass"] == "STANDARD"
