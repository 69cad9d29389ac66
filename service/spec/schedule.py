"""Defaults the papers give in epochs, resolved against a job's own schedule: the paper's
fraction of its own schedule, at least one epoch. A field the user sets stays as set. And
the schedule a method's published figures were trained with, which a job far shorter than
it is warned about."""

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel

FAR_SHORTER = 4  # a job this many times shorter than its method's paper, or more, is warned


@dataclass(frozen=True)
class PaperEpochs:
    """A default a paper gives in epochs, and the schedule it was given for."""

    epochs: int
    schedule: int  # the paper's total training epochs
    source: str  # where the paper's value is set (repository and config)

    def scaled(self, job_epochs: int) -> int:
        return max(1, round(self.epochs * job_epochs / self.schedule))

    def how(self, job_epochs: int) -> str:
        """What the model card says of the value `scaled` gave."""
        return (
            f"{self.scaled(job_epochs)}: {self.epochs} of the paper's {self.schedule} epochs "
            f"({self.source}), scaled to this job's {job_epochs}"
        )


@dataclass(frozen=True)
class Published:
    """The training schedule a method's published figures were measured with."""

    epochs: int
    source: str

    def warning(self, method: str, job_epochs: int) -> str | None:
        """What a job FAR_SHORTER times shorter than the paper, or more, is told."""
        if job_epochs * FAR_SHORTER > self.epochs:
            return None
        return (
            f"train.epochs {job_epochs} is {self.epochs / job_epochs:.3g}x shorter than the "
            f"{self.epochs} epochs {method}'s published figures were trained with "
            f"({self.source}): on a schedule this short it may gain less than kd, or "
            "nothing over a supervised run of the student; compare with both"
        )


def scaled_defaults(
    params: BaseModel, job_epochs: int, defaults: Mapping[str, PaperEpochs]
) -> dict[str, int]:
    """{field: the paper's value scaled to the job} for the fields of `params` left out."""
    return {field: paper.scaled(job_epochs) for field, paper in _left_out(params, defaults)}


def derivations(
    params: BaseModel, job_epochs: int, defaults: Mapping[str, PaperEpochs]
) -> dict[str, str]:
    """{field: how `scaled_defaults` derives it} for the fields of `params` left out."""
    return {field: paper.how(job_epochs) for field, paper in _left_out(params, defaults)}


def _left_out(
    params: BaseModel, defaults: Mapping[str, PaperEpochs]
) -> list[tuple[str, PaperEpochs]]:
    return [(field, paper) for field, paper in defaults.items() if getattr(params, field) is None]
