"""One cheroot listener that idle and slow clients cannot starve (slowloris).

cheroot hands every freshly accepted connection straight to a worker thread,
which then blocks reading the request head for up to ``timeout`` seconds, with
the clock restarting at every byte: a few idle or trickling connections hold
the whole pool. ``Listener`` changes three things, by subclassing (no patch):

* **Heads are read without a thread.** A connection is parked in cheroot's
  selector until it is readable; then whatever bytes have arrived are read
  without blocking and kept (``_HeadReader``). Only when the head is complete
  (a blank line, or more than the header size limit, which cheroot then
  refuses) does the connection go to a worker, which parses the head from
  memory. Keep-alive connections between requests take the same path.
* **The head has a deadline.** A new connection must deliver its complete head
  within ``head_timeout`` seconds; a kept-alive one may stay idle for
  ``timeout`` seconds, then has ``head_timeout`` from its first byte. Past it
  the selector closes the connection (with a 408 if part of a head came).
  Bodies and responses keep the longer per-read ``timeout``.
* **TLS handshakes too.** cheroot's adapter shakes hands in the selector thread,
  blocking the whole listener while a client dawdles; ``TlsAdapter`` defers the
  handshake, which then advances without blocking like the head.
* **Connections per source address are capped** (``max_per_source``, 0: no
  cap), and so is the listener's total (a share of the process's file
  descriptor limit). A connection over a cap gets a 503 and is closed at once.

The worker pool is bounded (``threads``): a worker is busy only while a
request with a complete head is processed, so its size bounds concurrent
requests, not open connections.

Thread-safety: the source counts are guarded by a lock; a connection is owned
by one thread at a time (the selector or the worker it was handed to).
"""

from __future__ import annotations

import logging
import resource
import socket
import ssl
import threading
import time
from collections import Counter

from cheroot import connections, makefile, server, wsgi
from cheroot import errors as cheroot_errors
from cheroot.ssl.builtin import BuiltinSSLAdapter

log = logging.getLogger(__name__)

_RECV_PIECE = 16 * 1024
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 29\r\n"
            b"Retry-After: 10\r\nConnection: close\r\n\r\ntoo many connections, retry\r\n")
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _send_nowait(sock, data: bytes) -> None:
    """A last short answer before closing; never blocks (a full socket buffer just loses it)."""
    try:
        sock.settimeout(0)
        sock.send(data)
    except OSError:
        return


def total_connection_cap() -> int:
    """Open connections one listener accepts: a quarter of the file descriptor limit (two
    listeners, plus files, index and block store), never below 64."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, soft // 4) if soft != resource.RLIM_INFINITY else 16384


class TlsAdapter(BuiltinSSLAdapter):
    """cheroot's builtin TLS adapter, with the handshake left to ``_Connection.read_ahead``."""

    def wrap(self, sock):
        try:
            s = self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True)
        except OSError as exc:
            raise cheroot_errors.FatalSSLAlert(*exc.args) from exc
        return s, {"wsgi.url_scheme": "https", "HTTPS": "on"}  # the rest once the handshake is done


class _HeadBufferedIO(socket.SocketIO):
    """The connection's raw stream: bytes read ahead by the selector (``pending``) come first."""

    def __init__(self, sock, mode):
        super().__init__(sock, mode)
        self.pending = bytearray()

    def readinto(self, b):
        if self.pending:
            n = min(len(b), len(self.pending))
            b[:n] = self.pending[:n]
            del self.pending[:n]
            return n
        return super().readinto(b)


class _HeadReader(makefile.StreamReader):
    """cheroot's socket reader over ``_HeadBufferedIO``."""

    def __init__(self, sock, mode="rb", bufsize=makefile.io.DEFAULT_BUFFER_SIZE):
        makefile.io.BufferedReader.__init__(self, _HeadBufferedIO(sock, mode), bufsize)
        self.bytes_read = 0

    def has_data(self):
        return super().has_data() or bool(self.raw.pending)

    def take_buffered(self) -> bytes:
        """What the buffered reader holds already (pipelined bytes), without touching the socket."""
        return self.read1(len(self._read_buf) - self._read_pos) if super().has_data() else b""


