"""Sweeps through real processes: the API's driver asks Optuna for trials, a real worker
trains each as a job on digits, ASHA prunes a clearly worse trial as its first epoch is
recorded (it stops and ends "pruned"), the best configuration is confirmed with a second
seed; and a sweep survives its API and its worker killed mid-trial."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from service.spec.sweep import SweepSpec
from service.sweeps import studies
from tests.e2e.conftest import QUEUE, Service

BASE: dict[str, Any] = {
    "method": {"name": "supervised"},
    "student": {"arch": "cnn_small"},
    "data": {"dataset": "digits", "val_fraction": 0.2},
    "train": {"epochs": 3, "batch_size": 32, "seed": 0},
    "resources": {"queue": QUEUE},
}
GOOD, BAD = 0.1, 1e-5  # a learning rate that learns in an epoch, and one that cannot


def submit(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    r = service.http.post("/v1/sweeps", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def sweep_of(service: Service, sweep_id: str) -> dict[str, Any]:
    return dict(service.http.get(f"/v1/sweeps/{sweep_id}").json())


def wait_sweep(
    service: Service, sweep_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 600
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep = sweep_of(service, sweep_id)
        if until(sweep):
            return sweep
        assert sweep["status"] in ("queued", "running"), sweep
        time.sleep(0.5)
    raise AssertionError(f"sweep {sweep_id}: {sweep_of(service, sweep_id)}; {service.log_dir}")


def trials_of(sweep: dict[str, Any], kind: str = "search") -> list[dict[str, Any]]:
    return [t for t in sweep["trials"] if t["kind"] == kind]


def study_states(sweep: dict[str, Any]) -> list[TrialState]:
    study = studies.open_study(sweep["id"], SweepSpec.model_validate(sweep["spec"]))
    return [t.state for t in study.trials]


@pytest.fixture(scope="module")
def asha(service: Service) -> dict[str, Any]:
    """A sweep of two trials, one at a time, the good rate enqueued first: at the first
    rung the bad trial's val_acc is below the only other one there."""
    body = {
        "name": "e2e-asha",
        "base": BASE,
        "space": {"train.optimizer.lr": {"choices": [GOOD, BAD]}},
        "trials": 2,
        "enqueue": [{"train.optimizer.lr": GOOD}, {"train.optimizer.lr": BAD}],
        "pruner": "asha",
        "confirm": {"top": 1, "seeds": [0, 1]},
    }
    made = submit(service, body)
    return wait_sweep(service, made["id"], lambda s: s["status"] == "succeeded")


def test_asha_prunes_the_bad_trial_at_its_first_rung(service: Service, asha: dict[str, Any]):
    good, bad = trials_of(asha)
    assert [t["params"]["train.optimizer.lr"] for t in (good, bad)] == [GOOD, BAD]
    assert (good["status"], bad["status"]) == ("succeeded", "pruned")
    first = [e["data"] for e in service.events(good["job_id"]) if e["type"] == "metrics"][0]
    print(f"val_acc after epoch 1: lr {GOOD} {first['val_acc']:.4f}, {BAD} {bad['value']:.4f}")
    job = service.job(bad["job_id"])
    assert job["status"] == "pruned" and job["spec"]["train"]["optimizer"]["lr"] == BAD
    events = service.events(bad["job_id"])
    assert [e["data"]["epoch"] for e in events if e["type"] == "metrics"] == [1]  # stopped
    statuses = [e for e in events if e["type"] == "status"]
    assert [e["data"]["status"] for e in statuses][-2:] == ["cancelling", "pruned"]
    assert statuses[-2]["message"].startswith("pruned: val_acc")
    assert job["progress"]["epoch"] == 1 and bad["epochs"] == 1.0  # not one step of epoch 2
    assert asha["compute"] == {"epochs": 4.0, "epochs_unpruned": 6.0}
    assert study_states(asha) == [TrialState.COMPLETE, TrialState.PRUNED]


