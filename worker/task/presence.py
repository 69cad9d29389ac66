"""The worker says what it holds: at start (Celery's worker_ready, worker/task/tasks.py) a
thread registers its queues, host memory, cores and GPUs in the database, then heartbeats
every DISTILLERY_HEARTBEAT_S until the worker shuts down (service/jobs/fleet.py).

GPUs are counted by a short child process that imports torch: this process never does (a
job's CUDA state lives in the processes its task starts). No torch, or no CUDA: no GPUs."""

import json
import logging
import os
import subprocess
import sys
import threading

import psutil

from service.config import get_settings
from service.db.sessions import session_scope
from service.jobs import fleet

log = logging.getLogger(__name__)

GPU_PROBE = (
    "import json, torch\n"
    "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
    "print(json.dumps([torch.cuda.get_device_properties(i).total_memory for i in range(n)]))"
)
GPU_PROBE_TIMEOUT_S = 120
STOP = threading.Event()  # set when the worker shuts down


def gpu_memory() -> list[int]:
    """The memory of each GPU this worker's jobs would see; [] without torch or CUDA."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", GPU_PROBE],
            capture_output=True,
            text=True,
            timeout=GPU_PROBE_TIMEOUT_S,
            check=True,
        )
        return [int(n) for n in json.loads(done.stdout.strip().splitlines()[-1])]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        log.info("no GPUs counted (%s)", type(exc).__name__)
        return []


def host_capacity() -> fleet.Capacity:
    return fleet.Capacity(
        memory_bytes=psutil.virtual_memory().total,
        cores=len(os.sched_getaffinity(0)),
        gpu_memory_bytes=gpu_memory(),
    )


def register(name: str, queues: list[str]) -> None:
    capacity = host_capacity()
    with session_scope() as s:
        fleet.register(s, name, queues, capacity)
    log.info("worker %s registered: queues %s, %s", name, queues, capacity)


def keep_present(name: str, queues: list[str]) -> None:
    """Register, then heartbeat until STOP; a database blip is retried at the next beat."""
    registered = False
    while not STOP.is_set():
        try:
            if registered:
                with session_scope() as s:
                    registered = fleet.beat(s, name)
            if not registered:
                register(name, queues)
                registered = True
        except Exception:  # the worker goes on training; its row goes stale until it beats
            log.exception("worker %s could not heartbeat", name)
        STOP.wait(get_settings().heartbeat_s)


def start(name: str, queues: list[str]) -> threading.Thread:
    thread = threading.Thread(
        target=keep_present, args=(name, queues), daemon=True, name="worker-presence"
    )
    thread.start()
    return thread
