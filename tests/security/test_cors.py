"""CORS of the S3 API: which browser origins may read responses, and never credentials with a wildcard.

The default used to be ``*`` with every Origin echoed and ``Access-Control-Allow-Credentials:
true``, so with ``--anonymous`` any web page a visitor opened could read the store through
the visitor's browser. Now the default is loopback origins only; ``--cors-origin`` (repeatable)
and ``CAS_CORS_ORIGINS`` replace it. Real ``cas serve`` processes, raw HTTP.
"""

from __future__ import annotations

import pytest

from cas.config import LOOPBACK_ORIGINS, load_settings
from tests.fixtures.s3api import S3Serve, raw_request, sign_request, unique_bucket

pytestmark = pytest.mark.integration

EVIL = "https://evil.example.net"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def cors_headers(headers: dict) -> dict:
    return {k: v for k, v in headers.items() if k.startswith("access-control-")}


def preflight(server: S3Serve, path: str, origin: str, method: str = "GET"):
    return raw_request(server.port, "OPTIONS", path, {
        "Host": f"127.0.0.1:{server.port}", "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,x-amz-date,x-amz-content-sha256"})


def anonymous_get(server: S3Serve, path: str, origin: str):
    return raw_request(server.port, "GET", path, {"Host": f"127.0.0.1:{server.port}", "Origin": origin})


def start(tmp_path_factory, name: str, *args: str, env: dict | None = None) -> tuple[S3Serve, str]:
    server = S3Serve(tmp_path_factory.mktemp(name) / "data", extra_args=args, env=env or {}).start()
    try:
        bucket = unique_bucket()
        client = server.client()
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="public.txt", Body=b"readable by anyone")
    except BaseException:
        server.stop()
        raise
    return server, f"/{bucket}/public.txt"


@pytest.fixture(scope="module")
def anonymous_default(tmp_path_factory):
    server, path = start(tmp_path_factory, "cors-anon", "--anonymous")
    yield server, path
    server.stop()


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    server, path = start(tmp_path_factory, "cors-set", "--anonymous", "--cors-origin", "https://app.example.com",
                         "--cors-origin", "https://*.example.org")
    yield server, path
    server.stop()


@pytest.fixture(scope="module")
def wildcard(tmp_path_factory):
    server, path = start(tmp_path_factory, "cors-any", "--anonymous", env={"CAS_CORS_ORIGINS": "*"})
    yield server, path
    server.stop()


# -- the default: loopback origins only


def test_anonymous_server_gives_a_foreign_origin_no_cors_headers(anonymous_default):
    server, path = anonymous_default
    status, headers, body = anonymous_get(server, path, EVIL)
    assert status == 200 and body == b"readable by anyone"  # readable, but not by a foreign page
    assert cors_headers(headers) == {}
    assert headers["vary"] == "Origin"


def test_preflight_from_a_foreign_origin_is_refused(anonymous_default):
    server, path = anonymous_default
    status, headers, body = preflight(server, path, EVIL)
    assert status == 403 and b"<Code>AccessForbidden</Code>" in body
    assert cors_headers(headers) == {}


def test_loopback_origins_are_allowed_by_default_without_credentials(anonymous_default):
    server, path = anonymous_default
    for origin in ("http://localhost:3000", "http://127.0.0.1:8080", "https://[::1]:8443"):
        status, headers, _ = preflight(server, path, origin, "PUT")
        assert status == 200, origin
        assert headers["access-control-allow-origin"] == origin
        assert "PUT" in headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in headers
        status, headers, _ = anonymous_get(server, path, origin)
        assert status == 200
        assert headers["access-control-allow-origin"] == origin
        assert "ETag" in headers["access-control-expose-headers"]
        assert "access-control-allow-credentials" not in headers
    # a look-alike is not loopback
    status, headers, _ = preflight(server, path, "http://localhost.evil.example.net:3000")
    assert status == 403 and cors_headers(headers) == {}


def test_preflight_of_a_method_s3_does_not_have_is_refused(anonymous_default):
    server, path = anonymous_default
    for method in ("ET", "PATCH", "GET, PUT"):
        status, _, body = preflight(server, path, "http://localhost:3000", method)
        assert status == 403 and b"<Code>AccessForbidden</Code>" in body, method


# -- configured origins


def test_exact_origin_gets_credentials_and_wildcard_entry_does_not(configured):
    server, path = configured
    status, headers, _ = anonymous_get(server, path, "https://app.example.com")
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    assert headers["access-control-allow-credentials"] == "true"
    status, headers, _ = preflight(server, path, "https://files.example.org", "PUT")
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://files.example.org"
    assert "access-control-allow-credentials" not in headers
    status, headers, _ = anonymous_get(server, path, "https://files.example.org")
    assert headers["access-control-allow-origin"] == "https://files.example.org"
    assert "access-control-allow-credentials" not in headers


def test_configured_origins_replace_the_default(configured):
    server, path = configured
    for origin in ("http://localhost:3000", EVIL, "https://example.org.evil.example.net", "http://app.example.com"):
        status, headers, _ = preflight(server, path, origin)
        assert status == 403 and cors_headers(headers) == {}, origin
        _, headers, _ = anonymous_get(server, path, origin)
        assert cors_headers(headers) == {}, origin


def test_cors_headers_on_signed_responses_and_errors(configured):
    server, path = configured
    host = f"127.0.0.1:{server.port}"
    req = sign_request("GET", host, path, access_key=server.user, secret=server.secret, payload_hash=EMPTY)
    status, headers, _ = raw_request(server.port, "GET", req.path, {**req.headers, "Origin": "https://app.example.com"})
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example.com"
    status, headers, _ = anonymous_get(server, path + "-missing", "https://app.example.com")
    assert status == 404 and headers["access-control-allow-origin"] == "https://app.example.com"
    status, headers, _ = raw_request(server.port, "GET", req.path, {**req.headers, "Origin": EVIL})
    assert status == 200 and cors_headers(headers) == {}


def test_any_origin_is_answered_with_a_star_and_never_with_credentials(wildcard):
    server, path = wildcard
    for origin in (EVIL, "http://localhost:3000", "null"):
        status, headers, _ = preflight(server, path, origin)
        assert status == 200
        assert headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in headers
        status, headers, _ = anonymous_get(server, path, origin)
        assert status == 200
        assert headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in headers


@pytest.mark.unit
def test_the_allowed_origins_setting(tmp_path):
    assert load_settings(tmp_path, env={}).server.cors_origins == LOOPBACK_ORIGINS
    env = {"CAS_CORS_ORIGINS": "https://a.example, https://*.b.example"}
    assert load_settings(tmp_path, env=env).server.cors_origins == ("https://a.example", "https://*.b.example")
    assert load_settings(tmp_path, env={"CAS_CORS_ORIGINS": "none"}).server.cors_origins == ()
    flags = {"server": {"cors_origins": ["https://c.example"]}}
    assert load_settings(tmp_path, flags, env=env).server.cors_origins == ("https://c.example",)
    (tmp_path / "cas.toml").write_text('[server]\ncors_origins = []\n')
    assert load_settings(tmp_path, env={}).server.cors_origins == ()
