"""Defaults the papers give in epochs, resolved against a job's own schedule: the paper's
fraction of its own schedule, at least one epoch. A field the user sets stays as set."""

from dataclasses import dataclass


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
