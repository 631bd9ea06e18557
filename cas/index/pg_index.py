"""PgIndex: the index in PostgreSQL, shared by several cas processes and nodes (DESIGN §7).

The only module that imports psycopg. The rows are LMDB's (``schema.py`` owns the layout): one
table ``cas_<name>(k bytea PRIMARY KEY, v bytea NOT NULL)`` per name in ``schema.DB_NAMES``.
bytea compares by bytes, so keys come out in LMDB's order (UTF-8 binary: S3's listing order).

What ``base.py`` promises, and how:

- ``read()`` is REPEATABLE READ READ ONLY, its snapshot taken as it opens.
- ``write()`` is READ COMMITTED behind a transaction-scoped advisory lock that every write
  transaction of every process takes before anything else: writers are serialised exactly like
  LMDB's single writer. Each statement sees every earlier commit, read-modify-write needs no row
  locks, and commit sequence numbers (the ``seq`` counter) commit gap-free and in order.
- Every write commits with ``synchronous_commit`` off (the write lock is not held through an
  fsync); ``write()`` (durable) then waits, outside the lock, until the WAL is on disk up to its
  commit (``_FLUSH``: concurrent writers share one flush). ``write(durable=False)`` does not: a
  server crash may lose the last such commits but never corrupts.
- Iterators read a page of rows at a time, by key (``k >= last key + 0x00``): they stream, and
  they see what their own transaction writes further on (a row deleted is not returned, a row
  added is), as an LMDB cursor does.
- ``lock(name)`` is a session advisory lock on a connection of its own, released when the block
  exits or its process dies.
- ``watch(callback)``: a write transaction that took a commit sequence number sends
  ``NOTIFY cas_commits`` with its commit (queued in its pipeline: no round trip of its own; the
  server delivers it only if the transaction commits). The first ``watch`` starts a thread that
  ``LISTEN``s on a connection of its own and calls the callbacks on every notification, and once
  after each (re)connect, for the commits it may have missed while it was not listening.

Opening a database creates the tables when absent (an empty database is no store yet, like an
empty data.mdb), under an advisory lock; ``cas_schema(version)`` says which of ``_MIGRATIONS``
ran, and a version newer than this code is a ``ConfigError``.

Errors are mapped here: a server that cannot be reached at open or refuses the credentials is a
``PermanentStoreError``; later, a lost connection, a timeout or a serialisation failure is a
``TransientStoreError`` and everything else a ``PermanentStoreError``. No message shows the
password.

Round trips are what a remote index costs. A write transaction runs in psycopg's pipeline mode,
so its begin and write lock travel with its first statement that needs an answer. A transaction
remembers every row it read or wrote and answers a second read of one from memory; a write
transaction holds its writes back and sends them as one statement (``_write_statement``) before
its next scan and with its commit. The error of that statement is raised by the scan or the
commit; either way nothing commits. A read spends one round trip on its start (begin and snapshot
in one message), one per statement it cannot answer from memory and one on its commit. psycopg
prepares the statements a connection runs often; a connection that idled in the pool is checked
before use (the server may have dropped it), a busy one is not.

Thread-safe: a pool of connections; each transaction holds one for its lifetime and belongs to
the thread that opened it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import ExecStatus, PipelineStatus, TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import ConfigError, Conflict, PermanentStoreError, StoreError, TransientStoreError
from . import schema as s
from .kv import KvTxn, listing_start

log = logging.getLogger(__name__)

#: ``_MIGRATIONS[v]`` takes the tables from layout version ``v`` to ``v + 1``
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    tuple(f"CREATE TABLE cas_{name} (k bytea PRIMARY KEY, v bytea NOT NULL)" for name in s.DB_NAMES),
)
SCHEMA_VERSION = len(_MIGRATIONS)
TABLES = ("cas_schema", *(f"cas_{name}" for name in s.DB_NAMES))

CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise (libpq's default is to wait forever)
POOL_WAIT = 30.0  # seconds a transaction waits for a free pooled connection
IDLE_CHECK = 5.0  # seconds in the pool after which a connection is checked before use
#: rows per query of an iterator: small first (many callers want one row), then larger
_PAGES = (32, 256, 1024)


def _lock_key(what: str) -> int:
    """A 64-bit advisory lock key of cas's own (advisory locks are per database)."""
    return int.from_bytes(hashlib.blake2b(f"cas/{what}".encode(), digest_size=8).digest(), "big", signed=True)


_WRITE_KEY = _lock_key("write")
_SCHEMA_KEY = _lock_key("schema")
CHANNEL = "cas_commits"  # NOTIFY channel of commits that took a sequence number (per database)
LISTEN_POLL = 1.0  # seconds the listener waits for a notification before it looks at closing
LISTEN_RETRY = (0.5, 10.0)  # first and longest wait before reconnecting a lost listener

