"""The job routes over HTTP: submission, validation, listing, cancel, events and SSE."""

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.db.sessions import session_scope
from service.jobs import admission, lifecycle, queries
from service.spec.job import DataShape, JobSpec
from tests.service.helpers import fields, problem


def test_post_creates_a_queued_job(client, spec_body, count_jobs):
    r = client.post("/v1/jobs", json=spec_body)
    assert r.status_code == 201, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["status"], job["method"], job["attempt"]) == ("queued", "supervised", 0)
    assert job["spec"]["student"] == {
        "arch": "resnet8",
        "num_classes": 10,
        "in_channels": 1,
        "init": None,
    }
    assert job["spec"]["train"]["optimizer"]["name"] == "sgd"  # defaults are resolved
    assert client.get(r.headers["location"]).json() == job
    assert count_jobs() == 1


def test_post_kd_with_a_succeeded_teacher(client, spec_body, job_in):
    teacher = job_in("succeeded")
    spec_body |= {"method": {"name": "kd", "temperature": 2.0}, "teacher": {"job": teacher}}
    r = client.post("/v1/jobs", json=spec_body)
    assert r.status_code == 201, r.text
    assert r.json()["teacher_job_id"] == teacher


def test_idempotency_key_replays_the_same_job(client, spec_body, count_jobs):
    headers = {"Idempotency-Key": "abc-123"}
    first = client.post("/v1/jobs", json=spec_body, headers=headers)
    again = client.post("/v1/jobs", json=spec_body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert count_jobs() == 1


def test_idempotency_key_with_another_body_conflicts(client, spec_body, count_jobs):
    headers = {"Idempotency-Key": "abc-123"}
    assert client.post("/v1/jobs", json=spec_body, headers=headers).status_code == 201
    spec_body["train"]["epochs"] = 5
    body = problem(client.post("/v1/jobs", json=spec_body, headers=headers), 409)
    assert body["code"] == "idempotency_key_reused"
    assert count_jobs() == 1


def test_without_a_key_each_post_is_a_new_job(client, spec_body, count_jobs):
    ids = {client.post("/v1/jobs", json=spec_body).json()["id"] for _ in range(2)}
    assert len(ids) == 2 and count_jobs() == 2


def test_empty_idempotency_key_is_not_a_server_error(client_500s, spec_body, count_jobs):
    headers = {"Idempotency-Key": ""}
    for name in ("one", "two"):
        r = client_500s.post("/v1/jobs", json=spec_body | {"name": name}, headers=headers)
        assert r.status_code in (201, 422), r.text
    assert count_jobs() <= 2


def test_concurrent_retry_with_the_same_key(client_500s, spec_body, count_jobs):
    spec = JobSpec.model_validate(spec_body)
    digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
    headers = {"Idempotency-Key": "retry-1"}
    with ThreadPoolExecutor(1) as pool:
        with session_scope() as s:  # the first request, still in flight
            first, _ = admission.submit(s, spec, idempotency_key="retry-1", request_hash=digest)
            retry = pool.submit(client_500s.post, "/v1/jobs", json=spec_body, headers=headers)
            time.sleep(0.5)  # the retry reads before the first commits
        r = retry.result()
    assert r.status_code in (200, 409), r.text
    if r.status_code == 200:
        assert r.json()["id"] == first.id
    assert count_jobs() == 1


def set_path(body: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        body = body.setdefault(key, {})
    body[last] = value


BAD = [
    ("method", {"name": "dark_magic"}, "method.name"),
    ("method", {"name": "kd", "temperature": -1}, "method.temperature"),
    ("student.arch", "vit_huge", "student.arch"),
    ("student.arch", "timm/no_such_model", "student.arch"),
    ("student.arch", "timm/", "student.arch"),
    ("data.dataset", "imagenet", "data.dataset"),
    ("train.epochs", -3, "train.epochs"),
    ("train.schedule.milestones", [0, 2], "train.schedule.milestones.0"),
    ("train.schedule.milestones", [2, 4], "train.schedule.milestones"),
    ("train.schedule.milestones", [3, 2], "train.schedule.milestones"),
    ("student.num_classes", 100, "student.num_classes"),
    ("student.in_channels", 3, "student.in_channels"),
    ("colour", "blue", "colour"),
    ("train.optimiser", {"lr": 1}, "train.optimiser"),
    ("resources.queue", "../etc", "resources.queue"),
    ("train.data_placement", "gpu", "train.data_placement"),
    ("resources.gpus", 0, "resources.gpus"),
    ("resources.gpus", 17, "resources.gpus"),
    ("resources.gpus", 3, "train.batch_size"),  # 64 samples do not split 3 ways
]


@pytest.mark.parametrize(("path", "value", "field"), BAD, ids=[f"{p}={v}" for p, v, _ in BAD])
def test_bad_spec_names_the_field_and_creates_nothing(
    client, spec_body, count_jobs, path, value, field
):
    set_path(spec_body, path, value)
    body = problem(client.post("/v1/jobs", json=spec_body), 422)
    assert fields(body) == [field]
    assert count_jobs() == 0


def test_training_options_default_and_round_trip(client, spec_body):
    job = client.post("/v1/jobs", json=spec_body).json()
    assert (job["spec"]["train"]["compile"], job["spec"]["train"]["data_placement"]) == (
        False,
        "auto",
    )
    assert job["spec"]["resources"]["gpus"] == 1
    spec_body["train"] |= {"compile": True, "data_placement": "host", "batch_size": 8}
    spec_body["resources"] = {"gpus": 4}  # 2 samples of each batch per process
    r = client.post("/v1/jobs", json=spec_body)
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert (spec["train"]["compile"], spec["train"]["data_placement"]) == (True, "host")
    assert (spec["train"]["batch_size"], spec["resources"]["gpus"]) == (8, 4)
    digits = DataShape(num_classes=10, channels=1, size=8)
    assert JobSpec.model_validate(spec).resolved(digits, None).model_dump(mode="json") == spec


@pytest.mark.parametrize(("gpus", "batch_size", "says"), [(3, 64, "multiple"), (16, 16, "32")])
def test_each_process_needs_an_equal_share_of_two_or_more(
    client, spec_body, count_jobs, gpus, batch_size, says
):
    spec_body["train"]["batch_size"] = batch_size
    spec_body["resources"] = {"gpus": gpus}
    body = problem(client.post("/v1/jobs", json=spec_body), 422)
    assert fields(body) == ["train.batch_size"]
    assert says in body["errors"][0]["message"]
    assert count_jobs() == 0


def test_kd_without_a_teacher(client, spec_body, count_jobs):
    spec_body["method"] = {"name": "kd"}
    body = problem(client.post("/v1/jobs", json=spec_body), 422)
    assert fields(body) == ["teacher"]
    assert count_jobs() == 0


def test_supervised_with_a_teacher(client, spec_body, job_in, count_jobs):
    spec_body["teacher"] = {"job": job_in("succeeded")}
    body = problem(client.post("/v1/jobs", json=spec_body), 422)
    assert fields(body) == ["teacher"]
    assert count_jobs() == 1


@pytest.mark.parametrize("teacher_status", [None, "queued", "running", "failed", "cancelled"])
def test_teacher_must_be_a_succeeded_job(client, spec_body, job_in, count_jobs, teacher_status):
    teacher = job_in(teacher_status) if teacher_status else "job_does_not_exist"
    before = count_jobs()
    spec_body |= {"method": {"name": "kd"}, "teacher": {"job": teacher}}
    body = problem(client.post("/v1/jobs", json=spec_body), 422)
    assert fields(body) == ["teacher.job"]
    assert count_jobs() == before


def test_teacher_for_other_classes_is_refused(client, spec_body, job_in, count_jobs):
    teacher = job_in(
        "succeeded", data={"dataset": "synthetic", "synthetic": {"num_classes": 5, "channels": 1}}
    )
    spec_body |= {"method": {"name": "kd"}, "teacher": {"job": teacher}}
    body = problem(client.post("/v1/jobs", json=spec_body), 422)
    assert fields(body) == ["teacher.job"]
    assert count_jobs() == 1


def test_malformed_json(client, count_jobs):
    headers = {"content-type": "application/json"}
    r = client.post("/v1/jobs", content=b'{"method": ', headers=headers)
    assert problem(r, 400)["code"] == "malformed_json"
    assert count_jobs() == 0


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"spec"', b"42"])
def test_body_that_is_not_an_object(client, count_jobs, raw):
    r = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert fields(problem(r, 422)) == ["body"]
    assert count_jobs() == 0


def test_oversized_body_with_content_length(client, count_jobs):
    big = json.dumps({"name": "x" * 1_100_000}).encode()
    r = client.post("/v1/jobs", content=big, headers={"content-type": "application/json"})
    assert r.request.headers["content-length"] == str(len(big))
    assert problem(r, 413)["code"] == "body_too_large"
    assert count_jobs() == 0


def test_oversized_streamed_body(client, count_jobs):
    big = json.dumps({"name": "x" * 1_100_000}).encode()
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    r = client.post("/v1/jobs", content=chunks, headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert problem(r, 413)["code"] == "body_too_large"
    assert count_jobs() == 0


def test_overlong_idempotency_key(client, spec_body, count_jobs):
    r = client.post("/v1/jobs", json=spec_body, headers={"Idempotency-Key": "k" * 300})
    problem(r, 422)
    assert count_jobs() == 0


def test_list_pages_with_next_cursor(client, new_job):
    ids = [new_job() for _ in range(5)]
    seen, url = [], "/v1/jobs?limit=2"
    while url:
        page = client.get(url).json()
        assert len(page["data"]) <= 2
        seen += [j["id"] for j in page["data"]]
        url = page["next_cursor"] and f"/v1/jobs?limit=2&cursor={page['next_cursor']}"
    assert sorted(seen) == sorted(ids) and len(seen) == 5


def test_list_filters_by_status(client, job_in):
    queued = job_in("queued")
    job_in("cancelled")
    page = client.get("/v1/jobs", params={"status": "queued"}).json()
    assert [j["id"] for j in page["data"]] == [queued]
    assert page["next_cursor"] is None


@pytest.mark.parametrize("query", ["status=bogus", "limit=0", "limit=10000", "cursor=garbage"])
def test_list_bad_query(client, query):
    body = problem(client.get(f"/v1/jobs?{query}"), 422)
    assert any(f.endswith(query.split("=")[0]) for f in fields(body))


def test_get_unknown_job(client):
    body = problem(client.get("/v1/jobs/job_nope"), 404)
    assert body["code"] == "not_found" and body["instance"] == "/v1/jobs/job_nope"


def test_cancel_queued_twice(client, new_job):
    job_id = new_job()
    for _ in range(2):
        r = client.post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled"


def test_cancel_running_then_finished(client, job_in):
    job_id = job_in("running")
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelling"
    with session_scope() as s:
        lifecycle.finish(s, job_id, "w1", result={})
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_cancel_succeeded_conflicts(client, job_in):
    job_id = job_in("succeeded")
    assert problem(client.post(f"/v1/jobs/{job_id}/cancel"), 409)["code"] == "job_finished"


def test_cancel_unknown_job(client):
    problem(client.post("/v1/jobs/job_nope/cancel"), 404)


def with_epochs(job_in, n: int) -> str:
    job_id = job_in("running")
    with session_scope() as s:
        for epoch in range(1, n + 1):
            lifecycle.record_epoch(s, job_id, "w1", {"epoch": epoch, "val_acc": epoch / 10})
    return job_id


def test_events_after_a_cursor(client, job_in):
    job_id = with_epochs(job_in, 3)
    first = client.get(f"/v1/jobs/{job_id}/events").json()
    ids = [e["id"] for e in first["data"]]
    assert [e["type"] for e in first["data"]] == ["status", "status"] + ["metrics"] * 3
    assert ids == sorted(ids) and first["next_after"] == ids[-1]
    later = client.get(f"/v1/jobs/{job_id}/events", params={"after": ids[2]}).json()
    assert [e["data"]["epoch"] for e in later["data"]] == [2, 3]
    assert later["next_after"] == ids[-1]
    end = client.get(f"/v1/jobs/{job_id}/events", params={"after": ids[-1]}).json()
    assert end == {"object": "list", "data": [], "next_after": ids[-1]}


def test_events_pages_by_limit(client, job_in):
    job_id = with_epochs(job_in, 3)
    seen, after = [], 0
    while True:
        page = client.get(f"/v1/jobs/{job_id}/events", params={"after": after, "limit": 2})
        if not page.json()["data"]:
            break
        seen += page.json()["data"]
        after = page.json()["next_after"]
    assert len(seen) == 5


def test_events_of_unknown_job(client):
    problem(client.get("/v1/jobs/job_nope/events"), 404)


def sse_frames(text: str) -> list[dict[str, str]]:
    frames = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if lines:
            frames.append(dict(line.split(": ", 1) for line in lines))
    return frames


def test_event_stream_of_a_finished_job(client, job_in):
    job_id = with_epochs(job_in, 2)
    with session_scope() as s:
        lifecycle.finish(s, job_id, "w1", result={"val_acc": 0.2})
    r = client.get(f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = sse_frames(r.text)
    assert [f["event"] for f in frames] == ["status", "status", "metrics", "metrics", "status"]
    for frame in frames:
        assert json.loads(frame["data"])["id"] == int(frame["id"])
    assert json.loads(frames[-1]["data"])["data"]["status"] == "succeeded"


def test_event_stream_resumes_after_last_event_id(client, job_in):
    job_id = job_in("succeeded")
    all_ids = [e["id"] for e in client.get(f"/v1/jobs/{job_id}/events").json()["data"]]
    r = client.get(
        f"/v1/jobs/{job_id}/events",
        headers={"Accept": "text/event-stream", "Last-Event-ID": str(all_ids[0])},
    )
    assert [int(f["id"]) for f in sse_frames(r.text)] == all_ids[1:]


def test_event_stream_keeps_the_last_event_of_a_job_finishing_meanwhile(
    client, job_in, monkeypatch
):
    job_id = job_in("running")
    calls = []
    list_events = queries.list_events

    def finish_after_reading(s, *args, **kwargs):
        found = list_events(s, *args, **kwargs)
        calls.append(len(found))
        if len(calls) == 2:  # 1: the route's page, 2: the stream's first read
            with session_scope() as other:
                lifecycle.finish(other, job_id, "w1", result={})
        return found

    last = client.get(f"/v1/jobs/{job_id}/events").json()["next_after"]
    monkeypatch.setattr(queries, "list_events", finish_after_reading)
    r = client.get(
        f"/v1/jobs/{job_id}/events?after={last}", headers={"Accept": "text/event-stream"}
    )
    frames = sse_frames(r.text)
    assert [json.loads(f["data"])["data"]["status"] for f in frames] == ["succeeded"]


def test_any_timm_architecture_by_name(client, spec_body, count_jobs):
    spec_body["student"] = {"arch": "timm/mobilenetv3_small_050"}
    spec_body["method"] = {"name": "kdcl", "peers": ["timm/resnet18", "resnet8"]}
    r = client.post("/v1/jobs", json=spec_body)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["student"]["arch"] == "timm/mobilenetv3_small_050"
    spec_body["student"] = {"arch": "timm/mobilenetv3_smal_050"}  # a typo
    body = problem(client.post("/v1/jobs", json=spec_body), 422)
    assert fields(body) == ["student.arch"]
    assert "did you mean timm/mobilenetv3_small_050" in body["errors"][0]["message"]
    assert count_jobs() == 1
