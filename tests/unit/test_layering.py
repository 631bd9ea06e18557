"""Dependencies point down only (DESIGN §2): checked on the source with an AST walk."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2] / "cas"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif node.level and node.module:
                # resolve relative imports against the package path
                pkg = path.relative_to(ROOT.parent).with_suffix("").parts[: -node.level]
                names.add(".".join((*pkg, node.module)))
    return names


def _modules(sub: str = "") -> list[Path]:
    return sorted((ROOT / sub).rglob("*.py"))


def test_only_the_index_imports_lmdb():
    offenders = [p for p in _modules() if "lmdb" in _imports(p) and "index" not in p.relative_to(ROOT).parts]
    assert not offenders


def test_only_the_postgresql_index_imports_psycopg():
    allowed = {ROOT / "index" / "pg_index.py"}
    offenders = [p for p in _modules() if {"psycopg", "psycopg_pool"} & _imports(p) and p not in allowed]
    assert not offenders


def test_only_the_s3_bucket_client_imports_boto3():
    allowed = {ROOT / "blocks" / "s3bucket.py"}
    offenders = [p for p in _modules() if {"boto3", "botocore"} & _imports(p) and p not in allowed]
    assert not offenders


@pytest.mark.parametrize("forbidden", ["lmdb", "psycopg", "boto3", "botocore", "blake3"])
def test_protocols_never_import_storage_libraries(forbidden):
    offenders = [p for p in _modules("protocols") if forbidden in _imports(p)]
    assert not offenders


def test_protocols_do_not_reach_below_the_store():
    below = ("cas.index", "cas.blocks", "cas.writer", "cas.codec", "cas.chunker", "cas.manifest")
    offenders = [(p, m) for p in _modules("protocols") for m in _imports(p) if m.startswith(below)]
    assert not offenders


def test_lower_layers_never_import_protocols_or_cli():
    lower = [p for p in _modules() if p.relative_to(ROOT).parts[0] not in ("protocols", "cli", "gc", "__main__.py")]
    offenders = [(p, m) for p in lower for m in _imports(p)
                 if m.startswith(("cas.protocols", "cas.cli", "cas.gc"))]
    assert not offenders


def test_gc_does_not_import_the_writer():
    offenders = [(p, m) for p in _modules("gc") for m in _imports(p) if m.startswith("cas.writer")]
    assert not offenders


def test_only_blocklife_changes_block_rows_pins_leases_and_block_counters():
    """Block rows, pins, writer leases and the block counters have one owner: cas/blocklife.py."""
    writes = {"put_block", "delete_block", "add_pin", "drop_pin", "put_writer", "delete_writer"}
    counters = {"unique_blocks", "stored_bytes", "raw_bytes"}
    allowed = {ROOT / "blocklife.py", *_modules("index")}
    offenders = []
    for p in _modules():
        if p in allowed:
            continue
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            first = node.args[0] if node.args else None
            counter = name == "add_counter" and isinstance(first, ast.Constant) and first.value in counters
            if name in writes or counter:
                offenders.append((str(p.relative_to(ROOT)), node.lineno, name))
    assert not offenders


# -- only the store's own layer touches its index and block store --------------------------------

#: where ``.index`` / ``.blocks`` of a Store may be used: the store itself, its block lifecycle and
#: write path, gc (mark, sweep, verify, repair work on rows and blocks), the user table, the index,
#: the metadata log (it logs and ships the index's changes)
STORE_INSIDE = ("store.py", "store", "gc", "blocklife.py", "writer.py", "auth/users.py", "index",
                "blocks/packs", "meta")  # the pack store keeps block locations in the store's index
#: modules still reaching a store's insides, each with the reason it may (none today)
STORE_REACH_ALLOWED: dict[str, str] = {}
#: objects whose ``.blocks`` / ``.index`` is not a store's: configuration sections, parsed flags
NOT_A_STORE = {"settings", "args"}


def _inside_store(path: Path) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == part or rel.startswith(part + "/") for part in STORE_INSIDE)


def _store_reaches(path: Path) -> list[str]:
    """``x.index`` / ``x.blocks`` (and ``getattr(x, "index")``) in ``path``, as "line: code"."""
    tree = ast.parse(path.read_text(), str(path))
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("index", "blocks"):
            if id(node) in called:  # "abc".index(...), list.index(...): a method, not a store's part
                continue
            base = node.value
            if (base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)) in NOT_A_STORE:
                continue
        elif not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                  and node.args[1].value in ("index", "blocks")):
            continue
        hits.append((node.lineno, ast.unparse(node)))
    return [f"{line}: {code}" for line, code in sorted(hits)]


def test_only_the_store_layer_reaches_store_index_and_blocks():
    """Protocols, the CLI and the rest go through typed Store methods, never ``store.index`` / ``.blocks``."""
    offenders = {}
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        if _inside_store(path) or rel in STORE_REACH_ALLOWED:
            continue
        hits = _store_reaches(path)
        if hits:
            offenders[rel] = hits
    assert not offenders, f"reach the store's index/blocks (add a Store method instead): {offenders}"


def test_the_store_reach_check_sees_an_offender(tmp_path):
    """The check above can fail: it finds the forms an offender would write."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f(store, self, settings):\n"
                     "    store.index.read()\n    self.store.blocks.get(b'x')\n    getattr(store, 'index')\n"
                     "    settings.blocks.url\n    'abc'.index('b')\n")
    assert [hit.split(":")[0] for hit in _store_reaches(probe)] == ["2", "3", "4"]