# One message: psycopg sends a query without parameters as a simple query, which may hold several
# statements. "SELECT 1" takes the snapshot now rather than at the first read.
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1"
# Queued in the pipeline ahead of the transaction's first statements
# Every write commits without waiting for its WAL to reach the disk, so that the write lock, which
# a transaction holds until its commit ends, is not held through an fsync: writers would take
# turns at the disk one by one. A durable write then makes its commit durable after the lock is
# gone (_FLUSH), and the server flushes the WAL once for every such write waiting at that time
# (group commit), as LMDB's writers sync after their commit here.
_BEGIN_WRITE = ("BEGIN ISOLATION LEVEL READ COMMITTED",
                f"SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock({_WRITE_KEY})")
# A transaction that wrote WAL commits, with synchronous_commit on (the session's default), only once
# the WAL is on disk up to its commit record: which covers every earlier commit of the server, the
# lazy one just before on this connection among them. A transactional logical-decoding message is
# the least WAL a transaction can write (no table, no row lock, no privilege beyond the default;
# an xid alone is not enough: a transaction that wrote no WAL commits without waiting).
_FLUSH = "BEGIN; SELECT pg_logical_emit_message(true, 'cas', 'flush'); COMMIT"
# where a server refuses that (a PostgreSQL-compatible one may lack the function), durable writes
# commit synchronously, holding the write lock through their flush
_BEGIN_WRITE_SYNC = (_BEGIN_WRITE[0], f"SELECT pg_advisory_xact_lock({_WRITE_KEY})")
_NOTIFY = f"NOTIFY {CHANNEL}"

#: SQLSTATE classes worth retrying: connection exceptions, serialisation failures and
#: deadlocks, operator intervention (shutdown, cancel, timeout), insufficient resources
_TRANSIENT_CLASSES = ("08", "40", "57", "53")
_DISK_FULL, _LOCK_NOT_AVAILABLE = "53100", "55P03"


class _Sql:
    """The statements on one table (the same text each time, so psycopg prepares them)."""

    __slots__ = ("get", "scan", "scan_to", "trim", "trim_all")

    def __init__(self, db: str):
        t = f"cas_{db}"
        self.get = f"SELECT v FROM {t} WHERE k = %s"
        self.scan = f"SELECT k, v FROM {t} WHERE k >= %s ORDER BY k LIMIT %s"
        self.scan_to = f"SELECT k, v FROM {t} WHERE k >= %s AND k < %s ORDER BY k LIMIT %s"
        self.trim = f"WITH gone AS (DELETE FROM {t} WHERE k < %s RETURNING 1) SELECT count(*) FROM gone"
        self.trim_all = f"WITH gone AS (DELETE FROM {t} RETURNING 1) SELECT count(*) FROM gone"


_SQL = {name: _Sql(name) for name in s.DB_NAMES}

# One page of a delimiter listing in one statement: a recursive walk that takes the first key,
# then from each key the first key past its group (the key up to the delimiter after the
# listing prefix, + 0xff, which no UTF-8 key holds) or, for a key without one, past the key
# itself; it stops after ``n`` rows (a page and one more, to tell whether it is truncated).
# The LMDB cursor does the same seeks, but each of these would otherwise be a round trip.
_CUT = "position(%(d)s IN substring({k} FROM %(plen)s + 1))"
_GROUPED_PAGE = f"""
WITH RECURSIVE walk(k, v, i) AS (
    (SELECT k, v, 1 FROM cas_objects WHERE k >= %(start)s AND k < %(end)s ORDER BY k LIMIT 1)
  UNION ALL
    SELECT nxt.k, nxt.v, walk.i + 1 FROM walk CROSS JOIN LATERAL (
        SELECT o.k, o.v FROM cas_objects o
        WHERE o.k >= CASE WHEN {_CUT.format(k="walk.k")} > 0
                          THEN substring(walk.k FROM 1 FOR %(plen)s + {_CUT.format(k="walk.k")} + %(dlen)s - 1)
                               || %(ff)s
                          ELSE walk.k || %(zero)s END
          AND o.k < %(end)s
        ORDER BY o.k LIMIT 1) nxt
    WHERE walk.i < %(n)s
)
SELECT k, v FROM walk ORDER BY k"""


