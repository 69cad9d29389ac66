"""The sweep routes over HTTP: a sweep is checked at the door (a bad one is a 422 naming its
field, and nothing is stored), shown with its counts and leaderboard, listed, its trials
listed as jobs, and cancelled with its jobs."""

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.db.sessions import session_scope
from service.db.tables import Job, Sweep
from service.sweeps import driver
from tests.service.helpers import fields, problem
from tests.service.sweeps.conftest import BASE, run_sweep, sweep_body


def sweeps_stored() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Sweep)) or 0


def jobs_stored() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Job)) or 0


def test_a_sweep_is_made_queued_shown_and_listed(client: TestClient) -> None:
    r = client.post("/v1/sweeps", json=sweep_body(confirm={"top": 2, "seeds": [0, 1]}))
    assert r.status_code == 201, r.text
    made = r.json()
    assert r.headers["location"] == f"/v1/sweeps/{made['id']}"
    assert made["id"].startswith("swp_") and made["object"] == "sweep"
    assert (made["status"], made["phase"], made["name"]) == ("queued", "search", "lr")
    assert (made["counts"], made["leaderboard"], made["trials"]) == ({}, [], [])
    assert made["spec"]["base"] == BASE  # as written: no default of the spec added
    assert made["spec"]["pruner"] == {"name": "asha", "min_epochs": 1}
    assert client.get(f"/v1/sweeps/{made['id']}").json() == made
    listed = client.get("/v1/sweeps").json()
    assert [s["id"] for s in listed["data"]] == [made["id"]] and listed["next_cursor"] is None
    assert "trials" not in listed["data"][0] and "spec" not in listed["data"][0]
    assert jobs_stored() == 0  # the driver makes the trials, not the request


def refused(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    before = (sweeps_stored(), jobs_stored())
    found = problem(client.post("/v1/sweeps", json=body), 422)
    assert (sweeps_stored(), jobs_stored()) == before
    return found


def test_a_sweep_whose_trials_admission_would_refuse_is_a_422(client: TestClient) -> None:
    # a choice that makes an invalid spec: the error names the space field and the trial
    found = refused(client, sweep_body(space={"train.batch_size": {"choices": [64, 1]}}))
    assert fields(found) == ["space.train.batch_size"]
    assert '"train.batch_size": 1' in found["errors"][0]["message"]
    # a method that needs a teacher the base lacks: the base is at fault
    kd = {"method.name": {"choices": ["supervised", "kd"]}}
    found = refused(client, sweep_body(space=kd))
    assert fields(found) == ["base.teacher"] and "needs a teacher" in found["errors"][0]["message"]
    # a teacher that is not there
    base = BASE | {"method": {"name": "kd"}, "teacher": {"job": "job_" + "0" * 24}}
    found = refused(client, sweep_body(base=base, space={"method.temperature": {"choices": [2]}}))
    assert fields(found) == ["base.teacher.job"]
    # the baseline is checked too: a student that cannot train alone on this data
    mlp = BASE | {"student": {"arch": "mlp", "num_classes": 3}}
    found = refused(client, sweep_body(base=mlp, baseline=True))
    assert "base.student.num_classes" in fields(found)


def test_a_malformed_sweep_is_a_422_naming_its_fields(client: TestClient) -> None:
    found = refused(client, sweep_body(space={"train.nope": {"low": 1, "high": 2}}))
    assert fields(found) == ["space.train.nope"]
    found = refused(client, sweep_body(base={**BASE, "train": {"epochs": -1}}))
    assert fields(found) == ["base.train.epochs"]
    found = refused(client, sweep_body(space={"method.temperature": {"low": 2, "high": 1}}))
    assert fields(found) == ["space.method.temperature"]
    found = refused(client, sweep_body(sampler="bayes", trials=0))
    assert set(fields(found)) == {"sampler", "trials"}
    r = client.post("/v1/sweeps", content=b"{", headers={"Content-Type": "application/json"})
    assert problem(r, 400)["code"] == "malformed_json"


def test_its_trials_are_jobs_listed_by_sweep(client: TestClient) -> None:
    made = client.post("/v1/sweeps", json=sweep_body(parallel=2)).json()
    other = client.post("/v1/jobs", json={**BASE, "name": "alone"}).json()
    driver.run_pass()
    trials = client.get("/v1/jobs", params={"sweep": made["id"]}).json()["data"]
    assert len(trials) == 2 and all(j["sweep_id"] == made["id"] for j in trials)
    assert {j["name"] for j in trials} == {"lr/search-0", "lr/search-1"}
    everything = {j["id"] for j in client.get("/v1/jobs").json()["data"]}
    assert everything == {j["id"] for j in trials} | {other["id"]}
    shown = client.get(f"/v1/sweeps/{made['id']}").json()
    assert (shown["status"], shown["counts"]) == ("running", {"queued": 2})
    assert [t["job_id"] for t in shown["trials"]] == [j["id"] for j in trials[::-1]]


def test_cancel_stops_its_jobs_and_its_driving(client: TestClient) -> None:
    made = client.post("/v1/sweeps", json=sweep_body(parallel=2)).json()
    driver.run_pass()
    r = client.post(f"/v1/sweeps/{made['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    trials = client.get("/v1/jobs", params={"sweep": made["id"]}).json()["data"]
    assert [j["status"] for j in trials] == ["cancelled", "cancelled"]
    events = client.get(f"/v1/jobs/{trials[0]['id']}/events").json()["data"]
    assert f"its sweep {made['id']} was cancelled" in events[-1]["message"]
    assert driver.run_pass() == 0  # nothing left to drive: no trial is asked
    assert len(client.get("/v1/jobs", params={"sweep": made["id"]}).json()["data"]) == 2
    again = client.post(f"/v1/sweeps/{made['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert problem(client.post("/v1/sweeps/swp_nope/cancel"), 404)["code"] == "not_found"


def test_a_finished_sweep_cannot_be_cancelled(client: TestClient) -> None:
    made = client.post("/v1/sweeps", json=sweep_body(trials=1)).json()
    run_sweep(made["id"], lambda spec: [0.5, 0.6, 0.7])
    assert client.get(f"/v1/sweeps/{made['id']}").json()["status"] == "succeeded"
    found = problem(client.post(f"/v1/sweeps/{made['id']}/cancel"), 409)
    assert found["code"] == "sweep_finished"
