"""service/jobs/queries.py: the supervised runs a distilled job's student is compared with."""

import copy
from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from service.db.sessions import session_scope
from service.db.tables import Job
from service.jobs import lifecycle, queries
from tests.service.conftest import SUPERVISED


def scratch(new_job: Callable[..., str], val_acc: float, **overrides: Any) -> str:
    """A succeeded supervised job whose last epoch scored `val_acc`."""
    job_id = new_job(**overrides)
    with session_scope() as s:
        lifecycle.claim(s, job_id, "w1", lease_s=60)
    with session_scope() as s:
        lifecycle.record_epoch(s, job_id, "w1", {"epoch": 4, "val_acc": val_acc})
        lifecycle.finish(s, job_id, "w1", result={})
    return job_id


def test_a_jobs_scratch_runs_are_its_projects_supervised_runs_of_its_student_and_data(
    new_job: Callable[..., str], job_in: Callable[..., str]
) -> None:
    teacher = scratch(new_job, 0.95, student={"arch": "resnet20"})
    same = [scratch(new_job, 0.8), scratch(new_job, 0.7, train={**SUPERVISED["train"], "seed": 3})]
    longer = {**SUPERVISED["train"], "epochs": 8, "schedule": {"name": "cosine"}}
    others = [
        scratch(new_job, 0.9, train=longer),  # another budget
        scratch(new_job, 0.9, data={"dataset": "digits", "val_fraction": 0.2}),  # another split
        scratch(new_job, 0.9, student={"arch": "cnn_small"}),  # another student
        scratch(new_job, 0.9),  # another project's (moved below)
        job_in("failed"),
        job_in("running"),
    ]
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == others[3]).values(project_id="prj_other"))
    kd = copy.deepcopy(SUPERVISED) | {"method": {"name": "kd"}, "teacher": {"job": teacher}}
    distilled = new_job(**kd)
    with session_scope() as s:
        assert queries.scratch_runs(s, distilled) == {same[0]: 0.8, same[1]: 0.7}
        assert queries.scratch_runs(s, same[0]) == {}  # a supervised run has none
