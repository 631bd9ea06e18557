"""The folder rules of ``cas.namespace`` over a real local Store (LMDB + local blocks)."""

from __future__ import annotations

import pytest

from cas import errors
from cas.index.schema import max_key_bytes
from cas.namespace import MARKER_TYPE, Namespace, parent_prefix

pytestmark = pytest.mark.unit


@pytest.fixture
def ns(local_store):
    local_store.create_bucket("bkt", owner="alice")
    return Namespace(local_store)


def keys(ns: Namespace, bucket: str = "bkt") -> list[str]:
    return [i.key for i in ns.iter_tree(bucket, "")]


def put(ns: Namespace, key: str, data: bytes = b"x", bucket: str = "bkt", **kw):
    return ns.store.put(bucket, key, data, user="alice", **kw)


def test_parent_prefix():
    assert parent_prefix("a/b/c.txt") == "a/b/"
    assert parent_prefix("a/b/") == "a/"
    assert parent_prefix("top.txt") == "" and parent_prefix("dir/") == ""


def test_make_folder_writes_a_marker_and_exclusive_refuses_a_second(ns):
    info = ns.make_folder("bkt", "docs/", user="alice", props={"{x:}p": "<p/>"})
    assert info.key == "docs/" and info.size == 0 and info.content_type == MARKER_TYPE
    assert info.props == {"{x:}p": "<p/>"}
    with pytest.raises(errors.PreconditionFailed):
        ns.make_folder("bkt", "docs", user="alice", exclusive=True)
    with pytest.raises(errors.InvalidName):
        ns.make_folder("bkt", "/", user="alice")


def test_lookup_file_wins_over_folder_and_folder_may_be_implied(ns):
    put(ns, "x")
    put(ns, "x/inner")
    put(ns, "implied/f")
    assert not ns.lookup("bkt", "x").folder
    implied = ns.lookup("bkt", "implied")
    assert implied.folder and implied.key == "implied/" and implied.info is None
    ns.make_folder("bkt", "empty")
    marked = ns.lookup("bkt", "empty")
    assert marked.folder and marked.info is not None
    assert ns.lookup("bkt", "nothing") is None
    assert ns.lookup("bkt", "").folder and ns.lookup("bkt", "").key == ""
    # the folder x/ is shadowed by the file x: listed once, as the file
    assert [(n, i is None) for n, i in ns.members("bkt", "")] == [("x", False), ("empty", True), ("implied", True)]


def test_list_dir_hides_the_folders_own_marker(ns):
    ns.make_folder("bkt", "d")
    put(ns, "d/a.txt")
    ns.make_folder("bkt", "d/sub")
    page = ns.list_dir("bkt", "d/")
    assert [e.key for e in page.entries] == ["d/a.txt"] and page.common_prefixes == ["d/sub/"]
    assert [n for n, _ in ns.members("bkt", "d/")] == ["a.txt", "sub"]


def test_deleting_the_last_file_keeps_its_folder(ns):
    put(ns, "a/b/only.txt")
    ns.delete("bkt", "a/b/only.txt")
    assert keys(ns) == ["a/b/"]
    assert ns.lookup("bkt", "a/b").folder
    put(ns, "top.txt")
    ns.delete("bkt", "top.txt")  # the bucket's root needs no marker
    assert keys(ns) == ["a/b/"]


def test_delete_tree_removes_everything_below_and_keeps_the_parent(ns):
    for k in ("p/t/", "p/t/1", "p/t/2/3", "p/other"):
        put(ns, k, b"" if k.endswith("/") else b"x")
    result = ns.delete_tree("bkt", "p/t/", user="alice")
    assert result.ok and result.done == 3
    assert keys(ns) == ["p/other"]
    ns.delete_tree("bkt", "p/", user="alice")
    assert keys(ns) == []  # p/ sat at the root: no marker for the root


def test_move_of_the_last_file_keeps_the_folder(ns):
    put(ns, "src/f.txt", b"data")
    ns.make_folder("bkt", "dst")
    result = ns.move(ns.lookup("bkt", "src/f.txt"), "bkt", "dst/f.txt", user="alice")
    assert result.ok and result.done == 1
    assert keys(ns) == ["dst/", "dst/f.txt", "src/"]
    assert ns.store.get_bytes("bkt", "dst/f.txt") == b"data"


def test_move_onto_an_existing_name_overwrites_only_when_asked(ns):
    put(ns, "a.txt", b"new")
    put(ns, "b.txt", b"old")
    with pytest.raises(errors.PreconditionFailed):
        ns.move(ns.lookup("bkt", "a.txt"), "bkt", "b.txt", user="alice")
    assert ns.store.get_bytes("bkt", "b.txt") == b"old"
    ns.move(ns.lookup("bkt", "a.txt"), "bkt", "b.txt", user="alice", overwrite=True)
    assert keys(ns) == ["b.txt"] and ns.store.get_bytes("bkt", "b.txt") == b"new"
    # a copy as well
    put(ns, "c.txt", b"c")
    with pytest.raises(errors.PreconditionFailed):
        ns.copy(ns.lookup("bkt", "c.txt"), "bkt", "b.txt", user="alice")
    ns.copy(ns.lookup("bkt", "c.txt"), "bkt", "b.txt", user="alice", overwrite=True)
    assert ns.store.get_bytes("bkt", "b.txt") == b"c" and ns.store.get_bytes("bkt", "c.txt") == b"c"


