"""Data and models registered by URI, at the API: only under the prefixes the deployment
allows the caller's project (a refusal counts them and names none), `validating` until a
worker has read them, and a job cannot train on one before it is ready. Nothing is read here
(the worker side: tests/service/ingest/test_remote.py, tests/e2e/test_by_uri.py)."""

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service import keys
from service.app import create_app
from service.config import Settings, get_settings
from service.db.sessions import session_scope
from service.db.tables import Dataset, RegisteredModel
from tests.service.helpers import fields, problem, stored

SHARED = "s3://shared-sets/vision/"
OTHERS = "s3://secret-bucket/team-x/"  # another project's: never told to this one
CATS = "s3://shared-sets/vision/cats/"


@pytest.fixture
def allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DISTILLERY_DATA_URIS", f"{SHARED},team-x={OTHERS}")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def rows() -> tuple[int, int]:
    return stored(Dataset, get_settings().artifacts_dir)[0], stored(
        RegisteredModel, get_settings().artifacts_dir
    )[0]


def test_a_dataset_under_an_allowed_prefix_is_accepted_validating(allowed, client) -> None:
    r = client.post(
        "/v1/datasets", json={"name": "cats", "uri": CATS.rstrip("/"), "format": "imagefolder"}
    )
    assert r.status_code == 202, r.text
    ds = r.json()
    assert r.headers["location"] == f"/v1/datasets/{ds['id']}"
    assert (ds["status"], ds["uri"], ds["format"], ds["name"]) == (
        "validating",
        CATS,
        "imagefolder",
        "cats",
    )
    assert ds["num_classes"] is ds["sha256"] is ds["progress"] is ds["problems"] is None
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds
    assert [d["id"] for d in client.get("/v1/datasets").json()["data"]] == [ds["id"]]


def test_a_uri_outside_the_allow_list_is_refused_counting_not_naming_them(allowed, client) -> None:
    before = rows()
    for uri in ("s3://elsewhere/vision/cats/", "s3://shared-sets/visionary/", OTHERS):
        body = problem(client.post("/v1/datasets", json={"uri": uri, "format": "webdataset"}), 422)
        assert (body["code"], fields(body)) == ("uri_not_allowed", ["uri"])
        assert "not under the 1 prefix this project may read" in body["detail"]
        assert "shared-sets" not in str(body) and "secret-bucket" not in str(body)
    model = {
        "uri": OTHERS + "m.safetensors",
        "arch": "resnet8",
        "num_classes": 10,
        "in_channels": 1,
    }
    assert problem(client.post("/v1/models", json=model), 422)["code"] == "uri_not_allowed"
    assert rows() == before


def test_a_long_uri_fits_its_row_named_by_its_last_folder(allowed, client) -> None:
    uri = SHARED + "x" * (1023 - len(SHARED))
    ds = client.post("/v1/datasets", json={"uri": uri, "format": "imagefolder"}).json()
    assert (ds["uri"], ds["name"]) == (uri + "/", "x" * 200)
    too_long = client.post("/v1/datasets", json={"uri": uri + "x", "format": "imagefolder"})
    assert fields(problem(too_long, 422)) == ["uri"]


def test_with_no_prefix_allowed_every_uri_is_refused(client, monkeypatch) -> None:
    monkeypatch.delenv("DISTILLERY_DATA_URIS", raising=False)
    get_settings.cache_clear()
    body = problem(client.post("/v1/datasets", json={"uri": CATS, "format": "imagefolder"}), 422)
    assert "reads no data by URI" in body["detail"]


@pytest.mark.parametrize(
    "uri",
    [
        "https://shared-sets.s3.amazonaws.com/vision/cats/",
        "s3://AKIAEXAMPLE:secret@shared-sets/vision/cats/",
        "s3://shared-sets/vision/../../other/",
        "s3://shared-sets/vision/cats/?x-id=GetObject",
        "s3://shared-sets/vision//cats/",
    ],
)
def test_a_malformed_uri_is_a_422_naming_the_field(allowed, client, uri: str) -> None:
    before = rows()
    body = problem(client.post("/v1/datasets", json={"uri": uri, "format": "imagefolder"}), 422)
    assert fields(body) == ["uri"]
    assert rows() == before


