"""Jobs across nodes (`resources.nodes: 2`): worker processes on this host play the hosts,
each with its own Celery name, data dir (its cache and scratch) and TMPDIR, every durable
byte in one bucket of a real S3 server on loopback (tests/s3.py), as a fleet keeps it. One
gloo process per node; the ranks meet at the c10d store node 0 publishes on 127.0.0.1
(DISTILLERY_NODE_HOST)."""

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import Backend
from tests.e2e.conftest import QUEUE, Service, download, fresh_service
from tests.s3 import S3Server

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

WORKERS = 3
# an MLP (no BatchNorm: each process normalises only its share of a batch, so a network with
# it would not match one process); 1168 training digits (val_fraction 0.35) are 73 whole
# batches of 16, so one process drops no partial batch that two would
SPEC = {
    "method": {"name": "supervised"},
    "student": {"arch": "mlp"},
    "data": {"dataset": "digits", "val_fraction": 0.35, "augment": "crop"},
    "train": {"epochs": 2, "batch_size": 16, "seed": 5, "device": "cpu"},
    "resources": {"nodes": 2},
}
STEPS_PER_EPOCH = 73


@pytest.fixture(scope="module")
def fleet(
    backend: Backend, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The API and three workers, each as if on a host of its own, on one bucket."""
    logs = tmp_path_factory.mktemp("logs-nodes")
    store = s3_server.store_env()
    api_env = store | {"DISTILLERY_DATA_DIR": str(tmp_path_factory.mktemp("host-api"))}
    with fresh_service(backend, logs, api_env, worker=False) as service:
        for n in range(WORKERS):
            start_host(service, tmp_path_factory.mktemp(f"host{n}"))
        live_workers(service, WORKERS)
        yield service


def start_host(service: Service, host: Path) -> subprocess.Popen[bytes]:
    """A worker with a data dir of its own (no folder shared with the API or the others: its
    inputs come from the bucket into its own cache); the store is the service's."""
    (scratch := host / "tmp").mkdir(exist_ok=True)
    return service.start_another_worker(
        DISTILLERY_DATA_DIR=str(host),
        TMPDIR=str(scratch),
        DISTILLERY_NODE_HOST="127.0.0.1",
        DISTILLERY_TRAIN_THREADS="1",  # a thread per rank: no look at the cores to wait for
    )


def live_workers(service: Service, count: int, timeout: float = 180) -> list[dict[str, Any]]:
    """Once `count` workers of the queue are live (each registers after counting its GPUs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = service.http.get("/v1/workers").json()["data"]
        if len(mine := [w for w in rows if w["live"] and QUEUE in w["queues"]]) >= count:
            return mine
        time.sleep(0.25)
    raise AssertionError(f"fewer than {count} workers registered; logs in {service.log_dir}")


def events_of(service: Service, job_id: str, type_: str) -> list[dict[str, Any]]:
    return [e["data"] for e in service.events(job_id) if e["type"] == type_]


def reference(card: dict[str, Any], where: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """The same resolved spec trained in this process, on one process: its history and
    weights."""
    from service.spec.job import JobSpec
    from worker.engine import loop
    from worker.job.build import build
    from worker.task.inputs import JobInputs

    one = card["spec"] | {"resources": card["spec"]["resources"] | {"nodes": 1}}
    built = build(JobSpec.model_validate(one), JobInputs(job_dir=where), torch.device("cpu"))
    result = loop.train(built.plan, loop.Quiet())
    return result, built.method.output_model().state_dict()


def test_two_nodes_train_a_job_as_one_process_would(fleet: Service, tmp_path: Path) -> None:
    job = fleet.wait_status(fleet.submit(SPEC)["id"], "succeeded")

    [started] = [e for e in events_of(fleet, job["id"], "status") if e["status"] == "running"]
    assert len(started["nodes"]) == 2 and started["owner"] == started["nodes"][0]
    [ddp] = events_of(fleet, job["id"], "distributed")
    assert (ddp["world"], ddp["nodes"], ddp["backend"]) == (2, 2, "gloo")
    assert ddp["rendezvous"].startswith("127.0.0.1:")
    [node] = events_of(fleet, job["id"], "node")
    assert node["node"] == 1 and node["logs"] != ddp["logs"]  # node 1's own ranks folder
    assert job["progress"]["steps_per_epoch"] == STEPS_PER_EPOCH

    card_path = download(fleet, job["id"], "model.json", tmp_path)
    weights = load_file(download(fleet, job["id"], "student.safetensors", tmp_path))
    card = json.loads(card_path.read_text())
    single, expected = reference(card, tmp_path / "single")
    # DDP averages the two halves' gradients where one process takes the whole batch's: the
    # same sums in another order, a few float32 ulps apart at each step; over 146 steps the
    # weights stay within 1e-5 (as tests/worker/engine/test_ddp.py finds on one host)
    for name, value in expected.items():
        assert torch.allclose(weights[name], value, atol=1e-5), name
    history = [(h["train_loss"], h["val_acc"]) for h in single.history]
    metrics = [(e["train_loss"], e["val_acc"]) for e in events_of(fleet, job["id"], "metrics")]
    assert torch.allclose(torch.tensor(metrics), torch.tensor(history), rtol=1e-5)


def test_two_jobs_across_two_nodes_on_three_workers_both_finish(fleet: Service) -> None:
    """Submitted together, both gather at once: whichever takes a worker first, the older
    one fills (a worker waiting in the younger moves to it), then the younger runs."""
    spec = SPEC | {"train": SPEC["train"] | {"epochs": 1}}
    ids = [fleet.submit(spec)["id"] for _ in range(2)]
    done = [fleet.wait_status(job_id, "succeeded", timeout=300) for job_id in ids]
    assert [job["attempt"] for job in done] == [1, 1]  # never requeued
    for job_id in ids:
        [started] = [e for e in events_of(fleet, job_id, "status") if e["status"] == "running"]
        assert len(set(started["nodes"])) == 2


def test_a_node_killed_mid_epoch_the_job_resumes_on_the_next_gang(fleet: Service) -> None:
    # killed once epoch 2 is under way, ten epochs before the end (whatever the machine's
    # pace, more than the few polls it takes to see it)
    spec = SPEC | {"train": SPEC["train"] | {"epochs": 12}}
    job = fleet.submit(spec)
    running = fleet.wait(job["id"], lambda j: j["progress"].get("epoch", 0) >= 2)
    [started] = [e for e in events_of(fleet, job["id"], "status") if e["status"] == "running"]
    node_1 = int(started["nodes"][1].split(":")[1])  # host:pid:token, pid the Celery worker's
    os.killpg(node_1, signal.SIGKILL)  # the worker and its rank: a host lost
    done = fleet.wait_status(job["id"], "succeeded", timeout=300)

    assert done["attempt"] == 2
    requeued = [e for e in events_of(fleet, job["id"], "status") if e["status"] == "queued"]
    assert requeued[-1]["error"]["code"] == "node_lost"
    resumed = done["result"]["resumed_from_epoch"]
    assert resumed is not None and running["progress"]["epoch"] - 1 <= resumed
    epochs = sorted({e["epoch"] for e in events_of(fleet, job["id"], "metrics")})
    assert epochs == list(range(1, 13))
    starts = [e for e in events_of(fleet, job["id"], "status") if e["status"] == "running"]
    assert len(starts) == 2 and started["nodes"][1] not in starts[1]["nodes"]
