"""Careless input to the cas command: one line on stderr, a documented exit code, never a traceback.

Every test runs the real command line as a subprocess (as a user would), on a fresh store.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from cas.errors import CannotListen
from tests.fixtures.gc import cas_env

pytestmark = pytest.mark.integration


def cas(*args, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cas", *map(str, args)], capture_output=True, timeout=120,
                          env=env or cas_env(), **kw)


def one_line(r: subprocess.CompletedProcess, code: int) -> str:
    """The single stderr line of a command that failed with exit ``code``."""
    err = r.stderr.decode()
    assert "Traceback" not in err, err
    assert r.returncode == code, (r.returncode, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- cas serve on a busy port ----------------------------------------------------------------------

@pytest.mark.parametrize("busy", ["s3", "http"])
def test_serve_on_a_busy_port_names_address_and_flag_and_makes_no_credentials(tmp_path, busy):
    data = tmp_path / "d"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        addrs = {"s3": "127.0.0.1:0", "http": "127.0.0.1:0", busy: taken}
        r = cas("serve", "--data", data, "--s3", addrs["s3"], "--http", addrs["http"])
    line = one_line(r, CannotListen.exit_code)
    assert line == f"cas serve: cannot listen on {taken} (address already in use); choose another with --{busy}"
    assert b"secret" not in r.stdout and not (data / "root-credentials").exists()
