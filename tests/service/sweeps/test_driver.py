"""The sweep driver, pass by pass, against the real database and Optuna storage, the worker
played by its JobContext (tests/service/sweeps/conftest.py): trials asked up to `parallel`,
a clearly worse trial pruned at its first rung and ended "pruned", the confirm runs and the
baseline, the leaderboard's numbers (checked against numpy), the project's quota, one driver
at a time, and nothing held in a process between passes."""

import threading
from typing import Any

import numpy as np
import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState
from sqlalchemy import select, update

from service.db.sessions import session_scope
from service.db.tables import Job, Project, Sweep, utcnow
from service.db.tenancy import DEFAULT_PROJECT
from service.spec.sweep import SweepSpec
from service.sweeps import driver, studies
from tests.service.db.test_tenancy import digits_npz
from tests.service.sweeps.conftest import BASE, queued, run_sweep, sweep_body, work

# val_acc per epoch by learning rate: 0.001 is clearly worse from the first epoch
CURVES = {0.1: [0.5, 0.8, 0.9], 0.05: [0.6, 0.7, 0.85], 0.001: [0.1, 0.15, 0.2]}


def curve(spec: dict[str, Any]) -> list[float]:
    """A run's val_acc per epoch: its learning rate's curve, a little better each seed."""
    lr = spec["train"]["optimizer"]["lr"]
    return [round(v + 0.01 * spec["train"]["seed"], 4) for v in CURVES.get(lr, [0.3, 0.4, 0.5])]


