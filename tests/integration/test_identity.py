"""Store identity (issue 13): an index is opened only over the backend it belongs to, and a DATA
that is not a store is never mistaken for an empty one.

Each refusal is checked three ways: a clear one-line error naming the way out, a non-zero exit (the
real command line, ``python -m cas``), and nothing deleted or created (packs and meta objects
counted before and after, directories listed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cas.blocks import packs_of
from cas.blocks.packs.files import MemoryPackFiles
from cas.config import load_settings
from cas.errors import IdentityMismatch, IndexDamaged, NotAStore
from cas.meta import identity
from cas.meta.objects import STORE_NAME, encode, log_name, snap_done_name
from cas.store import Store
from tests.fixtures.core import bytes_of
from tests.fixtures.gc import cas_env

pytestmark = pytest.mark.integration

BUCKET = "idb"
NOT_A_STORE = NotAStore.exit_code  # 2
MISMATCH = IdentityMismatch.exit_code  # 2
DAMAGED = IndexDamaged.exit_code  # 8


def cas(data: Path, *args, extra: tuple = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cas", *map(str, args), "--data", str(data), *extra],
                          capture_output=True, text=True, timeout=120, env=cas_env())


def failed(r: subprocess.CompletedProcess, code: int) -> str:
    """The one stderr line of a command that failed with ``code`` (never a traceback)."""
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def tree(path: Path) -> dict[str, int]:
    """Every file under ``path`` with its size (packs, meta objects, index files)."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def packs(data: Path) -> list[str]:
    return sorted(str(p.name) for p in (data / "blocks" / "packs").rglob("*.pack"))


def make_store(data: Path, objects: int = 3, *extra) -> str:
    """A local store made through the command line, holding ``objects`` objects; its store id."""
    assert cas(data, "init", extra=extra).returncode == 0
    assert cas(data, "mb", BUCKET, extra=extra).returncode == 0
    for i in range(objects):
        src = data.parent / f"src-{data.name}-{i}"
        src.write_bytes(bytes_of(300_000, sum(data.name.encode()) * 100 + i))
        r = cas(data, "put", src, f"{BUCKET}/k{i}", extra=extra)
        assert r.returncode == 0, r.stderr
    return json.loads((data / "blocks" / "meta" / STORE_NAME).read_text())["store_id"]


def index_meta(data: Path, name: str):
    from cas.index.lmdb_index import LmdbIndex

    index = LmdbIndex(data / "index", map_size=1 << 30)
    try:
        with index.read() as t:
            return t.get_meta(name)
    finally:
        index.close()


# -- identity recorded --------------------------------------------------------------------------

def test_init_records_one_id_in_the_index_and_in_the_backend(tmp_path):
    data = tmp_path / "d"
    sid = make_store(data, objects=1)
    assert len(sid) == 32 and int(sid, 16) >= 0
    assert index_meta(data, "store_id") == sid
    assert index_meta(data, "store_id_pending") is None
    doc = json.loads((data / "blocks" / "meta" / STORE_NAME).read_text())
    assert doc["format"] == 2 and doc["codec"] == "zstd:3" and doc["chunker"]["avg"] == 65536
    other = make_store(tmp_path / "e", objects=0)
    assert other != sid


# -- mismatched index and backend ----------------------------------------------------------------

