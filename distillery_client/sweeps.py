"""`distillery sweep submit|watch|show|list|cancel`: sweeps, whose trials are jobs the API
makes, from the command line; and how they show (a leaderboard table, the runs, a live view
that redraws as trials end). Exit codes: distillery_client/commands.py."""

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from distillery_client.client import Client
from distillery_client.commands import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    AsJson,
    client,
    emit,
    handled,
    load_spec,
    newest,
    out,
    refused,
    say,
    wants_json,
)
from distillery_client.display import STATUS_STYLE, number, tsv
from distillery_client.errors import InvalidRequest
from distillery_client.models import LeaderboardRow, Runs, Sweep, SweepSummary

sweeps_app = typer.Typer(
    help="Sweeps: a search over job specs (Optuna), each trial a job.", no_args_is_help=True
)
SweepArg = Annotated[str, typer.Argument(help="a sweep id")]
EXIT_BY_STATUS = {"succeeded": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
POLL_S = 2.0  # how often watch reads the sweep again
STYLE = STATUS_STYLE | {"planned": "dim"}


@sweeps_app.command("submit")
@handled
def submit(
    file: Annotated[Path, typer.Argument(help="the sweep, YAML or JSON")],
    wait: Annotated[bool, typer.Option("--wait", help="then watch it to its end")] = False,
    as_json: AsJson = False,
) -> None:
    """Submit a sweep; print its id. A refused one prints each field at fault with its
    line in the file, and exits 2."""
    body, text = load_spec(file)
    with client() as api:
        try:
            sweep = api.create_sweep(body)
        except InvalidRequest as exc:
            refused(file, exc, text)
        emit(sweep) if wants_json(as_json) else say(sweep.id)
        if wait:
            raise typer.Exit(EXIT_BY_STATUS[follow(api, sweep.id).status])


@sweeps_app.command("watch")
@handled
def watch(sweep_id: SweepArg) -> None:
    """Follow a sweep to its end: a live leaderboard on a terminal; piped, a line each time
    a run changes status, then the leaderboard. Exits 0 if it succeeded, 1 if it failed,
    3 if it was cancelled."""
    with client() as api:
        sweep = follow(api, sweep_id)
    raise typer.Exit(EXIT_BY_STATUS[sweep.status])


@sweeps_app.command("show")
@handled
def show(sweep_id: SweepArg, as_json: AsJson = False) -> None:
    """A sweep: status, trial counts, compute, leaderboard, baseline and every run."""
    with client() as api:
        sweep = api.get_sweep(sweep_id)
    emit(sweep) if wants_json(as_json) else out.print(view(sweep))


@sweeps_app.command("list")
@handled
def list_sweeps(
    status: Annotated[str | None, typer.Option(help="only sweeps in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 20,
    as_json: AsJson = False,
) -> None:
    """Sweeps, newest first; piped, one tab-separated line a sweep (id, name, status,
    phase, trials, best mean)."""
    with client() as api:
        found = newest(lambda n: api.iter_sweeps(status, page_size=n), limit)
    rows = [summary_row(s) for s in found]
    if wants_json(as_json):
        emit(found)
    elif out.is_terminal:
        table = Table(*SUMMARY_COLUMNS, box=None, header_style="bold")
        for row in rows:
            table.add_row(*row)
        out.print(table)
    else:
        sys.stdout.write(tsv(rows))


@sweeps_app.command("cancel")
@handled
def cancel(sweep_id: SweepArg, as_json: AsJson = False) -> None:
    """Cancel a sweep and its unfinished jobs."""
    with client() as api:
        sweep = api.cancel_sweep(sweep_id)
    emit(sweep) if wants_json(as_json) else say(f"{sweep.id} {sweep.status}")


def follow(api: Client, sweep_id: str) -> Sweep:
    """Show the sweep until it ends: redrawn in place on a terminal, else line by line."""
    sweep = api.get_sweep(sweep_id)
    if out.is_terminal:
        with Live(view(sweep), console=out, refresh_per_second=2) as live:
            while not sweep.done:
                time.sleep(POLL_S)
                sweep = api.get_sweep(sweep_id)
                live.update(view(sweep))
    else:
        seen: dict[tuple[str, int], str] = {}
        while True:
            for line in changes(seen, sweep):
                say(line)
            if sweep.done:
                break
            time.sleep(POLL_S)
            sweep = api.get_sweep(sweep_id)
        out.print(leaderboard_table(sweep))
    say(outcome_line(sweep))
    return sweep


# -- how a sweep shows


def params_text(params: dict[str, Any]) -> str:
    return "  ".join(f"{k}={number(v)}" for k, v in params.items()) or "(the base)"


def mean_std(runs: Runs) -> str:
    if runs.mean is None:
        return ""
    spread = f" ± {runs.std * 100:.2f}" if runs.std is not None else ""
    return f"{runs.mean * 100:.2f}{spread}"


def leaderboard_table(sweep: Sweep) -> Table:
    """Best first: each configuration's val_acc % (mean ± sample std over its seeds)."""
    table = Table("#", "val_acc %", "seeds", "params", "jobs", title="leaderboard")
    rows: list[tuple[str, LeaderboardRow | Runs]] = [
        (str(i), row) for i, row in enumerate(sweep.leaderboard, 1)
    ]
    if sweep.baseline is not None:
        rows.append(("scratch", sweep.baseline))
    for rank, runs in rows:
        params = params_text(runs.params) if isinstance(runs, LeaderboardRow) else "supervised"
        seeds = ",".join(map(str, runs.seeds))
        table.add_row(rank, mean_std(runs), seeds, params, " ".join(runs.jobs))
    return table


def runs_table(sweep: Sweep) -> Table:
    table = Table("run", "job", "status", "val_acc", "epochs", "params")
    for t in sweep.trials:
        style = STYLE.get(t.status, "")
        what = t.error if t.error else params_text(t.params)
        table.add_row(
            f"{t.kind} {t.number}",
            t.job_id or "",
            Text(t.status, style),
            number(t.value),
            number(t.epochs),
            Text(what, "dim" if t.status == "pruned" else ""),
        )
    return table


def head(sweep: Sweep) -> Text:
    counts = "  ".join(f"{n} {s}" for s, n in sorted(sweep.counts.items()))
    line = Text.assemble((sweep.id, "bold"), f" {sweep.name}  ")
    line.append(sweep.status, STYLE.get(sweep.status, ""))
    line.append(f"  {sweep.phase}  trials: {counts or 'none yet'}")
    return line


def compute_line(sweep: SweepSummary) -> str:
    c = sweep.compute
    if not c.epochs_unpruned:
        return "compute: nothing trained yet"
    saved = 1 - c.epochs / c.epochs_unpruned
    return (
        f"compute: {number(c.epochs)} epochs of {number(c.epochs_unpruned)} unpruned "
        f"({saved:.0%} saved by pruning)"
    )


def view(sweep: Sweep) -> RenderableType:
    parts: list[RenderableType] = [head(sweep), Text(compute_line(sweep))]
    if sweep.error:
        parts.append(Text(f"error: {sweep.error.get('message')}", "red"))
    return Group(*parts, leaderboard_table(sweep), runs_table(sweep))


def changes(seen: dict[tuple[str, int], str], sweep: Sweep) -> Iterator[str]:
    """A line for each run whose status changed since `seen` (updated)."""
    for t in sweep.trials:
        key = (t.kind, t.number)
        if seen.get(key) != t.status:
            seen[key] = t.status
            value = f"  val_acc {number(t.value)}" if t.value is not None else ""
            yield f"{t.kind} {t.number} {t.status}{value}  {params_text(t.params)}"


def outcome_line(sweep: Sweep) -> str:
    if sweep.status == "failed" and sweep.error:
        return f"{sweep.id} failed: {sweep.error.get('message')}"
    best = sweep.leaderboard[0] if sweep.leaderboard else None
    top = f"  best {mean_std(best)}  {params_text(best.params)}" if best else ""
    return f"{sweep.id} {sweep.status}{top}"


SUMMARY_COLUMNS = ("id", "name", "status", "phase", "trials", "best val_acc %")


def summary_row(sweep: SweepSummary) -> list[str]:
    best = sweep.leaderboard[0] if sweep.leaderboard else None
    trials = str(sum(sweep.counts.values()))
    return [sweep.id, sweep.name, sweep.status, sweep.phase, trials, mean_std(best) if best else ""]
