"""Both indexes implement the typed Index protocol exactly (cas/index/base.py), and nothing above
the index names an implementation: the Store, GC and the front ends see only ``Index``."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from cas.config import load_settings
from cas.index import Index, IndexTxn, lmdb_index, open_index, pg_index

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2] / "cas"


def _public_methods(cls) -> dict[str, inspect.Signature]:
    """Public methods of ``cls`` and of its bases (a transaction's domain methods are inherited
    from ``KvTxn``); the nearest definition wins, as in attribute lookup."""
    found: dict[str, inspect.Signature] = {}
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name, fn in vars(klass).items():
            if callable(fn) and not name.startswith("_") and name not in found:
                found[name] = inspect.signature(fn)
    return found


IMPLEMENTATIONS = [
    (IndexTxn, lmdb_index.LmdbTxn), (Index, lmdb_index.LmdbIndex),
    (IndexTxn, pg_index.PgTxn), (Index, pg_index.PgIndex),
]


@pytest.mark.parametrize(("protocol", "impl"), IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_each_index_implements_exactly_the_protocol(protocol, impl):
    wanted, given = _public_methods(protocol), _public_methods(impl)
    assert sorted(set(given) - set(wanted)) == [], "public methods missing from cas/index/base.py"
    assert sorted(set(wanted) - set(given)) == [], f"protocol methods {impl.__name__} lacks"
    for name, sig in wanted.items():
        params = [(p.name, p.kind, p.default) for p in sig.parameters.values()]
        got = [(p.name, p.kind, p.default) for p in given[name].parameters.values()]
        assert got == params, name


def test_an_opened_index_is_an_index(tmp_path):
    index = open_index(load_settings(tmp_path / "d", env={}))
    try:
        assert isinstance(index, Index)
        with index.read() as t:
            assert isinstance(t, IndexTxn) and t.last_seq() == 0
    finally:
        index.close()


@pytest.mark.parametrize("name", ["LmdbIndex", "lmdb_index", "PgIndex", "pg_index", "KvTxn"])
def test_only_the_index_package_names_an_implementation(name):
    offenders = [p for p in ROOT.rglob("*.py")
                 if "index" not in p.relative_to(ROOT).parts and name in p.read_text()]
    assert offenders == []
