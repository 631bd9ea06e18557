"""UserRegistry: who may use the store, and their secrets.

A user is a name that is also its S3 access key, with one secret that is its
S3 secret key and its WebDAV / web password (as in MinIO). Secrets must be
recoverable for SigV4, so they are kept in the index, whose files are 0600.
The root user comes from CAS_ROOT_USER / CAS_ROOT_PASSWORD, or is generated at
first start into ``DIR/root-credentials`` (0600) and the index (meta
``root_credentials``: every node sharing the index knows the one root; meta is
never logged to the backend); root sees every bucket.
Comparisons are constant-time; repeated failures are slowed down per source
address and per (address, name) by ``LoginThrottle`` (never per name alone, so
a guesser cannot lock the real user out).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time

from ..access import RESERVED_NAMES
from ..errors import InvalidName, UserAlreadyExists, UserNotFound
from .throttle import LoginThrottle

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=,-]{2,127}$")
ROOT_FILE = "root-credentials"
ROOT_META = "root_credentials"  # index meta: the generated root's {"name", "secret"}


def generate_secret() -> str:
    """40 URL-safe characters, never starting with "-" (it would read as an option on a command line)."""
    while True:
        secret = secrets.token_urlsafe(30)[:40]
        if not secret.startswith("-"):
            return secret


class UserRegistry:
    def __init__(self, store, throttle: LoginThrottle | None = None):
        self._store = store
        self._root: tuple[str, str] | None = None
        self.throttle = throttle or LoginThrottle()

    # -- root -------------------------------------------------------------------------------
    def ensure_root(self) -> tuple[str, str, bool]:
        """Root's (name, secret, newly generated). Without CAS_ROOT_USER / CAS_ROOT_PASSWORD: the
        root kept in the index, else the one in ``DIR/root-credentials`` (an older cas kept it only
        there: it goes into the index), else a new one, written to that file (0600) first (so that it is
        never in the index only, unseen by the operator). When two nodes generate one at once, the
        first in the index is everybody's."""
        auth = self._store.settings.auth
        if auth.root_user and auth.root_password:
            self._root = (auth.root_user, auth.root_password)
            return auth.root_user, auth.root_password, False
        with self._store.index.read() as t:
            kept = t.get_meta(ROOT_META)
        if kept is not None:
            self._root = (kept["name"], kept["secret"])
            return kept["name"], kept["secret"], False
        path = self._store.settings.data_dir / ROOT_FILE
        created = not path.exists()
        if created:
            name, secret = auth.root_user or "root", generate_secret()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{name}\n{secret}\n")
        else:
            name, secret = path.read_text().split("\n")[:2]
        with self._store.index.write() as t:
            kept = t.get_meta(ROOT_META)
            if kept is None:
                t.put_meta(ROOT_META, {"name": name, "secret": secret})
        if kept is not None:  # another node's came first: ours was never used
            if created:
                path.unlink()
            self._root = (kept["name"], kept["secret"])
            return kept["name"], kept["secret"], False
        self._root = (name, secret)
        return name, secret, created

    def root(self) -> tuple[str, str]:
        if self._root is None:
            self.ensure_root()
        assert self._root is not None
        return self._root

    def is_root(self, name: str) -> bool:
        return hmac.compare_digest(name.encode(), self.root()[0].encode())

    # -- users ------------------------------------------------------------------------------
    def add(self, name: str, secret: str | None = None) -> str:
        if not _NAME_RE.match(name):
            raise InvalidName(f"invalid user name {name!r}: 3-128 letters, digits or ._@+=,-")
        if name.lower() in RESERVED_NAMES:
            raise InvalidName(f"{name!r} is a reserved name; choose another user name")
        if self.is_root(name):
            raise UserAlreadyExists(f"{name!r} is the root user")
        secret = secret or generate_secret()
        if len(secret) < 8:
            raise InvalidName("the secret must have at least 8 characters")
        with self._store.index.write() as t:
            if t.get_user(name) is not None:
                raise UserAlreadyExists(f"user {name!r} already exists")
            # gen: this incarnation of the name; tokens carry it, so a token of a removed user
            # does not come back to life when a user of the same name is added again
            t.put_user(name, {"secret": secret, "created": time.time(), "gen": secrets.token_hex(8)})
        return secret

    def remove(self, name: str) -> None:
        with self._store.index.write() as t:
            if not t.delete_user(name):
                raise UserNotFound(f"user {name!r} does not exist")

    def reset_secret(self, name: str, secret: str | None = None) -> str:
        """Give ``name`` a new secret (a user ``cas recover`` brought back has none: secrets never
        reach the backend); its old tokens die with the old secret (a new ``gen``)."""
        if self.is_root(name):
            raise InvalidName(f"{name!r} is the root user: its secret is set by CAS_ROOT_PASSWORD, or was "
                              f"generated at first start (the {ROOT_FILE} file in that node's data directory)")
        secret = secret or generate_secret()
        if len(secret) < 8:
            raise InvalidName("the secret must have at least 8 characters")
        with self._store.index.write() as t:
            rec = t.get_user(name)
            if rec is None:
                raise UserNotFound(f"user {name!r} does not exist")
            t.put_user(name, {**rec, "secret": secret, "gen": secrets.token_hex(8)})
        return secret

    def list(self) -> list[dict]:
        with self._store.index.read() as t:
            return [{"name": n, "created": r["created"]} for n, r in t.iter_users()]

    def secret(self, name: str) -> str | None:
        """The secret of ``name`` (root included), or None when there is no such user."""
        root_name, root_secret = self.root()
        if name == root_name:
            return root_secret
        with self._store.index.read() as t:
            rec = t.get_user(name)
        return None if rec is None else rec.get("secret")  # none: recovered (``reset_secret``)

    def generation(self, name: str) -> str | None:
        """This incarnation of user ``name`` (None: no such user). Root's changes with its secret."""
        root_name, root_secret = self.root()
        if name == root_name:
            return hashlib.sha256(f"cas-root-gen\0{root_name}\0{root_secret}".encode()).hexdigest()[:16]
        with self._store.index.read() as t:
            rec = t.get_user(name)
        if rec is None:
            return None
        return rec.get("gen") or f"t{rec['created']!r}"  # users added before generations

    def authenticate(self, name: str, secret: str, *, source: str | None) -> bool:
        """Constant-time check of a password from the peer address ``source``.

        Raises ``TooManyRequests`` (without checking the password) while ``source``, or
        ``source`` for this name, must wait after repeated failures.
        """
        self.throttle.check(source, name)
        expected = self.secret(name)
        ok = hmac.compare_digest((expected or "\x00" * 40).encode(), secret.encode()) and expected is not None
        if ok:
            self.throttle.success(source, name)
        else:
            self.throttle.failure(source, name)
        return ok
