"""Admission against the fleet: a job is sized against the largest live worker of its queue
(host memory, GPU memory, GPUs), or the configured cap when none is live; a refusal names the
limit, the need, what is there and whose; GET /v1/workers and /metrics show the fleet."""

from datetime import timedelta

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from service.config import Settings, get_settings
from service.db.sessions import session_scope
from service.db.tables import Job, Worker, utcnow
from service.jobs import fleet

GIB = 1 << 30
# timm's vit_large_patch16_224 at 10 classes: 303.3M parameters, 12 B each with SGD: 3.4 GiB,
# on 224x224 images (the one size it takes)
LARGE = {"arch": "timm/vit_large_patch16_224"}
AT_224 = {"dataset": "synthetic", "synthetic": {"num_samples": 40, "size": 224}}


def register(name: str, memory: float, gpus: list[float] = (), queues=("default",)) -> None:
    capacity = fleet.Capacity(int(memory * GIB), 4, [int(g * GIB) for g in gpus])
    with session_scope() as s:
        fleet.register(s, name, list(queues), capacity)


def jobs_stored() -> int:
    with session_scope() as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


def refusal(client, spec_body) -> dict:
    r = client.post("/v1/jobs", json=spec_body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert jobs_stored() == 0
    [error] = r.json()["errors"]
    return dict(error)


@pytest.fixture
def large(spec_body) -> dict:
    return spec_body | {"student": LARGE, "data": AT_224}


@pytest.fixture
def cap(monkeypatch):
    """DISTILLERY_WORKER_MEMORY_BYTES for the test, in GiB."""

    def set_gib(n: float) -> None:
        monkeypatch.setenv("DISTILLERY_WORKER_MEMORY_BYTES", str(int(n * GIB)))
        get_settings.cache_clear()

    yield set_gib
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_job_beyond_the_largest_live_worker_is_refused_naming_it(client, large, cap):
    cap(64)  # the cap is not asked while a worker of the queue is live
    register("small@a", 1)
    register("larger@b", 2)
    register("huge@c", 64, queues=["other"])  # another queue's
    error = refusal(client, large)
    assert error["field"] == "student.arch"
    assert "training needs at least 3.4 GiB" in error["message"]
    assert (
        "host memory: needs 3.4 GiB, worker larger@b has 2.0 GiB (1.4 GiB short)"
        in (error["message"])
    )


def test_one_live_worker_that_holds_it_is_enough(client, large, cap):
    cap(1)
    register("small@a", 1)
    register("big@b", 8)
    assert client.post("/v1/jobs", json=large).status_code == 201


def test_with_no_live_worker_the_configured_cap_decides(client, large, cap):
    cap(2)
    register("big@b", 8)
    with session_scope() as s:  # silent for longer than a lease: gone
        stale = utcnow() - timedelta(seconds=get_settings().lease_s + 1)
        s.execute(update(Worker).values(heartbeat_at=stale))
    error = refusal(client, large)
    assert (
        "DISTILLERY_WORKER_MEMORY_BYTES (no live worker of queue 'default') has 2.0 GiB"
        in (error["message"])
    )


def test_a_cuda_job_needs_as_many_gpus_as_it_asks(client, spec_body):
    register("one-gpu@a", 64, gpus=[80])
    spec_body["train"] |= {"device": "cuda"}
    spec_body["resources"] = {"gpus": 2}
    error = refusal(client, spec_body)
    assert (error["field"], error["message"]) == (
        "resources.gpus",
        "GPUs: needs 2, worker one-gpu@a has 1",
    )


def test_on_gpus_the_training_state_must_fit_each_gpu(client, large):
    register("gpus@a", 64, gpus=[1, 1])
    large["resources"] = {"gpus": 2}
    error = refusal(client, large)
    assert (
        "GPU memory: needs 3.4 GiB, worker gpus@a has 1.0 GiB (2.4 GiB short)" in (error["message"])
    )


def test_an_auto_job_may_train_on_a_cpu_worker_of_its_queue(client, large):
    register("gpus@a", 64, gpus=[1])
    register("cpu@b", 8)
    assert client.post("/v1/jobs", json=large).status_code == 201


def test_the_data_must_fit_host_memory(client, spec_body):
    register("w@a", 1, gpus=[80])  # held on the host, whatever the GPUs
    # 100,000 x 3 x 64 x 64 float32: 4,915,200,000 B
    spec_body["data"] = {"dataset": "synthetic", "synthetic": {"num_samples": 100_000, "size": 64}}
    error = refusal(client, spec_body)
    assert error["field"] == "data.synthetic"
    assert error["message"] == (
        "4.6 GiB of float32 images; host memory: needs 4.6 GiB, worker w@a has 1.0 GiB "
        "(3.6 GiB short)"
    )


def test_the_fleet_is_listed_with_its_live_flag(client):
    register("gpu@a", 64, gpus=[80, 40], queues=["gpu", "default"])
    register("old@b", 8)
    with session_scope() as s:
        stale = utcnow() - timedelta(seconds=get_settings().lease_s + 1)
        s.execute(update(Worker).where(Worker.name == "old@b").values(heartbeat_at=stale))
    r = client.get("/v1/workers")
    assert r.status_code == 200, r.text
    rows = {w["name"]: w for w in r.json()["data"]}
    assert rows["gpu@a"]["live"] and not rows["old@b"]["live"]
    assert rows["gpu@a"]["queues"] == ["default", "gpu"]
    assert rows["gpu@a"]["gpu_count"] == 2
    assert rows["gpu@a"]["gpu_memory_bytes"] == [80 * GIB, 40 * GIB]
    assert rows["old@b"]["memory_bytes"] == 8 * GIB


def test_the_metrics_show_the_fleet(client):
    register("gpu@a", 64, gpus=[80], queues=["gpu"])
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }
    a = (("worker", "gpu@a"),)
    assert samples[("distillery_fleet_worker_live", a)] == 1
    assert samples[("distillery_fleet_worker_memory_bytes", a)] == 64 * GIB
    assert samples[("distillery_fleet_worker_gpus", a)] == 1
    assert samples[("distillery_fleet_worker_gpu_memory_bytes", (("gpu", "0"), *a))] == 80 * GIB
    assert samples[("distillery_queue_live_workers", (("queue", "gpu"),))] == 1


def test_the_configured_cap_is_this_hosts_memory_by_default(monkeypatch):
    monkeypatch.delenv("DISTILLERY_WORKER_MEMORY_BYTES", raising=False)
    assert Settings().worker_memory_bytes == psutil.virtual_memory().total


def test_a_timm_model_of_one_input_size_is_refused_on_data_of_another(client, spec_body):
    spec_body["student"] = {"arch": "timm/vit_tiny_patch16_224"}  # digits are 8x8
    error = refusal(client, spec_body)
    assert error["field"] == "student.arch"
    assert (
        "timm/vit_tiny_patch16_224 takes only 224x224 inputs, this data is 8x8"
        in (error["message"])
    )


def test_data_resized_to_its_size_is_accepted(client, spec_body):
    spec_body["student"] = {"arch": "timm/vit_tiny_patch16_224"}
    spec_body["data"] = {"dataset": "digits", "image_size": 224}
    r = client.post("/v1/jobs", json=spec_body)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["data"]["image_size"] == 224
