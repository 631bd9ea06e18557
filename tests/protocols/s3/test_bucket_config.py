"""ListObjectVersions of unversioned buckets, per-bucket CORS and PublicAccessBlock, with real clients.

boto3 (default configuration), aws cli and rclone against the shared ``cas serve``; CORS
preflights and browser-style requests are sent with a plain HTTP client (``http.client``), since a
browser is what sends them. The store-level test at the end checks that a bucket's CORS rules
and PublicAccessBlock survive ``cas recover`` and die with their bucket.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil

import pytest
from botocore.exceptions import ClientError

from cas.protocols.s3 import bucketconfig, cors
from cas.store import BUCKET_KEYED_KV, Store
from tests.fixtures.gc import run_cas
from tests.fixtures.s3api import S3Serve, code_of, empty_bucket, raw_request, sign_request, status_of, unique_bucket
from tests.protocols.s3.test_clients import aws, rclone

pytestmark = pytest.mark.integration

EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
APP = "https://app.example.com"


def xml_code(body: bytes) -> str:
    return body[body.index(b"<Code>") + 6:body.index(b"</Code>")].decode()


def signed(server, method: str, path: str, query: str = "", body: bytes = b"", headers: dict | None = None,
           user: tuple[str, str] | None = None):
    """One SigV4-signed request by hand (bodies no SDK would send, and ``Origin`` headers)."""
    access, secret = user or (server.user, server.secret)
    extra = dict(headers or {})
    if body:
        extra["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    req = sign_request(method, f"127.0.0.1:{server.port}", path, query=query, access_key=access, secret=secret,
                       headers={k: v for k, v in extra.items() if k.lower() != "origin"},
                       payload_hash=hashlib.sha256(body).hexdigest())
    send = {**req.headers, "content-length": str(len(body))}
    send.update({k: v for k, v in extra.items() if k.lower() == "origin"})  # browsers do not sign Origin
    return raw_request(server.port, method, req.path + (f"?{query}" if query else ""), send, body)


def preflight(server, path: str, origin: str, method: str = "GET", headers: str | None = None):
    """An unauthenticated OPTIONS as a browser sends it."""
    sent = {"Host": f"127.0.0.1:{server.port}", "Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    return raw_request(server.port, "OPTIONS", path, sent)


def cors_headers(headers: dict) -> dict:
    return {k: v for k, v in headers.items() if k.startswith("access-control-")}


@pytest.fixture(params=["lmdb", "pg"])
def server_bucket(request):
    """(server, boto3 client, fresh bucket) on the shared server with an LMDB and with a PostgreSQL index."""
    server = request.getfixturevalue({"lmdb": "cas_s3", "pg": "cas_s3_pg"}[request.param])
    client = server.client()
    name = unique_bucket()
    client.create_bucket(Bucket=name)
    yield server, client, name
    empty_bucket(client, name)


@pytest.fixture
def other_user(cas_s3):
    name, secret = cas_s3.add_user()
    return name, secret, cas_s3.client(name, secret)


# -- ListObjectVersions of an unversioned bucket --------------------------------------------------


KEYS = ["a.txt", "dir/one", "dir/two", "dir/sub/three", "e f ü.bin", "z"]


def _fill(client, bucket) -> dict:
    etags = {}
    for i, key in enumerate(KEYS):
        etags[key] = client.put_object(Bucket=bucket, Key=key, Body=b"x" * (i + 1))["ETag"]
    return etags


def test_every_object_is_its_null_version(server_bucket):
    cas_s3, s3_client, s3_bucket = server_bucket
    etags = _fill(s3_client, s3_bucket)
    out = s3_client.list_object_versions(Bucket=s3_bucket)
    assert [v["Key"] for v in out["Versions"]] == sorted(KEYS, key=lambda k: k.encode())
    for i, v in enumerate(sorted(out["Versions"], key=lambda v: KEYS.index(v["Key"]))):
        assert v["VersionId"] == "null" and v["IsLatest"] is True
        assert v["ETag"] == etags[v["Key"]] and v["Size"] == i + 1 and v["StorageClass"] == "STANDARD"
        assert v["Owner"]["ID"] == cas_s3.user and v["LastModified"].year >= 2024
    assert "DeleteMarkers" not in out and out["IsTruncated"] is False and out["Name"] == s3_bucket
    grouped = s3_client.list_object_versions(Bucket=s3_bucket, Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["dir/"]
    assert [v["Key"] for v in grouped["Versions"]] == ["a.txt", "e f ü.bin", "z"]
    under = s3_client.list_object_versions(Bucket=s3_bucket, Prefix="dir/", Delimiter="/")
    assert [v["Key"] for v in under["Versions"]] == ["dir/one", "dir/two"]
    assert [p["Prefix"] for p in under["CommonPrefixes"]] == ["dir/sub/"] and under["Prefix"] == "dir/"
    after = s3_client.list_object_versions(Bucket=s3_bucket, KeyMarker="dir/two", VersionIdMarker="null")
    assert [v["Key"] for v in after["Versions"]] == ["e f ü.bin", "z"]
    assert s3_client.list_object_versions(Bucket=s3_bucket, KeyMarker="dir/two")["Versions"] == after["Versions"]
    assert s3_client.list_object_versions(Bucket=s3_bucket, MaxKeys=0).get("Versions", []) == []


@pytest.mark.parametrize("delimiter", ["", "/"])
def test_paginator_pages_through_versions_and_prefixes(s3_client, s3_bucket, delimiter):
    _fill(s3_client, s3_bucket)
    pages = list(s3_client.get_paginator("list_object_versions").paginate(
        Bucket=s3_bucket, Delimiter=delimiter, PaginationConfig={"PageSize": 2}))
    assert len(pages) >= 2
    seen = [v["Key"] for p in pages for v in p.get("Versions", [])]
    seen += [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])]
    want = KEYS if not delimiter else ["a.txt", "dir/", "e f ü.bin", "z"]
    assert sorted(seen) == sorted(want) and len(seen) == len(want)  # each once
    for page in pages[:-1]:
        assert page["IsTruncated"] is True and page["NextKeyMarker"]
        last_is_version = page["NextKeyMarker"] not in [c["Prefix"] for c in page.get("CommonPrefixes", [])]
        assert page.get("NextVersionIdMarker") == ("null" if last_is_version else None)
    assert pages[-1]["IsTruncated"] is False


def test_url_encoded_listing_of_versions(cas_s3, s3_client, s3_bucket):
    _fill(s3_client, s3_bucket)
    status, _, body = signed(cas_s3, "GET", f"/{s3_bucket}", "encoding-type=url&prefix=e%20f&versions")
    assert status == 200, body
    assert b"<Key>e%20f%20%C3%BC.bin</Key>" in body and b"<EncodingType>url</EncodingType>" in body
    assert b"<VersionId>null</VersionId>" in body and b"<IsLatest>true</IsLatest>" in body


@pytest.mark.parametrize("query, code", [
    ("versions&version-id-marker=null", "InvalidArgument"),
    ("versions&key-marker=a&version-id-marker=3HL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY", "InvalidArgument"),
    ("versions&max-keys=-1", "InvalidArgument"),
    ("versions&max-keys=x", "InvalidArgument"),
    ("versions&encoding-type=base64", "InvalidArgument"),
])
def test_bad_version_listing_parameters(cas_s3, s3_bucket, query, code):
    status, _, body = signed(cas_s3, "GET", f"/{s3_bucket}", query)
    assert (status, xml_code(body)) == (400, code), body


def test_version_listing_of_missing_and_foreign_buckets(s3_client, s3_bucket, other_user):
    with pytest.raises(ClientError) as e:
        s3_client.list_object_versions(Bucket=unique_bucket())
    assert code_of(e) == "NoSuchBucket"
    with pytest.raises(ClientError) as e:
        other_user[2].list_object_versions(Bucket=s3_bucket)
    assert code_of(e) == "AccessDenied"


def test_the_null_version_is_the_object(s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="k", Body=b"body")
    got = s3_client.get_object(Bucket=s3_bucket, Key="k", VersionId="null")
    assert got["Body"].read() == b"body" and got["VersionId"] == "null"
    assert s3_client.head_object(Bucket=s3_bucket, Key="k", VersionId="null")["ContentLength"] == 4
    for call in (s3_client.get_object, s3_client.head_object):
        with pytest.raises(ClientError) as e:
            call(Bucket=s3_bucket, Key="k", VersionId="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")
        assert status_of(e) == 404
        if call is s3_client.get_object:
            assert code_of(e) == "NoSuchVersion"
    # another version names nothing: S3 deletes nothing and answers 204
    s3_client.delete_object(Bucket=s3_bucket, Key="k", VersionId="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")
    assert s3_client.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"body"
    out = s3_client.delete_object(Bucket=s3_bucket, Key="k", VersionId="null")
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 204 and out["VersionId"] == "null"
    with pytest.raises(ClientError) as e:
        s3_client.head_object(Bucket=s3_bucket, Key="k")
    assert status_of(e) == 404


def test_cleanup_loop_of_tools_empties_the_bucket(s3_client):
    bucket = unique_bucket()
    s3_client.create_bucket(Bucket=bucket)
    keys = [f"p/{i:03d}" for i in range(25)] + ["top"]
    for key in keys:
        s3_client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    deleted = []
    for page in s3_client.get_paginator("list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 10}):
        objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", [])]
        objects += [{"Key": m["Key"], "VersionId": m["VersionId"]} for m in page.get("DeleteMarkers", [])]
        if objects:
            out = s3_client.delete_objects(Bucket=bucket, Delete={"Objects": objects})
            assert "Errors" not in out
            assert all(d["VersionId"] == "null" for d in out["Deleted"])
            deleted += [d["Key"] for d in out["Deleted"]]
    assert sorted(deleted) == sorted(keys)
    assert s3_client.list_object_versions(Bucket=bucket).get("Versions", []) == []
    s3_client.delete_bucket(Bucket=bucket)


def test_versioning_configuration_stays_unversioned(s3_client, s3_bucket):
    assert "Status" not in s3_client.get_bucket_versioning(Bucket=s3_bucket)
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    assert code_of(e) == "NotImplemented" and "PutBucketVersioning" in e.value.response["Error"]["Message"]


def test_aws_cli_lists_versions_and_deletes_them(cas_s3, s3_client, s3_bucket, tmp_path):
    _fill(s3_client, s3_bucket)
    out = json.loads(aws(cas_s3, tmp_path, "s3api", "list-object-versions", "--bucket", s3_bucket).stdout)
    assert sorted(v["Key"] for v in out["Versions"]) == sorted(KEYS)
    assert {v["VersionId"] for v in out["Versions"]} == {"null"}
    paged = json.loads(aws(cas_s3, tmp_path, "s3api", "list-object-versions", "--bucket", s3_bucket,
                           "--page-size", "2").stdout)  # the cli follows the markers itself
    assert [v["Key"] for v in paged["Versions"]] == [v["Key"] for v in out["Versions"]]
    spec = {"Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in out["Versions"]], "Quiet": True}
    (tmp_path / "delete.json").write_text(json.dumps(spec))
    aws(cas_s3, tmp_path, "s3api", "delete-objects", "--bucket", s3_bucket, "--delete", f"file://{tmp_path / 'delete.json'}")
    again = json.loads(aws(cas_s3, tmp_path, "s3api", "list-object-versions", "--bucket", s3_bucket).stdout or "{}")
    assert again.get("Versions", []) == []


def test_rclone_lists_with_versions(cas_s3, s3_client, s3_bucket):
    _fill(s3_client, s3_bucket)
    listed = rclone(cas_s3, "lsf", "-R", "--files-only", "--s3-versions", f"cas:{s3_bucket}").stdout.splitlines()
    assert sorted(listed) == sorted(KEYS)
    rclone(cas_s3, "delete", "--s3-versions", f"cas:{s3_bucket}")
    assert s3_client.list_object_versions(Bucket=s3_bucket).get("Versions", []) == []


# -- per-bucket CORS ------------------------------------------------------------------------------


RULES = {"CORSRules": [
    {"ID": "app", "AllowedOrigins": [APP], "AllowedMethods": ["GET", "PUT"],
     "AllowedHeaders": ["authorization", "x-amz-*"], "ExposeHeaders": ["ETag", "x-amz-meta-who"], "MaxAgeSeconds": 600},
    {"AllowedOrigins": ["https://*.example.org"], "AllowedMethods": ["GET"]},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]},
]}


def test_put_get_delete_bucket_cors(server_bucket):
    _, s3_client, s3_bucket = server_bucket
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_cors(Bucket=s3_bucket)
    assert code_of(e) == "NoSuchCORSConfiguration" and status_of(e) == 404
    s3_client.put_bucket_cors(Bucket=s3_bucket, CORSConfiguration=RULES)
    assert s3_client.get_bucket_cors(Bucket=s3_bucket)["CORSRules"] == RULES["CORSRules"]
    replaced = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]}
    s3_client.put_bucket_cors(Bucket=s3_bucket, CORSConfiguration=replaced)  # a PUT replaces the whole set
    assert s3_client.get_bucket_cors(Bucket=s3_bucket)["CORSRules"] == replaced["CORSRules"]
    assert s3_client.delete_bucket_cors(Bucket=s3_bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_cors(Bucket=s3_bucket)
    assert code_of(e) == "NoSuchCORSConfiguration"
    s3_client.delete_bucket_cors(Bucket=s3_bucket)  # deleting none is fine, as in S3


def _rule(body: str) -> bytes:
    return f"<CORSConfiguration><CORSRule>{body}</CORSRule></CORSConfiguration>".encode()


@pytest.mark.parametrize("body, code, message", [
    (_rule("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod>"), "InvalidRequest",
     "Unsupported method is PATCH"),
    (_rule("<AllowedOrigin>http://*.*.example.com</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"),
     "InvalidRequest", "can not have more than one wildcard"),
    (_rule("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedHeader>*a*</AllowedHeader>"),
     "InvalidRequest", "can not have more than one wildcard"),
    (_rule("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><ExposeHeader>x-*</ExposeHeader>"),
     "InvalidRequest", "We currently do not support wildcard for ExposeHeader"),
    (_rule("<AllowedMethod>GET</AllowedMethod>"), "MalformedXML", ""),
    (_rule("<AllowedOrigin>*</AllowedOrigin>"), "MalformedXML", ""),
    (_rule("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>-1</MaxAgeSeconds>"),
     "MalformedXML", ""),
    (_rule("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><Colour>red</Colour>"), "MalformedXML", ""),
    (b"<CORSConfiguration></CORSConfiguration>", "MalformedXML", ""),
    (b"<CORSConfiguration><CORSRule>", "MalformedXML", ""),
    (b"<CORSConfiguration>" + b"<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>"
     * 101 + b"</CORSConfiguration>", "InvalidRequest", "should not exceed allowed limit of 100 rules"),
])
def test_bad_cors_configurations_are_refused_as_s3_refuses_them(cas_s3, s3_client, s3_bucket, body, code, message):
    status, _, answer = signed(cas_s3, "PUT", f"/{s3_bucket}", "cors", body)
    assert (status, xml_code(answer)) == (400, code), answer
    assert message.encode() in answer
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_cors(Bucket=s3_bucket)
    assert code_of(e) == "NoSuchCORSConfiguration"  # nothing was stored


def test_a_cors_configuration_needs_an_integrity_header(cas_s3, s3_bucket):
    body = _rule("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>")
    req = sign_request("PUT", f"127.0.0.1:{cas_s3.port}", f"/{s3_bucket}", query="cors", access_key=cas_s3.user,
                       secret=cas_s3.secret, payload_hash=hashlib.sha256(body).hexdigest())
    status, _, answer = raw_request(cas_s3.port, "PUT", req.path + "?cors", {**req.headers, "content-length": str(len(body))}, body)
    assert status == 400 and b"Content-MD5" in answer, answer


def test_bucket_rules_decide_preflights(server_bucket):
    cas_s3, s3_client, s3_bucket = server_bucket
    s3_client.put_object(Bucket=s3_bucket, Key="o", Body=b"o")
    path = f"/{s3_bucket}/o"
    # before: the server-wide policy (loopback origins), as for any bucket without rules
    assert preflight(cas_s3, path, "http://localhost:3000")[0] == 200
    assert preflight(cas_s3, path, APP)[0] == 403
    s3_client.put_bucket_cors(Bucket=s3_bucket, CORSConfiguration=RULES)

    status, headers, _ = preflight(cas_s3, path, APP, "PUT", "Authorization, X-Amz-Date, x-amz-content-sha256")
    assert status == 200
    assert headers["access-control-allow-origin"] == APP and headers["access-control-allow-credentials"] == "true"
    assert headers["access-control-allow-methods"] == "GET, PUT"
    assert headers["access-control-allow-headers"] == "Authorization, X-Amz-Date, x-amz-content-sha256"
    assert headers["access-control-max-age"] == "600"
    assert headers["access-control-expose-headers"] == "ETag, x-amz-meta-who"
    assert "Origin" in headers["vary"]

    # a wildcard origin is echoed without credentials; the first matching rule decides
    status, headers, _ = preflight(cas_s3, path, "https://files.example.org")
    assert status == 200 and headers["access-control-allow-origin"] == "https://files.example.org"
    assert "access-control-allow-credentials" not in headers and headers["access-control-allow-methods"] == "GET"
    status, headers, _ = preflight(cas_s3, path, "https://anyone.example.net", "HEAD")
    assert status == 200 and headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in headers

    refused = [
        (APP, "DELETE", None),  # method not in the rule
        (APP, "PUT", "authorization, x-other"),  # a header no AllowedHeader covers
        ("https://files.example.org", "PUT", None),  # origin matches, method does not
        ("https://example.org", "GET", None),  # the wildcard needs its dot
        ("http://localhost:3000", "GET", None),  # rules replace the server-wide policy
        ("https://app.example.com.evil.example.net", "GET", None),
    ]
    for origin, method, requested in refused:
        status, headers, body = preflight(cas_s3, path, origin, method, requested)
        assert status == 403 and xml_code(body) == "AccessForbidden", (origin, method, requested)
        assert b"This CORS request is not allowed" in body and cors_headers(headers) == {}
    assert preflight(cas_s3, f"/{s3_bucket}", APP, "GET")[0] == 200  # the bucket itself too

    status, _, body = raw_request(cas_s3.port, "OPTIONS", path, {"Host": f"127.0.0.1:{cas_s3.port}", "Origin": APP})
    assert status == 400 and xml_code(body) == "BadRequest"

    s3_client.delete_bucket_cors(Bucket=s3_bucket)
    assert preflight(cas_s3, path, APP)[0] == 403
    assert preflight(cas_s3, path, "http://localhost:3000")[0] == 200


def test_a_missing_bucket_preflights_like_one_without_rules(cas_s3, s3_client, s3_bucket):
    missing = f"/{unique_bucket()}/o"
    for origin in (APP, "http://localhost:3000", "https://evil.example.net"):
        got = preflight(cas_s3, missing, origin)
        want = preflight(cas_s3, f"/{s3_bucket}/o", origin)
        assert got[0] == want[0] and cors_headers(got[1]) == cors_headers(want[1])
        assert (xml_code(got[2]) if got[2] else "") == (xml_code(want[2]) if want[2] else "")


def test_bucket_rules_decide_headers_of_actual_requests(cas_s3, s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="o", Body=b"o")
    s3_client.put_bucket_cors(Bucket=s3_bucket, CORSConfiguration=RULES)
    status, headers, body = signed(cas_s3, "GET", f"/{s3_bucket}/o", headers={"Origin": APP})
    assert status == 200 and body == b"o"
    assert headers["access-control-allow-origin"] == APP and headers["access-control-expose-headers"] == "ETag, x-amz-meta-who"
    status, headers, _ = signed(cas_s3, "DELETE", f"/{s3_bucket}/nothing", headers={"Origin": APP})
    assert status == 204 and cors_headers(headers) == {}  # DELETE is not in the rule
    status, headers, _ = signed(cas_s3, "GET", f"/{s3_bucket}/o", headers={"Origin": "http://localhost:3000"})
    assert status == 200 and cors_headers(headers) == {}
    # errors carry them too (a browser page must be able to read why it failed)
    status, headers, body = signed(cas_s3, "GET", f"/{s3_bucket}/missing", headers={"Origin": APP})
    assert status == 404 and headers["access-control-allow-origin"] == APP
    # another bucket keeps the server-wide policy
    other = unique_bucket()
    s3_client.create_bucket(Bucket=other)
    try:
        _, headers, _ = signed(cas_s3, "GET", f"/{other}", headers={"Origin": "http://localhost:3000"})
        assert headers["access-control-allow-origin"] == "http://localhost:3000"
        _, headers, _ = signed(cas_s3, "GET", f"/{other}", headers={"Origin": APP})
        assert cors_headers(headers) == {}
    finally:
        empty_bucket(s3_client, other)


def test_rules_die_with_their_bucket(s3_client):
    bucket = unique_bucket()
    s3_client.create_bucket(Bucket=bucket)
    s3_client.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    s3_client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={"BlockPublicAcls": True})
    s3_client.delete_bucket(Bucket=bucket)
    s3_client.create_bucket(Bucket=bucket)
    try:
        with pytest.raises(ClientError) as e:
            s3_client.get_bucket_cors(Bucket=bucket)
        assert code_of(e) == "NoSuchCORSConfiguration"
        with pytest.raises(ClientError) as e:
            s3_client.get_public_access_block(Bucket=bucket)
        assert code_of(e) == "NoSuchPublicAccessBlockConfiguration"
    finally:
        s3_client.delete_bucket(Bucket=bucket)


def test_only_the_owner_reads_or_changes_configurations(s3_client, s3_bucket, other_user):
    s3_client.put_bucket_cors(Bucket=s3_bucket, CORSConfiguration=RULES)
    intruder = other_user[2]
    calls = [
        lambda: intruder.get_bucket_cors(Bucket=s3_bucket),
        lambda: intruder.put_bucket_cors(Bucket=s3_bucket, CORSConfiguration={"CORSRules": [
            {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]}),
        lambda: intruder.delete_bucket_cors(Bucket=s3_bucket),
        lambda: intruder.get_public_access_block(Bucket=s3_bucket),
        lambda: intruder.put_public_access_block(Bucket=s3_bucket, PublicAccessBlockConfiguration={"BlockPublicAcls": False}),
        lambda: intruder.delete_public_access_block(Bucket=s3_bucket),
    ]
    for call in calls:
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) == "AccessDenied"
    assert s3_client.get_bucket_cors(Bucket=s3_bucket)["CORSRules"] == RULES["CORSRules"]
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_cors(Bucket=unique_bucket(), CORSConfiguration=RULES)
    assert code_of(e) == "NoSuchBucket"


def test_aws_cli_bucket_cors_and_public_access_block(cas_s3, s3_bucket, tmp_path):
    config = {"CORSRules": [{"AllowedOrigins": [APP], "AllowedMethods": ["GET"], "MaxAgeSeconds": 30}]}
    (tmp_path / "cors.json").write_text(json.dumps(config))
    aws(cas_s3, tmp_path, "s3api", "put-bucket-cors", "--bucket", s3_bucket, "--cors-configuration",
        f"file://{tmp_path / 'cors.json'}")
    got = json.loads(aws(cas_s3, tmp_path, "s3api", "get-bucket-cors", "--bucket", s3_bucket).stdout)
    assert got["CORSRules"] == config["CORSRules"]
    assert preflight(cas_s3, f"/{s3_bucket}/x", APP)[1]["access-control-max-age"] == "30"
    aws(cas_s3, tmp_path, "s3api", "delete-bucket-cors", "--bucket", s3_bucket)
    aws(cas_s3, tmp_path, "s3api", "put-public-access-block", "--bucket", s3_bucket, "--public-access-block-configuration",
        "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=false,RestrictPublicBuckets=true")
    got = json.loads(aws(cas_s3, tmp_path, "s3api", "get-public-access-block", "--bucket", s3_bucket).stdout)
    assert got["PublicAccessBlockConfiguration"] == {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                                                     "BlockPublicPolicy": False, "RestrictPublicBuckets": True}


@pytest.fixture(scope="module")
def anonymous_server(tmp_path_factory):
    server = S3Serve(tmp_path_factory.mktemp("cors-anon") / "data", extra_args=["--anonymous"]).start()
    yield server
    server.stop()


def test_anonymous_readers_get_the_rules_applied_but_never_the_configuration(anonymous_server):
    server = anonymous_server
    client = server.client()
    bucket = unique_bucket()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="o", Body=b"public")
    client.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={"BlockPublicAcls": True})
    host = {"Host": f"127.0.0.1:{server.port}"}
    status, headers, body = raw_request(server.port, "GET", f"/{bucket}/o", {**host, "Origin": APP})
    assert status == 200 and body == b"public" and headers["access-control-allow-origin"] == APP
    assert preflight(server, f"/{bucket}/o", APP, "PUT")[0] == 200
    for query in ("cors", "publicAccessBlock"):
        status, headers, body = raw_request(server.port, "GET", f"/{bucket}?{query}", host)
        assert status == 403 and xml_code(body) == "AccessDenied", query
        assert b"AllowedOrigin" not in body and b"BlockPublicAcls" not in body
    status, _, body = raw_request(server.port, "DELETE", f"/{bucket}?cors", host)
    assert status == 403 and xml_code(body) == "AccessDenied"
    assert client.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES["CORSRules"]


# -- PublicAccessBlock ----------------------------------------------------------------------------


def test_put_get_delete_public_access_block(server_bucket):
    cas_s3, s3_client, s3_bucket = server_bucket
    with pytest.raises(ClientError) as e:
        s3_client.get_public_access_block(Bucket=s3_bucket)
    assert code_of(e) == "NoSuchPublicAccessBlockConfiguration" and status_of(e) == 404
    s3_client.put_public_access_block(Bucket=s3_bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "RestrictPublicBuckets": True})
    got = s3_client.get_public_access_block(Bucket=s3_bucket)["PublicAccessBlockConfiguration"]
    assert got == {"BlockPublicAcls": True, "IgnorePublicAcls": False, "BlockPublicPolicy": False,
                   "RestrictPublicBuckets": True}
    for body in (b"<PublicAccessBlockConfiguration><BlockPublicAcls>yes</BlockPublicAcls></PublicAccessBlockConfiguration>",
                 b"<PublicAccessBlockConfiguration><BlockAll>true</BlockAll></PublicAccessBlockConfiguration>",
                 b"<PublicAccessBlock/>"):
        status, _, answer = signed(cas_s3, "PUT", f"/{s3_bucket}", "publicAccessBlock", body)
        assert (status, xml_code(answer)) == (400, "MalformedXML"), answer
    assert s3_client.get_public_access_block(Bucket=s3_bucket)["PublicAccessBlockConfiguration"] == got
    assert s3_client.delete_public_access_block(Bucket=s3_bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        s3_client.get_public_access_block(Bucket=s3_bucket)
    assert code_of(e) == "NoSuchPublicAccessBlockConfiguration"


# -- durable: logged, recovered, and gone with the bucket -----------------------------------------


def test_configuration_namespaces_are_bucket_keyed():
    assert cors.NS_CORS in BUCKET_KEYED_KV and bucketconfig.NS_PUBLIC_ACCESS_BLOCK in BUCKET_KEYED_KV


@pytest.mark.parametrize("index", ["lmdb", "pg"])
def test_cors_rules_survive_cas_recover(settings, index, request):
    from tests.fixtures.core import with_index

    index_args = []
    if index == "pg":
        pg_url = request.getfixturevalue("pg_url")
        settings = with_index(settings, pg_url)
        index_args = ["--index", pg_url]
    rules = cors.parse_configuration(
        b"<CORSConfiguration><CORSRule><ID>r</ID><AllowedOrigin>https://*.example.org</AllowedOrigin>"
        b"<AllowedMethod>GET</AllowedMethod><AllowedHeader>x-amz-*</AllowedHeader><MaxAgeSeconds>5</MaxAgeSeconds>"
        b"</CORSRule></CORSConfiguration>")
    pab = bucketconfig.parse_public_access_block(
        b"<PublicAccessBlockConfiguration><IgnorePublicAcls>true</IgnorePublicAcls></PublicAccessBlockConfiguration>")
    with Store.open_store(settings) as s:
        for name in ("kept", "gone"):
            s.create_bucket(name)
            s.put(name, "o", b"object")
            s.kv_put(cors.NS_CORS, name, cors.rules_to_json(rules))
            s.kv_put(bucketconfig.NS_PUBLIC_ACCESS_BLOCK, name, json.dumps(pab).encode())
        s.meta_log.ship()
        s.delete("gone", "o")
        s.delete_bucket("gone")
        s.meta_log.ship()
    if index == "pg":
        _drop_pg_tables(settings.index.url)
    else:
        shutil.rmtree(settings.index_dir)
    out = run_cas(settings.data_dir, "recover", "--json", *index_args, timeout=300)
    assert out.returncode == 0, out.stderr
    with Store.open_store(settings) as s:
        assert s.get_bytes("kept", "o") == b"object"
        back = cors.bucket_rules(s, "kept")
        assert back is not None and back.rules == rules
        assert json.loads(s.kv_get(bucketconfig.NS_PUBLIC_ACCESS_BLOCK, "kept")) == pab
        assert cors.bucket_rules(s, "gone") is None
        assert s.kv_get(bucketconfig.NS_PUBLIC_ACCESS_BLOCK, "gone") is None


def _drop_pg_tables(url: str) -> None:
    """The PostgreSQL index loses its tables (what ``cas recover`` rebuilds)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        assert "cas_objects" in tables
        for table in tables:
            conn.execute(f"DROP TABLE {table}")