def test_an_index_swapped_in_from_another_store_is_refused_by_every_command(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    id_a, id_b = make_store(a), make_store(b)
    # b's directory now holds a's index over b's blocks (a copy: a stays whole)
    shutil.rmtree(b / "index")
    shutil.copytree(a / "index", b / "index")
    before_a, before_b = tree(a), tree(b)
    for args in (("ls", BUCKET), ("verify",), ("gc", "--delete", "--min-age", "0"), ("stats",),
                 ("serve", "--s3", "127.0.0.1:0", "--http", "127.0.0.1:0")):
        line = failed(cas(b, *args), MISMATCH)
        assert f"belongs to store {id_a}" in line and f"holds store {id_b}" in line, line
        assert "cas recover" in line
    assert tree(a) == before_a and tree(b) == before_b
    assert len(packs(b)) >= 1


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_two_stores_on_one_backend(tmp_path, kind):
    """A second store over a backend that holds the first one's packs is never created; the first
    store's index over the second's (swapped) is refused; nothing of either is touched."""
    a = load_settings(tmp_path / "a", env={})
    b = load_settings(tmp_path / "b", env={})
    from cas.blocks.packs.files import LocalPackFiles

    files = MemoryPackFiles() if kind == "memory" else LocalPackFiles(tmp_path / "shared")
    with Store.open_store(a, blocks=files) as s:
        s.create_bucket(BUCKET)
        s.put(BUCKET, "x", bytes_of(500_000, 1))
        sid = identity.check(s.index, packs_of(s.blocks).files, s.settings)
    held = sorted(p for p, _, _ in files.iter_packs())
    with pytest.raises(IdentityMismatch, match=f"holds cas store {sid}.*cas recover"):
        Store.open_store(b, blocks=files)
    assert not b.data_dir.exists()  # decided before creating anything
    assert sorted(p for p, _, _ in files.iter_packs()) == held
    # another store's backend under a's index
    other = MemoryPackFiles() if kind == "memory" else LocalPackFiles(tmp_path / "other")
    with Store.open_store(b, blocks=other) as s:
        s.create_bucket(BUCKET)
        other_id = identity.read_store_json(other)["store_id"]
    with pytest.raises(IdentityMismatch, match=f"belongs to store {sid}.*holds store {other_id}"):
        Store.open_store(a, blocks=other)
    with Store.open_store(a, blocks=files) as s:  # a is still whole
        assert s.get_bytes(BUCKET, "x") == bytes_of(500_000, 1)


def test_an_index_whose_backend_holds_no_store_is_refused(tmp_path):
    data = tmp_path / "d"
    sid = make_store(data, objects=1)
    (data / "blocks" / "meta" / STORE_NAME).unlink()
    before = tree(data)
    line = failed(cas(data, "ls"), MISMATCH)
    assert f"holds no cas store; expected store id {sid}" in line
    assert tree(data) == before


# -- missing, empty or older index on a backend with data ---------------------------------------

@pytest.mark.parametrize("how", ["deleted", "empty dir", "empty data.mdb"])
def test_a_lost_index_over_a_backend_with_data_names_recover(tmp_path, how):
    data = tmp_path / "d"
    sid = make_store(data)
    shutil.rmtree(data / "index")
    if how != "deleted":
        (data / "index").mkdir()
    if how == "empty data.mdb":
        (data / "index" / "data.mdb").write_bytes(b"")
    before = tree(data)
    assert len(packs(data)) >= 1
    for args in (("init",), ("serve", "--s3", "127.0.0.1:0", "--http", "127.0.0.1:0")):
        line = failed(cas(data, *args), MISMATCH)
        assert f"holds cas store {sid}" in line and f"cas recover --data {data}" in line, line
    for args in (("ls",), ("verify",), ("gc", "--delete", "--min-age", "0")):
        line = failed(cas(data, *args), NOT_A_STORE)
        assert f"{data} is not a cas store" in line and "cas recover" in line, line
    assert tree(data) == before


@pytest.mark.parametrize("what", ["log", "snapshot"])
def test_an_index_older_than_the_backend_is_refused(tmp_path, what):
    settings = load_settings(tmp_path / "d", env={})
    files = MemoryPackFiles()
    with Store.open_store(settings, blocks=files) as s:
        s.create_bucket(BUCKET)
        with s.index.read() as t:
            pos = t.counter("mlog")  # the bucket's record (shipped when the store closes)
    assert pos >= 1
    # the backend's metadata log reached 7 positions further: changes this index never saw
    if what == "log":
        files.put_meta(log_name(pos + 1, pos + 7), encode([]))
    else:
        files.put_meta(snap_done_name(pos + 7), encode([{"n": pos + 7, "parts": 0}]))
    with pytest.raises(IdentityMismatch,
                       match=rf"older than the backend.*position {pos}, the backend's {pos + 7}.*cas recover"):
        Store.open_store(settings, blocks=files)
    from cas.index.lmdb_index import LmdbIndex

    index = LmdbIndex(settings.index_dir, map_size=1 << 30)
    try:
        with index.write() as t:  # an index whose own log has reached 7 is not older
            t.add_counter("mlog", 7)
    finally:
        index.close()
    files.put_meta(snap_done_name(pos + 9).replace("done", "part-000000"), encode([]))  # incomplete: no done
    with Store.open_store(settings, blocks=files, create=False) as s:
        assert s.get_bytes is not None


# -- DATA that is not a store --------------------------------------------------------------------

@pytest.mark.parametrize("command", [("verify",), ("gc",), ("gc", "--delete"), ("ls",), ("stats",), ("mb", "abc"),
                                     ("user", "list"), ("events",), ("migrate",)])
def test_commands_other_than_init_and_serve_refuse_a_missing_or_empty_data_dir(tmp_path, command):
    missing = tmp_path / "typo"
    line = failed(cas(missing, *command), NOT_A_STORE)
    assert f"{missing} is not a cas store (no such directory)" in line and "cas init" in line
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    line = failed(cas(empty, *command), NOT_A_STORE)
    assert f"{empty} is not a cas store (no index)" in line
    assert list(empty.iterdir()) == []


def test_the_python_api_refuses_too_without_create(tmp_path):
    settings = load_settings(tmp_path / "typo", env={})
    with pytest.raises(NotAStore):
        Store.open_store(settings, create=False)
    assert not settings.data_dir.exists()
    with Store.open_store(settings) as s:  # the default creates (init, serve, tests)
        s.create_bucket(BUCKET)
    with Store.open_store(settings, create=False) as s:
        assert [b.name for b in s.buckets()] == [BUCKET]


# -- a damaged index file ------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["cut in half", "cut to one page", "garbage"])
def test_a_truncated_or_garbage_index_is_a_clear_error_and_nothing_is_deleted(tmp_path, damage):
    data = tmp_path / "d"
    make_store(data, objects=20)
    mdb = data / "index" / "data.mdb"
    size = mdb.stat().st_size
    if damage == "garbage":
        mdb.write_bytes(os.urandom(size))
    else:
        with open(mdb, "r+b") as f:
            f.truncate(size // 2 if damage == "cut in half" else 4096)
    before = tree(data)
    for args in (("ls", BUCKET), ("verify",), ("gc", "--delete", "--min-age", "0"),
                 ("serve", "--s3", "127.0.0.1:0", "--http", "127.0.0.1:0")):
        line = failed(cas(data, *args), DAMAGED)
        assert "index" in line and "damaged" in line and f"cas recover --data {data}" in line, line
    after = tree(data)
    after.pop("index/lock.mdb", None), before.pop("index/lock.mdb", None)
    assert after == before


# -- upgrades and interrupted creation -----------------------------------------------------------

def test_a_store_from_before_store_ids_adopts_one_in_place(tmp_path):
    settings = load_settings(tmp_path / "d", env={})
    with Store.open_store(settings) as s:
        s.create_bucket(BUCKET)
        s.put(BUCKET, "x", b"kept")
        with s.index.write() as t:
            t.put_meta("store_id", None)
        files = packs_of(s.blocks).files
        files.delete_meta(STORE_NAME)
    with Store.open_store(settings, create=False) as s:
        sid = identity.check(s.index, packs_of(s.blocks).files, s.settings)
        assert s.get_bytes(BUCKET, "x") == b"kept"
    assert json.loads((settings.blocks_dir / "meta" / STORE_NAME).read_bytes())["store_id"] == sid


def test_a_store_from_before_store_ids_over_another_stores_backend_is_refused(tmp_path):
    a = load_settings(tmp_path / "a", env={})
    files = MemoryPackFiles()
    with Store.open_store(a, blocks=files) as s:
        s.create_bucket(BUCKET)
        with s.index.write() as t:
            t.put_meta("store_id", None)  # as if from before store ids
    other = MemoryPackFiles()
    other.put_meta(STORE_NAME, identity.store_json("ab" * 16, a))
    with pytest.raises(IdentityMismatch, match="predates store ids.*holds store abab"):
        Store.open_store(a, blocks=other)


@pytest.mark.parametrize("crash", ["before store.json", "after store.json"])
def test_creation_interrupted_between_index_and_backend_is_finished_by_the_next_open(tmp_path, crash):
    settings = load_settings(tmp_path / "d", env={})
    files = MemoryPackFiles()
    with Store.open_store(settings, blocks=files) as s:
        sid = identity.check(s.index, files, s.settings)
        with s.index.write() as t:  # back to the state between the steps of establish
            t.put_meta("store_id", None)
            t.put_meta("store_id_pending", sid)
    if crash == "before store.json":
        files.delete_meta(STORE_NAME)
    with Store.open_store(settings, blocks=files, create=False) as s:
        assert identity.check(s.index, files, s.settings) == sid
    assert identity.read_store_json(files)["store_id"] == sid


# -- S3 ------------------------------------------------------------------------------------------

@pytest.mark.s3backend
def test_s3_a_second_store_on_the_same_prefix_and_a_lost_index_are_refused(tmp_path, seaweed):
    import uuid

    url = f"s3://{seaweed.bucket}/id-{uuid.uuid4().hex[:10]}"
    flags = ("--blocks", url, "--blocks-endpoint", seaweed.endpoint, "--blocks-access-key", seaweed.access_key,
             "--blocks-secret-key", seaweed.secret_key)
    a, b = tmp_path / "a", tmp_path / "b"
    assert cas(a, "init", extra=flags).returncode == 0
    assert cas(a, "mb", BUCKET, extra=flags).returncode == 0
    src = tmp_path / "src"
    src.write_bytes(bytes_of(400_000, 3))
    assert cas(a, "put", src, f"{BUCKET}/x", extra=flags).returncode == 0
    files = _s3files(seaweed, url)
    try:
        sid = identity.read_store_json(files)["store_id"]
        held = sorted(p for p, _, _ in files.iter_packs())
        assert held
        line = failed(cas(b, "init", extra=flags), MISMATCH)
        assert f"holds cas store {sid}" in line and f"cas recover --data {b} --blocks {url}" in line, line
        assert not b.exists()
        shutil.rmtree(a / "index")
        line = failed(cas(a, "serve", "--s3", "127.0.0.1:0", "--http", "127.0.0.1:0", extra=flags), MISMATCH)
        assert f"holds cas store {sid}" in line
        assert not (a / "index").exists()
        failed(cas(a, "gc", "--delete", "--min-age", "0", extra=flags), NOT_A_STORE)
        assert sorted(p for p, _, _ in files.iter_packs()) == held
    finally:
        files.close()


def _s3files(seaweed, url):
    from cas.blocks.packs.s3files import S3PackFiles

    return S3PackFiles.from_url(url, endpoint=seaweed.endpoint, access_key=seaweed.access_key,
                                secret_key=seaweed.secret_key)
