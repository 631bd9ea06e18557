"""Garbage collection and verification (DESIGN §4): the admin side that keeps a store whole.

- ``sweep.collect(store, delete=..., min_age=...)``: mark and sweep, safe while
  uploads run; ``sweep.run_periodic`` runs it inside ``cas serve``.
- ``verify.verify(store, deep=..., repair=...)``: findings as data.
- ``safety``: the grace, lease and locking rules both obey; ``mark``: the
  compact mark sets (8 bytes per referenced block).
"""

from .sweep import GcReport, collect, run_periodic
from .verify import Finding, VerifyReport, verify

__all__ = ["Finding", "GcReport", "VerifyReport", "collect", "run_periodic", "verify"]
