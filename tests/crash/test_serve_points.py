"""Kills at the named points where a crash hurts most: a response not yet sent after a commit, inside
and after the multipart-complete txn, inside copy and move txns, GC inside ``cas serve``, and GC on
the S3 backend. After each kill: every acknowledged object reads back byte for byte and
``verify --deep`` finds no damage; the interrupted operation either happened whole or not at all."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cas.config import load_settings
from cas.errors import ObjectNotFound
from cas.store import Store
from tests.fixtures.core import bytes_of
from tests.fixtures.web import ROOT_PASSWORD, ROOT_USER

pytestmark = [pytest.mark.crash, pytest.mark.integration]

MiB = 1 << 20
BUCKET = "crashpoints"


def s3(srv):
    return boto3.client("s3", endpoint_url=srv.s3_url, aws_access_key_id=ROOT_USER,
                        aws_secret_access_key=ROOT_PASSWORD, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                      connect_timeout=5, read_timeout=60))


def open_store(data) -> Store:
    return Store.open_store(load_settings(data, {"auth": {"root_user": ROOT_USER, "root_password": ROOT_PASSWORD}},
                                    env={}))


def verify_deep(data, env=None) -> dict:
    proc = subprocess.run([sys.executable, "-m", "cas", "verify", "--deep", "--json", "--data", str(data)],
                          capture_output=True, text=True, timeout=600, check=False, env=env)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["clean"], proc.stdout + proc.stderr
    return report


def killed(srv) -> None:
    assert srv.proc.wait(timeout=60) == -signal.SIGKILL, "".join(srv.output[-20:])


@pytest.fixture
def prepared(start_web_server, tmp_path):
    """A data dir with the bucket and one acknowledged object, made by a server that is gone."""
    data = tmp_path / "data"
    srv = start_web_server(data)
    s3(srv).create_bucket(Bucket=BUCKET)
    s3(srv).put_object(Bucket=BUCKET, Key="before", Body=bytes_of(2 * MiB, 1))
    srv.stop()
    return data


def test_kill_after_the_commit_before_the_response(prepared, start_web_server):
    srv = start_web_server(prepared, env={"CAS_TESTONLY_CRASH_AT": "serve.before_response.PUT"})
    body = bytes_of(3 * MiB, 2)
    with pytest.raises((BotoCoreError, ClientError)):
        s3(srv).put_object(Bucket=BUCKET, Key="unanswered", Body=body)
    killed(srv)
    with open_store(prepared) as store:  # committed before the answer: whole (a retry would find it)
        assert store.get_bytes(BUCKET, "unanswered") == body
        assert store.get_bytes(BUCKET, "before") == bytes_of(2 * MiB, 1)
    verify_deep(prepared)


@pytest.mark.parametrize("point", ["multipart.in_txn", "multipart.after_commit"])
def test_kill_in_multipart_complete(prepared, start_web_server, point):
    srv = start_web_server(prepared)
    client = s3(srv)
    parts = [bytes_of(5 * MiB, 10), bytes_of(1 * MiB, 11)]
    up = client.create_multipart_upload(Bucket=BUCKET, Key="multi")["UploadId"]
    etags = [client.upload_part(Bucket=BUCKET, Key="multi", UploadId=up, PartNumber=i + 1, Body=p)["ETag"]
             for i, p in enumerate(parts)]
    srv.stop()
    srv = start_web_server(prepared, env={"CAS_TESTONLY_CRASH_AT": point})
    listing = {"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]}
    with pytest.raises((BotoCoreError, ClientError)):
        s3(srv).complete_multipart_upload(Bucket=BUCKET, Key="multi", UploadId=up, MultipartUpload=listing)
    killed(srv)
    srv = start_web_server(prepared)
    client = s3(srv)
    if point == "multipart.in_txn":  # rolled back: no object, the upload and its parts are intact
        with pytest.raises(ClientError):
            client.head_object(Bucket=BUCKET, Key="multi")
        assert [p["PartNumber"] for p in client.list_parts(Bucket=BUCKET, Key="multi", UploadId=up)["Parts"]] == [1, 2]
        client.complete_multipart_upload(Bucket=BUCKET, Key="multi", UploadId=up, MultipartUpload=listing)
    else:  # committed: the object is whole and the upload is gone
        with pytest.raises(ClientError):
            client.list_parts(Bucket=BUCKET, Key="multi", UploadId=up)
    assert client.get_object(Bucket=BUCKET, Key="multi")["Body"].read() == b"".join(parts)
    srv.stop()
    verify_deep(prepared)


@pytest.mark.parametrize("point", ["copy.in_txn", "move.in_txn"])
def test_kill_inside_copy_and_move(prepared, start_web_server, point):
    srv = start_web_server(prepared, env={"CAS_TESTONLY_CRASH_AT": point})
    if point == "copy.in_txn":
        with pytest.raises((BotoCoreError, ClientError)):
            s3(srv).copy_object(Bucket=BUCKET, Key="copied", CopySource={"Bucket": BUCKET, "Key": "before"})
    else:
        auth = "Basic " + base64.b64encode(f"{ROOT_USER}:{ROOT_PASSWORD}".encode()).decode()
        try:
            srv.request("MOVE", f"/dav/{BUCKET}/before", headers={
                "Authorization": auth, "Destination": f"{srv.base}/dav/{BUCKET}/moved"}, timeout=30)
        except OSError:
            pass  # the connection died with the server: what this test wants
    killed(srv)
    with open_store(prepared) as store:  # the txn never committed: as if nothing happened
        assert store.get_bytes(BUCKET, "before") == bytes_of(2 * MiB, 1)
        for name in ("copied", "moved"):
            with pytest.raises(ObjectNotFound):
                store.stat(BUCKET, name)
    verify_deep(prepared)


@pytest.mark.parametrize("point", ["after_condemn", "after_deleting", "after_block_delete"])
def test_kill_of_gc_inside_the_server(prepared, start_web_server, point):
    with open_store(prepared) as store:
        store.put(BUCKET, "doomed", bytes_of(2 * MiB, 3))
        store.delete(BUCKET, "doomed")
    srv = start_web_server(prepared, extra_args=["--gc-interval", "1s", "--gc-min-age", "0"],
                           env={"CAS_TESTONLY_CRASH_AT": f"gc.{point}"})
    killed(srv)  # the first in-server run reaches the point within about a second
    srv = start_web_server(prepared)
    assert s3(srv).get_object(Bucket=BUCKET, Key="before")["Body"].read() == bytes_of(2 * MiB, 1)
    srv.stop()
    gc = subprocess.run([sys.executable, "-m", "cas", "gc", "--delete", "--min-age", "0", "--json",
                         "--data", str(prepared)], capture_output=True, text=True, timeout=300, check=False)
    assert gc.returncode == 0, gc.stderr
    report = verify_deep(prepared)
    assert report["blocks_unreferenced"] == 0 and report["orphans"] == 0 and report["blocks_deleting"] == 0


@pytest.mark.s3backend
@pytest.mark.parametrize("point", ["after_condemn", "after_deleting", "after_block_delete", "after_orphan_delete"])
def test_kill_of_gc_on_the_s3_backend(seaweed, tmp_path, point):
    import uuid

    env = {"CAS_BLOCKS": f"s3://{seaweed.bucket}/crash-{uuid.uuid4().hex[:10]}",
           "CAS_BLOCKS_ENDPOINT": seaweed.endpoint, "CAS_BLOCKS_ACCESS_KEY": seaweed.access_key,
           "CAS_BLOCKS_SECRET_KEY": seaweed.secret_key, "PATH": "/usr/bin:/bin"}
    data = tmp_path / "data"
    keep = bytes_of(MiB, 4)
    with Store.open_store(load_settings(data, env=env)) as store:
        store.create_bucket(BUCKET)
        store.put(BUCKET, "keep", keep)
        store.put(BUCKET, "gone", bytes_of(MiB, 5))
        store.delete(BUCKET, "gone")
        # an orphan: a block in the backend that no name or row knows (a killed writer's)
        orphan = bytes_of(300_000, 6)
        from cas.ids import block_id

        store.blocks.put(block_id(orphan), store.codec.encode(orphan))

    def cas(*args, crash=None):
        run_env = dict(env, CAS_TESTONLY_CRASH_AT=crash) if crash else env
        return subprocess.run([sys.executable, "-m", "cas", *args, "--data", str(data)], capture_output=True,
                              text=True, timeout=300, check=False, env=run_env)

    crashed = cas("gc", "--delete", "--min-age", "0", crash=f"gc.{point}")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    with Store.open_store(load_settings(data, env=env)) as store:
        assert store.get_bytes(BUCKET, "keep") == keep
    again = cas("gc", "--delete", "--min-age", "0", "--json")
    assert again.returncode == 0, again.stderr
    report = verify_deep(data, env=env)
    assert report["blocks_unreferenced"] == 0 and report["orphans"] == 0 and report["blocks_deleting"] == 0
    with Store.open_store(load_settings(data, env=env)) as store:
        assert store.get_bytes(BUCKET, "keep") == keep
