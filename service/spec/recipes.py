"""Published per-pair settings as data (recipes.json beside this file: each recipe's fields,
the pair it was published for, where each value is set, the top-1 its authors report).

A spec's `"recipe": "<name>"` fills every field the spec leaves out, on the raw JSON before
validation, so "left out" means absent. What the spec gives wins. A part of another kind (a
method, optimizer or schedule of another name, or logit_standardisation set otherwise) keeps
only what the spec gave. Milestones the recipe fills follow the spec's own epochs when it
gives other epochs (the recipe's share of its schedule). A recipe for a pair refuses another
teacher or student architecture at admission."""

import copy
import difflib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from service.errors import FieldError

RECIPES_FILE = Path(__file__).with_name("recipes.json")
KIND_KEYS = ("name", "logit_standardisation")  # a part whose value differs is another kind


class Published(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    top1: float  # percent
    source: str


class Recipe(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    title: str
    extends: str | None  # the recipe whose fields it starts from (a schedule)
    teacher: str | None  # the pair it was published for; None: any
    student: str | None
    spec: dict[str, Any]  # its own fields, over those of `extends`
    sources: list[str]  # repository and path of each value
    published: Published | None


@lru_cache
def recipes() -> dict[str, Recipe]:
    listed = [Recipe.model_validate(r) for r in json.loads(RECIPES_FILE.read_text())["recipes"]]
    return {r.name: r for r in listed}


def names() -> tuple[str, ...]:
    return tuple(recipes())


def fields(recipe: Recipe) -> dict[str, Any]:
    """Every spec field the recipe fills: its base's, its own, its student's architecture."""
    base = fields(recipes()[recipe.extends]) if recipe.extends else {}
    student = {"student": {"arch": recipe.student}} if recipe.student else {}
    return merged(merged(base, recipe.spec), student)


def sources(recipe: Recipe) -> list[str]:
    base = sources(recipes()[recipe.extends]) if recipe.extends else []
    return base + recipe.sources


def card(name: str | None) -> dict[str, Any] | None:
    """What the model card says of a job's recipe: which, for what, from where."""
    if name is None:
        return None
    recipe = recipes()[name]
    published = recipe.published.model_dump() if recipe.published else None
    return {"name": name, "title": recipe.title, "sources": sources(recipe), "published": published}


def known(name: str) -> str:
    """`name` when it is a recipe's, else why not."""
    if name in recipes():
        return name
    close = difflib.get_close_matches(name, names(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown recipe {name!r} (GET /v1/recipes lists them){hint}")


def fill(raw: Any) -> Any:
    """A raw spec with the fields its recipe fills and it leaves out (anything that names no
    known recipe comes back as it is: validation reports it)."""
    name = raw.get("recipe") if isinstance(raw, dict) else None
    if not isinstance(name, str) or name not in recipes():
        return raw
    given = copy.deepcopy(fields(recipes()[name]))  # the cached recipe stays as it is
    spec = merged(given, raw)
    if _path(raw, "train", "schedule", "milestones") is None:
        spec = _follow_epochs(spec, _path(given, "train", "epochs"))
    return spec


def merged(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` with what it leaves out taken from `under`, part by part; a part of another
    kind in `over` takes from `under` only its name, when it leaves that out (a method whose
    logit_standardisation differs is still the recipe's method)."""
    if any(k in under and k in over and under[k] != over[k] for k in KIND_KEYS):
        return ({"name": under["name"]} if "name" in under else {}) | over
    out = dict(under)
    for key, value in over.items():
        below = out.get(key)
        both = isinstance(value, dict) and isinstance(below, dict)
        out[key] = merged(below, value) if both else value  # type: ignore[arg-type]
    return out


def _follow_epochs(spec: dict[str, Any], recipe_epochs: Any) -> dict[str, Any]:
    """`spec` with the milestones the recipe filled scaled to its epochs, when the spec gives
    epochs other than the recipe's (new dicts: the recipe's own stay as they are)."""
    train: Any = spec.get("train")
    epochs, schedule = _path(train, "epochs"), _path(train, "schedule")
    milestones = _path(schedule, "milestones")
    numbers = [epochs, recipe_epochs, *(milestones if isinstance(milestones, list) else [None])]
    if epochs == recipe_epochs or not all(type(n) is int for n in numbers):
        return spec
    scaled = {round(m * epochs / recipe_epochs) for m in milestones}
    schedule = schedule | {"milestones": sorted(m for m in scaled if 1 <= m < epochs)}
    return spec | {"train": train | {"schedule": schedule}}


def _path(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def pair_problems(
    name: str, student_arch: str, teacher_arch: str | None, teacher_field: str
) -> list[FieldError]:
    """A pair recipe's teacher and student against the job's."""
    recipe = recipes()[name]
    wrong = []
    if recipe.student and student_arch != recipe.student:
        wrong.append(("student.arch", f"a {recipe.student} student", student_arch))
    if recipe.teacher and teacher_arch and teacher_arch != recipe.teacher:
        wrong.append((teacher_field, f"a {recipe.teacher} teacher", teacher_arch))
    return [
        FieldError(field, f"recipe {name!r} was published for {want}, not {got}{_others(got)}")
        for field, want, got in wrong
    ]


def _others(arch: str) -> str:
    mine = [r.name for r in recipes().values() if arch in (r.student, r.teacher)]
    return f" (recipes with {arch}: {', '.join(mine)})" if mine else ""


def pair_values(method: str, field: str) -> dict[tuple[str, str], Any]:
    """{(teacher, student): the value of method.`field`} over the pair recipes of `method`."""
    values = {}
    for recipe in recipes().values():
        spec = fields(recipe).get("method", {})
        if spec.get("name") == method and recipe.teacher and recipe.student and field in spec:
            values[(recipe.teacher, recipe.student)] = spec[field]
    return values