def _prefix_end(prefix: bytes) -> bytes | None:
    """The least key above every key that starts with ``prefix`` (None: there is none)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes((p[-1] + 1,)) if p else None


def _mapped(exc: psycopg.Error, what: str, conn: psycopg.Connection | None = None) -> StoreError:
    """The StoreError for ``exc``; a connection that broke makes any error transient (psycopg may
    report the loss of a pipelined connection as the odd result it got before)."""
    state = exc.sqlstate
    if conn is not None and conn.broken:
        transient = True
    elif isinstance(exc, psycopg.errors.PipelineAborted):  # an earlier statement failed
        transient = False
    elif state is None:  # raised by the client: a lost connection is an OperationalError
        transient = isinstance(exc, psycopg.OperationalError)
    else:
        transient = (state[:2] in _TRANSIENT_CLASSES and state != _DISK_FULL) or state == _LOCK_NOT_AVAILABLE
    return (TransientStoreError if transient else PermanentStoreError)(f"{what}: {' '.join(str(exc).split())}")


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _url_password(url: str) -> str:
    """The password as written in a ``postgresql://user:password@host`` URL (maybe encoded)."""
    rest = url.partition("://")[2]
    userinfo = rest.rpartition("@")[0] if "@" in rest.split("/", 1)[0] else ""
    return userinfo.partition(":")[2]


def display_url(url: str) -> str:
    """``postgresql://user@host:port/db`` of ``url``: what messages and logs show (no password)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"not a PostgreSQL URL: {_scrub(str(exc), (_url_password(url),))}") from None
    user = info.get("user")
    host = quote(info.get("host") or "", safe="") if "/" in (info.get("host") or "") else info.get("host") or ""
    port = info.get("port")
    return f"postgresql://{f'{user}@' if user else ''}{host}{f':{port}' if port else ''}/{info.get('dbname') or ''}"


def _session_kwargs(info: dict, app: str) -> dict:
    kwargs: dict = {"autocommit": True, "application_name": app}
    if "connect_timeout" not in info:
        kwargs["connect_timeout"] = CONNECT_TIMEOUT
    return kwargs


#: where ``cas recover`` builds a new index before ``adopt_schema`` puts it in place
STAGED_SCHEMA = "cas_recover"
#: the schema an index that ``adopt_schema`` replaced is kept in (+ a time stamp)
OLD_SCHEMA_PREFIX = "cas_old_"


def has_index(url: str) -> bool:
    """Whether the database of ``url`` holds a store's index (its tables, with rows in cas_meta),
    looked at without creating anything."""
    conn = _admin_connect(url)
    try:
        if conn.execute("SELECT to_regclass('cas_meta')").fetchone()[0] is None:
            return False
        return conn.execute("SELECT EXISTS (SELECT 1 FROM cas_meta)").fetchone()[0]
    except psycopg.Error as exc:
        raise _mapped(exc, f"cannot read the index {display_url(url)}") from exc
    finally:
        conn.close()


def drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` and every table in it (a staged index left by an interrupted recover)."""
    conn = _admin_connect(url)
    try:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    except psycopg.Error as exc:
        raise _mapped(exc, f"cannot drop schema {schema} of {display_url(url)}") from exc
    finally:
        conn.close()


def adopt_schema(url: str, staged: str, stamp: str) -> str | None:
    """Put the index built in schema ``staged`` in the place of the database's index, in one
    transaction (a crash leaves one or the other in place, never a mix): the tables there now
    move to schema ``cas_old_<stamp>`` (dropped instead when they hold no store), the staged
    ones take their place, and the staged schema goes. Returns the old tables' schema, or None."""
    conn = _admin_connect(url)
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_KEY,))
            home = conn.execute("SELECT current_schema()").fetchone()[0]
            present = [t for t in TABLES
                       if conn.execute("SELECT to_regclass(%s)", (f'"{home}".{t}',)).fetchone()[0] is not None]
            kept = None
            if present and conn.execute("SELECT to_regclass('cas_meta') IS NOT NULL AND "
                                        "EXISTS (SELECT 1 FROM cas_meta)").fetchone()[0]:
                kept = f"{OLD_SCHEMA_PREFIX}{stamp}"
                n = 1
                while conn.execute("SELECT to_regnamespace(%s)", (kept,)).fetchone()[0] is not None:
                    kept, n = f"{OLD_SCHEMA_PREFIX}{stamp}_{n}", n + 1
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(kept)))
                for t in present:
                    conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(
                        sql.Identifier(home), sql.Identifier(t), sql.Identifier(kept)))
            else:
                for t in present:
                    conn.execute(sql.SQL("DROP TABLE {}.{}").format(sql.Identifier(home), sql.Identifier(t)))
            for t in TABLES:
                conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(
                    sql.Identifier(staged), sql.Identifier(t), sql.Identifier(home)))
            conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(staged)))
        return kept
    except psycopg.Error as exc:
        raise _mapped(exc, f"cannot put the recovered index in place in {display_url(url)}") from exc
    finally:
        conn.close()


def _admin_connect(url: str) -> psycopg.Connection:
    """A connection of its own for a one-off job on the database of ``url``."""
    info = conninfo_to_dict(url)
    try:
        return psycopg.connect(url, **_session_kwargs(info, _application_name()))
    except psycopg.Error as exc:
        message = _scrub(" ".join(str(exc).split()), (_url_password(url), info.get("password") or ""))
        raise PermanentStoreError(f"cannot connect to the index {display_url(url)}: {message}") from None


