"""Store identity: which block backend an index belongs to (DESIGN §8), checked at every open.

A store id (16 random bytes, 32 hex digits) is recorded twice: in the index's meta ``store_id``
and in the backend's meta object ``store.json`` (plain JSON ``{"store_id", "format", "chunker",
"codec", "created", "cas"}``, written with ``PackFiles.put_meta``). ``Store.open_store`` uses:

- ``index_present(settings)``: is there an index at all? (no side effects: decides before
  anything is created);
- ``check_new_backend``: before a new store is created (no index, or an index with no format
  record), its backend must hold nothing: no ``store.json``, no pack, no log or snapshot.
  Anything there belongs to a store whose index is missing: ``cas recover`` is the way out,
  and starting afresh over it would let GC take that store's blocks for orphans;
- ``establish``: at every open of a store, and by GC before it deletes (``check``):

  ===========================  ===========================  ======================================
  index                        backend                      outcome
  ===========================  ===========================  ======================================
  ``store_id`` X               ``store.json`` with X        ok, unless the backend's log position
                                                            is ahead of the index's: the index is
                                                            older than the backend (recover)
  ``store_id`` X               ``store.json`` with Y        IdentityMismatch
  ``store_id`` X               no ``store.json``            IdentityMismatch ("holds no cas store")
  pending X (being created)    none, or with X              write ``store.json``, then ``store_id``
  no id (before store ids)     no ``store.json``            adopt a new id (upgrade in place)
  no id (before store ids)     ``store.json`` with Y        IdentityMismatch
  ===========================  ===========================  ======================================

Creation order, so that a crash leaves nothing the next open cannot finish: the id is chosen
and recorded in the index as ``store_id_pending`` (in the txn that records the format, or its
own txn for an index from before ids), then ``store.json`` goes to the backend, then the index's
``store_id`` replaces the pending id. The log position of the index is its ``mlog`` counter (the
last metadata-log position handed out); the backend's is the highest ``last`` of its log
segments and ``n`` of its complete snapshots (``objects.py``).

A legacy backend (one object per block, no ``PackFiles``) has no meta objects: no identity.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from pathlib import Path

from .. import __version__
from ..errors import IdentityMismatch, NotAStore
from ..index.schema import FORMAT_VERSION
from .objects import STORE_NAME, log_segments, snapshots

log = logging.getLogger(__name__)

ID_META = "store_id"
PENDING_META = "store_id_pending"


def new_id() -> str:
    return secrets.token_hex(16)


def index_present(settings) -> bool:
    """Whether ``DATA/index`` holds an index file with something in it (an empty ``data.mdb``
    is what LMDB leaves when it was only opened: no store yet); for a PostgreSQL index, whether
    its tables hold anything (empty tables are what opening leaves), looked at without opening it."""
    if settings.index.remote:
        from ..index import index_exists

        return index_exists(settings)
    try:
        return (Path(settings.index_dir) / "data.mdb").stat().st_size > 0
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise NotAStore(f"cannot read the index at {settings.index_where}: {exc}") from exc


def recover_command(data_dir, url: str | None = None, endpoint: str | None = None) -> str:
    """The ``cas recover`` command line that rebuilds the index of ``data_dir`` from its backend."""
    cmd = f"cas recover --data {data_dir}"
    if url and url not in ("local", "memory"):
        cmd += f" --blocks {url}"
        if endpoint:
            cmd += f" --blocks-endpoint {endpoint}"
    return f"`{cmd}`"


def not_a_store(settings, why: str | None = None) -> NotAStore:
    """The error for a DATA that holds no store (``why``: default, what is missing)."""
    if why is None:
        data = Path(settings.data_dir)
        why = ("no such directory" if not data.exists() else "not a directory" if not data.is_dir()
               else "no index")
    recover = recover_command(settings.data_dir, settings.blocks.url, settings.blocks.endpoint)
    return NotAStore(f"{settings.data_dir} is not a cas store ({why}); create one with "
                     f"`cas init --data {settings.data_dir}`, or, if its index was lost, rebuild it from "
                     f"the backend with {recover}")


def describe(files) -> str:
    """Where ``files`` keep their objects, for messages."""
    root = getattr(files, "root", None)
    return str(root) if root is not None else files.kind


# -- the backend's side -----------------------------------------------------------------------
def read_store_json(files) -> dict | None:
    """The backend's ``store.json``, or None when it has none."""
    raw = files.get_meta(STORE_NAME)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("store_id"), str):
            raise ValueError("no store_id")
    except ValueError as exc:
        raise IdentityMismatch(f"the backend at {describe(files)} holds a damaged {STORE_NAME} ({exc}); "
                               "it cannot be told whose it is") from exc
    return doc


