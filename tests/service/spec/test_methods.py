"""RCO's route plan (RCOParams.plan): which teacher checkpoints anchor the stages and how many
student epochs each stage gets. Pure Python, planned at admission and again by the worker.
And the method rules read three facts of a job (JobFacts), never the whole JobSpec."""

from typing import Any

import pytest

from service.errors import FieldError
from service.spec.methods import (
    IEKDParams,
    JobFacts,
    KDCLParams,
    KDParams,
    RCOParams,
    ReviewKDParams,
    RouteError,
    RoutePlan,
    TeacherFacts,
    in_step,
)

ROUTE = [1, 2, 3, 4, 5, 6]


def rco(**fields: Any) -> RCOParams:
    return RCOParams(name="rco", **fields)


@pytest.mark.parametrize(
    ("anchors", "lr_drops", "n", "expected"),
    [
        ("lr_drops", [2, 4], 1, [2, 4, 6]),  # the drop checkpoints plus the converged teacher
        ("lr_drops", [3, 9], 1, [3, 6]),  # a milestone without a checkpoint is no anchor
        ("lr_drops", [], 1, ROUTE),  # cosine teacher: every route checkpoint
        ("every_n", [2, 4], 2, [2, 4, 6]),
        ("every_n", [], 4, [4, 6]),  # always ending at the last checkpoint
        ("every_n", [], 1, ROUTE),
        ([3, 1], [2, 4], 1, [1, 3, 6]),  # explicit teacher epochs, sorted, final appended
        ([2, 6], [], 1, [2, 6]),
    ],
)
def test_fixed_anchor_choices(anchors: Any, lr_drops: list[int], n: int, expected: list) -> None:
    plan = rco(anchors=anchors, every_n=n).plan(ROUTE, lr_drops, 12)
    assert plan.anchors == expected
    assert plan.stage_epochs == in_step(12, expected)


def test_anchor_errors() -> None:
    with pytest.raises(RouteError) as caught:
        rco(anchors=[2, 7]).plan(ROUTE, [], 10)
    assert caught.value.field == "method.anchors"
    assert caught.value.message.startswith("no route checkpoint at epochs [7]")


def test_stages_follow_the_teachers_route_in_step() -> None:
    assert in_step(12, [2, 4, 6]) == [4, 4, 4]  # anchors at equal intervals: equal stages
    # ReviewKD-style drops at 150, 180, 210 of 240: the first anchor held the teacher longest
    assert in_step(10, [150, 180, 210, 240]) == [6, 2, 1, 1]
    assert in_step(10, [10, 12, 15]) == [7, 1, 2]  # an even split gave [3, 3, 4]
    assert in_step(10, [29, 30]) == [9, 1]  # the converged teacher keeps an epoch
    assert in_step(2, [1, 2, 3]) == [1, 0, 1]  # too few epochs: a stage is skipped
    assert in_step(1, [5, 10]) == [0, 1]


def test_stage_plans_from_params() -> None:
    lr_drops = [2, 4]
    assert rco().plan(ROUTE, lr_drops, 10) == RoutePlan([2, 4, 6], [3, 4, 3])
    given = rco(stage_epochs=[5, 2, 3]).plan(ROUTE, lr_drops, 10)
    assert (given.anchors, given.stage_epochs) == ([2, 4, 6], [5, 2, 3])
    with pytest.raises(RouteError) as caught:
        rco(stage_epochs=[5, 5]).plan(ROUTE, lr_drops, 10)
    assert (caught.value.field, caught.value.message) == (
        "method.stage_epochs",
        "needs one entry per anchor (3)",
    )


def test_greedy_plans_as_many_stages_as_lr_drops_has_anchors_or_as_it_is_given() -> None:
    # greedy chooses its anchors as it trains; the plan only fixes the number of stages
    assert rco(anchors="greedy").plan(ROUTE, [2, 4], 10) == RoutePlan([2, 4, 6], [3, 4, 3])
    assert rco(anchors="greedy").plan([1, 2, 3], [], 3) == RoutePlan([1, 2, 3], [1, 1, 1])
    given = rco(anchors="greedy", stage_epochs=[1, 1]).plan([1, 2, 3], [], 2)
    assert given == RoutePlan([1, 2, 3], [1, 1])  # not one entry per anchor: greedy is free


