"""Optuna's side of a sweep. Studies live on the database server ours does, apart from our
tables: in a schema of their own on PostgreSQL (settings.sweeps_schema), in a file beside
ours on SQLite; Optuna keeps an alembic_version table of its own, which would collide with
ours. A sweep's study is named by the sweep's id and opened afresh, with its sampler and
pruner, by whichever process needs it (the API's driver asks and tells, a trial's training
process reports its epochs): what a study knows is in the storage, never in a process.
Optuna's heartbeats are left off (they need its optimize loop); our job leases find lost
trials."""

import functools
from pathlib import Path
from typing import Any

import optuna
from optuna.pruners import BasePruner, HyperbandPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.storages import RDBStorage
from optuna.trial import Trial, TrialState
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from service.config import get_settings
from service.db.sessions import get_engine
from service.spec.sweep import Dim, SweepSpec, Value, applies, grid, kind_of

optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial in the API's log


@functools.lru_cache
def storage(db_url: str, schema: str) -> RDBStorage:
    """Optuna's storage beside the database at `db_url`, made on first use."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        ours = Path(url.database or "distillery.db")
        own = url.set(database=str(ours.with_name(f"{ours.stem}.{schema}{ours.suffix}")))
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 30}}  # the API and workers write
        return RDBStorage(own.render_as_string(hide_password=False), engine_kwargs=kwargs)
    _create_schema(db_url, schema)
    kwargs = {"pool_pre_ping": True, "connect_args": {"options": f"-csearch_path={schema}"}}
    return RDBStorage(url.render_as_string(hide_password=False), engine_kwargs=kwargs)


def _create_schema(db_url: str, schema: str) -> None:
    try:
        with get_engine(db_url).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))  # a settings pattern
    except IntegrityError:  # another process made it at the same moment: it is there
        pass


def current() -> RDBStorage:
    settings = get_settings()
    return storage(settings.db_url, settings.sweeps_schema)


def create(sweep_id: str, spec: SweepSpec) -> None:
    """The sweep's study (again: a no-op), its enqueued configurations waiting first."""
    study = optuna.create_study(
        study_name=sweep_id, storage=current(), direction="maximize", load_if_exists=True
    )
    for config in spec.enqueue:
        study.enqueue_trial(dict(config), skip_if_exists=True)


def open_study(sweep_id: str, spec: SweepSpec, asked: int | None = None) -> optuna.Study:
    """The sweep's study with its pruner and, to ask its next trial after `asked` others,
    its sampler. A fresh sampler is seeded by the trials asked before: the same seed in each
    process would draw the same values again. Without `asked` (to report or tell) a plain
    random sampler: telling runs the sampler's after_trial, where GridSampler calls
    Study.stop, which raises outside Study.optimize."""
    chosen = sampler(spec, asked) if asked is not None else RandomSampler()
    return optuna.load_study(
        study_name=sweep_id, storage=current(), sampler=chosen, pruner=pruner(spec)
    )


def sampler(spec: SweepSpec, asked: int) -> BaseSampler:
    seed = spec.seed + asked
    if spec.sampler == "grid":  # its unvisited points are read from the storage
        return GridSampler(dict(grid(spec)), seed=spec.seed)
    if spec.sampler == "random":
        return RandomSampler(seed=seed)
    # constant liar: trials still running count as bad, so parallel asks spread out
    return TPESampler(seed=seed, constant_liar=spec.parallel > 1)


def pruner(spec: SweepSpec) -> BasePruner:
    """The sweep's pruner; the reduction factor Optuna's own unless the sweep gives one."""
    chosen = spec.pruner
    factor = {"reduction_factor": chosen.reduction_factor} if chosen.reduction_factor else {}
    if chosen.name == "none":
        return NopPruner()
    if chosen.name == "hyperband":
        return HyperbandPruner(min_resource=chosen.min_epochs, max_resource=spec.epochs(), **factor)
    return SuccessiveHalvingPruner(min_resource=chosen.min_epochs, **factor)


def ask(study: optuna.Study, spec: SweepSpec) -> tuple[int, int, dict[str, Value]]:
    """A new trial: its number, its id in the storage and the values it takes. method.name
    is drawn first: it decides which other fields the trial takes (the others are not
    drawn, so the sampler learns only from values that were used)."""
    trial = study.ask()
    method: str = spec.base.method.name
    params: dict[str, Value] = {}
    if (names := spec.space.get("method.name")) is not None:
        method = str(_suggest(trial, "method.name", names, "value"))
        params["method.name"] = method
    for path, dim in spec.space.items():
        if path != "method.name" and applies(path, method):
            params[path] = _suggest(trial, path, dim, kind_of(path, [method]))
    store = current()
    trial_id = store.get_trial_id_from_study_id_trial_number(
        store.get_study_id_from_name(study.study_name), trial.number
    )
    return trial.number, trial_id, params


def _suggest(trial: Trial, path: str, dim: Dim, kind: str | None) -> Value:
    if dim.choices is not None:
        return trial.suggest_categorical(path, dim.choices)  # type: ignore[return-value]
    low, high = float(dim.low or 0), float(dim.high or 0)
    if kind == "int":
        return trial.suggest_int(path, int(low), int(high), step=int(dim.step or 1), log=dim.log)
    return trial.suggest_float(path, low, high, step=dim.step, log=dim.log)


def tell(study: optuna.Study, number: int, state: TrialState, value: float | None) -> None:
    """A trial's end (again: a no-op). A pruned one's value is its last reported."""
    values = value if state == TrialState.COMPLETE else None
    study.tell(number, values, state=state, skip_if_finished=True)


def orphans(study: optuna.Study, known: set[int]) -> list[int]:
    """Running trials no sweep row names: asked by a driver that died before it recorded
    them."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t.number for t in running if t.number not in known]
