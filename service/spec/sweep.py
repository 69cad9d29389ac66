"""A sweep, validated at the door: a base job spec, a space over its dotted fields, and how to
search it (service/sweeps/ runs it). A trial's spec is the base with the trial's values set
at their paths; a value the trial's method does not take is left out of it, and so is the
teacher of a method that takes none. Pure pydantic, like the job spec."""

import copy
import itertools
import math
from collections.abc import Iterator
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, model_validator

from service.errors import FieldError
from service.spec.job import JobSpec
from service.spec.limits import Epoch, Name
from service.spec.methods import PARAMS_MODELS, MethodBase, method_name
from service.spec.names import Strict

Value = str | int | float | bool  # what Optuna's categorical choices and our fields hold
Path = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$", max_length=100)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
METHOD_MODELS: dict[str, type[MethodBase]] = {method_name(m): m for m in PARAMS_MODELS}
MAX_CHECKED = 256  # choice combinations admission checks at the door, each at both range ends
MAX_GRID = 10_000
Kind = Literal["int", "float", "value"]  # a range samples ints for an int field


class Dim(Strict):
    """One field's values: `choices`, or a range from `low` to `high` (integers for an
    integer field), on a log scale with `log`, in steps of `step`."""

    choices: list[Value] | None = Field(None, min_length=1, max_length=100)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> "Dim":
        if (self.choices is None) == (self.low is None and self.high is None):
            raise ValueError("give either choices or low and high")
        if self.choices is not None:
            if self.log or self.step is not None:
                raise ValueError("log and step are for ranges")
            if len({(type(c), c) for c in self.choices}) != len(self.choices):
                raise ValueError("choices must differ")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("a range needs low < high")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("a log range needs low > 0 and no step")
        return self


class PrunerSpec(Strict):
    """ASHA (Optuna's SuccessiveHalvingPruner), Hyperband, or none, fed each epoch's val_acc.
    A rung is every `min_epochs` x reduction_factor^k epochs."""

    name: Literal["asha", "hyperband", "none"] = "asha"
    min_epochs: Epoch = Field(1, description="the first rung, in epochs")
    reduction_factor: int | None = Field(
        None, ge=2, le=16, description="default: Optuna's, 4 for asha and 3 for hyperband"
    )

    @model_validator(mode="before")
    @classmethod
    def _by_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class ConfirmSpec(Strict):
    """The top configurations of the search, each run again with every seed."""

    top: int = Field(3, ge=1, le=20)
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], min_length=1, max_length=10)

    @model_validator(mode="after")
    def _distinct(self) -> "ConfirmSpec":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must differ")
        return self


EXAMPLE: dict[str, Any] = {
    "name": "digits-lr",
    "base": {
        "method": {"name": "supervised"},
        "student": {"arch": "resnet8"},
        "data": {"dataset": "digits"},
        "train": {"epochs": 4, "batch_size": 64},
    },
    "space": {"train.optimizer.lr": {"low": 0.01, "high": 0.2, "log": True}},
    "trials": 8,
    "parallel": 2,
    "pruner": "asha",
    "confirm": {"top": 2, "seeds": [0, 1]},
}


