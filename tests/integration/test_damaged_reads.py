"""Damaged objects over the wire, and healing them by uploading their bytes again.

A real ``cas serve`` (``start_web_server``); blocks are damaged in their pack: "corrupt" flips a
byte of the block's range in the pack file under the running server (bit rot); "missing" drops the
block's location from the index while the server is stopped, then starts it again, so the store no
longer has those bytes anywhere while the rest of the pack stays readable — the loss of exactly one
block (a whole pack lost or cut short takes every block in it: ``tests/gc/test_verify_packs.py``).
Stopped, because a running server reads the entries it wrote into its still open pack where it put
them, without looking their locations up. A damaged
first block must be a clean error response on S3, the web API and WebDAV (never ``200`` and
no bytes); a damaged later block must cut the connection short of ``Content-Length`` (never
wrong or silently short bytes). A block found damaged, by ``cas verify`` or by a failing GET,
is marked so in the index, and the next upload of the same bytes rewrites it, healing every
object that uses it.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.fixtures.core import bytes_of
from tests.fixtures.gc import cas_env, run_cas
from tests.fixtures.web import ROOT_PASSWORD, ROOT_USER

pytestmark = pytest.mark.integration

BUCKET = "dmg"
SIZE = 1_500_000  # ~20 blocks at the default 64 KiB average
LATER_SIZE = 6_000_000  # more than the reader's first window (cas/store/reader.py WINDOW)
DAMAGES = ["missing", "corrupt"]


# -- helpers ---------------------------------------------------------------------------------------


def _s3(server):
    import boto3

    return boto3.client("s3", endpoint_url=server.s3_url, aws_access_key_id=ROOT_USER,
                        aws_secret_access_key=ROOT_PASSWORD, region_name="us-east-1")


def _block_ids(data_dir: Path, bucket: str, key: str) -> list[bytes]:
    """The object's block ids, read from the index of the running server's store."""
    from cas.config import load_settings
    from cas.store import Store
    from tests.fixtures.gc import manifest_ids

    with Store.open_store(load_settings(data_dir, env={})) as store:
        return manifest_ids(store, bucket, key)


def _damage(server, bid: bytes, how: str):
    """Damage one block of the server's store in its pack (see the module docstring); an S3
    client of the server as it runs afterwards (a restart moves its ports)."""
    from cas.blocks import packs_of
    from cas.config import load_settings
    from cas.store import Store
    from tests.fixtures.gc import flip_pack_byte

    if how == "missing":
        server.stop()
    with Store.open_store(load_settings(server.data, env={})) as store:
        packs = packs_of(store.blocks)
        loc = packs.location(bid)
        assert loc is not None, "the block is in no pack"
        if how == "missing":
            store.blocks.delete(bid)  # its location goes: the pack keeps the bytes, nothing points at them
        else:  # bit rot: same size, the block's last byte flipped
            flip_pack_byte(packs.files, loc.pack, loc.offset + loc.length - 1)
    if how == "missing":
        server.start()
    return _s3(server)


def _split(url: str) -> tuple[int, str]:
    u = urllib.parse.urlsplit(url)
    return u.port, u.path + ("?" + u.query if u.query else "")


def _get(conn: http.client.HTTPConnection, target: str, headers: dict | None = None):
    """(status, headers, body, complete): the body as far as it came, and whether all of it did."""
    conn.request("GET", target, headers=headers or {})
    resp = conn.getresponse()
    hdrs = {k.lower(): v for k, v in resp.getheaders()}
    try:
        body = resp.read()
        complete = True
    except http.client.IncompleteRead as exc:
        body, complete = exc.partial, False
    return resp.status, hdrs, body, complete


def _basic() -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{ROOT_USER}:{ROOT_PASSWORD}".encode()).decode()}


def _targets(server, s3, key: str) -> dict[str, tuple[int, str, dict]]:
    """Where each front end serves ``key``: (port, request target, headers)."""
    port, target = _split(s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}))
    web_port, _ = _split(server.base)
    q = urllib.parse.quote(key)
    return {
        "s3": (port, target, {}),
        "web": (web_port, f"/api/buckets/{BUCKET}/object?key={q}", _basic()),
        "webdav": (web_port, f"/dav/{BUCKET}/{q}", _basic()),
    }


@pytest.fixture
def served(start_web_server):
    server = start_web_server()
    s3 = _s3(server)
    s3.create_bucket(Bucket=BUCKET)
    return server, s3


def _put(s3, key: str, body: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def _read_s3(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _access_lines(server, needle: str, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [ln for ln in list(server.output) if "cas.access" in ln and needle in ln]
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"no access-log line for {needle!r}:\n" + "".join(server.output[-30:]))


# -- (a) damaged first block: a clean error; damaged later block: a cut connection -----------------


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_first_block_is_a_clean_5xx_on_every_front_end(served, how):
    server, s3 = served
    body, healthy = bytes_of(SIZE, 1), bytes_of(100_000, 2)
    _put(s3, "obj", body)
    _put(s3, "healthy", healthy)
    s3 = _damage(server, _block_ids(server.data, BUCKET, "obj")[0], how)
    targets = _targets(server, s3, "obj")
    healthy_targets = _targets(server, s3, "healthy")
    for front, (port, target, headers) in targets.items():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            status, hdrs, got, complete = _get(conn, target, headers)
            assert status == 500, (front, status, got[:200])
            assert complete and int(hdrs["content-length"]) == len(got), front
            if front == "s3":
                assert b"<Code>InternalError</Code>" in got and b"damaged" in got, got
            elif front == "web":
                err = json.loads(got)
                assert err["error"] == "ObjectDamaged" and "damaged" in err["message"], err
            # the same connection goes on serving (or was closed cleanly, with the whole error sent)
            if hdrs.get("connection", "").lower() != "close":
                _, htarget, hheaders = healthy_targets[front]
                status, _, got, complete = _get(conn, htarget, hheaders)
                assert (status, complete, got) == (200, True, healthy), front
        finally:
            conn.close()
    # a range that starts in the damaged block fails cleanly too; one that avoids it reads
    port, target, _ = targets["s3"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        status, _, got, _ = _get(conn, target, {"Range": "bytes=10-20"})
        assert status == 500 and b"InternalError" in got
        status, _, got, complete = _get(conn, target, {"Range": f"bytes={SIZE - 100}-"})
        assert (status, complete, got) == (206, True, body[-100:])
    finally:
        conn.close()
    # HEAD reads no block: it still answers
    assert s3.head_object(Bucket=BUCKET, Key="obj")["ContentLength"] == SIZE


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_later_block_cuts_the_body_short_never_wrong_bytes(served, how):
    server, s3 = served
    body = bytes_of(LATER_SIZE, 3)
    _put(s3, "obj", body)
    # the last block: past what any front end reads before it starts the response (WebDAV reads 1 MiB,
    # and the reader fetches a window of 4 MiB at a time)
    s3 = _damage(server, _block_ids(server.data, BUCKET, "obj")[-1], how)
    for front, (port, target, headers) in _targets(server, s3, "obj").items():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            status, hdrs, got, complete = _get(conn, target, headers)
        finally:
            conn.close()
        assert status == 200 and int(hdrs["content-length"]) == LATER_SIZE, front
        assert not complete and 0 < len(got) < LATER_SIZE, (front, len(got))
        assert got == body[:len(got)], f"{front} sent wrong bytes"
    # the access log says what was sent: status 200 and fewer bytes than the object has
    line = _access_lines(server, '"GET /dmg/obj?', 1)[-1]
    sent = int(line.split('" 200 ')[1].split()[0])
    assert 0 < sent < LATER_SIZE, line
    # boto3 sees a short body as an error, not as the object
    from botocore.exceptions import IncompleteReadError, ResponseStreamingError

    with pytest.raises((IncompleteReadError, ResponseStreamingError)):
        _read_s3(s3, "obj")


# -- (b) healing by re-upload ------------------------------------------------------------------------


def _cas(server, *args: str):
    return run_cas(server.data, *args, env=cas_env(CAS_ROOT_USER=ROOT_USER, CAS_ROOT_PASSWORD=ROOT_PASSWORD))


@pytest.mark.parametrize("how", DAMAGES)
def test_damage_found_by_verify_is_healed_by_uploading_the_bytes_again(served, how):
    server, s3 = served
    body = bytes_of(SIZE, 4)
    _put(s3, "old", body)
    s3 = _damage(server, _block_ids(server.data, BUCKET, "old")[5], how)
    found = _cas(server, "verify", "--deep", "--json")
    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)
    assert report["damaged_objects"] == [f"{BUCKET}/old"] and report["marked_damaged"] == 1
    assert _cas(server, "verify").returncode == 1  # still reported until healed
    _put(s3, "new", body)  # dedup must not trust the damaged block: the writer writes it again
    assert _read_s3(s3, "new") == body
    assert _read_s3(s3, "old") == body
    clean = _cas(server, "verify", "--deep")
    assert clean.returncode == 0, clean.stdout + clean.stderr


@pytest.mark.parametrize("how", DAMAGES)
def test_damage_found_by_a_failing_get_is_healed_by_uploading_the_bytes_again(served, how):
    server, s3 = served
    body = bytes_of(SIZE, 5)
    _put(s3, "old", body)
    s3 = _damage(server, _block_ids(server.data, BUCKET, "old")[0], how)
    port, target, _ = _targets(server, s3, "old")["s3"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        assert _get(conn, target)[0] == 500
    finally:
        conn.close()
    # the failed read marked the block: a plain (not deep) verify names the object now
    found = _cas(server, "verify", "--json")
    assert found.returncode == 1
    assert json.loads(found.stdout)["damaged_objects"] == [f"{BUCKET}/old"]
    _put(s3, "new", body)
    assert _read_s3(s3, "old") == body and _read_s3(s3, "new") == body
    clean = _cas(server, "verify", "--deep")
    assert clean.returncode == 0, clean.stdout + clean.stderr
