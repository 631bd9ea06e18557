"""``cas migrate``: a store from before packs (format 1: one file per block) moved into packs.

The format-1 store is made the way an older cas left one: a store is written, then every located
block is copied to ``DATA/blocks/ab/<hex>`` (``LocalBlockStore``, the old layout), the index's
locations and pack rows are dropped, the packs removed and the format set back to 1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from cas.blocks import packs_of
from cas.blocks.local import LocalBlockStore
from cas.errors import ConfigError, Conflict
from cas.index import open_index
from cas.index.schema import KIND_DATA, KIND_MANIFEST
from cas.store import Store
from tests.fixtures.gc import cas_env, data, index_held_open, run_cas

pytestmark = pytest.mark.integration

BUCKET = "old"


def _objects() -> dict[str, bytes]:
    shared = data(600_000, 1)
    return {"a": shared, "b": shared + data(400_000, 2), "c": data(1_200_000, 3), "empty": b"",
            "small": b"hello"}


def _make_format1(settings, objects: dict[str, bytes]) -> dict[str, bytes]:
    """A format-1 store holding ``objects`` (and a multipart object ``mp``); what each name holds."""
    expected = {k: v for k, v in objects.items()}
    with Store.open_store(settings) as s:
        s.create_bucket(BUCKET)
        for key, body in objects.items():
            s.put(BUCKET, key, body)
        parts = [data(300_000, 10), data(200_000, 11)]
        up = s.create_upload(BUCKET, "mp")
        etags = [s.upload_part(up, n, body).etag for n, body in enumerate(parts, start=1)]
        s.complete_upload(up, list(enumerate(etags, start=1)), min_part_size=1)
        expected["mp"] = b"".join(parts)
        packs_of(s.blocks).flush_all()
        legacy = LocalBlockStore(settings.blocks_dir)
        with s.index.read() as t:
            ids = [bid for bid, _ in t.iter_locs(KIND_DATA)]
        for bid in ids:
            legacy.put(bid, s.blocks.get(bid))
        legacy.sync(ids)
    index = open_index(settings)
    try:
        with index.write() as t:
            for kind in (KIND_DATA, KIND_MANIFEST):
                for eid in [eid for eid, _ in t.iter_locs(kind)]:
                    t.delete_loc(kind, eid)
            for pid in [pid for pid, _ in t.iter_packs()]:
                t.delete_pack(pid)
            t.put_meta("format", {**t.get_meta("format"), "version": 1})
            t.put_meta("store_id", None)  # format 1 predates store ids
    finally:
        index.close()
    shutil.rmtree(settings.blocks_dir / "packs")
    shutil.rmtree(settings.blocks_dir / "meta")
    return expected


def _legacy_files(settings) -> list[str]:
    root = settings.blocks_dir
    return sorted(f for d in os.listdir(root) if len(d) == 2 for f in os.listdir(root / d))


def _assert_whole(settings, expected: dict[str, bytes]) -> None:
    with Store.open_store(settings) as s:
        for key, body in expected.items():
            assert s.get_bytes(BUCKET, key) == body, key
    out = run_cas(settings.data_dir, "verify", "--deep", "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["clean"], report["findings"]
    assert report["manifests_not_in_packs"] == 0 and report["objects"] == len(expected)


def test_a_format1_store_is_refused_then_migrated_whole(settings):
    expected = _make_format1(settings, _objects())
    legacy = _legacy_files(settings)
    assert len(legacy) > 20
    with pytest.raises(ConfigError, match="cas migrate"):
        Store.open_store(settings)
    refused = run_cas(settings.data_dir, "ls", BUCKET)
    assert refused.returncode == ConfigError.exit_code and b"cas migrate --data" in refused.stderr
    (settings.blocks_dir / "tmp" / "leftover.partial").write_bytes(b"x")  # an interrupted old write

    out = run_cas(settings.data_dir, "migrate", "--json", "--batch", "7")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    with Store.open_store(settings) as s, s.index.read() as t:
        manifests = sum(1 for _ in t.iter_manifests())
    assert summary["blocks_moved"] == len(legacy) and summary["blocks_corrupt"] == 0
    assert summary["manifests_moved"] == manifests and summary["packs"] >= 1
    assert _legacy_files(settings) == [] and not (settings.blocks_dir / "tmp").exists()
    _assert_whole(settings, expected)

    again = run_cas(settings.data_dir, "migrate")
    assert again.returncode == 0 and b"nothing to do" in again.stdout


CRASH_POINTS = ["migrate.after_sync", "migrate.after_delete", "migrate.before_format"]


@pytest.mark.crash
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_migration_killed_midway_finishes_on_the_next_run_with_nothing_lost(settings, point):
    expected = _make_format1(settings, _objects())
    total = len(_legacy_files(settings))
    crashed = run_cas(settings.data_dir, "migrate", "--batch", "5", env=cas_env(CAS_TESTONLY_CRASH_AT=point))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    with pytest.raises(ConfigError, match="cas migrate"):
        Store.open_store(settings)  # still format 1 until the end
    left = len(_legacy_files(settings))
    assert left == (total if point == "migrate.after_sync" else 0 if point == "migrate.before_format" else total - 5)

    out = run_cas(settings.data_dir, "migrate", "--json", "--batch", "5")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["blocks_moved"] + summary["blocks_found_located"] == left
    assert summary["blocks_found_located"] == (5 if point == "migrate.after_sync" else 0)
    assert _legacy_files(settings) == []
    _assert_whole(settings, expected)
    # the killed run's open pack is an abandoned pack: the next gc moves what it holds and deletes it
    gc = run_cas(settings.data_dir, "gc", "--delete", "--min-age", "0", "--json")
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout)["abandoned_packs"] == (0 if point == "migrate.before_format" else 1)
    _assert_whole(settings, expected)



def test_migrate_refuses_while_another_process_has_the_store_open(settings):
    expected = _make_format1(settings, {"x": data(500_000, 4)})
    with index_held_open(settings.index_dir) as holder:
        busy = run_cas(settings.data_dir, "migrate")
        assert busy.returncode == Conflict.exit_code, busy.stderr
        assert f"pid {holder.pid}".encode() in busy.stderr and b"stop `cas serve`" in busy.stderr
    assert len(_legacy_files(settings)) > 0  # nothing was touched
    out = run_cas(settings.data_dir, "migrate")
    assert out.returncode == 0, out.stderr
    _assert_whole(settings, expected)


def _block_ids(settings, key: str) -> list[bytes]:
    """The blocks of ``key``, read from a format-1 store's index."""
    from cas.gc.mark import manifest_ids_of
    from cas.manifest import Manifest

    index = open_index(settings)
    try:
        with index.read() as t:
            return list(Manifest.decode(t.get_manifest(manifest_ids_of(t.get_object(BUCKET, key)))).ids)
    finally:
        index.close()


