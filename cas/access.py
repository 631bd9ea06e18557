"""Who is asking, and what they may reach: the one ``Principal`` type and every bucket check.

A principal is a cas user (possibly root) or the anonymous reader that ``auth.allow_anonymous``
lets in. Anonymity is a *flag* set by the authentication code when a request carries no
credentials, never a user name: a real user called ``anonymous`` (refused by ``cas user add``
since this rule was written, but possibly present in older stores) gets exactly what any other
user gets. Each front end builds one principal per request (S3 from the SigV4 access key, WebDAV
from its authenticator's environ, the web API from its token or Basic credentials) and asks the
functions below; no protocol module compares user names itself.

Rules:

- Visibility: root and the anonymous reader see every bucket (anonymous mode is read-only over
  the whole store until bucket ACLs exist); any other user sees the buckets it owns.
- Writing: the anonymous reader writes nothing (``require_writer``).
- A bucket that exists but is not visible raises ``BucketNotVisible`` (an ``AccessDenied``).
  Each protocol maps it to its own wire answer: S3 keeps AWS's 403 AccessDenied; WebDAV and
  the web API answer 404, as for a missing bucket, so names do not leak to browsers and drives.
- Multipart uploads are used by their initiator or root (``may_use``).

Stateless; the functions only read the Store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import AccessDenied, BucketNotVisible

if TYPE_CHECKING:
    from .store import BucketInfo, Store

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

    @classmethod
    def of_user(cls, store: Store, name: str) -> Principal:
        """The principal of an authenticated user ``name`` (root or not, as the store says)."""
        return cls(name, root=bool(store.users.is_root(name)))

    @property
    def sees_everything(self) -> bool:
        """Whether every bucket (and every event) is visible to this principal."""
        return self.root or self.anonymous

    def can_see(self, owner: str) -> bool:
        """Whether a bucket owned by ``owner`` is visible to this principal."""
        return self.sees_everything or self.owns(owner)

    def owns(self, owner: str) -> bool:
        """Whether ``owner`` (of a bucket or an upload) is this principal (never the anonymous one)."""
        return not self.anonymous and bool(self.name) and owner == self.name

    def may_use(self, owner: str) -> bool:
        """Whether something that ``owner`` started (a multipart upload) may be used by this principal."""
        return self.root or self.owns(owner)

    def require_writer(self) -> None:
        """``AccessDenied`` for the anonymous reader: anonymous access is read-only."""
        if self.anonymous:
            raise AccessDenied("anonymous access is read-only")

    def require_root(self) -> None:
        if not self.root:
            raise AccessDenied("only the root user may do this")


def check_bucket(info: BucketInfo, principal: Principal, *, write: bool = False) -> BucketInfo:
    """``info`` if ``principal`` may use it (for writing, with ``write``), else the error to map."""
    if not principal.can_see(info.owner):
        raise BucketNotVisible(f"bucket {info.name!r} belongs to another user")
    if write:
        principal.require_writer()
    return info


def visible_bucket(store: Store, principal: Principal, name: str, *, write: bool = False) -> BucketInfo:
    """The bucket ``name`` if ``principal`` may use it.

    ``BucketNotFound`` when it does not exist, ``BucketNotVisible`` when it is someone else's,
    ``AccessDenied`` when ``write`` is asked of the anonymous reader.
    """
    return check_bucket(store.bucket(name), principal, write=write)


def visible_buckets(store: Store, principal: Principal) -> list[BucketInfo]:
    """Every bucket ``principal`` may see, in name order."""
    return store.buckets(owner=None if principal.sees_everything else principal.name)