class _Connection(server.HTTPConnection):
    """A connection that counts against its source's cap until closed, and reads heads ahead."""

    def __init__(self, srv, sock, make_file=makefile.MakeFile):
        def files(sock, mode, bufsize):
            return _HeadReader(sock, mode, bufsize) if "r" in mode else make_file(sock, mode, bufsize)

        super().__init__(srv, sock, files)
        self.source: str | None = None  # set once admitted
        self.handshake_pending = isinstance(srv.ssl_adapter, TlsAdapter)
        self.head_deadline: float | None = None  # None: idle between requests (cheroot's timeout)
        self._closed = False

    def close(self):
        if not self._closed:
            self._closed = True
            self.server.release(self)
        super().close()

    def read_ahead(self) -> bool | None:
        """Move what has arrived into the head buffer, without blocking.

        True: a complete head (or more than a head may be, or all the peer will send) is
        buffered; False: not yet; None: the peer closed without a byte, or the socket failed.
        """
        raw = self.rfile.raw
        raw.pending += self.rfile.take_buffered()
        limit = self.server.max_request_header_size or (1 << 20)
        sock = self.socket
        try:
            sock.settimeout(0)
            if self.handshake_pending:
                try:
                    sock.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    return False
                except OSError:  # not TLS, a refused certificate, a reset ...
                    return None
                self.handshake_pending = False
                self.ssl_env = self.server.ssl_adapter.get_environ(sock)
            while len(raw.pending) <= limit:
                try:
                    piece = sock.recv(_RECV_PIECE)
                except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                    break  # all that has arrived (TLS: no complete record yet)
                except OSError:  # reset by the peer, or a TLS error
                    return None
                if not piece:  # the peer closed (or half-closed after sending its request)
                    return True if raw.pending else None
                raw.pending += piece
        finally:
            try:
                sock.settimeout(self.server.timeout)
            except OSError:
                pass
        head = bytes(raw.pending.lstrip(b"\r\n")[:limit + 4])
        return len(raw.pending) > limit or b"\r\n\r\n" in head or b"\n\n" in head


class _ConnectionManager(connections.ConnectionManager):
    """cheroot's selector loop with per-connection head deadlines."""

    def put(self, conn):
        """A worker returns a kept-alive connection: idle until its next request starts."""
        conn.head_deadline = None
        super().put(conn)

    def park(self, conn) -> None:
        """Wait in the selector (no thread) until the connection is readable or its deadline passes."""
        conn.last_used = time.time()
        self._selector.register(conn.socket.fileno(), connections.selectors.EVENT_READ, data=conn)

    def _expire(self, threshold):
        now = time.time()
        expired = [
            (fd, conn) for fd, conn in self._selector.connections
            if conn is not self.server and (
                conn.last_used < threshold
                or (conn.head_deadline is not None and conn.head_deadline < now))
        ]
        for fd, conn in expired:
            self._selector.unregister(fd)
            if conn.rfile.raw.pending:
                _send_nowait(conn.socket, _TIMED_OUT)
            conn.close()


class Listener(wsgi.Server):
    """A cheroot WSGI server with bounded threads, head deadlines and per-source caps."""

    ConnectionClass = _Connection

    def __init__(self, bind_addr, app, *, threads: int, head_timeout: float, max_per_source: int,
                 timeout: float = 60, **kw):
        super().__init__(bind_addr, app, numthreads=threads, max=threads, timeout=timeout, **kw)
        self.head_timeout = head_timeout
        self.max_per_source = max_per_source
        self.max_connections = total_connection_cap()
        # every parked connection counts as "waiting keep-alive" for cheroot: the caps above
        # bound them, so cheroot's own limit (10) would only turn keep-alive off under load
        self.keep_alive_conn_limit = self.max_connections
        self._count_lock = threading.Lock()
        self._per_source: Counter[str] = Counter()
        self._open = 0

    def prepare(self):
        super().prepare()
        plain = self._connections
        self._connections = _ConnectionManager(self)
        plain._selector.close()

    # -- admission -------------------------------------------------------------------------
    def _admit(self, conn: _Connection) -> bool:
        source = conn.remote_addr or "-"
        with self._count_lock:
            if self._open >= self.max_connections or (
                    self.max_per_source and self._per_source[source] >= self.max_per_source):
                return False
            self._open += 1
            self._per_source[source] += 1
            conn.source = source
        return True

    def release(self, conn: _Connection) -> None:
        """Called once per connection when it closes."""
        if conn.source is None:
            return
        with self._count_lock:
            self._open -= 1
            self._per_source[conn.source] -= 1
            if self._per_source[conn.source] <= 0:
                del self._per_source[conn.source]

    def connections_from(self, source: str) -> int:
        with self._count_lock:
            return self._per_source.get(source, 0)

    # -- dispatch --------------------------------------------------------------------------
    def process_conn(self, conn):
        """Called for a new connection, a readable parked one, and a kept-alive one with
        pipelined bytes: hand it to a worker only once its head is complete."""
        if conn.source is None:
            if not self._admit(conn):
                log.warning("refusing a connection from %s: too many open connections", conn.remote_addr)
                _send_nowait(conn.socket, _REFUSED)
                conn.linger = False
                conn.close()
                return
            conn.head_deadline = time.time() + self.head_timeout
            self._connections.park(conn)
            return
        complete = conn.read_ahead()
        if complete is None:
            conn.close()
        elif complete:
            conn.head_deadline = None
            super().process_conn(conn)
        else:
            if conn.head_deadline is None:  # the first bytes of a kept-alive connection's next head
                conn.head_deadline = time.time() + self.head_timeout
            self._connections.park(conn)