def test_the_best_configuration_is_confirmed_with_each_seed(
    service: Service, asha: dict[str, Any]
) -> None:
    [row] = asha["leaderboard"]
    assert row["params"] == {"train.optimizer.lr": GOOD} and row["seeds"] == [0, 1]
    jobs = [service.job(j) for j in row["jobs"]]
    assert [j["spec"]["train"]["seed"] for j in jobs] == [0, 1]
    assert jobs[0]["id"] == trials_of(asha)[0]["job_id"]  # seed 0 was the search trial
    finals = [j["metrics"]["val_acc"] for j in jobs]
    assert row["values"] == finals
    assert row["mean"] == pytest.approx(sum(finals) / 2)
    assert row["std"] == pytest.approx(abs(finals[0] - finals[1]) / 2**0.5)
    listed = service.http.get("/v1/jobs", params={"sweep": asha["id"]}).json()["data"]
    assert {j["id"] for j in listed} == {t["job_id"] for t in asha["trials"]}
    assert len(listed) == 3 and all(j["sweep_id"] == asha["id"] for j in listed)


def test_a_sweep_survives_its_api_and_its_worker_killed_mid_trial(service: Service) -> None:
    """Both processes SIGKILLed while its trial trains. The trial's job is requeued when its
    lease expires and resumes from its checkpoint, as any job does; the new API's driver
    (the only one left) settles the trial from the rows and finishes the sweep."""
    body = {
        "name": "e2e-restart",
        "base": {**BASE, "train": {**BASE["train"], "epochs": 12}},
        "space": {"train.optimizer.lr": {"choices": [0.05]}},
        "trials": 1,
        "pruner": "none",
    }
    made = submit(service, body)
    first = wait_sweep(service, made["id"], lambda s: bool(trials_of(s)))
    job_id = trials_of(first)[0]["job_id"]
    service.wait(job_id, lambda j: j["progress"].get("epoch", 0) >= 3)
    service.kill_worker()
    service.kill_api()
    service.start_api()
    service.start_worker()
    done = wait_sweep(service, made["id"], lambda s: s["status"] == "succeeded")

    job = service.job(job_id)
    assert job["status"] == "succeeded" and job["attempt"] == 2
    assert job["result"]["resumed_from_epoch"] >= 2
    assert done["counts"] == {"succeeded": 1}
    [row] = done["leaderboard"]
    assert row["values"] == [job["metrics"]["val_acc"]] and row["jobs"] == [job_id]
    assert study_states(done) == [TrialState.COMPLETE]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the page only reads the API
def test_the_dashboard_shows_the_leaderboard_and_greys_the_pruned_trial(
    service: Service, asha: dict[str, Any], tmp_path: Path
) -> None:
    """The ended sweep's page: its leaderboard as the API ranks it, a curve per run (the
    confirm run that is its search trial once), the pruned trial's row and curve grey."""
    from selenium.webdriver.common.by import By

    from tests.e2e.browser import chromium, shown, wait  # skips without chromium (CI has it)
    from tests.e2e.test_dashboard import artifacts_dir

    with chromium(tmp_path / "profile") as driver:
        driver.get(f"{service.url}/#/sweeps/{asha['id']}")
        wait(driver, shown('#leaderboard tr[data-rank="1"]'))
        lines = "return Chart.getChart(document.querySelector('#sweep-chart canvas')).data.datasets"
        # the page reads every run's curve, then stops polling: its last render stays
        wait(driver, lambda d: len(d.execute_script(lines)) == 3, timeout=60)
        found = {d["label"]: d for d in driver.execute_script(lines)}
        assert set(found) == {"search 0", "search 1 (pruned)", "confirm 1"}
        pruned = found["search 1 (pruned)"]
        assert pruned["borderColor"] == "#c4c4cc" and pruned["borderDash"]
        assert pruned["data"] == [trials_of(asha)[1]["value"], None, None]
        assert all(v is not None for v in found["search 0"]["data"])
        [best] = asha["leaderboard"]
        mean, std = 100 * best["mean"], 100 * best["std"]
        rank = driver.find_element(By.CSS_SELECTOR, '#leaderboard tr[data-rank="1"]').text
        assert f"{mean:.2f} ± {std:.2f}%" in rank and "train.optimizer.lr=0.1" in rank
        row = driver.find_element(By.CSS_SELECTOR, '#runs tr[data-run="search-1"]')
        assert row.get_attribute("class") == "pruned" and "pruned" in row.text
        grey = row.find_element(By.TAG_NAME, "td").value_of_css_property("color")
        assert grey == "rgba(107, 114, 128, 1)"  # the muted colour, as the curve is grey
        saved = artifacts_dir(tmp_path) / "dashboard-sweep.png"
        driver.save_screenshot(str(saved))
        print(f"screenshot: {saved}")
