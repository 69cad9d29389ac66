"""Projects are walled off from each other: with project B's key, every /v1 route that takes
an id answers 404 for project A's jobs, models, datasets and artifacts (and changes nothing),
lists show B's rows only, specs naming A's things are refused as if they did not exist,
Idempotency-Keys are per project, and every /v1 route wants a valid, unrevoked key.

The routes are read from the app itself, so a route added later is covered (or the test
says which value of project A it lacks)."""

import copy
import functools
import hashlib
import io
import itertools
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from safetensors.torch import save, save_file
from sklearn.datasets import load_digits
from sqlalchemy import delete, func, select, text

from service import keys
from service.app import create_app
from service.config import Settings, get_settings
from service.db import artifacts
from service.db.sessions import session_scope
from service.db.tables import (
    DEFAULT_PROJECT,
    ApiKey,
    Artifact,
    Dataset,
    Job,
    JobEvent,
    RegisteredModel,
    Sweep,
    Webhook,
    WebhookDelivery,
)
from service.jobs import admission, lifecycle
from service.spec.job import JobSpec
from tests.service.helpers import PROBLEM, fields, problem
from worker.engine.zoo import build_model

SPEC: dict[str, Any] = {
    "name": "digits",
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {"epochs": 2},
}
RESNET8 = {"arch": "resnet8", "num_classes": 10, "in_channels": 1}
OCTET = {"Content-Type": "application/octet-stream"}
STUDENT = "student.safetensors"
CHECKPOINT = "checkpoints/epoch_1.safetensors"
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")  # {job_id}, {name:path}
# what each list route lists: its rows' id prefix
LISTED = {
    "/v1/jobs": "job_",
    "/v1/models": "mdl_",
    "/v1/datasets": "ds_",
    "/v1/webhooks": "wh_",
    "/v1/sweeps": "swp_",
}


@functools.cache
def resnet8_weights() -> bytes:
    return save(dict(build_model("resnet8", 10, 1).state_dict()))


@functools.cache
def digits_npz() -> bytes:
    bunch = load_digits()
    buf = io.BytesIO()
    images = np.round(bunch.images * 255 / 16).astype(np.uint8)
    np.savez(buf, images=images, labels=bunch.target.astype(np.int64))
    return buf.getvalue()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def key_hex(key: str) -> str:
    """The key id's hex digits in `dk_<hex>_<secret>` (a secret may hold underscores)."""
    return key.removeprefix("dk_").partition("_")[0]


def spec(**overrides: Any) -> dict[str, Any]:
    return copy.deepcopy(SPEC) | overrides


# -- the two projects ---------------------------------------------------------------------


@dataclass
class Project:
    id: str
    key_id: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.key)


def new_project(label: str) -> Project:
    with session_scope() as s:
        row, key = keys.create_key(s, f"{label}-{uuid.uuid4().hex[:8]}", f"{label}-key")
        return Project(row.project_id, row.id, key)


def succeeded_job(project_id: str, student: bytes) -> str:
    """A succeeded job of `project_id`, made as a worker would (outside any request), with a
    student and a checkpoint registered as artifacts."""
    with session_scope() as s:
        job, _ = admission.submit(
            s, JobSpec.model_validate(spec()), idempotency_key=None, request_hash=""
        )
        job.project_id = project_id
        job_id = job.id
    with session_scope() as s:
        assert lifecycle.claim(s, job_id, "w1", lease_s=60) is not None
    with session_scope() as s:
        lifecycle.finish(s, job_id, "w1", result={"val_acc": 0.9})
    out = artifacts.job_dir(job_id)
    (out / STUDENT).write_bytes(student)
    (out / CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(build_model("resnet8", 10, 1).state_dict()), out / CHECKPOINT)
    with session_scope() as s:
        artifacts.register(s, job_id, out / STUDENT, kind="student")
        artifacts.register(s, job_id, out / CHECKPOINT, kind="checkpoint", epoch=1)
    return job_id


