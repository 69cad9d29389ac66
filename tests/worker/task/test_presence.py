"""A worker registers what it holds and heartbeats (worker/task/presence.py), against a real
database on both backends; the GPUs come from a child process, as the jobs would see them."""

import os
from datetime import timedelta

import psutil
import torch
from sqlalchemy import update

from service.db.sessions import session_scope
from service.db.tables import Worker, utcnow
from service.jobs import fleet
from worker.task import presence


def test_a_worker_registers_its_host(clean_db):
    presence.register("distillery-1@host", ["gpu", "default"])
    with session_scope() as s:
        [row] = fleet.workers(s)
        assert (row.name, row.queues) == ("distillery-1@host", ["default", "gpu"])
        assert row.memory_bytes == psutil.virtual_memory().total
        assert row.cores == len(os.sched_getaffinity(0))
        assert row.gpu_count == torch.cuda.device_count() == len(row.gpu_memory_bytes)
        assert fleet.is_live(row)
        assert [w.name for w in fleet.live(s, "gpu")] == ["distillery-1@host"]
        assert fleet.live(s, "other") == []


def test_its_heartbeat_keeps_it_live(clean_db):
    with session_scope() as s:
        fleet.register(s, "w@h", ["default"], fleet.Capacity(1 << 30, 2))
        long_ago = utcnow() - timedelta(days=1)
        s.execute(update(Worker).values(heartbeat_at=long_ago))
    with session_scope() as s:
        assert fleet.live(s, "default") == []
        assert fleet.beat(s, "w@h")
    with session_scope() as s:
        assert [w.name for w in fleet.live(s, "default")] == ["w@h"]


def test_a_beat_without_a_row_asks_to_register_again(clean_db):
    with session_scope() as s:
        assert not fleet.beat(s, "never@h")


def test_the_gpu_count_comes_from_a_child_process():
    memory = presence.gpu_memory()
    assert len(memory) == torch.cuda.device_count()
    assert "torch" not in presence.__dict__
