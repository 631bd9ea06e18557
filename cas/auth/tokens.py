"""Bearer tokens: the web UI's login JWTs and tokens from an external OpenID issuer.

Two kinds of token are accepted, told apart by the algorithm in their header:

* **HS256**, issued by this server (``issue_token``) after a password login. Signed with a
  random secret kept in the index (meta ``jwt_secret``, created on first use; never logged to the
  backend), so tokens survive a restart, every node sharing the index accepts the tokens of the
  others, and they are worthless against another store. A secret an older cas kept in
  ``DIR/jwt-secret`` is taken into the index on first use. Claims: ``iss`` = ``aud`` =
  ``"cas"``, ``sub`` = user, ``iat``, ``exp`` (``auth.jwt_ttl``), ``jti``.
* **RS256/ES256** (and RS384/RS512/PS256/ES384) from an external OpenID provider, when
  ``auth.oidc_issuer`` or ``auth.oidc_jwks_url`` is configured. The key comes from the issuer's
  JWKS (``oidc_jwks_url``, or ``jwks_uri`` of ``ISSUER/.well-known/openid-configuration``),
  cached for ``JWKS_LIFESPAN``; a token whose ``kid`` is unknown refetches the set (at most once
  per ``min_refresh`` seconds), which is how key rotation is picked up. ``aud`` must equal
  ``auth.oidc_audience`` (required: a token minted for another application of the same issuer
  is refused) and ``iss`` must equal ``auth.oidc_issuer`` when set. The cas user is the claim
  ``auth.oidc_user_claim`` (default ``preferred_username``), and must be a known cas user other
  than root: an OIDC token stands for root only when its claim equals ``auth.oidc_root`` (unset:
  never), since users of an identity provider may choose their own usernames.

Our own tokens (login and links) carry ``gen``, the user's generation: a token of a removed user
is refused even after a user of the same name is added again.

Anything else (``alg: none``, a symmetric token signed with the provider's public key, an
expired token, another audience or issuer, a changed byte) raises ``AccessDenied`` whose message
is the reason, which the HTTP fronts return with their 401. Expiry is checked against
``store.clock`` (injectable in tests), with ``LEEWAY`` seconds of clock skew.

Use from a protocol: the server makes one ``TokenService`` (``build_apps``) and hands it to the
web API and, as ``tokens.bearer_verifier()``, to WebDAV::

    tokens = TokenService(store)
    user = tokens.verify(token)                # or AccessDenied(reason)
    check = tokens.bearer_verifier()           # token -> user name | None, for WebDAV

``issue_token`` / ``verify_token`` are one-shot helpers (a fresh service each call: no JWKS cache).
Thread-safe: the JWKS cache of a ``TokenService`` is behind a lock.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt

from ..errors import AccessDenied, ConfigError

log = logging.getLogger(__name__)

SECRET_FILE = "jwt-secret"  # where an older cas kept the secret
SECRET_META = "jwt_secret"  # index meta: the HS256 secret (hex)
LOCAL_ISSUER = "cas"
LOCAL_AUDIENCE = "cas"
LOCAL_ALG = "HS256"
LINK_AUDIENCE = "cas-link"  # download links: never accepted as a bearer token
LINK_TTL = 300.0
OIDC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384"})
LEEWAY = 30.0
JWKS_LIFESPAN = 300.0
JWKS_MIN_REFRESH = 5.0
FETCH_TIMEOUT = 10.0

_REASONS = (
    # order matters: subclasses before their bases
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.MissingRequiredClaimError, "missing claim"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidKeyError, "key does not fit the algorithm"),
    (jwt.DecodeError, "malformed token"),
    (jwt.InvalidTokenError, "invalid token"),
)


def _reason(exc: jwt.PyJWTError) -> str:
    """'wrong audience: Audience doesn't match' — the class first, PyJWT's detail after."""
    for cls, text in _REASONS:
        if isinstance(exc, cls):
            return f"{text}: {exc}" if str(exc) else text
    return f"invalid token: {exc}"


def signing_secret(store) -> bytes:
    """The store's HS256 secret: the one in the index, created on first use (from
    ``DIR/jwt-secret`` when an older cas made one there); when two nodes create one at once, the
    first in the index is everybody's."""
    return bytes.fromhex(store.meta_once(SECRET_META, lambda: _legacy_secret(store.settings.data_dir)
                                         or secrets.token_hex(32)))


def _legacy_secret(data_dir) -> str:
    """The secret an older cas kept in ``DIR/jwt-secret`` (hex), or ""."""
    path = Path(data_dir) / SECRET_FILE
    try:
        legacy = path.read_text().strip()
        bytes.fromhex(legacy)
    except FileNotFoundError:
        return ""
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the token secret {path}: {exc}") from exc
    return legacy