class SweepSpec(Strict):
    model_config = {"json_schema_extra": {"examples": [EXAMPLE]}}

    name: Name = Field("", max_length=200)
    base: JobSpec = Field(description="the job spec every trial starts from")
    space: dict[Path, Dim] = Field(
        min_length=1,
        max_length=20,
        description="dotted spec field -> its values (method.name, method.temperature, "
        "train.optimizer.lr, ...)",
    )
    trials: int = Field(20, ge=1, le=1000, description="search trials, each a job")
    parallel: int = Field(1, ge=1, le=64, description="jobs of the sweep running at once")
    objective: Literal["val_acc"] = Field("val_acc", description="the final epoch's, maximised")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    seed: Seed = Field(0, description="the sampler's")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    enqueue: list[dict[Path, Value]] = Field(
        default_factory=list,
        max_length=100,
        description="configurations tried first, in order (a paper's settings); a field of "
        "the space left out is sampled",
    )
    confirm: ConfirmSpec | None = Field(None, description="rerun the top configurations")
    baseline: bool = Field(
        False, description="also train the student alone (supervised), with each confirm seed"
    )

    def stored(self) -> dict[str, Any]:
        """What the sweep row keeps: its base as the user wrote it (a default of one method
        must not reach another's trials), the rest resolved."""
        return self.model_dump(mode="json", exclude_none=True) | {"base": base_body(self.base)}

    def methods(self) -> list[str]:
        """The methods its trials may run."""
        dim = self.space.get("method.name")
        return [str(c) for c in dim.choices or []] if dim else [self.base.method.name]

    def epochs(self) -> int:
        """The most epochs a trial may train (Hyperband's largest budget)."""
        dim = self.space.get("train.epochs")
        if dim is None:
            return self.base.train.epochs
        values = dim.choices if dim.choices is not None else [dim.high or 0]
        numbers = [int(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        return max(numbers, default=self.base.train.epochs)


def base_body(base: JobSpec) -> dict[str, Any]:
    return base.model_dump(mode="json", exclude_unset=True)


# -- the space and the spec's fields


def applies(path: str, method: str) -> bool:
    """Whether a trial running `method` takes a value for `path`."""
    model = METHOD_MODELS[method]
    head, _, field = path.partition(".")
    if head == "method":
        return field in model.model_fields
    return head != "teacher" or model.needs_teacher


def kind_of(path: str, methods: list[str]) -> Kind | None:
    """What a range on `path` samples, or None when no job spec field (of these methods)
    holds a single value there."""
    head, _, rest = path.partition(".")
    if head == "method":
        models = [METHOD_MODELS[m] for m in methods if m in METHOD_MODELS]
        kinds = [_kind_in(m, rest) for m in models if rest in m.model_fields]
        return None if not kinds or None in kinds else kinds[0]
    return _kind_in(JobSpec, path)


def _kind_in(model: type[BaseModel], path: str) -> Kind | None:
    head, _, rest = path.partition(".")
    field = model.model_fields.get(head)
    if field is None:
        return None
    ann = _unwrapped(field.annotation)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return _kind_in(ann, rest) if rest else None
    if rest:
        return None
    return _scalar(ann)


def _scalar(ann: Any) -> Kind | None:
    if ann is float:
        return "float"
    if ann is int:
        return "int"
    if ann is str or ann is bool or get_origin(ann) is Literal:
        return "value"
    if get_origin(ann) in (Union, UnionType):  # RCO's anchors: a mode's name, or a list
        kinds = [_scalar(_unwrapped(a)) for a in get_args(ann)]
        return "value" if any(kinds) else None
    return None


def _unwrapped(ann: Any) -> Any:
    """The type inside Annotated and Optional; a union of several types is left as it is."""
    if get_origin(ann) is Annotated:
        return _unwrapped(get_args(ann)[0])
    if get_origin(ann) in (Union, UnionType):
        members = [a for a in get_args(ann) if a is not type(None)]
        return _unwrapped(members[0]) if len(members) == 1 else ann
    return ann


def space_problems(spec: SweepSpec) -> list[FieldError]:
    """Each dimension names a field the trials' methods take, of a kind its values fit; a
    grid enumerates; enqueued configurations lie in the space."""
    methods = spec.methods()
    if unknown := [m for m in methods if m not in METHOD_MODELS]:
        why = f"unknown methods {unknown}; known: {sorted(METHOD_MODELS)}"
        return [FieldError("space.method.name", why)]
    errors = [e for path, dim in spec.space.items() for e in _dim_problems(path, dim, methods)]
    if spec.sampler == "grid" and not errors:
        errors += _grid_problems(spec, methods)
    for i, config in enumerate(spec.enqueue):
        errors += [FieldError(f"enqueue.{i}.{path}", why) for path, why in _outside(spec, config)]
    if spec.confirm and spec.confirm.top > spec.trials:
        errors.append(FieldError("confirm.top", "must be at most trials"))
    if spec.pruner.name == "hyperband" and spec.epochs() <= spec.pruner.min_epochs:
        errors.append(FieldError("pruner.min_epochs", "hyperband: must be below the epochs"))
    return errors


def _dim_problems(path: str, dim: Dim, methods: list[str]) -> list[FieldError]:
    field = f"space.{path}"
    kind = kind_of(path, methods)
    if kind is None:
        why = "no field of the job spec holding one value"
        if path.startswith("method."):
            why += f" (for method {' or '.join(methods)})"
        return [FieldError(field, why)]
    if not any(applies(path, m) for m in methods):
        return [FieldError(field, f"{' or '.join(methods)} take no {path.partition('.')[0]}")]
    if dim.choices is None and kind == "value":
        return [FieldError(field, "takes choices: a range is for numbers")]
    if dim.choices is None and kind == "int" and not _integral(dim.low, dim.high, dim.step):
        return [FieldError(field, "an integer field: low, high and step must be integers")]
    return []


def _integral(*values: float | None) -> bool:
    return all(v is None or float(v).is_integer() for v in values)


def _grid_problems(spec: SweepSpec, methods: list[str]) -> list[FieldError]:
    errors = []
    for path, dim in spec.space.items():
        if dim.choices is None and (dim.log or (dim.step is None and _kind(spec, path) != "int")):
            errors.append(FieldError(f"space.{path}", "grid: give choices, or a range with step"))
        elif not all(applies(path, m) for m in methods):
            skip = [m for m in methods if not applies(path, m)]
            why = f"grid: {', '.join(skip)} take no {path}; use tpe or random, or sweep apart"
            errors.append(FieldError(f"space.{path}", why))
    points = 0 if errors else math.prod(len(v) for v in grid(spec).values())
    if points > MAX_GRID:
        errors.append(FieldError("space", f"grid: more than {MAX_GRID} points"))
    elif points and spec.trials > points:
        errors.append(FieldError("trials", f"the grid has {points} points: at most that many"))
    return errors


def _kind(spec: SweepSpec, path: str) -> Kind | None:
    return kind_of(path, spec.methods())


def grid(spec: SweepSpec) -> dict[str, list[Value]]:
    """Each dimension's grid values (choices, or a range's steps)."""
    return {path: _steps(dim, _kind(spec, path)) for path, dim in spec.space.items()}


def _steps(dim: Dim, kind: Kind | None) -> list[Value]:
    if dim.choices is not None:
        return list(dim.choices)
    low, high = float(dim.low or 0), float(dim.high or 0)
    step = dim.step or 1.0
    count = math.floor((high - low) / step + 1e-9) + 1
    values = [low + i * step for i in range(min(count, MAX_GRID + 1))]
    return [int(v) if kind == "int" else v for v in values]


def _outside(spec: SweepSpec, config: dict[str, Value]) -> Iterator[tuple[str, str]]:
    """(path, why) for each value of an enqueued configuration the space does not hold."""
    methods = [str(config["method.name"])] if "method.name" in config else spec.methods()
    for path, value in config.items():
        dim = spec.space.get(path)
        if dim is None:
            yield path, "not a field of the space"
        elif dim.choices is not None and value not in dim.choices:
            yield path, f"not one of the choices {dim.choices}"
        elif dim.choices is None and not _in_range(value, dim):
            yield path, f"not in [{dim.low}, {dim.high}]"
        elif not any(applies(path, m) for m in methods if m in METHOD_MODELS):
            yield path, f"{' or '.join(methods)} take no {path}"


def _in_range(value: Value, dim: Dim) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and float(dim.low or 0) <= float(value) <= float(dim.high or 0)


# -- trials


def trial_body(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The job spec (a body to validate) of a trial with these values: the base, the method
    switched to `method.name` with the base's fields it takes, each value at its path."""
    body = copy.deepcopy(base)
    method = str(params.get("method.name", body["method"]["name"]))
    model = METHOD_MODELS[method]
    body["method"] = {k: v for k, v in body["method"].items() if k in model.model_fields}
    body["method"]["name"] = method
    if not model.needs_teacher:
        body.pop("teacher", None)
    for path, value in params.items():
        if applies(path, method):
            _set(body, path.split("."), value)
    return body


def _set(body: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        if not isinstance(body.get(part), dict):
            body[part] = {}
        body = body[part]
    body[parts[-1]] = value


def taken(params: dict[str, Any], base_method: str) -> dict[str, Any]:
    """The values a trial with `params` takes (the others left out)."""
    method = str(params.get("method.name", base_method))
    return {p: v for p, v in params.items() if applies(p, method)}


def corners(spec: SweepSpec) -> Iterator[dict[str, Value]]:
    """The trials admission checks at the door: every combination of the choices, each with
    its ranges at their lows and at their highs, then each enqueued configuration."""
    choices = {p: d.choices for p, d in spec.space.items() if d.choices is not None}
    ranges = {p: d for p, d in spec.space.items() if d.choices is None}
    seen = []
    for combo in itertools.product(*choices.values()):
        picked: dict[str, Value] = dict(zip(choices, combo, strict=True))
        for end in ("low", "high"):
            params = picked | {p: _end(spec, p, d, end) for p, d in ranges.items()}
            params = taken(params, spec.base.method.name)
            if params not in seen:
                seen.append(params)
                yield params
    yield from spec.enqueue


def combinations(spec: SweepSpec) -> int:
    return math.prod(len(d.choices) for d in spec.space.values() if d.choices is not None)


def _end(spec: SweepSpec, path: str, dim: Dim, end: str) -> Value:
    value = float(dim.low if end == "low" else dim.high)  # type: ignore[arg-type]
    return int(value) if _kind(spec, path) == "int" else value
