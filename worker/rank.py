"""One of ranks 1..N-1 of a job on N processes:

    python -m worker.rank JOB_FILE RANK WORLD RENDEZVOUS

Rank 0, the Celery task (worker/ranks.py), claims the job, reports, writes checkpoints and
outputs, writes JOB_FILE (the resolved spec and the job's inputs) and starts and stops this
process. Here the same plan is built from that file and trained on this rank's share of each
batch; nothing touches the database.
"""

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from service.spec import JobSpec
from worker import ranks
from worker.build import build
from worker.engine import loop
from worker.engine.distributed import process_group, rank_device
from worker.inputs import JobInputs

log = logging.getLogger("worker.rank")


def main(job_file: Path, rank: int, world: int, rendezvous: Path) -> None:
    _exit_with_parent()
    job = json.loads(job_file.read_text())
    spec = JobSpec.model_validate(job["spec"])
    inputs = JobInputs.from_dict(job["inputs"])
    device = rank_device(spec.train.device, rank)
    ranks.share_cpu(device, world)
    built = build(spec, inputs, device)
    ranks.ready_path(rendezvous, rank).touch()
    log.info("%s: rank %d of %d on %s joining", job_file.parent.name, rank, world, device)
    with process_group(rank, world, rendezvous, device):
        loop.train(built.plan, loop.Quiet())
    log.info("%s: rank %d of %d done", job_file.parent.name, rank, world)


def _exit_with_parent() -> None:
    """Rank 0 gone (its worker killed): leave at once rather than wait on a dead group."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        log.error("rank 0 (pid %d) is gone; exiting", parent)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    job_file, rank, world, rendezvous = sys.argv[1:]
    main(Path(job_file), int(rank), int(world), Path(rendezvous))
    logging.shutdown()
    os._exit(0)  # skip torch's seconds-long interpreter teardown: rank 0 waits on this exit
