"""The watchdog loop every API process runs (a GPU worker runs one task at a time, so a beat
task would queue behind training). One pass requeues jobs whose lease expired, expires model
and dataset checks, and wakes a queue whose jobs wait with no message in the broker. Every
update is conditional: two passes at once (two API processes) are safe."""

import asyncio
import functools
import logging

from service import dispatch
from service.config import Settings
from service.db.sessions import session_scope
from service.ingest import checks
from service.jobs import lifecycle

log = logging.getLogger(__name__)


def run_watchdog(settings: Settings) -> int:
    """One watchdog pass: sends what it requeued, after the commit, then wakes the queues
    whose jobs wait with no message in the broker, and the check queue for a model's or a
    dataset's check no worker took. Returns the messages sent."""
    with session_scope() as s:
        requeued = [(j.queue, j.id) for j in lifecycle.watchdog(s) for _ in range(j.nodes)]
        checks.MODELS.expire(s)
        checks.DATASETS.expire(s)
    for queue, job_id in requeued:  # a job across nodes: a message per node, to wake its gang
        dispatch.send(job_id, queue)
    with session_scope() as s:
        waiting = lifecycle.waiting(s, settings.wake_after_s)
        model = checks.MODELS.waiting(s, settings.wake_after_s)
        dataset = checks.DATASETS.waiting(s, settings.wake_after_s)
    wakes = [(q, functools.partial(dispatch.send, job_id)) for q, job_id in waiting.items()]
    # checks first: a model's takes seconds, and a queue of jobs could keep it waiting for
    # hours; one message wakes the check queue, the next pass sends the other's
    if dataset is not None:
        check = functools.partial(dispatch.send_dataset_check, dataset)
        wakes.insert(0, (settings.check_queue, check))
    if model is not None:
        wakes.insert(0, (settings.check_queue, functools.partial(dispatch.send_check, model)))
    return len(requeued) + sum(dispatch.wake(queue, send) for queue, send in wakes)


async def run_loop(settings: Settings) -> None:
    """A pass every `watchdog_s` seconds, until cancelled."""
    while True:
        try:
            await asyncio.to_thread(run_watchdog, settings)
        except Exception:  # a DB blip must not kill the loop; the next pass retries
            log.exception("watchdog pass failed")
        await asyncio.sleep(settings.watchdog_s)