def test_the_body_is_checked_like_any_other(allowed, client) -> None:
    bad = [
        {"uri": CATS, "format": "zip"},
        {"uri": CATS, "format": "imagefolder", "class_names": ["a", "b"]},
        {"uri": CATS, "format": "webdataset", "credentials": {"key": "AKIA"}},
    ]
    for body in bad:
        assert problem(client.post("/v1/datasets", json=body), 422)["code"] == "invalid_request"
    r = client.post(
        "/v1/datasets", content=b'{"uri": ', headers={"Content-Type": "application/json"}
    )
    assert problem(r, 400)["code"] == "malformed_json"


def test_a_project_reads_its_own_prefixes_and_is_not_told_of_others(allowed, clean_db) -> None:
    with session_scope() as s:
        _, key_x = keys.create_key(s, "team-x", "ci")
        _, key_y = keys.create_key(s, f"team-y-{uuid.uuid4().hex[:6]}", "ci")
    body = {"uri": OTHERS + "dogs/", "format": "webdataset", "class_names": ["a", "b"]}
    with TestClient(create_app(Settings(watchdog_s=0, require_keys=True))) as c:
        mine = c.post("/v1/datasets", json=body, headers={"Authorization": f"Bearer {key_x}"})
        assert mine.status_code == 202, mine.text
        assert mine.json()["class_names"] == ["a", "b"]  # the labels' names, until it is read
        theirs = c.post("/v1/datasets", json=body, headers={"Authorization": f"Bearer {key_y}"})
        refusal = problem(theirs, 422)
        assert "1 prefix" in refusal["detail"] and "secret-bucket" not in str(refusal)
        both = c.post(
            "/v1/datasets",
            json={"uri": CATS, "format": "imagefolder"},
            headers={"Authorization": f"Bearer {key_x}"},
        )
        assert both.status_code == 202  # the shared prefix is every project's


def test_a_model_by_uri_is_validating_with_no_sha256_yet(allowed, client) -> None:
    body = {
        "uri": CATS + "teacher.safetensors",
        "arch": "resnet8",
        "num_classes": 10,
        "in_channels": 1,
    }
    r = client.post(
        "/v1/models", json=body | {"name": "t", "class_names": [str(i) for i in range(10)]}
    )
    assert r.status_code == 202, r.text
    model = r.json()
    assert (model["status"], model["source"], model["uri"]) == ("validating", "uri", body["uri"])
    assert model["sha256"] is model["size"] is None
    pickle = problem(client.post("/v1/models", json=body | {"uri": CATS + "teacher.pt"}), 422)
    assert pickle["code"] == "pickle_refused"
    folder = problem(client.post("/v1/models", json=body | {"uri": CATS}), 422)
    assert fields(folder) == ["uri"]
    job_and_uri = problem(client.post("/v1/models", json=body | {"job": "job_1"}), 422)
    assert fields(job_and_uri) == ["job"]


def test_a_job_cannot_train_on_a_dataset_before_it_is_ready(allowed, client, spec_body) -> None:
    ds = client.post("/v1/datasets", json={"uri": CATS, "format": "imagefolder"}).json()
    spec_body["data"] = {"dataset": "upload", "upload": ds["id"]}
    body = problem(client.post("/v1/jobs", json=spec_body), 422)
    assert fields(body) == ["data.upload"] and "still being read by a worker" in body[
        "detail"
    ] + str(body)


def test_a_bad_allow_list_stops_the_api_at_start_up() -> None:
    with pytest.raises(ValueError, match="DISTILLERY_DATA_URIS entry 'team-a=https://x/'"):
        create_app(Settings(watchdog_s=0, data_uris="s3://fine/, team-a=https://x/"))
