"""docker-compose.yml, checked without Docker (there is none here): its two profiles — one node
with its own index, or several nodes over one PostgreSQL index and one bucket behind nginx — are
wired the way cas needs them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.unit

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _profile(compose: dict, name: str) -> dict[str, dict]:
    """The services ``docker compose --profile NAME up`` starts (those without a profile too)."""
    return {k: v for k, v in compose["services"].items() if name in v.get("profiles", [name])}


def test_each_profile_runs_cas_over_its_own_bucket_and_only_one_kind_of_node(compose):
    single, scale = _profile(compose, "single"), _profile(compose, "scale")
    assert "cas" in single and not {"cas-1", "cas-2", "postgres", "lb"} & set(single)
    assert {"postgres", "cas-init", "cas-1", "cas-2", "lb", "minio", "minio-init"} <= set(scale)
    assert "cas" not in scale, "the single node (LMDB index) must not share the scale-out bucket"
    assert single["cas"]["environment"]["CAS_BLOCKS"] != scale["cas-1"]["environment"]["CAS_BLOCKS"]
    made = compose["services"]["minio-init"]["command"][0]
    for env in (single["cas"]["environment"], scale["cas-1"]["environment"]):
        bucket = re.match(r"s3://\$\{(\w+):-([\w-]+)\}", env["CAS_BLOCKS"])
        assert bucket, env["CAS_BLOCKS"]
        assert f"$${bucket.group(1)}" in made, f"minio-init does not create {bucket.group(2)}"


def test_the_nodes_share_one_index_and_one_backend_and_the_store_is_created_once(compose):
    scale = _profile(compose, "scale")
    nodes = [scale["cas-1"], scale["cas-2"]]
    envs = [n["environment"] for n in nodes]
    assert envs[0] == envs[1] == scale["cas-init"]["environment"]
    assert envs[0]["CAS_INDEX"].startswith("postgresql://") and "@postgres:5432/" in envs[0]["CAS_INDEX"]
    assert scale["cas-init"]["command"][0] == "init"
    for node in nodes:
        assert node["depends_on"]["cas-init"]["condition"] == "service_completed_successfully"
        assert "ports" not in node, "only the load balancer publishes ports"
    assert scale["cas-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    volumes = [n["volumes"][0].split(":")[0] for n in nodes]
    assert len(set(volumes)) == 2, "each node keeps its own data directory"


def test_the_load_balancer_streams_to_every_node_and_keeps_the_signed_host(compose):
    lb = compose["services"]["lb"]
    assert sorted(lb["ports"]) == ["127.0.0.1:8080:8080", "127.0.0.1:9000:9000"]
    conf = compose["configs"][lb["configs"][0]["source"]]["content"]
    for port in (9000, 8080):
        upstream = re.search(r"upstream \w+\s*\{([^}]*:%d[^}]*)\}" % port, conf).group(1)
        assert "cas-1:%d" % port in upstream and "cas-2:%d" % port in upstream
    assert conf.count("proxy_set_header Host $$http_host;") == 2, "SigV4 signs Host: it must pass unchanged"
    assert conf.count("client_max_body_size 0;") == 2
    assert conf.count("proxy_request_buffering off;") == 2 and conf.count("proxy_buffering off;") == 2
