"""The cas command: serve (health, credentials, clean stop) and direct store access beside it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.request

import pytest

from cas.blocks.packs.files import LocalPackFiles
from cas.meta.objects import decode
from tests.fixtures.core import bytes_of
from tests.fixtures.serve import CasServe

pytestmark = pytest.mark.integration


def cas(*args, check=True, **kw):
    return subprocess.run([sys.executable, "-m", "cas.cli", *args], capture_output=True, check=check, **kw)


def test_serve_health_and_clean_stop(cas_server):
    with urllib.request.urlopen(cas_server.http_url + "/healthz", timeout=10) as r:
        body = json.load(r)
        assert r.status == 200 and r.headers["X-Request-Id"]
    assert body["status"] == "ok" and body["version"] and body["store"]["index"] == "ok"
    assert cas_server.stop() == 0
    assert any("cas stopped" in line for line in cas_server.lines)


def test_unknown_http_path_is_404_json(cas_server):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(cas_server.http_url + "/no/such/thing/here.xyz", timeout=10)
    assert err.value.code in (401, 404)


def test_first_start_generates_root_credentials_once(tmp_path):
    env = {k: "" for k in ("CAS_ROOT_USER", "CAS_ROOT_PASSWORD")}
    data = tmp_path / "d"
    first = CasServe(data, env=env, root=None).start()
    first.stop()
    printed = "\n".join(first.lines)
    cred = data / "root-credentials"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    name, secret = cred.read_text().split("\n")[:2]
    assert name == "root" and len(secret) >= 30 and secret in printed
    second = CasServe(data, env=env, root=None).start()
    second.stop()
    assert secret not in "\n".join(second.lines)
    assert cred.read_text().split("\n")[:2] == [name, secret]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (data / "index").iterdir())


def test_a_root_an_older_cas_generated_into_the_data_directory_goes_into_the_index(local_store):
    """The file stays the operator's copy; the index makes it every node's root."""
    from cas.auth.users import ROOT_FILE, ROOT_META

    (local_store.settings.data_dir / ROOT_FILE).write_text("admin\nold-generated-secret\n")
    assert local_store.users.ensure_root() == ("admin", "old-generated-secret", False)
    with local_store.index.read() as t:
        assert t.get_meta(ROOT_META) == {"name": "admin", "secret": "old-generated-secret"}


def test_cli_round_trip_while_server_runs(cas_server, tmp_path):
    data = str(cas_server.data)
    src = tmp_path / "f.bin"
    src.write_bytes(bytes_of(3 << 20, seed=3))
    cas("mb", "--data", data, "bkt")
    out = cas("put", "--data", data, str(src), "bkt/dir/f.bin").stdout.decode()
    assert out.split("\t")[1] == str(3 << 20)
    # the command ended with its metadata log record in the backend (it ships at close)
    meta = LocalPackFiles(cas_server.data / "blocks")
    logged = [(r["op"], r.get("key")) for name in meta.list_meta("log/") for r in decode(meta.get_meta(name))]
    assert ("put_object", "dir/f.bin") in logged
    assert "dir/" in cas("ls", "--data", data, "bkt").stdout.decode()
    assert "dir/f.bin" in cas("ls", "--data", data, "bkt/dir/").stdout.decode()
    assert "bkt" in cas("ls", "--data", data).stdout.decode()
    got = tmp_path / "out.bin"
    cas("get", "--data", data, "bkt/dir/f.bin", str(got))
    assert got.read_bytes() == src.read_bytes()
    assert cas("get", "--data", data, "bkt/dir/f.bin", "-").stdout == src.read_bytes()
    stats = json.loads(cas("stats", "--data", data, "--json").stdout)
    assert set(stats) == {"objects", "logical_bytes", "unique_blocks", "stored_bytes", "dedup_ratio",
                          "compression_ratio", "packs", "pack_bytes", "dead_bytes", "retired_packs",
                          "index_bytes", "index_bytes_per_object"}
    assert stats["index_bytes_per_object"] == stats["index_bytes"] > 0
    assert stats["objects"] == 1 and stats["logical_bytes"] == 3 << 20
    assert stats["packs"] == 1 and stats["pack_bytes"] > stats["stored_bytes"] > 0
    cas("rm", "--data", data, "bkt/dir/f.bin")
    cas("rb", "--data", data, "bkt")
    with urllib.request.urlopen(cas_server.http_url + "/healthz", timeout=10) as r:
        assert r.status == 200


def test_cli_errors_are_one_line_with_exit_codes(tmp_path):
    data = str(tmp_path / "d")
    r = cas("get", "--data", data, "nobucket/k", check=False)
    assert r.returncode == 2 and b"is not a cas store" in r.stderr and b"Traceback" not in r.stderr
    cas("init", "--data", data)
    r = cas("get", "--data", data, "nobucket/k", check=False)
    assert r.returncode == 4 and b"does not exist" in r.stderr and b"Traceback" not in r.stderr
    r = cas("mb", "--data", data, "Bad_Name", check=False)
    assert r.returncode == 2 and b"invalid bucket name" in r.stderr
    cas("mb", "--data", data, "bkt")
    r = cas("mb", "--data", data, "bkt", check=False)
    assert r.returncode == 5
    r = cas("put", "--data", data, os.devnull, "bkt/../x", check=False)
    assert r.returncode == 2 and b"'..'" in r.stderr


def test_init_fixes_parameters(tmp_path):
    data = str(tmp_path / "d")
    cas("init", "--data", data, "--chunk-avg", "16K", "--compression", "none")
    r = cas("init", "--data", data, "--chunk-avg", "64K", check=False)
    assert r.returncode == 2 and b"cannot be opened" in r.stderr
    assert b"avg 16384" in cas("init", "--data", data).stdout
    r = cas("init", "--data", str(tmp_path / "e"), "--compression", "lz4", check=False)
    assert r.returncode == 2 and b"invalid compression" in r.stderr


def test_stdin_put(tmp_path):
    data = str(tmp_path / "d")
    cas("init", "--data", data)
    cas("mb", "--data", data, "bkt")
    cas("put", "--data", data, "-", "bkt/from-stdin", input=b"piped bytes")
    assert cas("get", "--data", data, "bkt/from-stdin").stdout == b"piped bytes"


def _raw(url: str, payload: bytes, until: bytes = b"\r\n\r\n") -> bytes:
    """Send ``payload`` and read until ``until`` has arrived or the server closes (10 s bound)."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    reply = b""
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        try:
            s.sendall(payload)
        except OSError:  # the server may answer and close before taking the whole payload
            pass
        while until not in reply:
            try:
                piece = s.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            reply += piece
    return reply


