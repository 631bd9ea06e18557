"""Careless input to the cas command: one line on stderr, a documented exit code, never a traceback.

Every test runs the real command line as a subprocess (as a user would), on a fresh store.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cas.errors import AccessDenied, CannotListen, ConfigError, NotFound
from tests.fixtures.core import bytes_of
from tests.fixtures.gc import cas_env
from tests.fixtures.serve import CasServe

pytestmark = pytest.mark.integration

USAGE = 2
INTERRUPTED = 130


def cas(*args, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cas", *map(str, args)], check=False, capture_output=True,
                          timeout=120,
                          env=env or cas_env(), **kw)


def one_line(r: subprocess.CompletedProcess, code: int) -> str:
    """The single stderr line of a command that failed with exit ``code``."""
    err = r.stderr.decode()
    assert "Traceback" not in err, err
    assert r.returncode == code, (r.returncode, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def store_dir(tmp_path) -> Path:
    d = tmp_path / "d"
    r = cas("init", "--data", d)
    assert r.returncode == 0, r.stderr
    r = cas("mb", "--data", d, "bkt")
    assert r.returncode == 0, r.stderr
    return d


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


def test_serve_with_a_missing_or_half_tls_pair(tmp_path):
    listen = ("--s3", "127.0.0.1:0", "--http", "127.0.0.1:0")
    missing = tmp_path / "nope.pem"
    line = one_line(cas("serve", "--data", tmp_path / "d", *listen, "--tls-cert", missing, "--tls-key", missing),
                    ConfigError.exit_code)
    assert line == f"cas serve: cannot load the TLS certificate {missing} and key {missing}: No such file or directory"
    line = one_line(cas("serve", "--data", tmp_path / "d", *listen, "--tls-cert", missing), ConfigError.exit_code)
    assert line == "cas serve: HTTPS needs both --tls-cert and --tls-key"


# -- cas put / get: directories, folders, local files ------------------------------------------------

def test_put_directory_uploads_recursively_with_relative_keys(store_dir, tmp_path):
    src = tmp_path / "tree"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "empty").mkdir()
    files = {"a.txt": b"alpha", "sub/b.bin": bytes_of(200_000, seed=5), "sub/deeper/c": b""}
    for rel, body in files.items():
        (src / rel).write_bytes(body)
    r = cas("put", "--data", store_dir, src, "bkt/backup")
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in r.stderr
    assert r.stderr.decode().strip() == f"cas put: 3 files, {sum(map(len, files.values()))} bytes under bkt/backup/"
    assert [line.split("\t")[0] for line in r.stdout.decode().splitlines()] == \
           [f"bkt/backup/{rel}" for rel in sorted(files)]
    listed = cas("ls", "-r", "--data", store_dir, "bkt").stdout.decode()
    assert sorted(line.split()[-1] for line in listed.splitlines()) == [f"backup/{rel}" for rel in sorted(files)]
    for rel, body in files.items():
        assert cas("get", "--data", store_dir, f"bkt/backup/{rel}").stdout == body


def test_put_into_a_folder_key_appends_the_file_name(store_dir, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"into the folder")
    r = cas("put", "--data", store_dir, src, "bkt/dir/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split("\t")[0] == "bkt/dir/f.bin"
    assert cas("get", "--data", store_dir, "bkt/dir/f.bin").stdout == b"into the folder"
    one_line(cas("get", "--data", store_dir, "bkt/dir/"), NotFound.exit_code)  # no object "dir/"
    r = cas("put", "--data", store_dir, src, "bkt")
    assert r.returncode == 0 and r.stdout.decode().split("\t")[0] == "bkt/f.bin"
    one_line(cas("put", "--data", store_dir, "-", "bkt/dir/", input=b"x"), USAGE)


def test_get_into_a_directory_writes_the_key_name(store_dir, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"downloaded")
    cas("put", "--data", store_dir, src, "bkt/dir/name.txt")
    out = tmp_path / "outdir"
    out.mkdir()
    r = cas("get", "--data", store_dir, "bkt/dir/name.txt", out)
    assert r.returncode == 0, r.stderr
    assert (out / "name.txt").read_bytes() == b"downloaded"


def test_put_of_a_missing_file(store_dir, tmp_path):
    line = one_line(cas("put", "--data", store_dir, tmp_path / "nope", "bkt/k"), NotFound.exit_code)
    assert line == f"cas put: cannot read {tmp_path / 'nope'}: no such file or directory"


def _without_root_file_powers() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, with which root
    reads a file of mode 000 (a no-op for other users, who never had them)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_put_of_an_unreadable_file(store_dir, tmp_path):
    src = tmp_path / "secret"
    src.write_bytes(b"x")
    src.chmod(0)
    line = one_line(cas("put", "--data", store_dir, src, "bkt/k", preexec_fn=_without_root_file_powers),
                    AccessDenied.exit_code)
    assert line == f"cas put: cannot read {src}: permission denied"


def test_put_into_a_missing_bucket(store_dir, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"x")
    assert one_line(cas("put", "--data", store_dir, src, "nobucket/k"), NotFound.exit_code) == \
        "cas put: bucket 'nobucket' does not exist"
    src_dir = tmp_path / "tree"
    src_dir.mkdir()
    (src_dir / "a").write_bytes(b"a")
    one_line(cas("put", "--data", store_dir, src_dir, "nobucket/p"), NotFound.exit_code)


def test_get_to_a_path_that_cannot_be_written(store_dir, tmp_path):
    cas("put", "--data", store_dir, "-", "bkt/k", input=b"bytes")
    target = tmp_path / "no" / "such" / "dir" / "out"
    line = one_line(cas("get", "--data", store_dir, "bkt/k", target), NotFound.exit_code)
    assert line == f"cas get: cannot write {target}: no such file or directory"
    assert not list((tmp_path).glob("**/*.cas-partial"))
    line = one_line(cas("get", "--data", store_dir, "bkt/k", "/dev/full"), 1)
    assert line == "cas get: cannot write /dev/full: no space left on device"


def test_get_of_a_missing_object_or_bucket(store_dir):
    one_line(cas("get", "--data", store_dir, "bkt/missing"), NotFound.exit_code)
    one_line(cas("get", "--data", store_dir, "nobucket/k"), NotFound.exit_code)


def test_mb_for_a_user_that_does_not_exist(store_dir):
    line = one_line(cas("mb", "--data", store_dir, "--owner", "nosuchuser", "newbucket"), NotFound.exit_code)
    assert line == "cas mb: user 'nosuchuser' does not exist"
    assert "newbucket" not in cas("ls", "--data", store_dir).stdout.decode()


# -- flags, settings files, environment -------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("gc", "--bogus"),
    ("events", "--after", "soon"),
    ("user",),
    (),
    ("nosuchcommand",),
    ("put", "only-one-argument"),
])
def test_bad_flags_are_one_usage_line(store_dir, args):
    line = one_line(cas(*args, "--data", store_dir) if args else cas(), USAGE)
    assert line.startswith("cas") and line.endswith("--help)")


@pytest.mark.parametrize("args, expect", [
    (("gc", "--min-age", "soon"), "cas gc: not a duration: 'soon' (use e.g. 0, 90s, 15m, 1h, 7d)"),
    (("verify", "--rate-limit", "fast"), "cas verify: not a size: 'fast'"),
    (("serve", "--threads", "many"), "cas serve: threads: not a whole number: 'many'"),
    (("ls", "--log-level", "LOUD"), "cas ls: not a log level: 'LOUD' (use DEBUG, INFO, WARNING or ERROR)"),
])
def test_bad_flag_values(store_dir, args, expect):
    assert one_line(cas(*args, "--data", store_dir), ConfigError.exit_code) == expect


def test_settings_file_with_a_syntax_error(store_dir):
    (store_dir / "cas.toml").write_text("[gc]\nmin_age = \n")
    line = one_line(cas("ls", "--data", store_dir), ConfigError.exit_code)
    assert line.startswith(f"cas ls: cannot read {store_dir / 'cas.toml'}: ") and "line 2" in line


def test_missing_settings_file(store_dir, tmp_path):
    line = one_line(cas("ls", "--data", store_dir, "--config", tmp_path / "nope.toml"), ConfigError.exit_code)
    assert line == f"cas ls: no settings file {tmp_path / 'nope.toml'}"


@pytest.mark.parametrize("var, value, args", [
    ("CAS_GC_MIN_AGE", "a while", ("gc",)),
    ("CAS_S3_ADDR", "localhost", ("serve", "--http", "127.0.0.1:0")),
])
def test_bad_environment_values(store_dir, var, value, args):
    line = one_line(cas(*args, "--data", store_dir, env=cas_env(**{var: value})), ConfigError.exit_code)
    assert repr(value) in line


def test_data_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_bytes(b"")
    line = one_line(cas("ls", "--data", f), ConfigError.exit_code)
    assert line.startswith(f"cas ls: {f} is not a cas store (not a directory)")
    line = one_line(cas("init", "--data", f), ConfigError.exit_code)
    assert line.startswith(f"cas init: cannot create data directory {f}")


def test_log_file_that_cannot_be_written(store_dir, tmp_path):
    line = one_line(cas("ls", "--data", store_dir, "--log-file", tmp_path / "no" / "log"), ConfigError.exit_code)
    assert line.startswith("cas ls: cannot write the log file ")


def test_log_file_gets_the_logs_instead_of_stderr(tmp_path):
    log = tmp_path / "cas.log"
    server = CasServe(tmp_path / "d", extra_args=["--log-file", str(log)], root=None).start()
    assert server.stop() == 0
    text = log.read_text()
    assert "cas.cli.serve: stopping" in text
    assert not any("cas.cli.serve" in line for line in server.lines)


# -- Ctrl-C ------------------------------------------------------------------------------------------

def _wait_until_store_open(proc: subprocess.Popen, data: Path, timeout: float = 30.0) -> None:
    """Poll /proc until the process has the store's index open (it is then inside the command)."""
    deadline = time.monotonic() + timeout
    index = str((data / "index").resolve())
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        fds = Path(f"/proc/{proc.pid}/fd")
        try:
            if any(os.readlink(fd).startswith(index) for fd in fds.iterdir()):
                return
        except FileNotFoundError:  # an fd closed while we looked
            pass
        time.sleep(0.02)
    raise AssertionError("the command never opened the store")


def test_ctrl_c_is_one_line_and_exit_130(store_dir):
    proc = subprocess.Popen([sys.executable, "-m", "cas", "put", "--data", str(store_dir), "-", "bkt/slow"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cas_env())
    try:
        proc.stdin.write(bytes_of(100_000, seed=9))
        proc.stdin.flush()
        _wait_until_store_open(proc, store_dir)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert one_line(r, INTERRUPTED) == "cas put: interrupted"
    one_line(cas("get", "--data", store_dir, "bkt/slow"), NotFound.exit_code)  # nothing half-stored
