"""Published recipes (service/spec/recipes.json): every one a valid spec with its sources, its
values the ones its sources name, and how a spec's "recipe" fills what the spec leaves out."""

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from service.spec import recipes
from service.spec.job import JobSpec
from service.spec.methods import REVIEWKD_WEIGHTS, DISTParams
from service.spec.names import known_arch

ALL = list(recipes.recipes().values())
PAIRS = [r for r in ALL if r.teacher]


def spec_from(name: str, **given: Any) -> JobSpec:
    recipe = recipes.recipes()[name]
    teacher = {"teacher": {"job": "job_t"}} if recipe.teacher else {}
    student = {} if recipe.student else {"student": {"arch": "resnet8"}}
    method = {} if "method" in recipes.fields(recipe) else {"method": {"name": "supervised"}}
    raw = {"recipe": name, "data": {"dataset": "digits"}} | teacher | student | method
    return JobSpec.model_validate(raw | given)


def test_names_are_unique_and_every_base_is_a_schedule() -> None:
    listed = json.loads(recipes.RECIPES_FILE.read_text())["recipes"]
    assert len({r["name"] for r in listed}) == len(listed) == len(ALL)
    bases = {r.extends for r in ALL} - {None}
    assert bases == {"cifar100", "imagenet"}
    for base in (recipes.recipes()[b] for b in bases):
        assert base.teacher is None and set(recipes.fields(base)) == {"data", "train"}


@pytest.mark.parametrize("recipe", ALL, ids=lambda r: r.name)
def test_every_recipe_is_a_valid_spec_holding_exactly_its_values(recipe: recipes.Recipe) -> None:
    stored = spec_from(recipe.name).model_dump(mode="json")
    assert stored["recipe"] == recipe.name
    assert holds(stored, recipes.fields(recipe))
    assert recipe.sources and all(re.match(r"^[\w.-]+/[\w.-]+ \S", s) for s in recipe.sources)
    assert "name" not in recipes.fields(recipe)  # a job's own name is never a recipe's
    for arch in (recipe.teacher, recipe.student):
        assert arch is None or known_arch(arch) == arch
    assert (recipe.published is None) == (recipe.teacher is None)


def holds(stored: Any, given: Any) -> bool:
    """Whether `stored` has every value of `given` (dicts may hold more)."""
    if isinstance(given, dict):
        return all(k in stored and holds(stored[k], v) for k, v in given.items())
    return stored == given


def method(name: str) -> dict[str, Any]:
    return recipes.fields(recipes.recipes()[name])["method"]


@pytest.mark.parametrize(
    ("name", "beta"),
    [
        ("dkd-cifar100-resnet32x4-resnet8x4", 8.0),
        ("dkd-cifar100-resnet56-resnet20", 2.0),
        ("dkd-cifar100-resnet110-resnet32", 2.0),
        ("dkd-cifar100-vgg13-vgg8", 6.0),
        ("dkd-cifar100-wrn_40_2-wrn_16_2", 6.0),
        ("dkd-cifar100-wrn_40_2-wrn_40_1", 6.0),
    ],
)
def test_dkd_betas_per_pair(name: str, beta: float) -> None:
    assert (method(name)["beta"], method(name)["temperature"]) == (beta, 4.0)


def test_dkd_on_imagenet_is_beta_half_at_temperature_one() -> None:
    m = method("dkd-imagenet-resnet34-resnet18")
    assert (m["beta"], m["temperature"], m["warmup_epochs"]) == (0.5, 1.0, 1)
    train = recipes.fields(recipes.recipes()["dkd-imagenet-resnet34-resnet18"])["train"]
    assert (train["epochs"], train["schedule"]["milestones"]) == (100, [30, 60, 90])


LOG = re.compile(r"logs/(KD|DKD)/(kd|dkd),([\w.]+),([\w.]+),(\d+),(\d+)(?:,([\d.]+))?\.txt")


@pytest.mark.parametrize(
    "recipe", [r for r in ALL if r.name.startswith(("kd-ls-cifar", "dkd-ls"))], ids=lambda r: r.name
)
def test_logit_standardisation_values_are_those_their_log_names_record(
    recipe: recipes.Recipe,
) -> None:
    """The authors name each log KD_TYPE,TEACHER,STUDENT,BASE_TEMPERATURE,KD_WEIGHT[,BETA];
    their tools/train.py sets KD's weight to KD_WEIGHT, DKD's alpha to it and beta to BETA
    times it (BETA left out: the config's 8)."""
    [found] = [m for s in recipe.sources if (m := LOG.search(s))]
    _, kind, _, _, temperature, weight, beta = found.groups()
    m = method(recipe.name)
    assert m["logit_standardisation"] is True and m["temperature"] == float(temperature)
    if kind == "kd":
        assert (m["kd_weight"], m["ce_weight"]) == (float(weight), 0.1)
    else:
        assert m["alpha"] == float(weight)
        assert m["beta"] == float(beta or 8.0) * float(weight)


