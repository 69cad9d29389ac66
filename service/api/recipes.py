"""Published recipes (service/spec/recipes.json): per-pair settings with their sources, read
only; a job spec names one with "recipe"."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.api.deps import AUTHENTICATED, KEYED
from service.api.schemas import RecipeList, RecipeOut, problems
from service.errors import NotFound
from service.spec import recipes
from service.spec.limits import Name

router = APIRouter(
    prefix="/v1/recipes", tags=["recipes"], dependencies=AUTHENTICATED, responses=KEYED
)
Filter = Annotated[Name | None, Query(max_length=200)]


@router.get("", response_model=RecipeList, responses=problems(422))
def list_recipes(
    method: Filter = None, teacher: Filter = None, student: Filter = None
) -> RecipeList:
    """Every recipe, schedules first; `method`, `teacher` and `student` keep those that match."""
    wanted = {"method": method, "teacher": teacher, "student": student}
    shown = [recipe_out(r) for r in recipes.recipes().values()]
    return RecipeList(data=[r for r in shown if matches(r, wanted)])


@router.get("/{name}", response_model=RecipeOut, responses=problems(404, 422))
def get_recipe(name: Annotated[Name, Path(max_length=200)]) -> RecipeOut:
    recipe = recipes.recipes().get(name)
    if recipe is None:
        raise NotFound("recipe", name)
    return recipe_out(recipe)


def recipe_out(recipe: recipes.Recipe) -> RecipeOut:
    fields = recipe.model_dump(exclude={"spec", "sources"})
    return RecipeOut(**fields, spec=recipes.fields(recipe), sources=recipes.sources(recipe))


def matches(recipe: RecipeOut, wanted: dict[str, str | None]) -> bool:
    method = recipe.spec.get("method", {}).get("name")
    have = {"method": method, "teacher": recipe.teacher, "student": recipe.student}
    return all(value is None or have[key] == value for key, value in wanted.items())