def test_method_rules_read_the_job_facts_alone() -> None:
    no_teacher = JobFacts(has_teacher=False, student_arch="resnet8", epochs=10)
    assert KDParams(name="kd").problems(no_teacher) == [
        FieldError("teacher", "method 'kd' needs a teacher")
    ]
    short = JobFacts(has_teacher=True, student_arch="resnet8", epochs=9)
    assert rco(stage_epochs=[5, 5]).problems(short) == [
        FieldError("method.stage_epochs", "must add up to train.epochs")
    ]
    teacher = TeacherFacts("teacher.job", "job_t", "resnet32x4", 10, 3, None, [1], [])
    pair = JobFacts(has_teacher=True, student_arch="resnet8x4", epochs=10)
    assert ReviewKDParams(name="reviewkd").resolve(pair, teacher).weight == 5.0


JOB10 = JobFacts(has_teacher=True, student_arch="resnet8", epochs=10)
TEACHER = TeacherFacts("teacher.job", "job_t", "resnet20", 10, 1, None, [3, 6, 9, 12, 15], [])


def job(epochs: int) -> JobFacts:
    return JobFacts(has_teacher=True, student_arch="resnet8", epochs=epochs)


@pytest.mark.parametrize(
    ("params", "field", "paper", "scaled"),
    [
        # dvlab-research/ReviewKD CIFAR-100/train.py: --kd-warm-up 20 of --epochs 240
        (ReviewKDParams(name="reviewkd"), "warmup_epochs", (20, 240), (1, 40)),
        # config/ie_kd.yaml: num_epoch_embedS 30 of num_epoch 160
        (IEKDParams(name="iekd"), "ae_epochs", (30, 160), (2, 90)),
    ],
)
def test_epoch_defaults_are_the_papers_share_of_the_jobs_schedule(
    params: Any, field: str, paper: tuple[int, int], scaled: tuple[int, int]
) -> None:
    assert getattr(params.resolve(job(10), TEACHER), field) == scaled[0]  # 20 and 30 before
    assert getattr(params.resolve(job(480), TEACHER), field) == scaled[1]
    assert getattr(params.resolve(job(1), TEACHER), field) == 1  # at least one epoch
    how = params.derivations(job(10))[field]
    assert how.startswith(f"{scaled[0]}: {paper[0]} of the paper's {paper[1]} epochs (")
    assert how.endswith("scaled to this job's 10")
    given = params.model_copy(update={field: 7})
    assert getattr(given.resolve(job(10), TEACHER), field) == 7  # a user's value stays
    assert given.derivations(job(10)) == {}


def test_rco_stages_are_resolved_in_step_with_the_teachers_route() -> None:
    uneven = TeacherFacts("teacher.job", "job_t", "resnet20", 10, 1, None, [10, 12, 15], [])
    resolved = rco(anchors="every_n").resolve(job(10), uneven)
    assert resolved.stage_epochs == [7, 1, 2]  # None before: an even split, [3, 3, 4]
    assert rco(anchors="every_n").derivations(job(10))["stage_epochs"].startswith("in step")
    given = rco(anchors="every_n", stage_epochs=[2, 3, 5])
    assert given.resolve(job(10), uneven).stage_epochs == [2, 3, 5]
    assert given.derivations(job(10)) == {}


@pytest.mark.parametrize(
    ("ensemble", "fraction"),
    [("minlogit", 0.0), ("naive", 0.0), ("linear", 0.0), ("general", 0.1)],
)
def test_kdcl_holds_out_data_only_for_the_general_ensemble(ensemble: str, fraction: float) -> None:
    params = KDCLParams(name="kdcl", peers=["resnet8"], ensemble=ensemble)  # type: ignore[arg-type]
    resolved = params.resolve(job(10), None)
    assert resolved.holdout_fraction == fraction and resolved.holdout() == fraction  # 0.1 before
    assert params.derivations(job(10))["holdout_fraction"].startswith(f"{fraction:g}: ")
    asked = params.model_copy(update={"holdout_fraction": 0.05})
    assert asked.resolve(job(10), None).holdout() == 0.05 and asked.derivations(job(10)) == {}


def test_kdcl_general_refuses_no_holdout() -> None:
    general = KDCLParams(name="kdcl", peers=["resnet8"], ensemble="general", holdout_fraction=0)
    assert general.problems(JobFacts(False, "resnet8", 10)) == [
        FieldError(
            "method.holdout_fraction",
            "the general ensemble estimates its weights on held-out data: must be > 0",
        )
    ]
