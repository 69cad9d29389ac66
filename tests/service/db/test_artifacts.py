"""The artifact store: registration with size and sha256, inside the job's directory."""

import hashlib

import pytest

from service.db import artifacts
from service.db.sessions import session_scope


def test_register_records_size_and_sha256(new_job):
    job_id = new_job()
    path = artifacts.job_dir(job_id) / "metrics.json"
    path.write_bytes(b'{"val_acc": 0.9}')
    with session_scope() as s:
        art = artifacts.register(s, job_id, path, kind="metrics")
        assert (art.name, art.size) == ("metrics.json", 16)
        assert art.sha256 == hashlib.sha256(b'{"val_acc": 0.9}').hexdigest()


def test_register_again_refreshes_the_same_row(new_job):
    job_id = new_job()
    path = artifacts.job_dir(job_id) / "ckpt" / "last.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"one")
    with session_scope() as s:
        artifacts.register(s, job_id, path, kind="checkpoint", epoch=1)
    path.write_bytes(b"second")
    with session_scope() as s:
        artifacts.register(s, job_id, path, kind="checkpoint", epoch=2)
    with session_scope() as s:
        [art] = artifacts.list_artifacts(s, job_id)
        assert (art.name, art.size, art.epoch) == ("ckpt/last.safetensors", 6, 2)


def test_register_refuses_a_file_outside_the_job_dir(new_job, tmp_path):
    job_id = new_job()
    outside = tmp_path / "x.bin"
    outside.write_bytes(b"x")
    with pytest.raises(ValueError), session_scope() as s:
        artifacts.register(s, job_id, outside, kind="other")
