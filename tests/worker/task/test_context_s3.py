"""A job's context (worker/task/context.py) with the store in a bucket of a real S3 server on
loopback: outputs and checkpoints are put, then recorded, and none is left in the store's
folder; a later attempt, on any host, resumes from the bucket (a truncated newest checkpoint
is skipped for the one before it); the store down fails the write retryably, recording
nothing."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.config import get_settings
from service.db import artifacts
from service.db.sessions import session_scope
from service.errors import JobError
from service.store import get_store
from tests.s3 import S3Server
from tests.worker.task.test_context import claimed, counts
from worker.engine.resume import PREVIOUS, RESUME, keep_previous, record_digest, verified_resume
from worker.task.context import restore_checkpoints

FIRST, SECOND = b"epoch one's checkpoint", b"epoch two's checkpoint!"


def save(path: Path, data: bytes) -> None:
    """As the engine saves a resume checkpoint: the one before it kept as PREVIOUS."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keep_previous(path)
    path.write_bytes(data)
    record_digest(path, "written")


def objects(server: S3Server, env: dict[str, str]) -> dict[str, bytes]:
    bucket, prefix = env["DISTILLERY_STORE_URL"].removeprefix("s3://").split("/", 1)
    s3 = server.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {
        k.removeprefix(prefix + "/"): s3.get_object(Bucket=bucket, Key=k)["Body"].read()
        for k in keys
    }


def test_checkpoints_and_outputs_are_put_then_recorded(
    clean_db: Any, s3_server: S3Server, s3_store: dict[str, str]
) -> None:
    ctx = claimed()
    job_dir = artifacts.job_dir(ctx.job_id)
    assert job_dir.is_relative_to(get_settings().scratch_dir.resolve())
    resume = job_dir / "checkpoints" / RESUME
    save(resume, FIRST)
    ctx.on_checkpoint(resume, 1, "resume", None)
    save(resume, SECOND)
    ctx.on_checkpoint(resume, 2, "resume", None)
    (job_dir / "student.safetensors").write_bytes(b"weights")
    ctx.register({"student.safetensors": "student"})

    prefix = f"jobs/{ctx.job_id}"
    assert objects(s3_server, s3_store) == {
        f"{prefix}/checkpoints/{RESUME}": SECOND,
        f"{prefix}/checkpoints/{PREVIOUS}": FIRST,
        f"{prefix}/student.safetensors": b"weights",
    }
    with session_scope() as s:
        rows = {a.name: a.epoch for a in artifacts.list_artifacts(s, ctx.job_id)}
    assert rows == {
        f"checkpoints/{RESUME}": 2,
        f"checkpoints/{PREVIOUS}": 1,
        "student.safetensors": None,
    }
    assert not (get_settings().artifacts_dir / "jobs" / ctx.job_id).exists()


def test_a_truncated_newest_checkpoint_in_the_bucket_resumes_from_the_one_before(
    clean_db: Any, s3_store: dict[str, str], tmp_path: Path
) -> None:
    ctx = claimed()
    resume = artifacts.job_dir(ctx.job_id) / "checkpoints" / RESUME
    for epoch, data in ((1, FIRST), (2, SECOND)):
        save(resume, data)
        ctx.on_checkpoint(resume, epoch, "resume", None)
    get_store().put_bytes(f"jobs/{ctx.job_id}/checkpoints/{RESUME}", SECOND[:5])  # truncated
    with session_scope() as s:
        rows = artifacts.list_artifacts(s, ctx.job_id, (artifacts.CHECKPOINT,))
    restore_checkpoints(tmp_path, rows)  # another host's scratch folder for the job
    path, skipped = verified_resume(tmp_path / "checkpoints")
    assert path == tmp_path / "checkpoints" / PREVIOUS and path.read_bytes() == FIRST
    assert skipped == [f"{RESUME} does not match its recorded sha256: skipped"]


@pytest.fixture
def store_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in S3Server().aws_env().items():  # never started: nothing answers
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DISTILLERY_STORE_URL", "s3://down/distillery")
    monkeypatch.setenv("DISTILLERY_STORE_RETRIES", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_store_down_fails_a_write_retryably_and_records_nothing(
    clean_db: Any, store_down: None
) -> None:
    ctx = claimed()
    before = counts(ctx.job_id)
    resume = artifacts.job_dir(ctx.job_id) / "checkpoints" / RESUME
    save(resume, FIRST)
    (artifacts.job_dir(ctx.job_id) / "student.safetensors").write_bytes(b"weights")
    for write in (
        lambda: ctx.on_checkpoint(resume, 1, "resume", None),
        lambda: ctx.register({"student.safetensors": "student"}),
    ):
        with pytest.raises(JobError) as caught:
            write()
        assert (caught.value.code, caught.value.retryable) == ("store_unavailable", True)
    assert counts(ctx.job_id) == before
