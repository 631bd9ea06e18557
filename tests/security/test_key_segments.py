"""Keys with empty path segments (``a//b``) are refused by every protocol, as MinIO does:
WebDAV (and any file system view) could never reach them. A trailing ``/`` (a folder
marker ``dir/``) stays allowed.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from cas.errors import InvalidName
from cas.names import check_key

BAD = ["a//b", "a//", "a///b", "dir/sub//file.txt", "//a", "/a"]
GOOD = ["a", "a/", "a/b", "a/b/", "dir/sub/file.txt"]


@pytest.mark.unit
@pytest.mark.parametrize("key", BAD)
def test_check_key_refuses_empty_segments(key):
    with pytest.raises(InvalidName):
        check_key("bucket", key)


@pytest.mark.unit
@pytest.mark.parametrize("key", GOOD)
def test_check_key_keeps_folder_markers(key):
    assert check_key("bucket", key) == key


@pytest.mark.unit
def test_store_refuses_every_write_under_such_a_key(local_store):
    local_store.create_bucket("bkt", owner="u")
    local_store.put("bkt", "src", b"data", user="u")
    for write in (
        lambda: local_store.put("bkt", "a//b", b"x", user="u"),
        lambda: local_store.copy("bkt", "src", "bkt", "a//b", user="u"),
        lambda: local_store.move("bkt", "src", "bkt", "a//b", user="u"),
        lambda: local_store.create_upload("bkt", "a//b", user="u"),
    ):
        with pytest.raises(InvalidName, match="empty path segments"):
            write()
    assert [i.key for i in local_store.list("bkt").entries] == ["src"]


@pytest.mark.integration
def test_s3_answers_invalid_argument(s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="src", Body=b"data")
    calls = [
        lambda: s3_client.put_object(Bucket=s3_bucket, Key="a//b", Body=b"x"),
        lambda: s3_client.copy_object(Bucket=s3_bucket, Key="c//d", CopySource={"Bucket": s3_bucket, "Key": "src"}),
        lambda: s3_client.create_multipart_upload(Bucket=s3_bucket, Key="m//n"),
    ]
    for call in calls:
        with pytest.raises(ClientError) as e:
            call()
        err = e.value.response
        assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == ("InvalidArgument", 400)
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert keys == ["src"]
    s3_client.put_object(Bucket=s3_bucket, Key="folder/", Body=b"")  # a folder marker is fine
