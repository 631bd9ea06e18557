"""Unit tests of the WebDAV front's parts: lock storage in the index, error table, Basic parsing."""

from __future__ import annotations

import base64
import errno

import pytest
from wsgidav.lock_man.lock_manager import LockManager

from cas import errors
from cas.config import load_settings
from cas.protocols.http import parse_basic
from cas.protocols.webdav.error import status_of
from cas.protocols.webdav.lock import StoreLockStorage
from cas.store import Store

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path):
    s = Store.open_store(load_settings(tmp_path / "data", env={}))
    yield s
    s.close()


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _lock(root="/b/x", depth="0", scope="exclusive", timeout=60):
    return {"root": root, "type": "write", "scope": scope, "depth": depth, "owner": b"<owner>me</owner>",
            "timeout": timeout, "principal": "alice"}


def test_lock_roundtrip_listing_and_expiry(store):
    clock = Clock()
    ls = StoreLockStorage(store, clock=clock)
    a = ls.create("/b/x", _lock())
    b = ls.create("/b/x/y/z", _lock("/b/x/y/z", timeout=10))
    c = ls.create("/b/xy", _lock("/b/xy"))
    assert ls.get(a["token"])["owner"] == b"<owner>me</owner>"
    roots = lambda **kw: sorted(lk["root"] for lk in ls.get_lock_list("/b/x", token_only=False, **kw))
    assert roots(include_root=True, include_children=False) == ["/b/x"]
    assert roots(include_root=False, include_children=True) == ["/b/x/y/z"]  # not the sibling /b/xy
    assert roots(include_root=True, include_children=True) == ["/b/x", "/b/x/y/z"]
    assert len(ls.get_lock_list("/", include_root=False, include_children=True, token_only=True)) == 3
    clock.now += 11
    assert ls.get(b["token"]) is None  # expired and dropped
    assert roots(include_root=False, include_children=True) == []
    ls.refresh(a["token"], timeout=600)
    clock.now += 100
    assert ls.get(a["token"]) is not None and ls.get(c["token"]) is None
    assert ls.delete(a["token"]) is True and ls.delete(a["token"]) is False
    assert store.kv_scan("davlockurl") == []


def test_locks_persist_across_reopen(tmp_path):
    settings = load_settings(tmp_path / "data", env={})
    with Store.open_store(settings) as s:
        token = StoreLockStorage(s).create("/b/f", _lock("/b/f", timeout=-1))["token"]
    with Store.open_store(settings) as s:
        lm = LockManager(StoreLockStorage(s))
        assert lm.is_url_locked("/b/f")
        assert lm.get_lock(token, key="principal") == "alice"


def test_long_lock_roots(store):
    ls = StoreLockStorage(store)
    long_root = "/b/" + "/".join(["%C3%BC" * 20] * 8)
    tok = ls.create(long_root, _lock(long_root))["token"]
    assert [lk["token"] for lk in ls.get_lock_list(long_root, include_root=True, include_children=False,
                                                     token_only=False)] == [tok]
    assert ls.get_lock_list("/b", include_root=False, include_children=True, token_only=True) == [tok]
    assert ls.get_lock_list("/c", include_root=False, include_children=True, token_only=True) == []
    assert ls.delete(tok)
    assert store.kv_scan("davlocklong") == []


def test_lock_manager_conflicts_over_the_store(store):
    lm = LockManager(StoreLockStorage(store))
    lk = lm.acquire(url="/b/dir", lock_type="write", lock_scope="exclusive", lock_depth="infinity",
                    lock_owner=b"", timeout=60, principal="alice", token_list=[])
    from wsgidav.dav_error import DAVError

    with pytest.raises(DAVError) as exc:
        lm.check_write_permission(url="/b/dir/file", depth="0", token_list=[], principal="alice")
    assert exc.value.value == 423
    lm.check_write_permission(url="/b/dir/file", depth="0", token_list=[lk["token"]], principal="alice")


@pytest.mark.parametrize(("exc", "status"), [
    (errors.BucketNotFound(), 404), (errors.ObjectNotFound(), 404), (errors.BlockNotFound(), 500),
    (errors.BucketAlreadyExists(), 409), (errors.BucketNotEmpty(), 409), (errors.PreconditionFailed(), 412),
    (errors.AccessDenied(), 403), (errors.KeyTooLong(), 414), (errors.InvalidName(), 400),
    (errors.BadDigest(), 400), (errors.IncompleteBody(), 400), (errors.InvalidRange(), 416),
    (errors.IntegrityError(), 500), (errors.TransientStoreError(), 503), (errors.PermanentStoreError(), 500),
])
def test_error_table(exc, status):
    assert status_of(exc) == status


def test_full_disk_is_507():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as os_exc:
            raise errors.PermanentStoreError("write failed") from os_exc
    except errors.PermanentStoreError as exc:
        assert status_of(exc) == 507


@pytest.mark.parametrize(("header", "expected"), [
    ("Basic " + base64.b64encode(b"alice:s3cr:et").decode(), ("alice", "s3cr:et")),
    ("basic " + base64.b64encode("jürgen:pässword".encode()).decode(), ("jürgen", "pässword")),
    ("Basic " + base64.b64encode(b"alice:").decode(), ("alice", "")),
    ("Basic " + base64.b64encode(b":nouser").decode(), None),
    ("Basic " + base64.b64encode(b"nocolon").decode(), None),
    ("Basic %%%", None), ("Basic", None), ("Bearer x", None), ("", None),
])
def test_parse_basic(header, expected):
    assert parse_basic(header) == expected


def test_a_lock_owner_is_stored_as_one_well_formed_element():
    import xml.etree.ElementTree as ET

    from cas.protocols.webdav.lock import _owner_element

    owner = b'<D:owner xmlns:D="DAV:"><D:href>http://example.org/~me</D:href></D:owner>'
    assert _owner_element(owner + b"tail text") == owner  # ElementTree's tail is not the owner's
    assert _owner_element(owner) == owner
    broken = _owner_element(b"<D:owner><unclosed")  # not XML even without a tail: kept as text
    assert ET.fromstring(broken).text == "<D:owner><unclosed"
    assert _owner_element(b"") == b""