def _application_name() -> str:
    """``cas/<hostname>/<pid>``, the hostname cut so that all fits PostgreSQL's 63 bytes
    (``other_processes`` reads the pid back)."""
    pid = str(os.getpid())
    room = 63 - len("cas//") - len(pid)
    return f"cas/{socket.gethostname().encode()[:room].decode(errors='ignore')}/{pid}"


def _rollback(conn: psycopg.Connection) -> None:
    """End the connection's transaction without committing.

    psycopg's ``rollback()`` also forgets the connection's prepared statements (in case the
    transaction dropped what they refer to); no transaction here runs DDL, so they stay valid
    and the ROLLBACK goes to libpq directly. A connection that cannot roll back is closed, which
    makes the pool replace it."""
    if conn.pgconn.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        if conn.pgconn.exec_(b"ROLLBACK").status != ExecStatus.COMMAND_OK:
            conn.close()


def _carried_on(conn: psycopg.Connection, what: str) -> None:
    """Refuse to commit a transaction in which a statement failed (the caller caught the error
    and went on)."""
    if conn.pgconn.transaction_status == TransactionStatus.INERROR:
        _rollback(conn)
        raise PermanentStoreError(f"{what}: a statement of the transaction failed; nothing was committed")


class PgIndex:
    """One store's index in a PostgreSQL database, shared by every process that opens it."""

    def __init__(self, url: str, *, pool_size: int = 16, schema: str | None = None):
        """``schema``: keep the tables in that schema of the database (created when absent)
        instead of the one a session uses by default (``cas recover`` builds a new index in
        ``STAGED_SCHEMA`` and then ``adopt_schema`` puts it in place)."""
        self.where = f"the index {display_url(url)}" + (f" (schema {schema})" if schema else "")
        info = conninfo_to_dict(url)
        self._url = url
        self._secrets = (_url_password(url), info.get("password") or "")
        self._app = _application_name()
        self._kwargs: dict = _session_kwargs(info, self._app)
        if schema is not None:
            self._kwargs["options"] = f"{info.get('options') or ''} -c search_path={schema}".strip()
        conn = self._connect(PermanentStoreError)
        try:
            if schema is not None:
                self._create_schema(conn, schema)
            self._migrate(conn)
            self._flushes = self._can_flush(conn)
        finally:
            conn.close()
        self._idle_since: dict[int, float] = {}  # id of a pooled connection -> since when it idles
        self._pool = ConnectionPool(url, kwargs=self._kwargs, min_size=1, max_size=pool_size, timeout=POOL_WAIT,
                                    configure=self._idle, check=self._check, name="cas-index", open=True)
        self._watchers: list[Callable[[], None]] = []
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()
        self._stop_token = f"stop {self._app} {id(self)}"  # the payload that ends this index's listener

    def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            # a notification of its own wakes the listener at once (else it looks within LISTEN_POLL)
            with contextlib.suppress(StoreError):
                self._query("SELECT pg_notify(%s, %s)", (CHANNEL, self._stop_token), "cannot stop the listener")
            self._listener.join(LISTEN_POLL + 1.0)
        self._pool.close()

    # -- connections -----------------------------------------------------------------------
    def _connect(self, failure: type[StoreError]) -> psycopg.Connection:
        """A connection of its own (outside the pool); ``failure`` is what a refusal raises."""
        try:
            return psycopg.connect(self._url, **self._kwargs)
        except psycopg.Error as exc:
            message = _scrub(" ".join(str(exc).split()), self._secrets)
            raise failure(f"cannot connect to {self.where}: {message}") from None

    def _create_schema(self, conn: psycopg.Connection, schema: str) -> None:
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        except psycopg.Error as exc:
            raise PermanentStoreError(f"cannot create the schema of {self.where}: {' '.join(str(exc).split())}") from exc

    def _migrate(self, conn: psycopg.Connection) -> None:
        """Bring the tables to ``SCHEMA_VERSION`` (create them in an empty database)."""
        try:
            if self._schema_version(conn) == SCHEMA_VERSION:
                return
            # locked before the transaction begins, so that it sees the tables a process that
            # was first created (the catalog cache of a transaction that was waiting would not)
            conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_KEY,))
            with conn.transaction():
                version = self._schema_version(conn)
                if version is None:
                    conn.execute("CREATE TABLE cas_schema (version integer NOT NULL)")
                    conn.execute("INSERT INTO cas_schema VALUES (0)")
                    version = 0
                for statements in _MIGRATIONS[version:]:
                    for statement in statements:
                        conn.execute(statement)
                if version < SCHEMA_VERSION:
                    conn.execute("UPDATE cas_schema SET version = %s", (SCHEMA_VERSION,))
                    log.info("%s: table layout version %d -> %d", self.where, version, SCHEMA_VERSION)
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_KEY,))  # else closing the session does
        except psycopg.Error as exc:
            raise PermanentStoreError(f"cannot set up the tables of {self.where}: "
                                      f"{' '.join(str(exc).split())}") from exc

    def _can_flush(self, conn: psycopg.Connection) -> bool:
        """Whether ``_FLUSH`` runs on this server (else durable writes commit synchronously)."""
        try:
            conn.execute(_FLUSH)
            return True
        except psycopg.Error as exc:
            _rollback(conn)
            log.info("%s: durable writes commit synchronously (%s)", self.where, " ".join(str(exc).split()))
            return False

    def _schema_version(self, conn: psycopg.Connection) -> int | None:
        if conn.execute("SELECT to_regclass('cas_schema')").fetchone()[0] is None:
            return None
        version = conn.execute("SELECT max(version) FROM cas_schema").fetchone()[0]
        if version is None:
            raise PermanentStoreError(f"{self.where} is damaged: its table cas_schema is empty")
        if version > SCHEMA_VERSION:
            raise ConfigError(f"{self.where} has table layout version {version}; this cas knows "
                              f"versions up to {SCHEMA_VERSION}: run a newer cas")
        return version

    def _idle(self, conn: psycopg.Connection) -> None:
        """Note that ``conn`` (new, or back from a transaction) idles in the pool from now."""
        self._idle_since[id(conn)] = time.monotonic()

    def _check(self, conn: psycopg.Connection) -> None:
        """The pool's check of a connection it hands out: one that idled a while may have been
        dropped by the server (a restart, an idle timeout); the pool replaces it if it fails."""
        if time.monotonic() - self._idle_since.pop(id(conn), 0.0) > IDLE_CHECK:
            conn.execute("")

    def _getconn(self, what: str) -> psycopg.Connection:
        try:
            return self._pool.getconn()
        except PoolTimeout as exc:
            raise TransientStoreError(f"{what}: no connection to {self.where} within {POOL_WAIT:g} s") from exc
        except psycopg.Error as exc:
            raise _mapped(exc, what) from exc

    def _putconn(self, conn: psycopg.Connection) -> None:
        self._idle(conn)
        self._pool.putconn(conn)

    @contextlib.contextmanager
    def _txn(self, begin: str | tuple[str, ...] | None, what: str, *, flush: bool = False) -> Iterator[PgTxn]:
        """A transaction on a pooled connection: ``begin`` is one simple query (sent at once) or
        statements queued in a pipeline that lasts until the commit; with ``flush``, the commit is
        on disk before this returns (``_FLUSH``, after the write lock is released). ``None``: reads
        in autocommit, each statement its own snapshot (``read(snapshot=False)``)."""
        conn = self._getconn(what)
        txn = PgTxn(conn.cursor(binary=True), readonly=not isinstance(begin, tuple))
        try:
            try:
                if begin is None:
                    yield txn
                elif isinstance(begin, str):
                    conn.execute(begin, prepare=False)
                    yield txn
                    _carried_on(conn, what)
                    conn.execute("COMMIT", prepare=False)
                else:
                    with conn.pipeline():
                        for statement in begin:
                            txn._cur.execute(statement, prepare=False)
                        yield txn
                        txn._flush()
                        if conn.pgconn.pipeline_status != PipelineStatus.ABORTED:
                            if txn._sequenced:
                                txn._cur.execute(_NOTIFY, prepare=False)
                            txn._cur.execute("COMMIT", prepare=False)
                    _carried_on(conn, what)
                    if flush:
                        conn.execute(_FLUSH, prepare=False)
            except psycopg.Error as exc:
                _rollback(conn)
                raise _mapped(exc, what, conn) from exc
            except BaseException:
                _rollback(conn)
                raise
        finally:
            txn._cur = None  # an iterator that outlives its transaction must not run on
            self._putconn(conn)

    # -- the Index protocol ----------------------------------------------------------------
    def read(self, *, snapshot: bool = True) -> contextlib.AbstractContextManager[PgTxn]:
        return self._txn(_BEGIN_READ if snapshot else None, "cannot read the index")

    def write(self, *, durable: bool = True) -> contextlib.AbstractContextManager[PgTxn]:
        if durable and not self._flushes:
            return self._txn(_BEGIN_WRITE_SYNC, "cannot write the index")
        return self._txn(_BEGIN_WRITE, "cannot write the index", flush=durable)

    def _query(self, query: str, params: tuple, what: str) -> list[tuple]:
        """One statement on a pooled connection (outside any transaction)."""
        conn = self._getconn(what)
        try:
            return conn.execute(query, params).fetchall()
        except psycopg.Error as exc:
            raise _mapped(exc, what, conn) from exc
        finally:
            self._putconn(conn)

    def disk_usage(self) -> int:
        """Bytes the cas tables take, with their indexes and TOAST."""
        return int(self._query("SELECT coalesce(sum(pg_total_relation_size(t)), 0) FROM unnest(%s::regclass[]) t",
                               (list(TABLES),), "cannot measure the index")[0][0])

    def other_processes(self) -> list[int]:
        """Pids of the other cas processes (on any host) with a session on this database, read
        from their sessions' application name ``cas/<hostname>/<pid>``."""
        rows = self._query("SELECT DISTINCT application_name FROM pg_stat_activity "
                           "WHERE datname = current_database() AND application_name LIKE 'cas/%%'",
                           (), "cannot list the index's sessions")
        pids = set()
        for (name,) in rows:
            pid = name.rpartition("/")[2]
            if name != self._app and pid.isdigit():
                pids.add(int(pid))
        return sorted(pids)

    def watch(self, callback: Callable[[], None]) -> bool:
        """See the module docstring; ``callback`` must be quick (it runs on the listener's thread)."""
        self._watchers.append(callback)
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="cas-index-listen", daemon=True)
            self._listener.start()
        return True

    def _wake(self) -> None:
        for callback in list(self._watchers):
            try:
                callback()
            except Exception:  # one watcher's failure must not silence the others or the thread
                log.exception("%s: a commit watcher failed", self.where)

    def _listen(self) -> None:
        """The listener thread: ``LISTEN`` on a connection of its own until ``close``; a lost
        connection is reconnected after a growing pause (bounded by ``LISTEN_RETRY``)."""
        pause = LISTEN_RETRY[0]
        while not self._closing.is_set():
            conn = None
            try:
                conn = psycopg.connect(self._url, **{**self._kwargs, "autocommit": True})
                conn.execute(f"LISTEN {CHANNEL}")
                pause = LISTEN_RETRY[0]
                self._wake()  # commits made while nobody listened
                while not self._closing.is_set():
                    for note in conn.notifies(timeout=LISTEN_POLL):
                        if note.payload == self._stop_token:
                            return
                        self._wake()
            except psycopg.Error as exc:
                if self._closing.is_set():
                    return
                log.warning("%s: lost the connection that listens for commits (%s); reconnecting in %g s",
                            self.where, _scrub(" ".join(str(exc).split()), self._secrets), pause)
                self._closing.wait(pause)
                pause = min(pause * 2, LISTEN_RETRY[1])
            finally:
                if conn is not None:
                    conn.close()

    @contextlib.contextmanager
    def lock(self, name: str, *, wait: float = 0.0) -> Iterator[None]:
        """A session advisory lock on a connection held for the block (closing it releases the
        lock, as does the death of this process); waits with the server's ``lock_timeout``."""
        key = _lock_key(f"lock/{name}")
        conn = self._connect(TransientStoreError)  # it opened before: the server is away for now
        try:
            try:
                conn.execute(f"SET lock_timeout = {max(1, round(wait * 1000))}")
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            except psycopg.errors.LockNotAvailable:
                raise Conflict(f"another process holds the {name} lock of {self.where}"
                               f"{_holder(conn, key)}") from None
            except psycopg.Error as exc:
                raise _mapped(exc, f"cannot take the {name} lock of {self.where}") from exc
            try:
                yield
            finally:
                # released before this returns (the server ends a closed session a little later);
                # a session that is lost holds no lock any more
                with contextlib.suppress(psycopg.OperationalError):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            conn.close()


