"""PgIndex beyond the index contract (tests/unit/test_index_contract.py): opening a database
(credentials, an unreachable server, a malformed URL, the table layout and its version), several
processes on one database (nodes), connections the server drops, and errors inside pipelined
writes. The password never appears in a message."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from cas.errors import ConfigError, Conflict, PermanentStoreError, StoreError, TransientStoreError
from cas.index import pg_index
from cas.index.pg_index import PgIndex, display_url
from cas.index.schema import LIVE, BlockRow

pytestmark = pytest.mark.unit


def _password(url: str) -> str:
    return urlsplit(url).password


def _drop_sessions(url: str) -> int:
    """End every cas session on the database of ``url`` (as a server restart would), and wait
    until they are gone."""
    with psycopg.connect(url, autocommit=True) as conn:
        return len(conn.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE "
                                "datname = current_database() AND application_name LIKE 'cas/%'").fetchall())


def test_bad_credentials_are_refused_at_open_and_the_password_never_shows(pg_url):
    wrong = "wrong-" + secrets.token_hex(8)
    bad = pg_url.replace(f":{_password(pg_url)}@", f":{wrong}@")
    with pytest.raises(PermanentStoreError) as refused:
        PgIndex(bad)
    message = str(refused.value)
    assert display_url(pg_url) in message and "password authentication failed" in message
    assert wrong not in message and _password(pg_url) not in message
    assert "\n" not in message


def test_an_unreachable_server_is_refused_at_open(pg_url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    url = pg_url.replace(f":{urlsplit(pg_url).port}/", f":{port}/")
    t0 = time.monotonic()
    with pytest.raises(PermanentStoreError, match=f"cannot connect to the index postgresql://cas@127.0.0.1:{port}/"):
        PgIndex(url)
    assert time.monotonic() - t0 < 10


def test_a_malformed_url_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError) as refused:
        PgIndex("postgresql://cas:top%ZZsecret@127.0.0.1:1/db")
    assert "ZZsecret" not in str(refused.value) and "top" not in str(refused.value)


def test_display_url_shows_no_password():
    assert display_url("postgresql://cas:pw@db.example:6432/store?sslmode=require") == "postgresql://cas@db.example:6432/store"
    assert display_url("postgres://u:pw@%2Fvar%2Frun%2Fpostgresql/s") == "postgres" + "ql://u@%2Fvar%2Frun%2Fpostgresql/s"


def test_concurrent_opens_create_the_tables_once(pg_url):
    opened, failed = [], []

    def open_one():
        try:
            opened.append(PgIndex(pg_url, pool_size=1))
        except StoreError as exc:
            failed.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for index in opened:
        index.close()
    assert failed == [] and len(opened) == 4
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM cas_schema").fetchall() == [(pg_index.SCHEMA_VERSION,)]
        tables = {name for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'cas%'")}
    assert tables == set(pg_index.TABLES)


def test_a_newer_table_layout_is_refused(pg_url):
    PgIndex(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE cas_schema SET version = version + 1")
    with pytest.raises(ConfigError, match=f"version {pg_index.SCHEMA_VERSION + 1}.*run a newer cas"):
        PgIndex(pg_url)


def test_two_nodes_on_one_database_are_one_index(pg_url):
    """Two PgIndex on one database (as two `cas serve` would have): one sees what the other
    commits, their writers are serialised together, and a lock of one excludes the other."""
    a, b = PgIndex(pg_url, pool_size=4), PgIndex(pg_url, pool_size=4)
    try:
        with a.write() as t:
            t.put_bucket("shared", {"by": "a"})
        with b.read() as t:
            assert t.get_bucket("shared") == {"by": "a"}

        def work(index):
            for _ in range(20):
                with index.write() as t:
                    n = t.get_meta("n") or 0
                    time.sleep(0.001)
                    t.put_meta("n", n + 1)
                    seq = t.next_seq()
                    t.add_event(seq, {"seq": seq})

        threads = [threading.Thread(target=work, args=(ix,)) for ix in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        with b.read() as t:
            assert t.get_meta("n") == 80
            assert [e["seq"] for e in t.iter_events()] == list(range(1, 81))
        with a.lock("gc"):
            with pytest.raises(Conflict, match="gc lock"), b.lock("gc"):
                pass
        with b.lock("gc"):
            pass
        assert a.other_processes() == [] == b.other_processes()  # one process, however many pools
    finally:
        a.close()
        b.close()


def _woken(index: PgIndex) -> threading.Event:
    woke = threading.Event()
    index.watch(woke.set)
    return woke


def _listening(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND query = 'LISTEN cas_commits'").fetchone()[0]


def _until_listening(url: str) -> None:
    """Wait (10 s at most) until a session of the database LISTENs for commits."""
    deadline = time.monotonic() + 10
    while _listening(url) < 1:
        assert time.monotonic() < deadline, "the listener never listened"
        time.sleep(0.02)


def test_a_commit_with_a_sequence_number_wakes_the_watchers_of_another_node(pg_url):
    """watch: node B learns of A's commits from the server (NOTIFY), not by polling; a commit
    that takes no sequence number, or one rolled back, tells nobody."""
    a, b = PgIndex(pg_url, pool_size=2), PgIndex(pg_url, pool_size=2)
    try:
        woke = _woken(b)
        assert woke.wait(10)  # once when it starts listening: commits it may have missed
        _until_listening(pg_url)
        woke.clear()
        with a.write() as t:
            t.put_meta("quiet", 1)  # no sequence number: no notification
        with pytest.raises(RuntimeError), a.write() as t:
            t.next_seq()
            raise RuntimeError("rolled back")
        assert not woke.wait(1.5)
        with a.write() as t:
            t.next_seq()
        assert woke.wait(10)
        woke.clear()
        with b.write() as t:  # its own commits too (another store of this process may wait)
            t.next_seq()
        assert woke.wait(10)
    finally:
        a.close()
        t0 = time.monotonic()
        b.close()
        assert time.monotonic() - t0 < pg_index.LISTEN_POLL  # its own notification ends the listener
    assert _listening(pg_url) == 0


def test_a_listener_that_lost_its_connection_reconnects_and_wakes(pg_url, monkeypatch):
    monkeypatch.setattr(pg_index, "LISTEN_RETRY", (0.1, 0.5))
    monkeypatch.setattr(pg_index, "IDLE_CHECK", 0.0)  # A's pooled connections are dropped too
    a, b = PgIndex(pg_url, pool_size=2), PgIndex(pg_url, pool_size=2)
    try:
        woke = _woken(b)
        assert woke.wait(10)
        woke.clear()
        assert _drop_sessions(pg_url) >= 1  # the listener's session among them
        assert woke.wait(10)  # reconnected: woken once for what it may have missed
        _until_listening(pg_url)
        woke.clear()
        with a.write() as t:
            t.next_seq()
        assert woke.wait(10)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("flush", ["after the lock", "synchronous"])
def test_durable_writes_survive_a_crash_of_the_server(flush, monkeypatch):
    """Writes commit without waiting for the WAL (so the write lock is not held through an fsync)
    and a durable write flushes it after: every durable write that returned is there after the
    server crashed (its unwritten WAL buffers lost) and recovered. The WAL writer is slowed down,
    so that it does not flush for them in the meantime. A server that cannot run the flush
    statement gets synchronous commits instead."""
    if flush == "synchronous":
        monkeypatch.setattr(pg_index, "_FLUSH", "SELECT cas_no_such_function()")
    from tests.fixtures.pg import PgServer, find_postgres_bin

    workdir = Path(tempfile.mkdtemp(prefix="cas-pg-crash-"))  # /tmp: the server's user reaches it
    server = PgServer(find_postgres_bin(), workdir, settings={"wal_writer_delay": "10s",
                                                              "wal_writer_flush_after": "0"})
    server.start()
    try:
        url = server.new_database()
        index = PgIndex(url, pool_size=4)
        assert index._flushes is (flush == "after the lock")
        try:
            done = []

            def write(i: int) -> None:
                with index.write() as t:
                    t.put_meta(f"durable-{i}", i)
                    t.next_seq()
                done.append(i)

            threads = [threading.Thread(target=write, args=(i,)) for i in range(40)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert sorted(done) == list(range(40))
            server.crash()
        finally:
            index.close()
        server.restart()
        index = PgIndex(url, pool_size=1)
        try:
            with index.read() as t:
                assert [t.get_meta(f"durable-{i}") for i in range(40)] == list(range(40))
                assert t.last_seq() == 40
        finally:
            index.close()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_writer_holds_off_the_writers_of_another_node_until_it_commits(pg_url):
    a, b = PgIndex(pg_url, pool_size=2), PgIndex(pg_url, pool_size=2)
    done: list[float] = []

    def other_node():
        with b.write() as t:
            t.put_meta("last", "b")
        done.append(time.monotonic())

    try:
        with a.write() as t:
            t.get_meta("last")  # the write lock is held from here
            thread = threading.Thread(target=other_node)
            thread.start()
            time.sleep(0.5)
            assert done == []
            t.put_meta("last", "a")
            committed = time.monotonic()
        thread.join(30)
        assert done and done[0] >= committed
        with a.read() as t:
            assert t.get_meta("last") == "b"
    finally:
        a.close()
        b.close()


def test_connections_the_server_dropped_are_replaced_before_use(pg_url, monkeypatch):
    index = PgIndex(pg_url, pool_size=2)
    try:
        with index.read() as t:
            t.last_seq()
        monkeypatch.setattr(pg_index, "IDLE_CHECK", 0.0)  # every pooled connection counts as idle
        assert _drop_sessions(pg_url) >= 1
        for _ in range(3):
            with index.write() as t:
                t.next_seq()
        with index.read() as t:
            assert t.last_seq() == 3
    finally:
        index.close()


def test_a_connection_lost_inside_a_transaction_is_a_transient_error(pg_url):
    index = PgIndex(pg_url, pool_size=1)
    try:
        with pytest.raises(TransientStoreError), index.read() as t:
            t.last_seq()
            _drop_sessions(pg_url)
            t.get_bucket("b")
        with pytest.raises(TransientStoreError), index.write() as t:
            t.put_bucket("b", {})
            _drop_sessions(pg_url)
            t.get_bucket("b")
        with index.read() as t:  # the pool made a new connection
            assert t.get_bucket("b") is None
    finally:
        index.close()


def test_a_failed_write_commits_nothing(pg_url):
    """Writes are held back and sent together before the transaction's next scan and with its
    commit: an error in one comes from that scan or from the commit, and nothing of the
    transaction is committed; a caller that catches it at the scan and carries on cannot commit
    the rest."""
    too_long = secrets.token_bytes(8000)  # no B-tree takes such a key (nor compresses it)
    row = BlockRow(LIVE, 1, 1, 1.0, 1.0)
    index = PgIndex(pg_url, pool_size=1)
    try:
        with pytest.raises(PermanentStoreError), index.write() as t:
            t.put_bucket("b1", {})
            t.put_block(too_long, row)
            assert t.get_bucket("b1") == {}  # what the transaction wrote, it reads back at once
        with pytest.raises(PermanentStoreError, match="nothing was committed"), index.write() as t:
            t.put_bucket("b3", {})
            t.put_block(too_long, row)
            with pytest.raises(StoreError):
                list(t.iter_buckets())  # a scan sends what was held back first
        with index.read() as t:
            assert list(t.iter_buckets()) == []
    finally:
        index.close()


def test_the_application_name_fits_postgresql_and_ends_with_the_pid(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "node-" + "h" * 100)
    name = pg_index._application_name()
    assert len(name.encode()) <= 63 and name.startswith("cas/node-hhh") and name.endswith(f"/{os.getpid()}")
