"""One process of a job: python -m worker.job.rank FOLDER RANK WORLD

The Celery task (worker/task/runner.py) claims the job, writes FOLDER/job.json and starts
one process per rank (worker/task/supervisor.py). Each builds the same plan from that file and
trains its share of each batch (all of it on one process). Rank 0 also reports through the job's
context (every write checked against the lease the task holds), writes the outputs and
leaves the outcome in FOLDER: result.json and exit 0, error.json and exit 1, or an exit code
for a stop or a lost lease.
"""

import contextlib
import errno
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from service import logs
from service.config import get_settings
from service.errors import JobError
from service.spec.job import JobSpec
from service.store import StoreError
from worker.engine import loop
from worker.engine.distributed import process_group, rank_device
from worker.job.build import Built, build, measure_teacher
from worker.job.exports import ExportError
from worker.job.outputs import write_outputs
from worker.job.threads import Adapting, Threads
from worker.task import supervisor
from worker.task.context import JobContext, LeaseLost, store_unavailable
from worker.task.inputs import JobInputs

log = logging.getLogger("worker.job.rank")

# exceptions that mean something to a user -> the job's error code ("training_error" else)
ERROR_CODES: dict[type[Exception], str] = {
    loop.Diverged: "diverged",
    ExportError: "export_failed",
}


def main(folder: Path, rank: int, world: int) -> int:
    _exit_with_parent()
    job_id, owner, spec, inputs = supervisor.read_job(folder)
    logs.JOB_ID.set(job_id)  # every record of this process is about the job
    torch.set_num_interop_threads(1)
    threads = Threads.first_look(world)
    if rank == 0:
        ctx = JobContext(job_id, owner, spec, get_settings())
        ctx.resume_progress()
        log.info("job %s: rank 0 of %d reporting", job_id, world)
        on_shutdown_signals(lambda *_: ctx.preempt.set())
        return report(folder, ctx, inputs, threads)
    # the others train on until rank 0 has saved and left (the task then ends them): dying
    # at once would leave rank 0 waiting on them inside a step
    on_shutdown_signals(signal.SIG_IGN)
    device = rank_device(spec.train.device, rank)
    built = build(spec, inputs, device)
    threads.set_decoders(built.data.train.decoders)
    log.info("job %s: rank %d of %d on %s joining", job_id, rank, world, device)
    with joined(folder, rank, world, device):
        loop.train(built.plan, Adapting(loop.Quiet(), threads))
    log.info("job %s: rank %d of %d done", job_id, rank, world)
    return 0


def report(folder: Path, ctx: JobContext, inputs: JobInputs, threads: Threads) -> int:
    """Rank 0: train and write the outputs, reporting as it goes; the outcome into FOLDER."""
    with ctx:
        try:
            result = train(ctx, inputs, folder, threads)
        except loop.Stopped:
            return supervisor.EXIT_STOPPED
        except loop.Preempted as exc:
            log.warning("job %s: %s; the task requeues it", ctx.job_id, exc)
            return supervisor.EXIT_PREEMPTED
        except LeaseLost:
            log.warning("job %s: lease lost, another attempt owns it now", ctx.job_id)
            return supervisor.EXIT_LEASE_LOST
        except Exception as exc:  # every failure reaches the job's status with a reason
            log.exception("job %s failed", ctx.job_id)
            _write(folder / supervisor.ERROR_FILE, job_error(exc).as_dict())
            return 1
    _write(folder / supervisor.RESULT_FILE, result)
    return 0


def train(ctx: JobContext, inputs: JobInputs, folder: Path, threads: Threads) -> dict[str, Any]:
    spec, world = ctx.spec, threads.world
    device = job_device(spec.train.device, world)
    before = peak_rss()
    built = build(spec, inputs, device)
    threads.set_decoders(built.data.train.decoders)
    if built.teacher is not None:
        report_teacher(ctx, built, spec, device)
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        devices = [str(rank_device(spec.train.device, r)) for r in range(world)]
        logs = str(folder.relative_to(inputs.job_dir))
        message = f"training on {world} processes ({backend})"
        ctx.event("distributed", message, world=world, backend=backend, devices=devices, logs=logs)
    with joined(folder, 0, world, device):
        outcome = loop.train(built.plan, Adapting(ctx, threads))
    peak = peak_rss()
    memory = {"peak_rss_bytes": peak, "peak_rss_growth_bytes": peak - before}
    scratch = ctx.scratch_runs()
    written = write_outputs(ctx.job_id, inputs.job_dir, spec, built, outcome, scratch)
    written.result["host_memory"] = memory  # of rank 0, from loading the data to the last epoch
    for type_, message in written.events:
        ctx.event(type_, message)
    ctx.register(written.files)
    return written.result


def on_shutdown_signals(handler: Any) -> None:
    """SIGTERM (a deploy, a spot reclaim, the worker shutting down) and SIGINT (Ctrl-C on a
    worker in a terminal reaches the whole process group)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def peak_rss() -> int:
    """This process's peak resident memory so far, in bytes: the high-water mark of its own
    memory (Linux's VmHWM). Not getrusage's ru_maxrss, which a process started by a larger
    one inherits from it at exec: it would hide this process's growth below that peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("/proc/self/status has no VmHWM")


def report_teacher(ctx: JobContext, built: Built, spec: JobSpec, device: torch.device) -> None:
    assert built.teacher is not None
    ctx.set_phase("teacher")
    val, source = measure_teacher(built, spec, device), built.teacher.source
    message = f"teacher val_acc {val['val_acc']:.4f}"
    ctx.event("teacher", message, job=source.job_id, arch=source.arch, **val)


@contextlib.contextmanager
def joined(folder: Path, rank: int, world: int, device: torch.device) -> Any:
    """This rank in the job's process group when the job spans processes."""
    if world == 1:
        yield
        return
    supervisor.ready_path(folder, rank).touch()
    with process_group(rank, world, supervisor.rendezvous(folder), device):
        yield


def job_device(name: str, world: int) -> torch.device:
    """Rank 0's device; a CUDA job needs a GPU for each of its processes."""
    device = rank_device(name, 0)
    if device.type == "cuda" and (have := torch.cuda.device_count()) < world:
        raise JobError(
            "device_unavailable",
            f"resources.gpus is {world} but this worker sees {have} CUDA device(s); "
            f"run it on a worker with at least {world} GPUs",
            retryable=True,
        )
    return device


def job_error(exc: Exception) -> JobError:
    """The job's error for an exception: its own when it is one, else by its type."""
    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # nothing partial is kept
        return JobError("disk_full", f"the worker's disk is full: {exc}", retryable=True)
    if isinstance(exc, StoreError):  # the store down while a shard was read
        return store_unavailable("reading the job's data")
    code = next((c for t, c in ERROR_CODES.items() if isinstance(exc, t)), "training_error")
    return JobError(code, f"{type(exc).__name__}: {exc}")


def _write(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def _exit_with_parent() -> None:
    """The task gone (its worker killed): leave at once rather than train for nobody."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        log.error("the job's task (pid %d) is gone; exiting", parent)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


if __name__ == "__main__":
    logs.configure(get_settings())
    folder, rank, world = sys.argv[1:]
    code = main(Path(folder), int(rank), int(world))
    logging.shutdown()
    os._exit(code)  # skip torch's seconds-long interpreter teardown: the task waits on this exit
