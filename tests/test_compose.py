"""docker-compose.yml, the production shape, read as compose reads it (YAML, anchors merged):
workers on several hosts share no volume with each other or the API, every durable byte goes
to the S3 server it runs, and that server knows the keys the services use."""

import json
from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def ours() -> dict[str, dict[str, Any]]:
    """The services built from this repository (the API, its workers, the migration)."""
    return {name: s for name, s in services().items() if "build" in s}


def test_two_workers_share_no_volume_with_each_other_or_the_api() -> None:
    workers = {name: s for name, s in ours().items() if s["build"]["target"] == "worker"}
    assert len(workers) >= 2
    mounts = [v.split(":")[0] for s in ours().values() for v in s.get("volumes", [])]
    assert len(mounts) == len(set(mounts)), mounts  # none mounted twice


def test_every_service_keeps_its_bytes_in_the_s3_server_compose_runs() -> None:
    store = services()["s3"]
    identities = json.loads(store["environment"]["S3_IDENTITIES"])["identities"]
    keys = {(c["accessKey"], c["secretKey"]) for i in identities for c in i["credentials"]}
    for name, service in ours().items():
        env = service["environment"]
        assert env["DISTILLERY_STORE_URL"].startswith("s3://"), name
        assert env["AWS_ENDPOINT_URL"] == "http://s3:8333", name
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) in keys, name
    bucket = services()["bucket"]["command"][0]
    assert f"-name {env['DISTILLERY_STORE_URL'].split('/')[2]}" in bucket
