"""Admission refuses what a worker cannot hold: a 422 naming the field, nothing stored."""

import pytest
from sqlalchemy import func, select

from service.config import get_settings
from service.db.sessions import session_scope
from service.db.tables import Job

HUGE = {"num_samples": 1_000_000, "channels": 4, "size": 256}  # 977 GiB as float32


def jobs_stored() -> int:
    with session_scope() as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


def test_a_synthetic_set_larger_than_a_worker_holds_is_refused(client, spec_body):
    spec_body["data"] = {"dataset": "synthetic", "synthetic": HUGE}
    r = client.post("/v1/jobs", json=spec_body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    [error] = [e for e in r.json()["errors"] if e["field"] == "data.synthetic"]
    assert "976.6 GiB of float32 images" in error["message"]
    assert jobs_stored() == 0


def test_one_that_fits_is_accepted(client, spec_body):
    spec_body["data"] = {"dataset": "synthetic", "synthetic": {**HUGE, "num_samples": 20}}
    assert client.post("/v1/jobs", json=spec_body).status_code == 201
    assert jobs_stored() == 1


@pytest.fixture
def worker_memory(monkeypatch):
    """Sets DISTILLERY_WORKER_MEMORY_BYTES for the test."""

    def set_bytes(n: int) -> None:
        monkeypatch.setenv("DISTILLERY_WORKER_MEMORY_BYTES", str(n))
        get_settings.cache_clear()

    yield set_bytes
    monkeypatch.undo()
    get_settings.cache_clear()


SMALL = {"dataset": "synthetic", "synthetic": {"num_samples": 40, "size": 32}}


def refusal(client, spec_body) -> dict:
    before = jobs_stored()
    r = client.post("/v1/jobs", json=spec_body)
    assert r.status_code == 422, r.text
    assert jobs_stored() == before
    [error] = r.json()["errors"]
    return error


def test_a_student_whose_training_state_exceeds_a_worker_is_refused(
    client, spec_body, worker_memory
):
    # timm's vit_large_patch16_224: 303.3M parameters at 10 classes; with SGD 12 B each
    worker_memory(2 << 30)
    at_224 = {"dataset": "synthetic", "synthetic": {"num_samples": 40, "size": 224}}
    spec_body |= {"student": {"arch": "timm/vit_large_patch16_224"}, "data": at_224}
    error = refusal(client, spec_body)
    assert error["field"] == "student.arch"
    assert "training needs at least 3.4 GiB (student.arch 3.4 GiB" in error["message"]
    assert (
        "DISTILLERY_WORKER_MEMORY_BYTES (no live worker of queue 'default') has 2.0 GiB"
        in (error["message"])
    )


def test_kdcl_counts_every_peer(client, spec_body, worker_memory):
    # resnet8 (10 classes, 3 channels) trains 78,042 numbers: 936,504 B with SGD
    worker_memory(2 * 936_504 + 40 * 3 * 32 * 32 * 4)
    spec_body |= {"method": {"name": "kdcl", "peers": ["resnet8"]}, "data": SMALL}
    spec_body["train"]["batch_size"] = 40
    assert client.post("/v1/jobs", json=spec_body).status_code == 201
    spec_body["method"]["peers"] = ["resnet8", "resnet8"]
    assert refusal(client, spec_body)["field"] in ("student.arch", "method.peers.0")


def test_a_batch_larger_than_a_worker_holds_is_refused(client, spec_body, worker_memory):
    # 65,536 images of 4 x 256 x 256 float32 in one batch: 64 GiB, over 32 GiB (and the set
    # they are drawn from, 68.4 GiB, is over it too)
    worker_memory(32 << 30)
    spec_body["data"] = {"dataset": "synthetic", "synthetic": {**HUGE, "num_samples": 70_000}}
    spec_body["train"]["batch_size"] = 65_536
    errors = client.post("/v1/jobs", json=spec_body).json()["errors"]
    assert [e["field"] for e in errors] == ["data.synthetic", "train.batch_size"]
    assert "train.batch_size 64.0 GiB" in errors[1]["message"]
    assert jobs_stored() == 0
