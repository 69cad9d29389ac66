"""GET /v1/recipes and a job spec's "recipe" over HTTP: the list and each recipe with its
sources, the stored spec naming its recipe, and another pair refused with nothing stored."""

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from service.spec import recipes
from tests.service.helpers import fields, problem

PAIR = "dkd-cifar100-resnet32x4-resnet8x4"


def test_the_list_holds_every_recipe_schedules_first_and_filters(client: TestClient) -> None:
    listed = client.get("/v1/recipes").json()["data"]
    assert [r["name"] for r in listed] == list(recipes.names())
    assert [r["name"] for r in listed[:2]] == ["cifar100", "imagenet"]
    pair = {"teacher": "resnet32x4", "student": "resnet8x4", "method": "dkd"}
    mine = client.get("/v1/recipes", params=pair).json()
    assert [r["name"] for r in mine["data"]] == [PAIR, "dkd-ls-cifar100-resnet32x4-resnet8x4"]
    none = client.get("/v1/recipes", params={"teacher": "resnet8"}).json()
    assert none == {"object": "list", "data": []}


def test_a_recipe_shows_every_field_it_fills_and_every_source(client: TestClient) -> None:
    r = client.get(f"/v1/recipes/{PAIR}")
    assert r.status_code == 200, r.text
    recipe = r.json()
    assert recipe["object"] == "recipe" and recipe["extends"] == "cifar100"
    assert (recipe["teacher"], recipe["student"]) == ("resnet32x4", "resnet8x4")
    assert recipe["spec"]["method"]["beta"] == 8.0 and recipe["spec"]["train"]["epochs"] == 240
    assert recipe["spec"]["student"] == {"arch": "resnet8x4"}
    assert any("res32x4_res8x4.yaml" in s for s in recipe["sources"])
    assert any("SOLVER" in s for s in recipe["sources"])  # the schedule's, from its base
    assert recipe["published"] == {"top1": 76.32, "source": "megvii-research/mdistiller README.md"}
    missing = problem(client.get("/v1/recipes/dkd-cifar100-nothing"), 404)
    assert missing["code"] == "not_found"


def job(teacher: str, **given: Any) -> dict[str, Any]:
    spec = {"recipe": PAIR, "teacher": {"job": teacher}, "data": {"dataset": "digits"}}
    return spec | {"train": {"epochs": 12}} | given


def test_a_job_from_a_recipe_stores_the_filled_spec_and_names_it(
    client: TestClient, job_in: Any
) -> None:
    teacher = job_in("succeeded", student={"arch": "resnet32x4"})
    r = client.post("/v1/jobs", json=job(teacher, method={"name": "dkd", "beta": 4.0}))
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert spec["recipe"] == PAIR and spec["student"]["arch"] == "resnet8x4"
    assert (spec["method"]["beta"], spec["method"]["alpha"]) == (4.0, 1.0)
    assert spec["method"]["warmup_epochs"] == 1  # 20 of 240, scaled to the 12 given
    assert spec["train"]["schedule"]["milestones"] == [8, 9, 10]  # 150/180/210 of 240, on 12
    assert spec["train"]["batch_size"] == 64 and spec["data"]["augment"] == "crop_flip"


def test_another_pair_or_an_unknown_recipe_is_refused_and_nothing_is_stored(
    client: TestClient, count_jobs: Callable[[], int], job_in: Any
) -> None:
    teacher = job_in("succeeded", student={"arch": "resnet56"})
    before = count_jobs()
    refused = problem(client.post("/v1/jobs", json=job(teacher)), 422)
    assert fields(refused) == ["teacher.job"]
    assert "published for a resnet32x4 teacher, not resnet56" in refused["errors"][0]["message"]
    other = job(teacher, student={"arch": "resnet20"})
    assert fields(problem(client.post("/v1/jobs", json=other), 422)) == [
        "student.arch",
        "teacher.job",
    ]
    unknown = job(teacher, recipe="dkd-cifar100-resnet56-resnet2")
    assert "recipe" in fields(problem(client.post("/v1/jobs", json=unknown), 422))
    assert count_jobs() == before
    right = job(teacher, recipe="dkd-cifar100-resnet56-resnet20")
    assert client.post("/v1/jobs", json=right).status_code == 201
