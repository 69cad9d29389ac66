"""Defaults that depend on something: kd's and dkd's on logit_standardisation (filled as
the spec is read), dkd's warm-up on the job's epochs (filled at admission), and dkd's
refusal of data with fewer than 3 classes."""

from typing import Any

import pytest

from service.spec.job import DataShape, JobSpec, spec_problems
from service.spec.methods import DISTParams, DKDParams, JobFacts, KDParams


def spec(method: dict[str, Any], epochs: int = 30) -> JobSpec:
    return JobSpec.model_validate(
        {
            "method": method,
            "teacher": {"job": "job_t"},
            "student": {"arch": "resnet8"},
            "data": {"dataset": "digits"},
            "train": {"epochs": epochs},
        }
    )


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ({}, {"temperature": 4.0, "kd_weight": 0.9, "ce_weight": 0.1}),
        ({"logit_standardisation": True}, {"temperature": 2.0, "kd_weight": 9.0, "ce_weight": 0.1}),
        ({"logit_standardisation": True, "kd_weight": 1.5}, {"temperature": 2.0, "kd_weight": 1.5}),
        ({"logit_standardisation": True, "temperature": 3}, {"temperature": 3.0, "kd_weight": 9.0}),
    ],
)
def test_kd_defaults_follow_the_flag_and_a_given_value_stays(given: dict, want: dict) -> None:
    params = spec({"name": "kd", **given}).method
    assert params.model_dump(include=set(want)) == want


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ({}, {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "ce_weight": 1.0}),
        ({"logit_standardisation": True}, {"alpha": 9.0, "beta": 72.0, "temperature": 2.0}),
        # a given weight is the weight used: the authors' x 9 applies to the defaults alone
        ({"logit_standardisation": True, "beta": 2.0}, {"alpha": 9.0, "beta": 2.0}),
    ],
)
def test_dkd_defaults_follow_the_flag(given: dict, want: dict) -> None:
    params = spec({"name": "dkd", **given}).method
    assert params.model_dump(include=set(want)) == want


def test_a_stored_spec_reads_back_as_it_was_stored() -> None:
    """A resolved spec holds every value: reading it again changes none of them."""
    first = spec({"name": "dkd", "logit_standardisation": True})
    again = JobSpec.model_validate(first.model_dump(mode="json"))
    assert again == first


@pytest.mark.parametrize(("epochs", "warmup"), [(240, 20), (120, 10), (36, 3), (10, 1), (1, 1)])
def test_dkd_warm_up_is_the_papers_share_of_the_jobs_epochs(epochs: int, warmup: int) -> None:
    params = DKDParams(name="dkd")
    facts = JobFacts(True, "resnet8", epochs)
    resolved = params.resolve(facts, None)
    assert resolved.warmup_epochs == warmup
    how = resolved.derivations(facts)["warmup_epochs"]
    assert how.startswith(f"{warmup}: 20 of the paper's 240 epochs") and f"job's {epochs}" in how


def test_a_given_dkd_warm_up_stays_and_is_not_called_derived() -> None:
    facts = JobFacts(True, "resnet8", 240)
    params = DKDParams(name="dkd", warmup_epochs=5)
    assert params.resolve(facts, None).warmup_epochs == 5
    assert params.derivations(facts) == {}
    assert DKDParams(name="dkd", warmup_epochs=0).resolve(facts, None).warmup_epochs == 0


@pytest.mark.parametrize(("name", "classes", "refused"), [("dkd", 2, True), ("dkd", 3, False)])
def test_dkd_refuses_fewer_than_three_classes(name: str, classes: int, refused: bool) -> None:
    problems = spec_problems(spec({"name": name}), DataShape(classes, 1, 8))
    assert [p.field for p in problems] == (["method.name"] * refused)
    assert not spec_problems(spec({"name": "kd"}), DataShape(2, 1, 8))


def test_dist_defaults_are_the_authors_cifar_ones() -> None:
    assert DISTParams(name="dist").model_dump() == {
        "name": "dist",
        "temperature": 4.0,
        "inter_weight": 1.0,
        "intra_weight": 1.0,
        "kd_weight": 2.0,
        "ce_weight": 1.0,
    }
    assert KDParams(name="kd").logit_standardisation is False