def _holder(conn: psycopg.Connection, key: int) -> str:
    """`` (pid P on HOST)``: who holds the session advisory lock ``key`` in this database, read from
    its session's application name (``cas/<host>/<pid>``); empty when that cannot be told."""
    try:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = %s::oid "
            "AND l.objid = %s::oid AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)).fetchone()
    except psycopg.Error:  # the message goes without it
        return ""
    parts = (row[0] if row else "").split("/")
    if len(parts) != 3 or parts[0] != "cas" or not parts[2].isdigit():
        return ""
    return f" (pid {parts[2]} on {parts[1]})"


class PgTxn(KvTxn):
    """The primitives of ``KvTxn`` as statements on one connection's transaction.

    Round trips are what a remote index costs: a write transaction holds its writes back (sent
    together by ``_flush``), and a transaction remembers every row it read or wrote, so a second
    read of one (a small PUT reads the same counters and rows in several steps) is answered from
    memory; whether a row existed, which ``_put`` without overwrite and ``_delete`` return, comes
    from such a read. That is sound because a
    write transaction holds the write lock (nobody else changes a row under it) and a read
    transaction reads one snapshot. The first counter read fetches every counter row in one query.

    An iterator holds a page of rows the server returned; what its own transaction writes into
    the rest of that page afterwards (a delete, an insert) it must see, as an LMDB cursor does.
    So while an iterator over a table is open, the keys written to that table are noted, and an
    iterator reads its page again from where it is when one of them falls in what it has still
    to return (deleting the row just returned, the common case, does not)."""

    __slots__ = ("_cur", "_readonly", "_written", "_scans", "_known", "_counters", "_pending", "_sequenced")

    def __init__(self, cur: psycopg.Cursor, *, readonly: bool = False):
        self._cur = cur
        self._readonly = readonly
        self._written: dict[str, list[bytes | None]] = {}  # per table with open iterators; None: a trim
        self._scans: dict[str, int] = {}
        self._known: dict[tuple[str, bytes], bytes | None] = {}  # rows as this txn sees them now
        self._counters = False  # whether every counter row is in _known
        self._pending: dict[str, dict[bytes, bytes | None]] = {}  # writes not sent yet (None: a delete)
        self._sequenced = False  # took a commit sequence number: its commit notifies (PgIndex.watch)

    def _send(self, query: str, params: tuple, db: str) -> None:
        """A statement whose answer no one waits for (in a write, it waits in the pipeline)."""
        try:
            self._cur.execute(query, params)
        except psycopg.Error as exc:
            raise _mapped(exc, f"cannot write {db}", self._cur.connection) from exc

    def _fetch(self, query: str, params: tuple, what: str, db: str) -> list[tuple]:
        try:
            self._cur.execute(query, params)
            return self._cur.fetchall()
        except psycopg.Error as exc:
            raise _mapped(exc, f"cannot {what} {db}", self._cur.connection) from exc

    def _note(self, db: str, key: bytes | None) -> None:
        written = self._written.get(db)
        if written is not None:
            written.append(key)

    def _writing(self, db: str) -> None:
        if self._readonly:
            raise PermanentStoreError(f"cannot write {db}: this is a read transaction")

    def _get(self, db: str, key: bytes) -> bytes | None:
        try:
            return self._known[db, key]
        except KeyError:
            pass
        rows = self._fetch(_SQL[db].get, (key,), "read", db)
        value = self._known[db, key] = rows[0][0] if rows else None
        return value

    def _put(self, db: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        self._writing(db)
        if not overwrite and self._get(db, key) is not None:
            return False
        self._note(db, key)
        self._known[db, key] = value
        self._pending.setdefault(db, {})[key] = value
        return True

    def _delete(self, db: str, key: bytes) -> bool:
        self._writing(db)
        if self._get(db, key) is None:
            return False
        self._note(db, key)
        self._known[db, key] = None
        self._pending.setdefault(db, {})[key] = None
        return True

    def _flush(self) -> None:
        """Send every held-back write as one statement: one data-modifying CTE per table and
        kind, the rows as arrays (``_write_statement``). Keys are distinct (the last write of a
        key wins), so the parts never touch one row twice."""
        if not self._pending:
            return
        parts, params = [], []
        for db in sorted(self._pending):
            rows = self._pending[db]
            puts = [(k, v) for k, v in rows.items() if v is not None]
            gone = [k for k, v in rows.items() if v is None]
            if puts:
                parts.append(("put", db))
                params += [[k for k, _ in puts], [v for _, v in puts]]
            if gone:
                parts.append(("delete", db))
                params.append(gone)
        self._pending.clear()
        if parts:
            self._send(_write_statement(tuple(parts)), tuple(params), ", ".join(db for _, db in parts))

    def next_seq(self) -> int:
        self._sequenced = True
        return super().next_seq()

    def _prefetch(self, rows: list[tuple[str, bytes]], counters: bool) -> None:
        """One statement reads every row named that this transaction has not seen yet (its own writes
        it has seen) and, with ``counters``, every counter: a UNION ALL of one lookup per table."""
        wanted: dict[str, list[bytes]] = {}
        for db, key in rows:
            if (db, key) not in self._known:
                wanted.setdefault(db, []).append(key)
        counters = counters and not self._counters
        if not wanted and not counters:
            return
        dbs = sorted(wanted)
        parts = [f"SELECT {i}, k, v FROM cas_{db} WHERE k = ANY(%b::bytea[])" for i, db in enumerate(dbs)]
        params: list = [wanted[db] for db in dbs]
        if counters:
            parts.append(f"SELECT {len(dbs)}, k, v FROM cas_meta WHERE k >= %b AND k < %b")
            params += [b"n:", b"n;"]
        found = self._fetch(" UNION ALL ".join(parts), tuple(params), "read", ", ".join(dbs) or "meta")
        for db in dbs:
            for key in wanted[db]:
                self._known[db, key] = None  # none unless found below
        for i, k, v in found:
            if i < len(dbs):
                self._known[dbs[i], k] = v
            else:  # a counter this transaction wrote keeps the value it wrote
                self._known.setdefault(("meta", k), v)
        if counters:
            self._counters = True

    def counter(self, name: str) -> int:
        """A commit touches several counters: the first read fetches them all (a few dozen
        small rows) in one round trip."""
        key = b"n:" + name.encode()
        self._prefetch([], True)
        self._known.setdefault(("meta", key), None)  # not among them: none yet
        return super().counter(name)

    def list_objects(
        self, bucket: str, prefix: str, delimiter: str, start_after: str, limit: int
    ) -> tuple[list[tuple[str, dict]], list[str], bool]:
        """As ``KvTxn.list_objects``, in one statement: a page and one row more (without a
        delimiter), or ``_GROUPED_PAGE``."""
        if limit <= 0:
            return super().list_objects(bucket, prefix, delimiter, start_after, limit)
        base, full_prefix, start = listing_start(bucket, prefix, delimiter, start_after)
        self._flush()
        if not delimiter:
            end = _prefix_end(full_prefix)
            query, args = (_SQL["objects"].scan_to, (start, end, limit + 1)) if end is not None else \
                (_SQL["objects"].scan, (start, limit + 1))
            rows = self._fetch(query, args, "list", "objects")
            page = [(k[len(base):].decode(), s.loads(v)) for k, v in rows[:limit]]
            return page, [], len(rows) > limit
        delim = delimiter.encode()
        params = {"start": start, "end": _prefix_end(full_prefix), "plen": len(full_prefix), "d": delim,
                  "dlen": len(delim), "n": limit + 1, "ff": b"\xff", "zero": b"\x00"}
        rows = self._fetch(_GROUPED_PAGE, params, "list", "objects")
        entries: list[tuple[str, dict]] = []
        prefixes: list[str] = []
        for k, v in rows:
            if len(entries) + len(prefixes) >= limit:
                return entries, prefixes, True
            cut = k.find(delim, len(full_prefix))
            if cut >= 0:
                prefixes.append(k[len(base): cut + len(delim)].decode())
            else:
                entries.append((k[len(base):].decode(), s.loads(v)))
        return entries, prefixes, False

    def _scan(self, db: str, prefix: bytes = b"", start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        sql = _SQL[db]
        low = prefix if start is None or start < prefix else start
        end = _prefix_end(prefix)
        pages = _pages()
        written = self._written.setdefault(db, [])
        self._scans[db] = self._scans.get(db, 0) + 1
        try:
            while True:  # low: the least key not returned yet
                size = next(pages)
                self._flush()
                if end is None:
                    rows = self._fetch(sql.scan, (low, size), "read", db)
                else:
                    rows = self._fetch(sql.scan_to, (low, end, size), "read", db)
                high = rows[-1][0] if len(rows) == size else None  # None: the page reaches the end
                seen = len(written)
                for k, v in rows:
                    if len(written) > seen:
                        if _lands(written[seen:], low, high):
                            break  # the rest of the page changed: read it again
                        seen = len(written)
                    yield k, v
                    low = k + b"\x00"
                else:
                    if high is None and not (len(written) > seen and _lands(written[seen:], low, None)):
                        return
        finally:
            self._scans[db] -= 1
            if not self._scans[db]:
                del self._scans[db], self._written[db]

    def _trim(self, db: str, upto: int) -> int:
        self._writing(db)
        if upto < 0:
            return 0
        self._note(db, None)
        self._flush()
        for known in [k for k in self._known if k[0] == db]:
            del self._known[known]
        if db == "meta":
            self._counters = False
        if upto >= (1 << 64) - 1:
            return self._fetch(_SQL[db].trim_all, (), "write", db)[0][0]
        return self._fetch(_SQL[db].trim, (s.u64(upto + 1),), "write", db)[0][0]


@functools.lru_cache(maxsize=256)
def _write_statement(parts: tuple[tuple[str, str], ...]) -> str:
    """One statement doing ``parts`` (("put" | "delete", table) in order), each a CTE over array
    parameters: a commit's dozen writes to half a dozen tables cost one statement, not a dozen
    (a statement costs a client like psycopg far more CPU than a row in it). The same few shapes
    recur, so psycopg prepares them."""
    ctes = []
    for i, (kind, db) in enumerate(parts):
        if kind == "put":
            ctes.append(f"w{i} AS (INSERT INTO cas_{db} (k, v) SELECT * FROM unnest(%b::bytea[], %b::bytea[]) "
                        f"ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v)")
        else:
            ctes.append(f"w{i} AS (DELETE FROM cas_{db} WHERE k = ANY(%b::bytea[]))")
    return f"WITH {', '.join(ctes)} SELECT 1"


def _lands(written: list[bytes | None], low: bytes, high: bytes | None) -> bool:
    """Whether a key written (None: any) lies in ``[low, high]`` (``high`` None: no bound)."""
    return any(k is None or (k >= low and (high is None or k <= high)) for k in written)


def _pages() -> Iterator[int]:
    yield from _PAGES[:-1]
    while True:
        yield _PAGES[-1]
