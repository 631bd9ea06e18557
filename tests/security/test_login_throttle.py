"""Failed logins slow down the guesser's address, never lock the real user out.

Unit tests drive ``LoginThrottle`` with an injected clock; the end-to-end tests run a real
``cas serve`` and bind the clients' source addresses inside 127/8 (Linux loopback accepts
any of them), so the attacker and the owner are different peers of the same server.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.parse

import pytest

from cas.auth.throttle import Backoff, LoginThrottle, source_key
from cas.errors import TooManyRequests
from tests.fixtures.web import ROOT_PASSWORD, ROOT_USER

ATTACKER, OWNER = "127.0.0.2", "127.0.0.3"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _wait(throttle: LoginThrottle, source: str, user: str) -> int:
    """Seconds the throttle asks for (0: may try now)."""
    try:
        throttle.check(source, user)
    except TooManyRequests as exc:
        return exc.retry_after
    return 0


# -- unit: backoff, keys, bound ----------------------------------------------------------------
@pytest.mark.unit
def test_backoff_doubles_per_source_and_user_and_spares_other_sources():
    clock = Clock()
    t = LoginThrottle(clock=clock, per_source=Backoff(free=100), per_source_user=Backoff(free=3, max_delay=60))
    for _ in range(3):
        assert _wait(t, ATTACKER, "root") == 0
        t.failure(ATTACKER, "root")
    assert _wait(t, ATTACKER, "root") == 0  # three free failures
    waits = []
    for _ in range(8):
        t.failure(ATTACKER, "root")
        waits.append(_wait(t, ATTACKER, "root"))
        assert _wait(t, OWNER, "root") == 0  # the owner elsewhere is never held up
        assert _wait(t, ATTACKER, "alice") == 0  # the per-source count is far from its limit
        clock.now += waits[-1]  # wait exactly as long as asked
        assert _wait(t, ATTACKER, "root") == 0
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.unit
def test_per_source_limit_covers_every_name_and_success_does_not_reset_it():
    clock = Clock()
    t = LoginThrottle(clock=clock, per_source=Backoff(free=5), per_source_user=Backoff(free=100))
    for i in range(6):
        t.failure(ATTACKER, f"user{i}")
    t.success(ATTACKER, "mallory")  # a guesser logging into an own account between guesses
    assert _wait(t, ATTACKER, "root") == 1
    assert _wait(t, OWNER, "root") == 0


@pytest.mark.unit
def test_success_clears_the_pair_and_counts_are_forgotten():
    clock = Clock()
    t = LoginThrottle(clock=clock, per_source=Backoff(free=100), per_source_user=Backoff(free=2),
                      forget_after=300)
    for _ in range(2):
        t.failure(OWNER, "root")  # two typos
    t.success(OWNER, "root")
    for _ in range(2):
        t.failure(OWNER, "root")
    assert _wait(t, OWNER, "root") == 0  # the count restarted at the success
    t.failure(OWNER, "root")
    assert _wait(t, OWNER, "root") == 1
    clock.now += 301
    t.failure(OWNER, "root")  # long after: counted from zero again
    assert _wait(t, OWNER, "root") == 0


@pytest.mark.unit
def test_table_is_bounded():
    clock = Clock()
    t = LoginThrottle(clock=clock, max_entries=100)
    for i in range(10_000):
        t.failure(f"10.0.{i // 256}.{i % 256}", f"made-up-{i}")
    assert len(t) <= 100
    # the most recent failures are still counted
    for _ in range(5):
        t.failure("10.0.39.15", "made-up-9999")
    assert _wait(t, "10.0.39.15", "made-up-9999") == 1


@pytest.mark.unit
def test_source_keys():
    assert source_key("127.0.0.2") == "127.0.0.2"
    assert source_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::7") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key(None) == source_key("") == "-"


# -- end to end: web API login, Basic on the web API, WebDAV -----------------------------------
def _request(server, method: str, path: str, source: str, *, body: bytes | None = None,
             headers: dict | None = None):
    u = urllib.parse.urlsplit(server.web_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def _login(server, source: str, password: str, **headers):
    body = json.dumps({"user": ROOT_USER, "password": password}).encode()
    return _request(server, "POST", "/api/login", source, body=body,
                    headers={"Content-Type": "application/json", **headers})


def _basic(password: str, user: str = ROOT_USER) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _fail_until_throttled(attempt) -> tuple:
    """Wrong passwords until the answer is 429 (bounded); returns that answer."""
    for _ in range(30):
        status, headers, body = attempt()
        if status == 429:
            return status, headers, body
        assert status == 401, (status, body)
    pytest.fail("30 wrong passwords and still no 429")


@pytest.mark.integration
def test_guesses_elsewhere_do_not_lock_the_owner_out(start_web_server):
    server = start_web_server()
    for _ in range(12):  # more than the old lockout's 10, in well under a second
        status, _, _ = _login(server, ATTACKER, "wrong-guess")
        assert status in (401, 429)
    status, _, body = _login(server, OWNER, ROOT_PASSWORD)
    assert status == 200, body
    status, _, _ = _request(server, "PROPFIND", "/dav/", OWNER, headers={"Depth": "0", **_basic(ROOT_PASSWORD)})
    assert status == 207


@pytest.mark.integration
def test_attacker_is_throttled_owner_is_not(start_web_server):
    server = start_web_server()
    # the attacker guesses root's password through the login form
    status, headers, body = _fail_until_throttled(lambda: _login(server, ATTACKER, "wrong-guess"))
    assert int(headers["Retry-After"]) >= 1
    assert json.loads(body)["error"] == "TooManyRequests"
    # while it waits, even the right password from there is refused (guesses do not get through),
    # whatever X-Forwarded-For says, and the throttle covers Basic auth and WebDAV as well
    status, headers, _ = _login(server, ATTACKER, ROOT_PASSWORD, **{"X-Forwarded-For": OWNER})
    assert status == 429 and int(headers["Retry-After"]) >= 1
    status, headers, _ = _request(server, "GET", "/api/whoami", ATTACKER, headers=_basic(ROOT_PASSWORD))
    assert status == 429 and int(headers["Retry-After"]) >= 1
    status, headers, _ = _request(server, "PROPFIND", "/dav/", ATTACKER,
                                  headers={"Depth": "0", **_basic(ROOT_PASSWORD)})
    assert status == 429 and int(headers["Retry-After"]) >= 1
    # the owner, at another address, logs in at once: login form, Basic on the API, WebDAV
    status, _, body = _login(server, OWNER, ROOT_PASSWORD)
    assert status == 200 and json.loads(body)["token"]
    status, _, body = _request(server, "GET", "/api/whoami", OWNER, headers=_basic(ROOT_PASSWORD))
    assert status == 200 and json.loads(body)["user"] == ROOT_USER
    status, _, _ = _request(server, "PROPFIND", "/dav/", OWNER, headers={"Depth": "0", **_basic(ROOT_PASSWORD)})
    assert status == 207


@pytest.mark.integration
def test_webdav_guessing_is_throttled_per_address(start_web_server):
    server = start_web_server()
    guess = {"Depth": "0", **_basic("wrong-guess")}
    status, headers, body = _fail_until_throttled(lambda: _request(server, "PROPFIND", "/dav/", ATTACKER,
                                                                   headers=guess))
    assert int(headers["Retry-After"]) >= 1 and b"429" in body
    status, _, body = _login(server, ATTACKER, ROOT_PASSWORD)
    assert status == 429
    status, _, _ = _request(server, "PROPFIND", "/dav/", OWNER, headers={"Depth": "0", **_basic(ROOT_PASSWORD)})
    assert status == 207
    status, _, _ = _login(server, OWNER, ROOT_PASSWORD)
    assert status == 200