def backend_position(files) -> int:
    """The highest metadata-log position the backend holds (0: none): the last position of its
    log segments and the position of its complete snapshots."""
    return max([last for _, last, _ in log_segments(files)]
               + [n for n, names in snapshots(files).items() if "done" in names], default=0)


def backend_contents(files) -> str | None:
    """What the backend holds that belongs to some store ("store <id>", "packs", ...), or None."""
    doc = read_store_json(files)
    if doc is not None:
        return f"cas store {doc['store_id']}"
    for _ in files.iter_packs():
        return "packs (of a store from before store ids, or one whose store.json was lost)"
    for name in files.list_meta(""):
        return f"metadata objects ({name}, ...)"
    return None


def check_new_backend(files, settings) -> None:
    """Before a new store is created over ``files``: raise unless they hold nothing."""
    held = backend_contents(files)
    if held is not None:
        raise IdentityMismatch(
            f"{settings.data_dir} has no index, but the backend at {describe(files)} holds {held}: if this is "
            f"that store's data directory and its index was lost, rebuild the index with "
            f"{recover_command(settings.data_dir, settings.blocks.url, settings.blocks.endpoint)}; "
            f"for a new store, use an empty backend (another directory, bucket or prefix)")


def store_json(store_id: str, settings) -> bytes:
    doc = {"store_id": store_id, "format": FORMAT_VERSION, "chunker": settings.chunker.to_dict(),
           "codec": settings.codec.compression, "created": time.time(), "cas": __version__}
    return json.dumps(doc, indent=1).encode() + b"\n"


# -- both sides ---------------------------------------------------------------------------------
def check(index, files, settings) -> str:
    """The store id that the index and ``files`` agree on; ``IdentityMismatch`` unless they do
    and the backend's log is not ahead of the index's (see the table in the module docstring)."""
    ahead = backend_position(files)  # before the index: see _check_recorded
    with index.read() as t:
        sid = t.get_meta(ID_META)
        position = t.counter("mlog")
    if sid is None:
        raise IdentityMismatch(f"the index at {settings.index_where} has no store id; reopen the store "
                               "(`cas ls`) to give it one")
    return _check_recorded(sid, position, ahead, files, settings)


def _check_recorded(sid: str, position: int, ahead: int, files, settings) -> str:
    """``ahead``, the backend's log position, must have been read before the index's ``position``:
    writers (this process's or another node's) ship a log position only after the index txn that
    handed it out has committed, so the backend read first can never be ahead of an index that is
    current, while the other order lets a write land between the two reads and look like an index
    older than its backend (and GC under writers refuse to run)."""
    recover = recover_command(settings.data_dir, settings.blocks.url, settings.blocks.endpoint)
    doc = read_store_json(files)
    if doc is None:
        raise IdentityMismatch(f"the backend at {describe(files)} holds no cas store; expected store id {sid} "
                               f"(the index at {settings.index_where} is that store's: check --blocks and the "
                               "backend's bucket and prefix)")
    if doc["store_id"] != sid:
        raise IdentityMismatch(f"the index at {settings.index_where} belongs to store {sid}, but the backend at "
                               f"{describe(files)} holds store {doc['store_id']}: refusing to mix them (check "
                               f"--data and --blocks; to rebuild this directory's index from that backend, "
                               f"move DATA/index away and run {recover})")
    if ahead > position:
        raise IdentityMismatch(f"the index at {settings.index_where} is older than the backend at {describe(files)} "
                               f"(its metadata log reaches position {position}, the backend's {ahead}): it "
                               f"lacks changes the backend has; rebuild it with {recover}")
    return sid


def establish(index, files, settings) -> str:
    """Finish or check the identity of an open store (``settings``: as the index records them)."""
    ahead = backend_position(files)  # before the index: see _check_recorded
    with index.read() as t:
        sid = t.get_meta(ID_META)
        pending = t.get_meta(PENDING_META)
        position = t.counter("mlog")
    if sid is not None:
        return _check_recorded(sid, position, ahead, files, settings)
    doc = read_store_json(files)
    if pending is None:  # an index from before store ids: upgrade in place
        if doc is not None:
            raise IdentityMismatch(
                f"the index at {settings.index_where} predates store ids, but the backend at {describe(files)} "
                f"holds store {doc['store_id']}: they are not the same store (check --data and --blocks)")
        pending = new_id()
        with index.write() as t:
            t.put_meta(PENDING_META, pending)
        log.info("giving the store at %s the id %s", settings.data_dir, pending)
    elif doc is not None and doc["store_id"] != pending:
        raise IdentityMismatch(f"the index at {settings.index_where} was being given store id {pending}, but the "
                               f"backend at {describe(files)} holds store {doc['store_id']} (check --blocks)")
    if doc is None:
        files.put_meta(STORE_NAME, store_json(pending, settings))
    with index.write() as t:
        t.put_meta(ID_META, pending)
        t.put_meta(PENDING_META, None)
    return pending
