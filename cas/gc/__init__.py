"""Garbage collection and verification (DESIGN §4): the admin side that keeps a store whole.

- ``sweep.collect(store, delete=..., min_age=...)``: mark and sweep, safe while
  uploads run; ``sweep.run_periodic`` runs it inside ``cas serve``.
- ``verify.verify(store, deep=..., repair=...)``: findings as data.
- ``report``: the reports as data and their summaries; ``repair``: verify's fixes.
- ``safety``: the GC lock and the temp-file grace; ``mark``: the compact mark sets
  (8 bytes per referenced block). The rules for block rows, pins and leases are
  ``cas.blocklife``'s.
"""

from .report import Finding, GcReport, VerifyReport
from .sweep import collect, run_periodic
from .verify import verify

__all__ = ["Finding", "GcReport", "VerifyReport", "collect", "run_periodic", "verify"]