def test_reviewkd_weights_are_its_recipes() -> None:
    assert {
        (r.teacher, r.student): method(r.name)["weight"]
        for r in PAIRS
        if method(r.name)["name"] == "reviewkd"
    } == REVIEWKD_WEIGHTS
    assert REVIEWKD_WEIGHTS[("resnet56", "resnet20")] == 0.6
    assert REVIEWKD_WEIGHTS[("resnet32x4", "shufflenetv2")] == 8.0


def test_small_students_take_the_small_learning_rate() -> None:
    """MobileNet and ShuffleNet students train at 0.01 in DKD's, LSKD's and DIST's code, 0.02 in
    ReviewKD's."""
    for recipe in PAIRS:
        if recipe.student in ("shufflenetv1", "shufflenetv2", "mobilenetv2_half"):
            lr = recipes.fields(recipe)["train"]["optimizer"]["lr"]
            assert lr == (0.02 if recipe.name.startswith("reviewkd") else 0.01), recipe.name


# ---- filling a spec


def test_what_the_spec_gives_wins_and_what_it_leaves_out_is_filled() -> None:
    job = spec_from(
        "dkd-cifar100-resnet56-resnet20",
        method={"beta": 3.0},
        train={"batch_size": 32, "optimizer": {"lr": 0.1}},
    )
    assert job.method.model_dump(include={"name", "alpha", "beta", "temperature"}) == {
        "name": "dkd",
        "alpha": 1.0,
        "beta": 3.0,
        "temperature": 4.0,
    }
    assert (job.train.batch_size, job.train.optimizer.lr, job.train.epochs) == (32, 0.1, 240)
    assert job.train.optimizer.weight_decay == 5e-4 and job.data.augment == "crop_flip"
    assert job.student.arch == "resnet20"


def test_a_part_of_another_kind_keeps_only_what_the_spec_gave() -> None:
    other = spec_from(
        "dkd-cifar100-resnet56-resnet20",
        method={"name": "kd"},
        train={"optimizer": {"name": "adamw"}, "schedule": {"name": "cosine"}},
    )
    assert other.method.model_dump(include={"temperature", "kd_weight"}) == {
        "temperature": 4.0,
        "kd_weight": 0.9,
    }
    assert (other.train.optimizer.lr, other.train.optimizer.weight_decay) == (1e-3, 0.01)
    assert other.train.schedule.milestones == [] and other.train.epochs == 240
    dist = spec_from("dkd-cifar100-resnet56-resnet20", method={"name": "dist"}).method
    assert dist.model_dump() == {"name": "dist"} | DISTParams(name="dist").model_dump()
    flagged = spec_from("dkd-cifar100-resnet56-resnet20", method={"logit_standardisation": True})
    assert (flagged.method.alpha, flagged.method.beta) == (9.0, 72.0)  # not the recipe's 1, 2


@pytest.mark.parametrize(
    ("epochs", "milestones"),
    [(240, [150, 180, 210]), (24, [15, 18, 21]), (10, [6, 8, 9]), (2, [1])],
)
def test_filled_milestones_follow_the_specs_epochs(epochs: int, milestones: list[int]) -> None:
    job = spec_from("cifar100", train={"epochs": epochs})
    assert job.train.schedule.milestones == milestones


def test_milestones_the_spec_gives_stay() -> None:
    job = spec_from("cifar100", train={"epochs": 10, "schedule": {"milestones": [3]}})
    assert (job.train.schedule.name, job.train.schedule.milestones) == ("multistep", [3])


def test_a_stored_spec_reads_back_unchanged_and_the_recipe_unchanged_too() -> None:
    before = json.dumps(recipes.fields(recipes.recipes()["cifar100"]))
    job = spec_from("cifar100", train={"epochs": 12})
    assert JobSpec.model_validate(job.model_dump(mode="json")) == job
    assert json.dumps(recipes.fields(recipes.recipes()["cifar100"])) == before


def test_an_unknown_recipe_is_refused_on_its_field_with_the_close_names() -> None:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(
            {
                "recipe": "dkd-cifar100-resnet32x4-resnet8",
                "method": {"name": "supervised"},
                "student": {"arch": "resnet8"},
                "data": {"dataset": "digits"},
            }
        )
    [error] = caught.value.errors()
    assert error["loc"] == ("recipe",) and "dkd-cifar100-resnet32x4-resnet8x4" in error["msg"]
    assert recipes.fill(["not", "a", "spec"]) == ["not", "a", "spec"]
    assert recipes.fill({"recipe": 3}) == {"recipe": 3}
    assert recipes.fill({"recipe": {}}) == {"recipe": {}}  # unhashable: found by schemathesis


def test_a_pair_recipe_refuses_another_pair() -> None:
    name = "dkd-cifar100-resnet32x4-resnet8x4"
    assert recipes.pair_problems(name, "resnet8x4", "resnet32x4", "teacher.job") == []
    [student, teacher] = recipes.pair_problems(name, "resnet20", "resnet56", "teacher.model")
    assert (
        student.field == "student.arch" and "a resnet8x4 student, not resnet20" in student.message
    )
    assert "dkd-cifar100-resnet56-resnet20" in student.message  # the recipes for its own pair
    assert teacher.field == "teacher.model" and "a resnet32x4 teacher" in teacher.message
    assert recipes.pair_problems("cifar100", "resnet20", "resnet56", "teacher.job") == []