@dataclass
class World:
    a: Project
    b: Project
    queued: str  # A's, submitted over HTTP
    succeeded: str  # A's, made directly, with artifacts
    model: str  # A's upload
    dataset: str  # A's upload
    webhook: str  # A's, registered before its job succeeded: it has a delivery
    delivery: str  # that one
    sweep: str  # A's, queued (no driver runs here)

    def a_ids(self) -> set[str]:
        return {self.queued, self.succeeded, self.model, self.dataset, self.webhook, self.sweep}

    def values(self) -> dict[str, list[str]]:
        """Project A's value for each path parameter a /v1 route may take."""
        return {
            "job_id": [self.queued, self.succeeded],
            "model_id": [self.model],
            "dataset_id": [self.dataset],
            "webhook_id": [self.webhook],
            "delivery_id": [self.delivery],
            "sweep_id": [self.sweep],
            "name": [STUDENT, CHECKPOINT],
        }


@pytest.fixture
def keyed(clean_db: Any) -> Iterator[TestClient]:
    """A client of an app that wants a key on every /v1 request."""
    with TestClient(create_app(Settings(require_keys=True, watchdog_s=0, webhook_s=0))) as c:
        yield c


@pytest.fixture
def world(keyed: TestClient) -> Iterator[World]:
    a, b = new_project("a"), new_project("b")
    r = keyed.post("/v1/jobs", json=spec(), headers=a.auth)
    assert r.status_code == 201, r.text
    queued = r.json()["id"]
    r = keyed.post(
        "/v1/models",
        params=RESNET8 | {"name": "a-teacher"},
        content=resnet8_weights(),
        headers=OCTET | a.auth,
    )
    assert r.status_code == 201, r.text
    model = r.json()["id"]
    r = keyed.post(
        "/v1/datasets", params={"name": "a-digits"}, content=digits_npz(), headers=OCTET | a.auth
    )
    assert r.status_code == 201, r.text
    dataset = r.json()["id"]
    r = keyed.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/a"}, headers=a.auth)
    assert r.status_code == 201, r.text
    webhook = r.json()["id"]
    lr = {"train.optimizer.lr": {"choices": [0.1, 0.05]}}
    r = keyed.post("/v1/sweeps", json={"base": spec(), "space": lr}, headers=a.auth)
    assert r.status_code == 201, r.text
    sweep = r.json()["id"]
    succeeded = succeeded_job(a.id, resnet8_weights())
    made = (
        (Job, queued),
        (RegisteredModel, model),
        (Dataset, dataset),
        (Webhook, webhook),
        (Sweep, sweep),
    )
    with session_scope() as s:
        for table, ident in made:
            assert s.get(table, ident).project_id == a.id  # made over HTTP: A's
        sent = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook)
        [delivery] = s.scalars(sent)
        assert (delivery.job_id, delivery.project_id) == (succeeded, a.id)
    w = World(a, b, queued, succeeded, model, dataset, webhook, delivery.id, sweep)
    yield w
    with session_scope() as s:  # truncate() keeps webhooks: no other test's sender tries it
        s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook))
        s.execute(delete(Webhook).where(Webhook.id == webhook))


