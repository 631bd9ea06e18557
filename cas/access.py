"""Who is asking: the one ``Principal`` type and the bucket visibility rule built on it.

A principal is a cas user (possibly root) or the anonymous reader that ``auth.allow_anonymous``
lets in. Anonymity is a *flag* set by the authentication code when a request carries no
credentials, never a user name: a real user called ``anonymous`` (refused by ``cas user add``
since this rule was written, but possibly present in older stores) gets exactly what any other
user gets.

Visibility: root and the anonymous reader see every bucket (anonymous mode is read-only over the
whole store until bucket ACLs exist); any other user sees the buckets it owns. Someone else's
bucket is reported as missing, so names do not leak.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import AccessDenied

#: names that ``cas user add`` refuses: they read as roles, not people, in logs and UIs
RESERVED_NAMES = frozenset({"anonymous", "root", "public", "everyone"})


@dataclass(frozen=True)
class Principal:
    """The caller of one request. ``name`` is empty for the anonymous reader."""

    name: str
    root: bool = False
    anonymous: bool = False

    @classmethod
    def anonymous_reader(cls) -> Principal:
        return cls("", anonymous=True)

    @property
    def sees_everything(self) -> bool:
        """Whether every bucket (and every event) is visible to this principal."""
        return self.root or self.anonymous

    def can_see(self, owner: str) -> bool:
        """Whether a bucket owned by ``owner`` is visible to this principal."""
        return self.sees_everything or (bool(self.name) and owner == self.name)

    def require_writer(self) -> None:
        """``AccessDenied`` for the anonymous reader: anonymous access is read-only."""
        if self.anonymous:
            raise AccessDenied("anonymous access is read-only")

    def require_root(self) -> None:
        if not self.root:
            raise AccessDenied("only the root user may do this")
