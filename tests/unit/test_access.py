"""``cas.access``: one rule for who sees which bucket, over a real local Store; and no protocol
module writes that rule again (an AST check of ``cas/protocols``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cas import access, errors
from cas.access import Principal

pytestmark = pytest.mark.unit

PROTOCOLS = Path(__file__).resolve().parents[2] / "cas" / "protocols"


@pytest.fixture
def store(local_store):
    local_store.users.add("alice", "alice-secret-123")
    local_store.users.add("bob", "bob-secret-4567")
    local_store.create_bucket("alice-b", owner="alice")
    local_store.create_bucket("bob-b", owner="bob")
    return local_store


def test_owner_root_and_anonymous_reader_see_a_bucket_others_do_not(store):
    alice, bob = Principal.of_user(store, "alice"), Principal.of_user(store, "bob")
    root = Principal.of_user(store, store.users.root()[0])
    anon = Principal.anonymous_reader()
    assert root.root and not alice.root
    for who in (alice, root, anon):
        assert access.visible_bucket(store, who, "alice-b").name == "alice-b"
    with pytest.raises(errors.BucketNotVisible):
        access.visible_bucket(store, bob, "alice-b")
    with pytest.raises(errors.BucketNotFound):
        access.visible_bucket(store, bob, "nobody-b")
    with pytest.raises(errors.AccessDenied):
        access.visible_bucket(store, anon, "alice-b", write=True)
    assert [b.name for b in access.visible_buckets(store, bob)] == ["bob-b"]
    assert [b.name for b in access.visible_buckets(store, anon)] == ["alice-b", "bob-b"]


def test_a_user_named_like_a_role_is_an_ordinary_user(store):
    impostor = Principal("anonymous")  # a real user of that name (older stores may hold one)
    assert not impostor.anonymous and not impostor.sees_everything
    with pytest.raises(errors.BucketNotVisible):
        access.visible_bucket(store, impostor, "alice-b")
    assert not Principal.anonymous_reader().owns("")  # the anonymous reader owns nothing
    assert Principal("alice").may_use("alice") and not Principal("bob").may_use("alice")


def _owner_comparisons(path: Path) -> list[int]:
    """Lines where ``... owner ==``/``!=`` compares names: a visibility rule written in place."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            for side in (node.left, *node.comparators):
                name = side.attr if isinstance(side, ast.Attribute) else getattr(side, "id", "")
                if name in ("owner", "user", "user_name"):
                    lines.append(node.lineno)
    return lines


def test_protocol_modules_do_not_compare_user_names():
    offenders = {str(p.relative_to(PROTOCOLS)): lines for p in sorted(PROTOCOLS.rglob("*.py"))
                 if (lines := _owner_comparisons(p))}
    assert offenders == {}