def _fetch_json(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as resp:  # the configured issuer
            data = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise AccessDenied(f"cannot fetch the identity provider's keys from {url}: {exc}") from exc
    if not isinstance(data, dict):
        raise AccessDenied(f"{url} did not return a JSON object")
    return data


class JwksCache:
    """Signing keys of one JWKS URL by ``kid``: cached, refetched on expiry or an unknown kid."""

    def __init__(self, url: str | None, *, issuer: str | None = None, lifespan: float = JWKS_LIFESPAN,
                 min_refresh: float = JWKS_MIN_REFRESH):
        self._url = url
        self._issuer = issuer
        self._lifespan = lifespan
        self._min_refresh = min_refresh
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched = float("-inf")
        self._lock = threading.Lock()

    def _jwks_url(self) -> str:
        if self._url is None:
            if not self._issuer:
                raise AccessDenied("no OIDC issuer or JWKS URL is configured")
            conf = _fetch_json(self._issuer.rstrip("/") + "/.well-known/openid-configuration")
            url = conf.get("jwks_uri")
            if not isinstance(url, str):
                raise AccessDenied("the issuer's openid-configuration has no jwks_uri")
            self._url = url
        return self._url

    def _refresh(self) -> None:
        data = _fetch_json(self._jwks_url())
        keys: dict[str | None, jwt.PyJWK] = {}
        for item in data.get("keys", []):
            if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK.from_dict(item)
            except jwt.PyJWTError as exc:  # one unusable key must not hide the others
                log.warning("ignoring a JWKS key (kid %r): %s", item.get("kid"), exc)
                continue
            keys[item.get("kid")] = key
        self._keys = keys
        self._fetched = time.monotonic()
        log.info("fetched %d signing keys from %s", len(keys), self._url)

    def key(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            age = time.monotonic() - self._fetched
            if age > self._lifespan or (self._find(kid) is None and age >= self._min_refresh):
                self._refresh()
            key = self._find(kid)
        if key is None:
            raise AccessDenied(f"no key {kid!r} in the identity provider's key set")
        return key

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)


class TokenService:
    """Issues and verifies the bearer tokens of one store (see the module docstring)."""

    def __init__(self, store, *, jwks_min_refresh: float = JWKS_MIN_REFRESH):
        self._store = store
        self._auth = store.settings.auth
        self._secret = signing_secret(store)
        self._jwks: JwksCache | None = None
        if self._auth.oidc_issuer or self._auth.oidc_jwks_url:
            self._jwks = JwksCache(self._auth.oidc_jwks_url, issuer=self._auth.oidc_issuer,
                                   min_refresh=jwks_min_refresh)

    def issue(self, user: str, ttl: float | None = None) -> tuple[str, float]:
        """A login token for ``user`` and its expiry (epoch seconds)."""
        now = self._store.clock()
        exp = now + (self._auth.jwt_ttl if ttl is None else ttl)
        claims = {"iss": LOCAL_ISSUER, "aud": LOCAL_AUDIENCE, "sub": user, "gen": self._generation(user),
                  "iat": int(now), "exp": int(exp), "jti": secrets.token_hex(8)}
        return jwt.encode(claims, self._secret, algorithm=LOCAL_ALG), float(int(exp))

    def issue_link(self, user: str, bucket: str, key: str, ttl: float = LINK_TTL) -> str:
        """A token that lets its holder download one object for ``ttl`` seconds (a URL parameter)."""
        now = self._store.clock()
        claims = {"iss": LOCAL_ISSUER, "aud": LINK_AUDIENCE, "sub": user, "gen": self._generation(user),
                  "iat": int(now), "exp": int(now + ttl), "b": bucket, "k": key}
        return jwt.encode(claims, self._secret, algorithm=LOCAL_ALG)

    def verify_link(self, token: str, bucket: str, key: str) -> str:
        """The user who made the link, if ``token`` is a live link to exactly bucket/key."""
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise AccessDenied(_reason(exc)) from exc
        if alg != LOCAL_ALG:
            raise AccessDenied(f"algorithm {alg!r} is not allowed for links")
        claims = self._decode(token, self._secret, LOCAL_ALG, LINK_AUDIENCE, LOCAL_ISSUER)
        if self._store.clock() > float(claims["exp"]):
            raise AccessDenied("link expired")
        if claims.get("b") != bucket or claims.get("k") != key:
            raise AccessDenied("the link is for another object")
        return self._same_user(claims)

    def bearer_verifier(self):
        """``token -> user | None`` for middleware that only needs a yes/no (WebDAV's DavAuthenticator)."""

        def check(token: str) -> str | None:
            try:
                return self.verify(token)
            except AccessDenied as exc:
                log.info("bearer token refused: %s", exc)
                return None

        return check

    def verify(self, token: str) -> str:
        """The cas user a token stands for; ``AccessDenied(reason)`` if it is not acceptable."""
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AccessDenied(_reason(exc)) from exc
        alg = header.get("alg")
        if alg == LOCAL_ALG:
            return self._verify_local(token)
        if alg in OIDC_ALGS:
            if self._jwks is None:
                raise AccessDenied(f"algorithm {alg} is not accepted: no OIDC issuer is configured")
            return self._verify_oidc(token, alg, header.get("kid"))
        raise AccessDenied(f"algorithm {alg!r} is not allowed")

    def _decode(self, token: str, key, alg: str, audience: str, issuer: str | None) -> dict:
        # exp/nbf are checked below against store.clock (injectable), not PyJWT's wall clock
        options = {"require": ["exp", "iss"] if issuer else ["exp"],
                   "verify_exp": False, "verify_nbf": False, "verify_iat": False}
        try:
            claims = jwt.decode(token, key, algorithms=[alg], audience=audience, issuer=issuer,
                                options=options)
        except jwt.PyJWTError as exc:
            raise AccessDenied(_reason(exc)) from exc
        now = self._store.clock()
        try:
            exp = float(claims["exp"])
            nbf = float(claims.get("nbf", now))
        except (TypeError, ValueError) as exc:
            raise AccessDenied("malformed token: exp/nbf are not numbers") from exc
        if now > exp + LEEWAY:
            raise AccessDenied("token expired")
        if now + LEEWAY < nbf:
            raise AccessDenied("token not yet valid")
        return claims

    def _verify_local(self, token: str) -> str:
        claims = self._decode(token, self._secret, LOCAL_ALG, LOCAL_AUDIENCE, LOCAL_ISSUER)
        # our own token: expiry is exact (no leeway: the clock is ours)
        if self._store.clock() > float(claims["exp"]):
            raise AccessDenied("token expired")
        return self._same_user(claims)

    def _generation(self, user: str) -> str:
        gen = self._store.users.generation(user)
        if gen is None:
            raise AccessDenied(f"{user!r} is not a cas user")
        return gen

    def _same_user(self, claims: dict) -> str:
        """The subject of one of our tokens, if it is still the same user (not removed and re-added)."""
        name = self._known_user(claims.get("sub"))
        if claims.get("gen") != self._store.users.generation(name):
            raise AccessDenied(f"the token was issued to an earlier user {name!r} (removed since): log in again")
        return name

    def _verify_oidc(self, token: str, alg: str, kid: str | None) -> str:
        if not self._auth.oidc_audience:
            raise AccessDenied("OIDC tokens are refused: no audience is configured (auth.oidc_audience)")
        assert self._jwks is not None
        key = self._jwks.key(kid)
        family = {"RS": "RSA", "PS": "RSA", "ES": "EC"}[alg[:2]]
        if key.key_type != family:
            raise AccessDenied(f"algorithm {alg} does not fit the issuer's {key.key_type} key {kid!r}")
        claims = self._decode(token, key.key, alg, self._auth.oidc_audience, self._auth.oidc_issuer)
        subject = claims.get(self._auth.oidc_user_claim)
        root_name = self._store.users.root()[0]
        if self._auth.oidc_root and subject == self._auth.oidc_root:
            return root_name  # the one explicit mapping that grants root
        name = self._known_user(subject, f"claim {self._auth.oidc_user_claim!r}")
        if self._store.users.is_root(name):
            # an identity provider's user may pick its own username: only auth.oidc_root grants root
            raise AccessDenied(f"the token's claim {self._auth.oidc_user_claim!r} names the root user, "
                               "which an OIDC token may not be unless auth.oidc_root maps it")
        return name

    def _known_user(self, name, source: str = "subject") -> str:
        if not isinstance(name, str) or not name:
            raise AccessDenied(f"the token has no {source}")
        if self._store.users.secret(name) is None:
            raise AccessDenied(f"the token's {source} {name!r} is not a cas user")
        return name




def issue_token(store, user: str, ttl: float | None = None) -> str:
    """A short-lived HS256 login token for ``user`` (the caller has checked the password)."""
    return TokenService(store).issue(user, ttl)[0]


def verify_token(store, token: str) -> str:
    """The cas user name ``token`` stands for; raises ``AccessDenied`` with the reason."""
    return TokenService(store).verify(token)


def bearer_verifier(store):
    """``token -> user | None`` for middleware that only needs a yes/no (WebDAV's DavAuthenticator)."""
    return TokenService(store).bearer_verifier()
