"""Presigned URLs live at most a week, and every malformed expiry gets S3's precise error.

Signature V4 carries a lifetime (``X-Amz-Expires``: whole seconds, 0..604800); Signature V2
an absolute time (``Expires``, seconds since 1970) that used to be accepted for any date,
so a V2 URL made for the year 2100 stayed a key to the object for decades. Both are now
held to a week from now (plus the allowed clock skew). Checked on the verifier with an
injected clock, and over a real server with URLs made by boto3.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from botocore.auth import HmacV1QueryAuth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cas.auth import sigv4
from cas.auth.sigv4 import HttpRequestView, SigV4Verifier

AK, SK = "alice", "s3cr3t-key-for-alice"
HOST = "127.0.0.1:9000"
WEEK = 604800
YEAR_2100 = 4102444800
TOO_LONG = "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds."


def verifier(now: float) -> SigV4Verifier:
    return SigV4Verifier({AK: SK}.get, clock=lambda: now)


def view_of(request: AWSRequest, **replace: str) -> HttpRequestView:
    parts = urlsplit(request.url)
    query = [(n, replace.get(n, v)) for n, v in parse_qsl(parts.query, keep_blank_values=True)]
    return HttpRequestView(request.method, parts.path, query, {"host": parts.netloc})


def v4_presigned(expires: int) -> AWSRequest:
    request = AWSRequest(method="GET", url=f"http://{HOST}/bucket/key", headers={})
    S3SigV4QueryAuth(Credentials(AK, SK), "s3", "us-east-1", expires=expires).add_auth(request)
    return request


def v2_presigned(expires_in: int) -> AWSRequest:
    request = AWSRequest(method="GET", url=f"http://{HOST}/bucket/key", headers={})
    HmacV1QueryAuth(Credentials(AK, SK), expires=expires_in).add_auth(request)
    return request


# -- Signature V4: X-Amz-Expires


@pytest.mark.unit
def test_v4_a_week_is_the_longest_lifetime():
    now = time.time()
    auth = verifier(now).authenticate(view_of(v4_presigned(WEEK)))
    assert auth.presigned and auth.access_key == AK
    with pytest.raises(sigv4.RequestExpired):
        verifier(now + WEEK + 2).authenticate(view_of(v4_presigned(WEEK)))


@pytest.mark.unit
@pytest.mark.parametrize("value, message", [
    ("604801", TOO_LONG),
    ("999999999999999999999999999999", TOO_LONG),
    ("0000000000000000000000604801", TOO_LONG),
    ("-1", "X-Amz-Expires must be non-negative."),
    ("-604800", "X-Amz-Expires must be non-negative."),
    ("abc", "X-Amz-Expires should be a number."),
    ("", "X-Amz-Expires should be a number."),
    ("+300", "X-Amz-Expires should be a number."),
    (" 300", "X-Amz-Expires should be a number."),
    ("300.0", "X-Amz-Expires should be a number."),
    ("3e2", "X-Amz-Expires should be a number."),
    ("3_00", "X-Amz-Expires should be a number."),
    ("\u0663\u0660\u0660", "X-Amz-Expires should be a number."),  # Arabic-Indic digits: int() takes them
])
def test_v4_malformed_or_too_long_expiry_is_refused(value, message):
    view = view_of(v4_presigned(300), **{"X-Amz-Expires": value})
    with pytest.raises(sigv4.MalformedPresign) as e:
        verifier(time.time()).authenticate(view)
    assert str(e.value) == message


# -- Signature V2: Expires


@pytest.mark.unit
def test_v2_expiry_within_a_week_verifies():
    now = time.time()
    assert verifier(now).authenticate(view_of(v2_presigned(WEEK))).presigned


@pytest.mark.unit
@pytest.mark.parametrize("expires", [YEAR_2100, "now+8d", "now+1w+16m"])
def test_v2_expiry_beyond_a_week_is_refused(expires):
    now = time.time()
    value = {"now+8d": now + 8 * 86400, "now+1w+16m": now + WEEK + 16 * 60}.get(expires, expires)
    view = view_of(v2_presigned(300), Expires=str(int(value)))
    with pytest.raises(sigv4.MalformedPresign) as e:
        verifier(now).authenticate(view)
    assert str(e.value) == "Expires must be less than a week (604800 seconds) from now."


@pytest.mark.unit
@pytest.mark.parametrize("value, error", [
    ("-1", sigv4.RequestExpired),
    ("abc", sigv4.MalformedPresign),
    ("+4102444800", sigv4.MalformedPresign),
    ("", sigv4.MalformedPresign),
    ("9" * 5000, sigv4.MalformedPresign),  # longer than int() parses by default
])
def test_v2_malformed_expiry_is_refused(value, error):
    with pytest.raises(error):
        verifier(time.time()).authenticate(view_of(v2_presigned(300), Expires=value))


# -- over a real server


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def code_of(body: bytes) -> str:
    return ET.fromstring(body).findtext("Code")


@pytest.mark.integration
def test_server_refuses_v2_urls_for_the_year_2100(cas_s3, s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="k", Body=b"body")
    client = cas_s3.client()  # boto3's default presigned URLs are Signature V2
    url = client.generate_presigned_url("get_object", Params={"Bucket": s3_bucket, "Key": "k"},
                                        ExpiresIn=int(YEAR_2100 - time.time()))
    assert "Expires=41024447" in url  # 2099-12-31
    status, body = fetch(url)
    assert status == 400 and code_of(body) == "AuthorizationQueryParametersError", body
    week = client.generate_presigned_url("get_object", Params={"Bucket": s3_bucket, "Key": "k"}, ExpiresIn=WEEK)
    assert fetch(week) == (200, b"body")


@pytest.mark.integration
@pytest.mark.parametrize("value", ["604801", "-1", "abc"])
def test_server_refuses_bad_x_amz_expires(cas_s3, s3_client, s3_bucket, value):
    s3_client.put_object(Bucket=s3_bucket, Key="k", Body=b"body")
    client = cas_s3.client(signature_version="s3v4")
    url = client.generate_presigned_url("get_object", Params={"Bucket": s3_bucket, "Key": "k"}, ExpiresIn=300)
    parts = urlsplit(url)
    query = urlencode([(n, value if n == "X-Amz-Expires" else v) for n, v in parse_qsl(parts.query)])
    status, body = fetch(parts._replace(query=query).geturl())
    assert status == 400 and code_of(body) == "AuthorizationQueryParametersError", body
    assert fetch(url) == (200, b"body")