def test_huge_headers_are_refused_with_413(cas_server):
    reply = _raw(cas_server.http_url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413")


def test_unread_chunked_body_closes_the_connection(cas_server):
    # a refused chunked upload: what is left of it must not be parsed as a next request
    reply = _raw(cas_server.http_url, b"PUT /dav/nobucket/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"10000\r\n" + b"x" * 1000)
    head = reply.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 401") and b"connection: close" in head


def test_refused_body_of_known_length_is_drained_and_connection_kept(cas_server):
    body = b"y" * (3 << 20)
    req = (b"PUT /dav/nobucket/x HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
           + body + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = _raw(cas_server.http_url, req, until=b'"status": "ok"')
    assert reply.startswith(b"HTTP/1.1 401") and b'"status": "ok"' in reply


def test_get_to_a_device_or_pipe_writes_in_place(tmp_path):
    data = str(tmp_path / "d")
    src = tmp_path / "f.bin"
    src.write_bytes(bytes_of(300_000, seed=4))
    cas("init", "--data", data)
    cas("mb", "--data", data, "bkt")
    cas("put", "--data", data, str(src), "bkt/f")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    import threading

    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    cas("get", "--data", data, "bkt/f", str(fifo))
    reader.join(timeout=60)
    assert got == [src.read_bytes()]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the pipe was replaced by a file"
