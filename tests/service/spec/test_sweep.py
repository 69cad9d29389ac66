"""The sweep spec without a database: which spec fields a space may name and what a range
samples there, how a trial's spec is made from the base (values its method does not take
left out), the trials checked at the door, and the grid."""

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from service.spec.job import JobSpec
from service.spec.methods import METHODS
from service.spec.sweep import (
    SweepSpec,
    applies,
    corners,
    grid,
    kind_of,
    space_problems,
    taken,
    trial_body,
)

KD_BASE: dict[str, Any] = {
    "method": {"name": "kd", "temperature": 3.0, "ce_weight": 0.2},
    "teacher": {"job": "job_0"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {"epochs": 4, "batch_size": 64},
}


def sweep(**fields: Any) -> SweepSpec:
    body = {"base": copy.deepcopy(KD_BASE), "space": {"method.temperature": {"low": 1, "high": 8}}}
    return SweepSpec.model_validate(body | fields)


def problems(**fields: Any) -> dict[str, str]:
    return {e.field: e.message for e in space_problems(sweep(**fields))}


@pytest.mark.parametrize(
    ("path", "methods", "kind"),
    [
        ("train.epochs", ["kd"], "int"),
        ("train.batch_size", ["kd"], "int"),
        ("train.optimizer.lr", ["kd"], "float"),
        ("data.synthetic.num_samples", ["kd"], "int"),  # inside an optional model
        ("method.temperature", ["kd"], "float"),
        ("method.weight", ["reviewkd"], "float"),  # None until admission: still a float
        ("method.route_every", ["supervised"], "int"),
        ("method.anchors", ["rco"], "value"),  # a mode's name, or a list: choices only
        ("student.arch", ["kd"], "value"),
        ("train.precision", ["kd"], "value"),
        ("train.compile", ["kd"], "value"),
        ("teacher.job", ["kd"], "value"),
        ("method.name", ["kd", "supervised"], "value"),
        ("method.temperature", ["kd", "supervised"], "float"),  # one method takes it
        ("method.temperature", ["supervised"], None),
        ("student", ["kd"], None),  # a model, not a value
        ("train.schedule.milestones", ["kd"], None),  # a list
        ("train.nope", ["kd"], None),
        ("metadata.team", ["kd"], None),
    ],
)
def test_a_path_names_a_field_and_its_kind(path: str, methods: list[str], kind: str | None):
    assert kind_of(path, methods) == kind


def test_every_method_takes_its_own_fields_and_a_teacher_only_when_it_needs_one():
    assert applies("method.kd_weight", "kd") and not applies("method.kd_weight", "supervised")
    assert applies("teacher.job", "kd") and not applies("teacher.job", "kdcl")
    assert all(applies("train.optimizer.lr", m) and applies("method.name", m) for m in METHODS)


def test_a_trial_keeps_the_base_fields_its_method_takes_and_drops_the_rest():
    base = sweep().stored()["base"]
    body = trial_body(base, {"method.name": "ddgsd", "method.temperature": 2.0})
    # ddgsd takes a temperature (the trial's), no ce_weight, no teacher
    assert body["method"] == {"name": "ddgsd", "temperature": 2.0}
    assert "teacher" not in body
    assert body["train"] == KD_BASE["train"]
    JobSpec.model_validate(body)
    same = trial_body(base, {"method.temperature": 6.5, "train.optimizer.lr": 0.02})
    assert same["method"] == {"name": "kd", "temperature": 6.5, "ce_weight": 0.2}
    assert same["train"]["optimizer"] == {"lr": 0.02}
    assert base == sweep().stored()["base"]  # the base itself is left as it was


def test_the_stored_base_is_what_the_user_wrote_not_its_defaults():
    # a default of kd (ce_weight 0.1) must not reach a dkd or ddgsd trial's spec
    stored = sweep().stored()
    assert stored["base"]["method"] == KD_BASE["method"]
    assert SweepSpec.model_validate(stored).stored() == stored


def test_values_a_method_does_not_take_are_left_out_of_its_trials():
    params = {"method.name": "supervised", "method.temperature": 3.0, "train.epochs": 2}
    assert taken(params, "kd") == {"method.name": "supervised", "train.epochs": 2}
    assert taken({"method.temperature": 3.0}, "kd") == {"method.temperature": 3.0}


def test_the_door_checks_each_choice_combination_at_both_ends_of_its_ranges():
    spec = sweep(
        space={
            "method.name": {"choices": ["kd", "supervised"]},
            "method.temperature": {"low": 1, "high": 8},
            "train.epochs": {"low": 2, "high": 6},
        },
        enqueue=[{"method.name": "kd", "method.temperature": 4.0}],
    )
    assert list(corners(spec)) == [
        {"method.name": "kd", "method.temperature": 1.0, "train.epochs": 2},
        {"method.name": "kd", "method.temperature": 8.0, "train.epochs": 6},
        {"method.name": "supervised", "train.epochs": 2},
        {"method.name": "supervised", "train.epochs": 6},
        {"method.name": "kd", "method.temperature": 4.0},
    ]


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"space": {"train.nope": {"low": 1, "high": 2}}}, "space.train.nope", "no field"),
        ({"space": {"method.alpha": {"low": 1, "high": 2}}}, "space.method.alpha", "for method kd"),
        ({"space": {"student.arch": {"low": 1, "high": 2}}}, "space.student.arch", "choices"),
        ({"space": {"train.epochs": {"low": 1.5, "high": 4}}}, "space.train.epochs", "integer"),
        (
            {"space": {"method.name": {"choices": ["kd", "nope"]}}},
            "space.method.name",
            "unknown methods ['nope']",
        ),
        (
            {
                "base": {**KD_BASE, "method": {"name": "supervised"}, "teacher": None},
                "space": {"teacher.job": {"choices": ["job_1"]}},
            },
            "space.teacher.job",
            "supervised take no teacher",
        ),  # fmt: skip
        ({"enqueue": [{"method.temperature": 9.0}]}, "enqueue.0.method.temperature", "not in"),
        ({"enqueue": [{"train.epochs": 3}]}, "enqueue.0.train.epochs", "not a field of"),
        ({"trials": 2, "confirm": {"top": 3}}, "confirm.top", "at most trials"),
        (
            {"pruner": {"name": "hyperband", "min_epochs": 4}},
            "pruner.min_epochs",
            "below the epochs",
        ),
    ],
)
def test_a_space_that_cannot_be_run_is_refused_naming_its_field(fields, field, says):
    found = problems(**fields)
    assert field in found, found
    assert says in found[field]