def shown(client: TestClient, sweep_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/sweeps/{sweep_id}").json())


def study(sweep_id: str) -> optuna.Study:
    with session_scope() as s:
        spec = SweepSpec.model_validate(s.get_one(Sweep, sweep_id).spec)
    return studies.open_study(sweep_id, spec)


def test_a_sweep_prunes_confirms_and_ranks(client: TestClient) -> None:
    """ASHA, the rates enqueued good, bad, good: the bad trial's first epoch is below the
    only other value at that rung, so it is pruned there and stops."""
    body = sweep_body(
        enqueue=[{"train.optimizer.lr": lr} for lr in (0.1, 0.001, 0.05)],
        confirm={"top": 2, "seeds": [0, 1, 2]},
        baseline=True,
        parallel=2,
    )
    made = client.post("/v1/sweeps", json=body).json()
    made_per_pass = run_sweep(made["id"], curve)
    sweep = shown(client, made["id"])
    assert (sweep["status"], sweep["phase"]) == ("succeeded", "done")
    assert all(len(ids) <= 2 for ids in made_per_pass)  # parallel: 2 at once at most

    search = [t for t in sweep["trials"] if t["kind"] == "search"]
    assert [t["params"]["train.optimizer.lr"] for t in search[:2]] == [0.1, 0.001]
    pruned = search[1]
    assert (pruned["status"], pruned["value"], pruned["epochs"]) == ("pruned", 0.1, 1.0)
    assert sweep["counts"] == {"succeeded": 2, "pruned": 1}
    assert sweep["compute"] == {"epochs": 7.0, "epochs_unpruned": 9.0}
    events = client.get(f"/v1/jobs/{pruned['job_id']}/events").json()["data"]
    assert [e["data"]["epoch"] for e in events if e["type"] == "metrics"] == [1]
    assert [e["data"]["status"] for e in events if e["type"] == "status"][-2:] == [
        "cancelling",
        "pruned",
    ]
    assert "pruned: val_acc 0.1000 at epoch 1" in events[-2]["message"]
    states = {t.number: t.state for t in study(made["id"]).trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.PRUNED, 2: TrialState.COMPLETE}

    # the top two configurations with seeds 0, 1, 2; seed 0 is the search trial itself
    board = sweep["leaderboard"]
    assert [row["params"] for row in board] == [
        {"train.optimizer.lr": 0.1},
        {"train.optimizer.lr": 0.05},
    ]
    for row, final in zip(board, (0.9, 0.85), strict=True):
        values = np.array([final, final + 0.01, final + 0.02])
        assert row["seeds"] == [0, 1, 2] and len(row["jobs"]) == 3
        assert row["mean"] == pytest.approx(values.mean())
        assert row["std"] == pytest.approx(values.std(ddof=1))
    confirm = [t for t in sweep["trials"] if t["kind"] == "confirm"]
    assert confirm[0]["job_id"] == search[0]["job_id"]  # reused, not run again
    assert len({t["job_id"] for t in sweep["trials"]}) == 3 + 4 + 3  # search, confirm, baseline
    baseline = sweep["baseline"]
    assert baseline["seeds"] == [0, 1, 2] and len(baseline["jobs"]) == 3
    for job_id in baseline["jobs"]:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["method"] == "supervised" and job["teacher_job_id"] is None


def test_nothing_lives_in_the_api_process_between_passes(client: TestClient) -> None:
    """Each pass as a freshly started API would run it: Optuna's storage reopened."""
    made = client.post("/v1/sweeps", json=sweep_body(trials=3, sampler="random")).json()

    def fresh(spec: dict[str, Any]) -> list[float]:
        studies.storage.cache_clear()
        return curve(spec)

    run_sweep(made["id"], fresh)
    sweep = shown(client, made["id"])
    assert sweep["status"] == "succeeded" and sum(sweep["counts"].values()) == 3
    assert len(study(made["id"]).trials) == 3


def test_one_driver_at_a_time(client: TestClient, backend: Any) -> None:
    """Passes in two threads at once, again and again, never ask more than `parallel`
    trials while none ends; a claim another driver holds is left alone."""
    made = client.post("/v1/sweeps", json=sweep_body(trials=10, parallel=2)).json()
    barrier = threading.Barrier(2)

    def passes() -> None:
        for _ in range(5):
            barrier.wait()
            driver.run_pass()

    threads = [threading.Thread(target=passes) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(queued(made["id"])) == 2
    assert len(study(made["id"]).trials) == 2  # nothing asked and thrown away either
    assert driver.claim(made["id"], "a") and not driver.claim(made["id"], "b")
    assert not driver.drive(made["id"], "b")
    driver.release(made["id"], "a")
    assert driver.drive(made["id"], "b")


def test_a_driver_whose_claim_lapsed_writes_nothing(client: TestClient) -> None:
    made = client.post("/v1/sweeps", json=sweep_body()).json()
    assert driver.claim(made["id"], "slow")
    slow = driver.Driver(made["id"], "slow")
    with session_scope() as s:  # its lease ran out and another driver took the sweep
        s.execute(update(Sweep).values(driver_until=utcnow()))
    assert driver.claim(made["id"], "quick")
    with pytest.raises(driver.Lost):
        slow.drive()
    assert queued(made["id"]) == []
    assert [t.state for t in study(made["id"]).trials] == [TrialState.FAIL]  # told, not lost


def test_trials_wait_for_room_in_the_projects_quota(client: TestClient) -> None:
    with session_scope() as s:
        s.merge(Project(id=DEFAULT_PROJECT, name="default", max_active_jobs=1))
    try:
        made = client.post("/v1/sweeps", json=sweep_body(parallel=2)).json()
        driver.run_pass()
        [first] = queued(made["id"])
        driver.run_pass()
        assert [j.id for j in queued(made["id"])] == [first.id]  # no room: not asked
        work(first.id, [0.5, 0.6, 0.7])
        driver.run_pass()
        assert len(queued(made["id"])) == 1
        assert shown(client, made["id"])["counts"] == {"succeeded": 1, "queued": 1}
        assert len(study(made["id"]).trials) == 2  # none asked and failed for want of room
    finally:
        with session_scope() as s:
            s.execute(update(Project).values(max_active_jobs=None))


def test_a_trial_asked_by_a_driver_that_died_is_failed(client: TestClient) -> None:
    made = client.post("/v1/sweeps", json=sweep_body(trials=2)).json()
    driver.run_pass()
    study(made["id"]).ask()  # asked, never recorded: the driver died before its commit
    driver.run_pass()
    states = [t.state for t in study(made["id"]).trials]
    assert states == [TrialState.RUNNING, TrialState.FAIL]
    assert len(queued(made["id"])) == 1  # the budget is the recorded trials'


def test_a_sweep_none_of_whose_trials_succeeds_fails(client: TestClient) -> None:
    made = client.post("/v1/sweeps", json=sweep_body(trials=2, parallel=2)).json()
    driver.run_pass()
    with session_scope() as s:
        for job_id in s.scalars(select(Job.id).where(Job.sweep_id == made["id"])):
            s.execute(update(Job).where(Job.id == job_id).values(status="failed"))
    driver.run_pass()
    sweep = shown(client, made["id"])
    assert (sweep["status"], sweep["error"]["code"]) == ("failed", "no_trial_succeeded")
    assert sweep["counts"] == {"failed": 2}


def test_a_trial_admission_refuses_counts_and_says_why(client: TestClient) -> None:
    """Its dataset deleted after the sweep was submitted (no job held it yet): each trial
    is refused at its ask, recorded failed with why, and counted; the sweep then fails."""
    octet = {"Content-Type": "application/octet-stream"}
    dataset = client.post("/v1/datasets", content=digits_npz(), headers=octet).json()["id"]
    base = {**BASE, "data": {"dataset": "upload", "upload": dataset}}
    made = client.post("/v1/sweeps", json=sweep_body(base=base, trials=2)).json()
    assert client.delete(f"/v1/datasets/{dataset}").status_code == 204
    driver.run_pass()
    sweep = shown(client, made["id"])
    assert [(t["status"], t["job_id"]) for t in sweep["trials"]] == [("failed", None)] * 2
    assert sweep["trials"][0]["error"] == f"data.upload: no dataset {dataset!r}"
    assert (sweep["status"], sweep["counts"]) == ("failed", {"failed": 2})
    assert [t.state for t in study(made["id"]).trials] == [TrialState.FAIL] * 2


def test_a_grid_runs_each_point_once(client: TestClient) -> None:
    made = client.post("/v1/sweeps", json=sweep_body(sampler="grid", parallel=3)).json()
    run_sweep(made["id"], curve)
    trials = shown(client, made["id"])["trials"]
    assert sorted(t["params"]["train.optimizer.lr"] for t in trials) == [0.001, 0.05, 0.1]


def test_a_trials_method_decides_which_values_it_takes(client: TestClient) -> None:
    """ddgsd's own weight is drawn (and set) only for ddgsd trials."""
    space = {
        "method.name": {"choices": ["supervised", "ddgsd"]},
        "method.kl_weight": {"low": 0.5, "high": 2.0},
    }
    body = sweep_body(space=space, trials=6, parallel=6, sampler="random", seed=3)
    made = client.post("/v1/sweeps", json=body).json()
    driver.run_pass()
    jobs = {j.id: j for j in queued(made["id"])}
    trials = shown(client, made["id"])["trials"]
    assert {t["params"]["method.name"] for t in trials} == {"supervised", "ddgsd"}
    for t in trials:
        method = jobs[t["job_id"]].spec["method"]
        if t["params"]["method.name"] == "ddgsd":
            assert 0.5 <= t["params"]["method.kl_weight"] <= 2.0
            assert method["kl_weight"] == t["params"]["method.kl_weight"]
        else:
            assert set(t["params"]) == {"method.name"} and "kl_weight" not in method
    drawn = {t.number: set(t.params) for t in study(made["id"]).trials}
    assert drawn == {t["number"]: set(t["params"]) for t in trials}  # Optuna drew only those


def test_hyperband_prunes_within_its_brackets_and_says_so(client: TestClient) -> None:
    """Optuna's HyperbandPruner over the base's epochs: every trial ends told as its job
    ended, a pruned one after fewer epochs. Which trials it prunes is not asserted: each
    trial's bracket is a hash of the study's name (the sweep's random id) and its number."""
    lrs = (0.1, 0.001, 0.05, 0.001, 0.1, 0.001)
    body = sweep_body(
        trials=6,
        pruner={"name": "hyperband", "reduction_factor": 2},
        enqueue=[{"train.optimizer.lr": lr} for lr in lrs],
    )
    made = client.post("/v1/sweeps", json=body).json()
    run_sweep(made["id"], curve)
    sweep = shown(client, made["id"])
    states = {t.number: t.state for t in study(made["id"]).trials}
    for t in (t for t in sweep["trials"] if t["kind"] == "search"):
        told = {"succeeded": TrialState.COMPLETE, "pruned": TrialState.PRUNED}[t["status"]]
        assert states[t["number"]] == told
        assert t["epochs"] == 3.0 if t["status"] == "succeeded" else t["epochs"] < 3.0
    assert sweep["status"] == "succeeded" and sum(sweep["counts"].values()) == 6