def snapshot() -> dict[str, Any]:
    """Every row of the owned tables (and their events and artifacts), and every file."""
    with session_scope() as s:
        rows = {
            "jobs": s.execute(
                select(Job.id, Job.project_id, Job.status, Job.updated_at).order_by(Job.id)
            ).all(),
            "events": s.scalar(select(func.count()).select_from(JobEvent)),
            "artifacts": s.execute(
                select(Artifact.job_id, Artifact.name, Artifact.sha256).order_by(Artifact.id)
            ).all(),
            "models": s.execute(
                select(RegisteredModel.id, RegisteredModel.project_id).order_by(RegisteredModel.id)
            ).all(),
            "datasets": s.execute(
                select(Dataset.id, Dataset.project_id).order_by(Dataset.id)
            ).all(),
            "webhooks": s.execute(
                select(Webhook.id, Webhook.project_id, Webhook.deleted_at).order_by(Webhook.id)
            ).all(),
            "deliveries": s.execute(
                select(WebhookDelivery.id, WebhookDelivery.status).order_by(WebhookDelivery.id)
            ).all(),
            "sweeps": s.execute(
                select(Sweep.id, Sweep.project_id, Sweep.status, Sweep.updated_at).order_by(
                    Sweep.id
                )
            ).all(),
        }
    root = get_settings().artifacts_dir
    rows["files"] = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    return rows


