"""Bearer tokens (cas.auth.tokens): login JWTs (HS256) and OIDC tokens checked against a JWKS
served on loopback by a local identity provider; every bad token is refused with a reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cas.auth import tokens
from cas.auth.tokens import TokenService, bearer_verifier, issue_token, verify_token
from cas.config import load_settings
from cas.errors import AccessDenied
from cas.store import Store
from tests.fixtures.web import ROOT_PASSWORD, ROOT_USER

AUDIENCE = "cas-tests"
USER, USER_SECRET = "carol", "carol-secret-789"


class LocalIdP:
    """A tiny OpenID provider on 127.0.0.1: discovery document and a JWKS that can rotate."""

    def __init__(self):
        self.keys: dict[str, object] = {}  # kid -> private key
        self.fetches = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": idp.issuer, "jwks_uri": idp.issuer + "/jwks.json"}
                elif self.path == "/jwks.json":
                    idp.fetches += 1
                    body = {"keys": [idp.public_jwk(kid) for kid in list(idp.keys)]}
                else:
                    self.send_error(404)
                    return
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="local-idp", daemon=True)
        self.thread.start()

    def add_rsa(self, kid: str):
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self.keys[kid]

    def add_ec(self, kid: str):
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        return self.keys[kid]

    def public_jwk(self, kid: str) -> dict:
        key = self.keys[kid]
        if isinstance(key, rsa.RSAPrivateKey):
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            jwk["alg"] = "RS256"
        else:
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            jwk["alg"] = "ES256"
        return dict(jwk, kid=kid, use="sig")

    def token(self, kid: str = "k1", *, alg: str = "RS256", **claims) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": AUDIENCE, "sub": "id-123", "preferred_username": USER,
                "iat": now, "exp": now + 300}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.keys[kid], algorithm=alg, headers={"kid": kid})

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def hs256_forged(claims: dict, key: bytes, **header) -> str:
    """An HS256 token whose HMAC key is ``key`` verbatim (PyJWT refuses PEM keys as HMAC secrets)."""
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', **header})}.{_b64(claims)}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def unsigned(claims: dict) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def tampered(token: str, **changes) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    return f"{head}.{_b64(claims)}.{sig}"


@pytest.fixture
def idp():
    provider = LocalIdP()
    provider.add_rsa("k1")
    yield provider
    provider.close()


def open_store(path, **auth):
    settings = load_settings(path, {"auth": dict(root_user=ROOT_USER, root_password=ROOT_PASSWORD, **auth)})
    store = Store.open_store(settings)
    if store.users.secret(USER) is None:
        store.users.add(USER, USER_SECRET)
    return store


# -- HS256 login tokens ----------------------------------------------------------------------

@pytest.mark.unit
def test_login_tokens_round_trip_and_expire(tmp_path):
    with open_store(tmp_path / "d") as store:
        token = issue_token(store, USER)
        assert verify_token(store, token) == USER
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["iss"] == "cas" and claims["aud"] == "cas" and claims["exp"] - claims["iat"] == 3600
        assert not (tmp_path / "d" / tokens.SECRET_FILE).exists()  # the secret is in the index (0600 too)
        real = store.clock
        store.clock = lambda: real() + 3601  # the injectable clock: no sleeping
        with pytest.raises(AccessDenied, match="expired"):
            verify_token(store, token)
        store.clock = real
        store.users.remove(USER)
        with pytest.raises(AccessDenied, match="not a cas user"):
            verify_token(store, token)


@pytest.mark.unit
def test_login_tokens_survive_a_restart_but_not_another_store(tmp_path):
    with open_store(tmp_path / "a") as store:
        token = issue_token(store, USER)
    with open_store(tmp_path / "a") as store:
        assert verify_token(store, token) == USER
    with open_store(tmp_path / "b") as other, pytest.raises(AccessDenied, match="bad signature"):
        verify_token(other, token)


@pytest.mark.unit
def test_a_secret_an_older_cas_kept_in_the_data_directory_is_taken_into_the_index(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / tokens.SECRET_FILE).write_text("ab" * 32 + "\n")
    with open_store(tmp_path / "d") as store:
        assert tokens.signing_secret(store) == bytes.fromhex("ab" * 32)
        (tmp_path / "d" / tokens.SECRET_FILE).unlink()
        assert tokens.signing_secret(store) == bytes.fromhex("ab" * 32)  # kept in the index


@pytest.mark.unit
def test_bad_local_tokens_are_refused_with_a_reason(tmp_path):
    with open_store(tmp_path / "d") as store:
        good = issue_token(store, USER)
        secret = tokens.signing_secret(store)
        now = int(time.time())
        cases = {
            "expired": jwt.encode({"iss": "cas", "aud": "cas", "sub": USER, "iat": now - 7200, "exp": now - 3600},
                                  secret, algorithm="HS256"),
            "audience": jwt.encode({"iss": "cas", "aud": "other", "sub": USER, "iat": now, "exp": now + 60},
                                   secret, algorithm="HS256"),
            "issuer": jwt.encode({"iss": "evil", "aud": "cas", "sub": USER, "iat": now, "exp": now + 60},
                                 secret, algorithm="HS256"),
            "algorithm 'none'": unsigned({"iss": "cas", "aud": "cas", "sub": ROOT_USER, "exp": now + 60}),
            "bad signature": tampered(good, sub=ROOT_USER),
            "malformed": "not.a.token",
            "not a cas user": jwt.encode({"iss": "cas", "aud": "cas", "sub": "mallory", "iat": now,
                                          "exp": now + 60}, secret, algorithm="HS256"),
            "no OIDC issuer": jwt.encode({"sub": USER}, rsa.generate_private_key(65537, 2048), algorithm="RS256"),
        }
        for reason, token in cases.items():
            with pytest.raises(AccessDenied, match=reason):
                verify_token(store, token)
        check = bearer_verifier(store)
        assert check(good) == USER and check(cases["expired"]) is None


# -- OIDC tokens (JWKS on loopback) ----------------------------------------------------------

@pytest.mark.integration
def test_oidc_tokens_are_accepted_and_mapped_to_cas_users(tmp_path, idp):
    idp.add_ec("e1")
    with open_store(tmp_path / "d", oidc_issuer=idp.issuer, oidc_audience=AUDIENCE) as store:
        assert verify_token(store, idp.token()) == USER  # discovery -> jwks_uri -> key k1
        assert verify_token(store, idp.token("e1", alg="ES256")) == USER
        with pytest.raises(AccessDenied, match="not a cas user"):
            verify_token(store, idp.token(preferred_username="stranger"))
        with pytest.raises(AccessDenied, match="no 'preferred_username'|has no claim"):
            verify_token(store, idp.token(preferred_username=None))
    with open_store(tmp_path / "e", oidc_jwks_url=idp.issuer + "/jwks.json", oidc_audience=AUDIENCE,
                    oidc_user_claim="email") as store:
        assert verify_token(store, idp.token(email=USER)) == USER  # another claim, no issuer check


@pytest.mark.integration
def test_jwks_is_cached_and_key_rotation_is_picked_up(tmp_path, idp):
    with open_store(tmp_path / "d", oidc_issuer=idp.issuer, oidc_audience=AUDIENCE) as store:
        svc = TokenService(store, jwks_min_refresh=0.0)
        for _ in range(5):
            assert svc.verify(idp.token()) == USER
        assert idp.fetches == 1  # cached
        idp.add_rsa("k2")  # the provider rotates: new key published, old one withdrawn
        del idp.keys["k1"]
        assert svc.verify(idp.token("k2")) == USER  # unknown kid -> refetch
        assert idp.fetches == 2
        with pytest.raises(AccessDenied, match="no key 'k1'"):
            svc.verify(jwt.encode({"iss": idp.issuer, "aud": AUDIENCE, "exp": int(time.time()) + 60,
                                   "preferred_username": USER}, rsa.generate_private_key(65537, 2048),
                                  algorithm="RS256", headers={"kid": "k1"}))
        # refetches for unknown kids are throttled (a flood of made-up kids is not a flood of fetches)
        slow = TokenService(store, jwks_min_refresh=3600.0)
        assert slow.verify(idp.token("k2")) == USER
        before = idp.fetches
        for i in range(5):
            with pytest.raises(AccessDenied, match="no key"):
                slow.verify(jwt.encode({"exp": int(time.time()) + 60}, idp.keys["k2"], algorithm="RS256",
                                       headers={"kid": f"made-up-{i}"}))
        assert idp.fetches == before


def _bad_oidc_tokens(idp) -> list[tuple[str, str]]:
    """(expected reason, token) of every kind of bad token."""
    now = int(time.time())
    good = idp.token()
    public_pem = idp.keys["k1"].public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "preferred_username": USER, "exp": now + 300}
    unknown_kid = jwt.encode(claims, idp.keys["k1"], algorithm="RS256", headers={"kid": "nope"})
    return [
        ("token expired", idp.token(iat=now - 7200, exp=now - 3600)),
        ("wrong audience", idp.token(aud="another-app")),
        ("wrong issuer", idp.token(iss="https://evil.example")),
        ("algorithm 'none' is not allowed", unsigned(claims)),
        ("bad signature", tampered(good, preferred_username=ROOT_USER)),
        # HS256 keyed with the provider's exact public key (algorithm confusion): a verifier that took
        # the JWKS key as the HMAC secret would accept it; ours checks HS256 against its own secret
        ("bad signature", hs256_forged(claims, public_pem, kid="k1")),
        ("no key 'nope'", unknown_kid),
    ]


@pytest.mark.integration
def test_bad_oidc_tokens_are_refused_with_a_reason(tmp_path, idp):
    with open_store(tmp_path / "d", oidc_issuer=idp.issuer, oidc_audience=AUDIENCE) as store:
        svc = TokenService(store)
        for reason, token in _bad_oidc_tokens(idp):
            with pytest.raises(AccessDenied, match=reason):
                svc.verify(token)
    with open_store(tmp_path / "e", oidc_issuer=idp.issuer) as store, \
            pytest.raises(AccessDenied, match="no audience is configured"):
        TokenService(store).verify(idp.token())


@pytest.mark.integration
def test_the_api_answers_401_with_the_reason(start_web_server, tmp_path, idp):
    data = tmp_path / "srv"
    with open_store(data) as store:
        secret = tokens.signing_secret(store)  # the server's own, in the index
    srv = start_web_server(data, toml=f'[auth]\noidc_issuer = "{idp.issuer}"\noidc_audience = "{AUDIENCE}"\n')
    status, who = srv.json("GET", "/api/whoami", token=idp.token())
    assert status == 200 and who["user"] == USER and who["root"] is False
    for reason, token in _bad_oidc_tokens(idp):
        status, headers, body = srv.request("GET", "/api/whoami", token=token)
        assert status == 401, reason
        assert reason in json.loads(body)["message"], (reason, body)
        assert "invalid_token" in headers["WWW-Authenticate"]
    # an expired login token, made with the server's own secret
    now = int(time.time())
    old = jwt.encode({"iss": "cas", "aud": "cas", "sub": USER, "iat": now - 7200, "exp": now - 3600}, secret,
                     algorithm="HS256")
    status, _, body = srv.request("GET", "/api/whoami", token=old)
    assert status == 401 and b"token expired" in body
    assert srv.json("GET", "/api/whoami", token=srv.login(USER, USER_SECRET))[1]["user"] == USER


@pytest.mark.unit
def test_webdav_accepts_bearer_tokens_through_bearer_verifier(tmp_path):
    """How the WebDAV front is meant to use this module: make_app(..., bearer=bearer_verifier(store))."""
    import io
    from wsgiref.util import setup_testing_defaults

    from cas.protocols.server import HttpApp
    from cas.protocols.webdav import app as dav_app

    with open_store(tmp_path / "d") as store:
        app = HttpApp(store, store.settings, {"/dav": dav_app.make_app(store, store.settings,
                                                                       bearer=bearer_verifier(store))})
        store.create_bucket("carols", owner=USER)

        def propfind(auth: str) -> str:
            env = {"REQUEST_METHOD": "PROPFIND", "PATH_INFO": "/dav/carols/", "HTTP_DEPTH": "1",
                   "HTTP_AUTHORIZATION": auth, "wsgi.input": io.BytesIO(b""), "CONTENT_LENGTH": "0"}
            setup_testing_defaults(env)
            status = []
            body = app(env, lambda s, h, exc_info=None: status.append(s))
            b"".join(body)
            getattr(body, "close", lambda: None)()
            return status[0]

        assert propfind("Bearer " + issue_token(store, USER)).startswith("207")
        assert propfind("Bearer " + tampered(issue_token(store, USER), sub=ROOT_USER)).startswith("401")
        assert propfind("Bearer not-a-token").startswith("401")


@pytest.mark.unit
def test_tokens_of_a_removed_user_stay_dead_when_the_name_is_added_again(tmp_path):
    with open_store(tmp_path / "d") as store:
        token = issue_token(store, USER)
        link = TokenService(store).issue_link(USER, "b", "k")
        assert verify_token(store, token) == USER
        store.users.remove(USER)
        store.users.add(USER, "a-new-carol-secret")  # another person, the same name
        with pytest.raises(AccessDenied, match="earlier user"):
            verify_token(store, token)
        with pytest.raises(AccessDenied, match="earlier user"):
            TokenService(store).verify_link(link, "b", "k")
        assert verify_token(store, issue_token(store, USER)) == USER  # the new carol logs in as usual


@pytest.mark.unit
def test_root_tokens_die_with_roots_secret(tmp_path):
    with open_store(tmp_path / "d") as store:
        token = issue_token(store, ROOT_USER)
        assert verify_token(store, token) == ROOT_USER
    settings = load_settings(tmp_path / "d", {"auth": {"root_user": ROOT_USER, "root_password": "rotated-secret-1"}})
    with Store.open_store(settings) as store, pytest.raises(AccessDenied, match="earlier user"):
        verify_token(store, token)


@pytest.mark.integration
def test_an_oidc_claim_naming_root_is_not_root_without_an_explicit_mapping(tmp_path, idp):
    with open_store(tmp_path / "d", oidc_issuer=idp.issuer, oidc_audience=AUDIENCE) as store:
        with pytest.raises(AccessDenied, match="root user"):
            verify_token(store, idp.token(preferred_username=ROOT_USER))
        assert verify_token(store, idp.token()) == USER
    with open_store(tmp_path / "e", oidc_issuer=idp.issuer, oidc_audience=AUDIENCE,
                    oidc_root="ops-lead@example.com") as store:
        assert verify_token(store, idp.token(preferred_username="ops-lead@example.com")) == ROOT_USER
        with pytest.raises(AccessDenied, match="root user"):
            verify_token(store, idp.token(preferred_username=ROOT_USER))