def test_a_corrupt_legacy_block_is_left_behind_and_reported(settings, tmp_path):
    body = data(500_000, 5)
    expected = _make_format1(settings, {"x": body, "y": data(300_000, 6)})
    rotten = _block_ids(settings, "x")[2]
    path = settings.blocks_dir / rotten.hex()[:2] / rotten.hex()
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x55
    path.write_bytes(bytes(raw))
    out = run_cas(settings.data_dir, "migrate", "--json")
    assert out.returncode == 1, out.stderr  # done, but something needs attention
    summary = json.loads(out.stdout)
    assert (summary["blocks_corrupt"], summary["corrupt"]) == (1, [rotten.hex()])
    assert _legacy_files(settings) == [rotten.hex()]  # left where it was, nothing else
    found = run_cas(settings.data_dir, "verify", "--json")
    report = json.loads(found.stdout)
    assert [(f["kind"], f["block"]) for f in report["findings"]] == [("missing_block", rotten.hex())]
    assert report["damaged_objects"] == [f"{BUCKET}/x"]
    src = tmp_path / "x"
    src.write_bytes(body)
    assert run_cas(settings.data_dir, "put", str(src), f"{BUCKET}/x-again").returncode == 0  # heals x
    _assert_whole(settings, {**expected, "x-again": body})


@pytest.mark.s3backend
def test_a_format1_store_on_s3_is_migrated_into_s3_packs(settings, seaweed, s3_blockstore_factory):
    """One S3 object per block (``PREFIX/blocks/ab/<hex>``) becomes packs (``PREFIX/packs/ab/<hex>``)
    in the same bucket and prefix."""
    from cas.blocks.packs.s3files import S3PackFiles
    from cas.config import load_settings

    legacy = s3_blockstore_factory()
    url = legacy.kind
    expected = _make_format1(settings, {"x": data(900_000, 7), "y": data(200_000, 8)})
    local = LocalBlockStore(settings.blocks_dir)
    ids = [bid for bid, _ in local.iter_ids()]
    for bid in ids:  # the blocks go to S3, as a format-1 store on S3 kept them
        legacy.put(bid, local.get(bid))
        local.delete(bid)
    index = open_index(settings)
    try:
        with index.write() as t:
            t.put_meta("blocks", {"url": url, "endpoint": seaweed.endpoint})
    finally:
        index.close()
    flags = ["--blocks", url, "--blocks-endpoint", seaweed.endpoint, "--blocks-access-key", seaweed.access_key,
             "--blocks-secret-key", seaweed.secret_key]
    out = run_cas(settings.data_dir, "migrate", "--json", "--batch", "10", *flags)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["blocks_moved"] == len(ids) > 10
    assert list(legacy.iter_ids()) == []
    files = S3PackFiles(seaweed.bucket, legacy.prefix, endpoint=seaweed.endpoint, access_key=seaweed.access_key,
                        secret_key=seaweed.secret_key)
    try:
        assert len(list(files.iter_packs())) >= 1
    finally:
        files.close()
    s3_settings = load_settings(settings.data_dir, {"blocks": {"url": url, "endpoint": seaweed.endpoint,
                                                               "access_key": seaweed.access_key,
                                                               "secret_key": seaweed.secret_key}}, env={})
    with Store.open_store(s3_settings) as s:
        for key, body in expected.items():
            assert s.get_bytes(BUCKET, key) == body, key
    checked = run_cas(settings.data_dir, "verify", "--deep", "--json", *flags)
    assert checked.returncode == 0 and json.loads(checked.stdout)["clean"], checked.stdout