def v1_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every /v1 route of the app, those of included routers too."""
    found = []
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if not path.startswith("/v1"):
            continue
        if not route.methods:  # a mount or a websocket: this test would not know it
            pytest.fail(f"{path}: a /v1 route with no methods ({route.original_route!r})")
        found += [(m, path) for m in route.methods if m != "HEAD"]
    return sorted(found)


def urls(path: str, values: dict[str, list[str]]) -> Iterator[tuple[str, dict[str, str]]]:
    """`path` with each combination of values for its parameters, and what it used."""
    names = PARAM.findall(path)
    missing = [n for n in names if n not in values]
    if missing:
        pytest.fail(f"{path}: no value of project A for {missing}; add one to World.values")
    for combo in itertools.product(*(values[n] for n in names)):
        used = dict(zip(names, combo, strict=True))
        yield PARAM.sub(lambda m, used=used: used[m.group(1)], path), used


def fake(ident: str) -> str:
    """An id of the same shape that names nothing."""
    prefix = ident.rsplit("_", 1)[0]
    return (
        f"{prefix}_{uuid.uuid4().hex[:24]}"
        if ident.startswith(("job_", "mdl_", "ds_", "wh_", "msg_", "swp_"))
        else ident
    )


# -- 2. every route with an id: 404 for another project's ---------------------------------


def test_every_route_with_an_id_is_a_404_for_another_projects(keyed, world):
    w = world
    by_id = [(m, p) for m, p in v1_routes(keyed.app) if PARAM.search(p) and not shared(p)]
    # the enumeration is not vacuous: the routes known today are among those exercised
    assert {
        ("GET", "/v1/jobs/{job_id}"),
        ("POST", "/v1/jobs/{job_id}/cancel"),
        ("GET", "/v1/jobs/{job_id}/events"),
        ("GET", "/v1/jobs/{job_id}/artifacts"),
        ("GET", "/v1/jobs/{job_id}/checkpoints"),
        ("GET", "/v1/jobs/{job_id}/artifacts/{name:path}"),
        ("GET", "/v1/models/{model_id}"),
        ("DELETE", "/v1/models/{model_id}"),
        ("GET", "/v1/datasets/{dataset_id}"),
        ("DELETE", "/v1/datasets/{dataset_id}"),
        ("GET", "/v1/webhooks/{webhook_id}"),
        ("DELETE", "/v1/webhooks/{webhook_id}"),
        ("GET", "/v1/webhooks/{webhook_id}/deliveries"),
        ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"),
        ("POST", "/v1/webhooks/{webhook_id}/resume"),
        ("GET", "/v1/webhooks/{webhook_id}/events"),
        ("GET", "/v1/sweeps/{sweep_id}"),
        ("POST", "/v1/sweeps/{sweep_id}/cancel"),
    } <= set(by_id)
    before = snapshot()
    exercised = set()
    for method, path in by_id:
        for url, used in urls(path, w.values()):
            r = keyed.request(method, url, headers=w.b.auth)
            assert r.status_code == 404, f"{method} {url} with B's key: {r.status_code} {r.text}"
            body = problem(r, 404)
            assert body["code"] == "not_found"
            # the same answer as for an id that names nothing: no hint that A's exists
            swap = {v: fake(v) for v in used.values()}
            other = url
            for real, made_up in swap.items():
                other = other.replace(real, made_up)
            expected = problem(keyed.request(method, other, headers=w.b.auth), 404)
            for real, made_up in swap.items():
                expected = {
                    k: v.replace(made_up, real) if isinstance(v, str) else v
                    for k, v in expected.items()
                }
            assert body == expected, f"{method} {url}"
            exercised.add((method, path))
    assert exercised == set(by_id)
    assert snapshot() == before  # nothing cancelled, deleted or otherwise changed

    # and A still has it all, as it was
    a = w.a.auth
    assert keyed.get(f"/v1/jobs/{w.queued}", headers=a).json()["status"] == "queued"
    assert keyed.get(f"/v1/jobs/{w.succeeded}", headers=a).json()["status"] == "succeeded"
    assert keyed.get(f"/v1/models/{w.model}", headers=a).status_code == 200
    assert keyed.get(f"/v1/datasets/{w.dataset}", headers=a).status_code == 200
    assert keyed.get(f"/v1/sweeps/{w.sweep}", headers=a).json()["status"] == "queued"
    r = keyed.get(f"/v1/webhooks/{w.webhook}/deliveries", headers=a)
    assert [d["job_id"] for d in r.json()["data"]] == [w.succeeded]
    listed = keyed.get(f"/v1/jobs/{w.succeeded}/artifacts", headers=a).json()["data"]
    assert {x["name"] for x in listed} == {STUDENT, CHECKPOINT}
    r = keyed.get(f"/v1/jobs/{w.succeeded}/artifacts/{STUDENT}", headers=a)
    assert (r.status_code, r.content) == (200, resnet8_weights())


# -- 3. lists ------------------------------------------------------------------------------


# the deployment's, not a project's: every key sees the same fleet (what admission sizes by)
# and the same published recipes
SHARED = {"/v1/workers", "/v1/recipes"}


def shared(path: str) -> bool:
    return any(path == s or path.startswith(f"{s}/") for s in SHARED)


def test_lists_show_only_the_callers_rows(keyed, world):
    w = world
    r = keyed.post("/v1/jobs", json=spec(name="b-job"), headers=w.b.auth)
    assert r.status_code == 201, r.text
    b_job = r.json()["id"]
    lists = [p for m, p in v1_routes(keyed.app) if m == "GET" and not PARAM.search(p)]
    assert set(lists) >= set(LISTED)
    for path in lists:
        if path in SHARED:
            same = [keyed.get(path, headers=k.auth).json()["data"] for k in (w.a, w.b)]
            assert same[0] == same[1], path
            continue
        if path not in LISTED:
            pytest.fail(f"GET {path}: a list route this test does not know the rows of")
        prefix = LISTED[path]
        seen_b = {x["id"] for x in keyed.get(path, headers=w.b.auth).json()["data"]}
        seen_a = {x["id"] for x in keyed.get(path, headers=w.a.auth).json()["data"]}
        mine = {i for i in w.a_ids() if i.startswith(prefix)}
        assert mine and not seen_b & w.a_ids(), path
        assert seen_a == mine, path
        assert seen_b == ({b_job} if path == "/v1/jobs" else set()), path
    for status in ("queued", "succeeded"):
        r = keyed.get("/v1/jobs", params={"status": status}, headers=w.b.auth)
        assert not {x["id"] for x in r.json()["data"]} & w.a_ids()


# -- 4. specs naming another project's things ----------------------------------------------


def _refusals(w: World) -> list[tuple[dict[str, Any], str, str]]:
    kd = {"method": {"name": "kd"}, "student": {"arch": "cnn_small"}}
    return [
        (spec(**kd, teacher={"job": w.succeeded}), "teacher.job", f"no job {w.succeeded!r}"),
        (spec(**kd, teacher={"model": w.model}), "teacher.model", f"no model {w.model!r}"),
        (
            spec(data={"dataset": "upload", "upload": w.dataset}),
            "data.upload",
            f"no dataset {w.dataset!r}",
        ),
        (
            spec(student={"arch": "resnet8", "init": {"job": w.succeeded}}),
            "student.init.job",
            f"no job {w.succeeded!r}",
        ),
        (
            spec(student={"arch": "resnet8", "init": {"model": w.model}}),
            "student.init.model",
            f"no model {w.model!r}",
        ),
    ]


def test_specs_naming_another_projects_things_are_refused(keyed, world):
    w = world
    before = snapshot()
    for body, field, says in _refusals(w):
        found = problem(keyed.post("/v1/jobs", json=body, headers=w.b.auth), 422)
        assert fields(found) == [field], found
        assert says in found["errors"][0]["message"], found
    r = keyed.post("/v1/models", json={"job": w.succeeded}, headers=w.b.auth)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == PROBLEM
    kd = spec(method={"name": "kd"}, student={"arch": "cnn_small"}, teacher={"job": w.succeeded})
    swept = {"base": kd, "space": {"method.temperature": {"choices": [2.0]}}}
    found = problem(keyed.post("/v1/sweeps", json=swept, headers=w.b.auth), 422)
    assert fields(found) == ["base.teacher.job"], found
    assert snapshot() == before  # no job for B, no model registered, no file
    with session_scope() as s:
        assert not s.scalar(select(func.count()).where(Job.project_id == w.b.id))
    # the same specs are fine for A: B was refused because the things are not B's
    for body, _, _ in _refusals(w):
        r = keyed.post("/v1/jobs", json=body, headers=w.a.auth)
        assert r.status_code == 201, r.text
    r = keyed.post("/v1/models", json={"job": w.succeeded}, headers=w.a.auth)
    assert r.status_code == 201, r.text


# -- 5. Idempotency-Keys -------------------------------------------------------------------


def test_idempotency_keys_are_per_project(keyed, world):
    w = world
    same = {"Idempotency-Key": "nightly-1"}
    first = keyed.post("/v1/jobs", json=spec(), headers=same | w.a.auth)
    other = keyed.post("/v1/jobs", json=spec(), headers=same | w.b.auth)
    assert (first.status_code, other.status_code) == (201, 201), other.text
    assert first.json()["id"] != other.json()["id"]
    again = keyed.post("/v1/jobs", json=spec(), headers=same | w.a.auth)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    again = keyed.post("/v1/jobs", json=spec(), headers=same | w.b.auth)
    assert (again.status_code, again.json()["id"]) == (200, other.json()["id"])
    with session_scope() as s:
        owners = {s.get(Job, r.json()["id"]).project_id for r in (first, other)}
    assert owners == {w.a.id, w.b.id}
    problem(keyed.get(f"/v1/jobs/{first.json()['id']}", headers=w.b.auth), 404)


# -- 6. keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("key_cache_s", [0, 0.5])
def test_a_revoked_key_is_refused_within_key_cache_s(clean_db, key_cache_s):
    settings = Settings(require_keys=True, watchdog_s=0, webhook_s=0, key_cache_s=key_cache_s)
    user = new_project("revoked-later")
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/jobs", headers=user.auth).status_code == 200
        with session_scope() as s:
            keys.revoke(s, user.key_id)
        if key_cache_s:  # this process found it valid just now: trusted a little longer
            assert client.get("/v1/jobs", headers=user.auth).status_code == 200
            time.sleep(key_cache_s + 0.1)
        problem(client.get("/v1/jobs", headers=user.auth), 403)


def test_every_v1_route_wants_a_valid_unrevoked_key(keyed, world):
    w = world
    revoked = new_project("revoked")
    with session_scope() as s:
        keys.revoke(s, revoked.key_id)
    wrong_secret = f"dk_{key_hex(w.a.key)}_{'x' * 43}"
    unknown = f"dk_{uuid.uuid4().hex[:24]}_{'y' * 43}"
    refusals: list[tuple[dict[str, str], int]] = [
        ({}, 401),
        ({"Authorization": ""}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Bearer not-a-key"}, 401),
        ({"Authorization": f"Basic {w.a.key}"}, 401),
        ({"Authorization": "Bearer dk_"}, 401),
        (bearer(unknown), 401),
        (bearer(wrong_secret), 401),
        (revoked.auth, 403),
    ]
    fakes = {k: [fake(v[0])] for k, v in w.values().items()}
    routes = v1_routes(keyed.app)
    assert len(routes) >= 13
    before = snapshot()
    for method, path in routes:
        for url, _ in urls(path, fakes):
            for headers, status in refusals:
                r = keyed.request(
                    method, url, headers=headers, json=spec() if method == "POST" else None
                )
                body = problem(r, status)
                if status == 401:
                    assert r.headers["www-authenticate"] == "Bearer", (method, url, headers)
                    assert body["code"] == "unauthorized"
                else:
                    assert body["code"] == "key_revoked"
    # uploads with the real bytes, refused before anything is stored
    for headers, status in refusals:
        r = keyed.post(
            "/v1/models", params=RESNET8, content=resnet8_weights(), headers=OCTET | headers
        )
        problem(r, status)
        r = keyed.post("/v1/datasets", content=digits_npz(), headers=OCTET | headers)
        problem(r, status)
        r = keyed.post("/v1/jobs", json=spec(), headers={"Idempotency-Key": "k"} | headers)
        problem(r, status)
    assert snapshot() == before
    # a valid key still works
    assert keyed.get("/v1/jobs", headers=w.a.auth).status_code == 200


def test_a_key_is_stored_only_as_its_hash(keyed):
    project = new_project("hashed")
    secret = project.key.removeprefix(f"dk_{key_hex(project.key)}_")
    assert project.key.startswith("dk_") and len(secret) >= 32
    with session_scope() as s:
        row = s.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": project.key_id})
        stored = " ".join(str(v) for v in row.one())
        key = s.get(ApiKey, project.key_id)
        assert key.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in stored and project.key not in stored


# -- 7. keys off ---------------------------------------------------------------------------


def test_without_required_keys_no_key_acts_for_the_default_project(clean_db):
    a = new_project("a")
    with session_scope() as s:
        default, _ = admission.submit(
            s, JobSpec.model_validate(spec()), idempotency_key=None, request_hash=""
        )
        assert default.project_id == DEFAULT_PROJECT  # made outside a request
        a_job, _ = admission.submit(
            s, JobSpec.model_validate(spec()), idempotency_key=None, request_hash=""
        )
        a_job.project_id = a.id
        default_id, a_job_id = default.id, a_job.id
    with TestClient(create_app(Settings(require_keys=False, watchdog_s=0))) as c:
        assert {x["id"] for x in c.get("/v1/jobs").json()["data"]} == {default_id}
        problem(c.get(f"/v1/jobs/{a_job_id}"), 404)
        assert c.get(f"/v1/jobs/{default_id}").status_code == 200
        seen = {x["id"] for x in c.get("/v1/jobs", headers=a.auth).json()["data"]}
        assert seen == {a_job_id}
        problem(c.get(f"/v1/jobs/{default_id}", headers=a.auth), 404)
        keyless = c.post("/v1/jobs", json=spec()).json()["id"]
        keyed = c.post("/v1/jobs", json=spec(), headers=a.auth).json()["id"]
        problem(c.get("/v1/jobs", headers=bearer("dk_nope_nope")), 401)
    with session_scope() as s:
        assert s.get(Job, keyless).project_id == DEFAULT_PROJECT
        assert s.get(Job, keyed).project_id == a.id
