"""RetryPolicy: retry a backend request on transient failure, with capped exponential backoff.

Backends classify their own failures (``TransientStoreError`` is worth retrying,
everything else is not); this module only decides *how often* and *how long to
wait*. It retries one request at a time, so a listing that fails on its fifth
page resumes at that page instead of starting over.

Waits use "equal jitter": attempt ``n`` (from 0) waits a uniform time in
``[d/2, d]`` with ``d = min(cap, base * 2**n)``, so concurrent writers that failed
together do not come back together, and there is always some back-off. With the
defaults (6 attempts, 0.1 s base, 3 s cap) a dead backend is reported after at
most ~3.1 s of waiting plus the requests' own timeouts.

Thread-safe: a policy is immutable; the jitter source is ``random.random``
(thread-safe in CPython) unless a test injects its own ``sleep``/``rand``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import TransientStoreError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try a request and how long to wait in between."""

    attempts: int = 6  # total tries, first one included; 1 = no retry
    base: float = 0.1  # seconds before the first retry (upper bound, before jitter)
    cap: float = 3.0  # longest single wait
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.base < 0 or self.cap < 0:
            raise ValueError("RetryPolicy waits must not be negative")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 = the first retry)."""
        d = min(self.cap, self.base * (2**retry))
        return d / 2 + self.rand() * d / 2

    def run(self, what: str, fn: Callable[[], T]) -> T:
        """Call ``fn`` until it returns or raises something other than ``TransientStoreError``.

        After the last attempt the final ``TransientStoreError`` propagates, its
        message saying how many attempts were made.
        """
        for attempt in range(self.attempts):
            try:
                return fn()
            except TransientStoreError as exc:
                if attempt + 1 >= self.attempts:
                    if self.attempts > 1:
                        raise TransientStoreError(f"{exc} (gave up after {self.attempts} attempts)") from exc
                    raise
                wait = self.delay(attempt)
                log.debug("%s failed (%s); retry %d/%d in %.2fs", what, exc, attempt + 1, self.attempts - 1, wait)
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    def run_iter(self, what: str, open_from: Callable[[Any], Iterator[T]], *, key: Callable[[T], Any],
                 start: Any = None) -> Iterator[T]:
        """Iterate ``open_from(start)``; when it fails transiently, wait and reopen it after the last
        item yielded (``key(item)``). Attempts count failures in a row: progress resets them, so a
        long listing that fails now and then on different pages still completes."""
        last = start
        failures = 0
        while True:
            try:
                for item in open_from(last):
                    last = key(item)
                    failures = 0
                    yield item
                return
            except TransientStoreError as exc:
                failures += 1
                if failures >= self.attempts:
                    if self.attempts > 1:
                        raise TransientStoreError(f"{exc} (gave up after {self.attempts} attempts)") from exc
                    raise
                wait = self.delay(failures - 1)
                log.debug("%s failed (%s); retry %d/%d in %.2fs", what, exc, failures, self.attempts - 1, wait)
                self.sleep(wait)