def test_a_folder_replaces_an_existing_folder_whole_never_merges(ns):
    for k in ("s/1", "s/2"):
        put(ns, k, k.encode())
    for k in ("d/1", "d/old"):
        put(ns, k, b"d")
    with pytest.raises(errors.PreconditionFailed):
        ns.move(ns.lookup("bkt", "s"), "bkt", "d", user="alice")
    assert keys(ns) == ["d/1", "d/old", "s/1", "s/2"]
    result = ns.move(ns.lookup("bkt", "s"), "bkt", "d", user="alice", overwrite=True)
    assert result.ok and result.done == 2
    assert keys(ns) == ["d/", "d/1", "d/2"]  # d/old went with the old d; d/ marks the new folder
    assert ns.store.get_bytes("bkt", "d/1") == b"s/1"


def test_tree_move_carries_the_markers_properties_and_refuses_itself(ns):
    ns.make_folder("bkt", "t", props={"{x:}k": "<v/>"})
    put(ns, "t/a/b.txt")
    with pytest.raises(errors.MoveIntoItself):
        ns.move(ns.lookup("bkt", "t"), "bkt", "t/inner", user="alice")
    with pytest.raises(errors.MoveIntoItself):
        ns.move(ns.lookup("bkt", "t"), "bkt", "t", user="alice", overwrite=True)
    with pytest.raises(errors.MoveIntoItself):  # replacing a folder that holds the source
        ns.move(ns.lookup("bkt", "t/a"), "bkt", "t", user="alice", overwrite=True)
    ns.store.create_bucket("ckt", owner="alice")
    result = ns.move(ns.lookup("bkt", "t"), "ckt", "moved", user="alice")
    assert result.ok and result.done == 2
    assert keys(ns) == [] and keys(ns, "ckt") == ["moved/", "moved/a/b.txt"]
    assert ns.store.stat("ckt", "moved/").props == {"{x:}k": "<v/>"}


def test_copy_of_a_folder_without_depth_copies_only_the_folder(ns):
    ns.make_folder("bkt", "t", props={"{x:}k": "<v/>"})
    put(ns, "t/f")
    result = ns.copy(ns.lookup("bkt", "t"), "bkt", "u", user="alice", depth_infinity=False)
    assert result.ok and keys(ns) == ["t/", "t/f", "u/"]
    assert ns.store.stat("bkt", "u/").props == {"{x:}k": "<v/>"}
    result = ns.copy(ns.lookup("bkt", "t"), "bkt", "v", user="alice")
    assert keys(ns) == ["t/", "t/f", "u/", "v/", "v/f"]


def test_an_implied_folder_moved_gets_a_marker_and_its_parent_stays(ns):
    put(ns, "p/q/f")
    result = ns.move(ns.lookup("bkt", "p/q"), "bkt", "r", user="alice")
    assert result.ok and result.done == 1
    assert keys(ns) == ["p/", "r/", "r/f"]


def test_per_key_errors_are_collected_and_the_source_folder_stays(ns):
    # a key that fits below "s/" but is too long below a longer destination prefix: refused
    # by the store for that one key (KeyTooLong), while the others move
    long_rel = "n" * (max_key_bytes("bkt") - len("s/"))
    ns.make_folder("bkt", "s")
    for k in ("s/1", "s/" + long_rel, "s/3"):
        put(ns, k)
    result = ns.move(ns.lookup("bkt", "s"), "bkt", "dest", user="alice")
    assert [(k, type(e)) for k, e in result.errors] == [("s/" + long_rel, errors.KeyTooLong)]
    assert result.done == 3  # s/1, s/3 and a copy of the marker s/
    assert keys(ns) == ["dest/", "dest/1", "dest/3", "s/", "s/" + long_rel]


def test_a_bucket_of_only_markers_is_empty(ns):
    ns.make_folder("bkt", "a")
    ns.make_folder("bkt", "a/b")
    assert ns.is_empty("bkt")
    put(ns, "a/file")
    assert not ns.is_empty("bkt")
    with pytest.raises(errors.BucketNotEmpty):
        ns.delete_bucket("bkt", user="alice")
    assert keys(ns) == ["a/", "a/b/", "a/file"]  # nothing went
    ns.store.delete("bkt", "a/file")
    ns.delete_bucket("bkt", user="alice")
    with pytest.raises(errors.BucketNotFound):
        ns.store.bucket("bkt")


def test_recursive_bucket_delete(ns):
    put(ns, "a/b/c")
    put(ns, "d")
    result = ns.delete_bucket("bkt", user="alice", recursive=True)
    assert result.ok and result.done == 2
    assert [b.name for b in ns.store.buckets()] == []