@pytest.mark.parametrize(
    "body",
    [
        {"space": {"method.temperature": {"low": 2, "high": 1}}},
        {"space": {"method.temperature": {"low": 0, "high": 1, "log": True}}},
        {"space": {"method.temperature": {"choices": [1, 1]}}},
        {"space": {"method.temperature": {"choices": [1], "low": 1, "high": 2}}},
        {"space": {"method.temperature": {}}},
        {"space": {"Method.Temperature": {"low": 1, "high": 2}}},
        {"space": {}},
        {"confirm": {"seeds": [0, 0]}},
        {"pruner": "median"},
    ],
)
def test_malformed_sweeps_fail_validation(body: dict[str, Any]):
    with pytest.raises(ValidationError):
        sweep(**body)


def test_a_grid_enumerates_its_choices_and_stepped_ranges():
    spec = sweep(
        sampler="grid",
        trials=6,
        space={
            "method.temperature": {"low": 1, "high": 2, "step": 0.5},
            "train.epochs": {"low": 2, "high": 3},
            "method.kd_weight": {"choices": [0.5, 0.9]},
        },
    )
    assert space_problems(spec) == []
    assert grid(spec) == {
        "method.temperature": [1.0, 1.5, 2.0],
        "train.epochs": [2, 3],
        "method.kd_weight": [0.5, 0.9],
    }
    assert {e.field for e in space_problems(spec.model_copy(update={"trials": 13}))} == {"trials"}


def test_a_grid_refuses_continuous_ranges_and_fields_some_methods_do_not_take():
    continuous = problems(sampler="grid", trials=1)
    assert "with step" in continuous["space.method.temperature"]
    mixed = problems(
        sampler="grid",
        trials=2,
        space={
            "method.name": {"choices": ["kd", "ddgsd"]},
            "method.kd_weight": {"choices": [0.5]},
        },
    )
    assert "ddgsd take no method.kd_weight" in mixed["space.method.kd_weight"]
