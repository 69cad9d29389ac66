"""RCO's route plan (RCOParams.plan): which teacher checkpoints anchor the stages and how many
student epochs each stage gets. Pure Python, planned at admission and again by the worker.
And the method rules read three facts of a job (JobFacts), never the whole JobSpec."""

from typing import Any

import pytest

from service.errors import FieldError
from service.spec.methods import (
    JobFacts,
    KDParams,
    RCOParams,
    ReviewKDParams,
    RouteError,
    RoutePlan,
    TeacherFacts,
    split_epochs,
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
    assert plan.stage_epochs == split_epochs(12, len(expected))


def test_anchor_errors() -> None:
    with pytest.raises(RouteError) as caught:
        rco(anchors=[2, 7]).plan(ROUTE, [], 10)
    assert caught.value.field == "method.anchors"
    assert caught.value.message.startswith("no route checkpoint at epochs [7]")


def test_even_split_gives_the_remainder_to_the_last_stages() -> None:
    assert split_epochs(12, 3) == [4, 4, 4]
    assert split_epochs(10, 3) == [3, 3, 4]
    assert split_epochs(11, 3) == [3, 4, 4]
    assert split_epochs(2, 3) == [0, 1, 1]  # too few epochs: the earliest anchor is skipped


def test_stage_plans_from_params() -> None:
    lr_drops = [2, 4]
    assert rco().plan(ROUTE, lr_drops, 10) == RoutePlan([2, 4, 6], [3, 3, 4])
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
    assert rco(anchors="greedy").plan(ROUTE, [2, 4], 10) == RoutePlan([2, 4, 6], [3, 3, 4])
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
