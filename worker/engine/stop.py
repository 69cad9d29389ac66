"""Raised between two steps (or inside a long method hook) when the job must stop now."""

from typing import Any


class Stopped(Exception):
    """The run was cancelled; nothing more was saved."""


class Preempted(Exception):
    """The process was asked to give the job up (SIGTERM: a deploy, a spot reclaim).

    Raised between two training steps with `step` (the steps of the epoch done) and `order`
    (the loop generator's state when the epoch's batch order was drawn): the run saves where
    it is and a later attempt continues from that step. Raised elsewhere (an evaluation, a
    method hook) with `step` None: the last epoch's checkpoint stands."""

    def __init__(self, step: int | None = None, order: Any = None) -> None:
        super().__init__(f"preempted at step {step}" if step is not None else "preempted")
        self.step, self.order = step, order
