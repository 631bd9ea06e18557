"""LoginThrottle: slows down password guessing without letting a guesser lock anyone out.

Failures are counted per source address and per (source address, user name),
never per user name alone: a guesser at one address makes that address wait,
while the user logs in from anywhere else at once. After ``free`` failures a
key must wait before its next attempt, twice as long after each further
failure (``base`` seconds, doubling, at most ``max_delay``); while it waits,
attempts are refused without looking at the password (so guesses do not get
through) and do not count. A success clears the (source, user) count but not
the source's: logging into one's own account between guesses resets nothing.
A count is forgotten ``forget_after`` seconds after its last failure (and not
before its wait ends).

The source is the peer address of the connection (``REMOTE_ADDR``);
``X-Forwarded-For`` is not trusted. IPv6 peers count per /64 (what one host
usually has); IPv4-mapped IPv6 addresses count as IPv4.

The table is bounded (``max_entries``, least recently used dropped first), so
made-up names and addresses cannot grow memory. Time comes from ``clock``
(injectable). Thread-safe.

The counts are this process's: several nodes sharing one index each throttle
on their own. That is deliberate (a guess is slowed on whichever node takes it,
and no login waits for a shared table); a guesser spread over N nodes gets N
times the attempts, each still behind growing delays.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import TooManyRequests

MAX_NAME = 128  # longer names are not valid user names; do not keep more of them


@dataclass(frozen=True)
class Backoff:
    free: int  # failures allowed before the first wait
    base: float = 1.0
    max_delay: float = 900.0

    def delay(self, failures: int) -> float:
        if failures <= self.free:
            return 0.0
        return min(self.base * 2.0 ** min(failures - self.free - 1, 64), self.max_delay)


PER_SOURCE = Backoff(free=20)  # a NAT or an office shares an address: be lenient
PER_SOURCE_USER = Backoff(free=5)


def source_key(address: str | None) -> str:
    """The address a failure is counted against: IPv4 as is, IPv6 per /64."""
    if not address:
        return "-"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class _Entry:
    __slots__ = ("blocked_until", "failures", "last_failure")

    def __init__(self):
        self.failures = 0
        self.blocked_until = 0.0
        self.last_failure = 0.0


class LoginThrottle:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, per_source: Backoff = PER_SOURCE,
                 per_source_user: Backoff = PER_SOURCE_USER, forget_after: float = 900.0,
                 max_entries: int = 10_000):
        self._clock = clock
        self._rules = {"source": per_source, "user": per_source_user}
        self._forget_after = forget_after
        self._max_entries = max_entries
        self._table: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._table)

    @staticmethod
    def _keys(source: str | None, user: str) -> tuple[tuple, tuple]:
        src = source_key(source)
        return ("source", src), ("user", src, user[:MAX_NAME])

    def _live(self, key: tuple, now: float) -> _Entry | None:
        entry = self._table.get(key)
        if entry is not None and now >= max(entry.blocked_until, entry.last_failure + self._forget_after):
            del self._table[key]
            return None
        return entry

    def check(self, source: str | None, user: str) -> None:
        """Raise ``TooManyRequests`` (with ``retry_after`` seconds) if this attempt must wait."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in self._keys(source, user):
                entry = self._live(key, now)
                if entry is not None:
                    wait = max(wait, entry.blocked_until - now)
        if wait > 0:
            raise TooManyRequests(retry_after=max(1, math.ceil(wait)))

    def failure(self, source: str | None, user: str) -> None:
        now = self._clock()
        with self._lock:
            for key in self._keys(source, user):
                entry = self._live(key, now)
                if entry is None:
                    entry = self._table[key] = _Entry()
                self._table.move_to_end(key)
                entry.failures += 1
                entry.last_failure = now
                entry.blocked_until = now + self._rules[key[0]].delay(entry.failures)
            while len(self._table) > self._max_entries:
                self._table.popitem(last=False)

    def success(self, source: str | None, user: str) -> None:
        with self._lock:
            self._table.pop(self._keys(source, user)[1], None)
