"""How the CLI shows jobs: rich tables and the live watch view on a terminal, one plain line
per event otherwise. Pure functions of what the API answered."""

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from distillery_client.models import Event, Job

STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "cancelling": "yellow",
    "pruned": "dim",
    "running": "cyan",
}


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def metric_terms(metrics: Mapping[str, Any]) -> str:
    """`train_loss 0.512  val_acc 0.912`: an epoch's numbers, its epoch left out."""
    return "  ".join(f"{k} {number(v)}" for k, v in metrics.items() if k != "epoch")


def duration(seconds: float | None) -> str:
    return "?" if seconds is None else str(timedelta(seconds=round(seconds)))


def epochs_of(job: Job) -> int | None:
    """The job's total epochs: its progress says so, else its spec."""
    total = job.progress.get("epochs") or job.spec.get("train", {}).get("epochs")
    return int(total) if total else None


def progress_line(job: Job) -> str:
    """`epoch 3/8  step 12/23  412 img/s  ETA 0:01:05`, from what the progress holds."""
    p, total = job.progress, epochs_of(job)
    parts = []
    if "phase" in p:
        parts.append(str(p["phase"]))
    if "epoch" in p:
        parts.append(f"epoch {p['epoch']}/{total or '?'}")
    if "step" in p:
        parts.append(f"step {p['step']}/{p.get('steps_per_epoch', '?')}")
    if p.get("images_per_s") is not None:
        parts.append(f"{p['images_per_s']:.0f} img/s")
    if "eta_s" in p:
        parts.append(f"ETA {duration(p['eta_s'])}")
    return "  ".join(parts)


def event_line(event: Event, again: bool = False) -> str:
    """One plain line for an event; a metrics event with its numbers. `again`: its epoch
    was shown before, from an earlier attempt (this one resumed from an older checkpoint)."""
    when = event.created_at.strftime("%H:%M:%S")
    if event.type == "metrics":
        redo = f" (again, attempt {event.attempt})" if again else ""
        return f"{when} metrics: epoch {event.data.get('epoch')}{redo}  {metric_terms(event.data)}"
    return f"{when} {event.type}: {event.message}"


def latest_attempts(events: Iterable[Event]) -> list[Event]:
    """The events less each epoch's metrics that a later attempt recorded again."""
    events = list(events)
    last = {}
    for e in sorted(events, key=lambda e: (e.attempt, e.id)):
        if e.type == "metrics":
            last[e.data.get("epoch")] = e.id
    return [e for e in events if e.type != "metrics" or last[e.data.get("epoch")] == e.id]


class Feed:
    """Lines of a followed job's events, each epoch's metrics marked when shown again."""

    def __init__(self) -> None:
        self.epochs: set[Any] = set()

    def line(self, event: Event) -> str:
        epoch = event.data.get("epoch") if event.type == "metrics" else None
        again = epoch is not None and epoch in self.epochs
        if epoch is not None:
            self.epochs.add(epoch)
        return event_line(event, again)


def outcome_line(job: Job) -> str:
    """The last line of a watch: how the job ended, with its numbers or its error."""
    if job.status == "failed" and job.error:
        return f"{job.id} failed: {job.error.get('code')}: {job.error.get('message')}"
    return f"{job.id} {job.status}  {metric_terms(job.metrics)}".rstrip()


def watch_view(job: Job, metrics: Mapping[str, Any], last: Event | None) -> RenderableType:
    """The live view: status, an epochs bar and a steps bar, throughput, ETA, the latest
    epoch's loss terms and accuracy, the latest event."""
    p, total = job.progress, epochs_of(job)
    style = STATUS_STYLE.get(job.status, "")
    head = Text.assemble((job.id, "bold"), f" {job.name}  ", (job.status, style))
    if "phase" in p:
        head.append(f"  {p['phase']}")
    grid = Table.grid(padding=(0, 2))
    epoch, step, steps = p.get("epoch"), p.get("step", 0), p.get("steps_per_epoch")
    if epoch is not None and total:
        done = (epoch - 1) + (step / steps if steps else 0)
        grid.add_row("epoch", f"{epoch}/{total}", ProgressBar(total=total, completed=done))
    if steps:
        grid.add_row("step", f"{step}/{steps}", ProgressBar(total=steps, completed=step))
    rate = p.get("images_per_s")
    speed = f"{rate:.0f} img/s" if rate is not None else ""
    if speed or "eta_s" in p:
        eta = f"ETA {duration(p['eta_s'])}" if "eta_s" in p else ""
        grid.add_row("speed", speed, eta)
    parts: list[RenderableType] = [head, grid]
    if metrics:
        parts.append(Text(f"epoch {metrics.get('epoch')}: {metric_terms(metrics)}"))
    if last is not None and last.type != "metrics":
        parts.append(Text(f"{last.type}: {last.message}", style="dim"))
    return Group(*parts)


JOB_COLUMNS = ("id", "name", "status", "method", "student", "progress", "best val_acc", "created")
# what a narrow terminal keeps longest, most valuable first
JOB_KEPT = ("id", "status", "progress", "best val_acc", "name", "created", "student", "method")
GAP = 2  # columns apart
MIN_SOFT, MIN_ID = 12, 12  # the narrowest a free-text value (an id) is cut to, with its "…"


def job_row(job: Job) -> list[str]:
    """A job's values, in JOB_COLUMNS' order."""
    total, epoch = epochs_of(job), job.progress.get("epoch")
    return [
        job.id,
        job.name,
        job.status,
        job.method,
        str(job.spec.get("student", {}).get("arch", "")),
        f"{epoch}/{total}" if epoch else "",
        number((job.best or {}).get("val_acc")),
        job.created_at.strftime("%Y-%m-%d %H:%M"),
    ]


def jobs_table(jobs: Iterable[Job], width: int) -> Table:
    rows = [job_row(j) for j in jobs]
    return fitted(JOB_COLUMNS, rows, width, JOB_KEPT, soft=("name",))


def row_values(columns: Iterable[str], rows: Iterable[Any]) -> list[list[str]]:
    """The named attributes of each object, as text."""
    return [[number(getattr(row, c)) for c in columns] for row in rows]


def tsv(rows: Iterable[list[str]]) -> str:
    """One tab-separated line a row, no header, every value whole (for a pipe); tabs and
    newlines inside a value become spaces."""
    return "".join("\t".join(" ".join(v.split()) for v in row) + "\n" for row in rows)


def fitted(
    columns: tuple[str, ...],
    rows: list[list[str]],
    width: int,
    kept: tuple[str, ...],
    soft: tuple[str, ...] = (),
) -> Table:
    """A borderless table at most `width` wide, one line a row (fit_widths); a value cut
    ends in an ellipsis."""
    natural = {c: max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)}
    widths = fit_widths(natural, kept, width, soft)
    table = Table(box=None, pad_edge=False, padding=(0, GAP // 2), header_style="bold")
    shown = [i for i, c in enumerate(columns) if c in widths]
    for i in shown:
        table.add_column(columns[i], width=widths[columns[i]], no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(styled(columns[i], row[i]) for i in shown))
    return table


def fit_widths(
    natural: Mapping[str, int], kept: tuple[str, ...], width: int, soft: tuple[str, ...]
) -> dict[str, int]:
    """Column -> its width. The columns last in `kept` go first, down to two, until the rest
    fit with the `soft` ones (free text) cut to MIN_SOFT; then those are cut as far as
    needed, and last the ids (`kept[0]`) down to MIN_ID."""
    floor = {c: min(n, MIN_SOFT) if c in soft else n for c, n in natural.items()}
    shown = list(kept)
    while len(shown) > 2 and span(floor, shown) > width:
        shown.pop()
    widths = {c: natural[c] for c in shown}
    floor[kept[0]] = min(natural[kept[0]], MIN_ID)
    for c in [*(c for c in shown if c in soft), kept[0]]:
        excess = span(widths, shown) - width
        widths[c] -= max(0, min(excess, widths[c] - floor[c]))
    return widths


def span(widths: Mapping[str, int], columns: list[str]) -> int:
    return sum(widths[c] for c in columns) + GAP * (len(columns) - 1)


def styled(column: str, value: str) -> Text:
    return Text(value, STATUS_STYLE.get(value, "") if column == "status" else "")


def fields_table(fields: Mapping[str, Any]) -> Table:
    """Two columns, name and value, for one object's fields."""
    table = Table.grid(padding=(0, 2))
    for key, value in fields.items():
        table.add_row(Text(key, "bold"), value if isinstance(value, Text) else number(value))
    return table


def job_fields(job: Job) -> dict[str, Any]:
    """What `show` prints of a job."""
    teacher = job.teacher_job_id or job.teacher_model_id
    fields: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "status": Text(job.status, STATUS_STYLE.get(job.status, "")),
        "method": job.method,
        "student": job.spec.get("student", {}).get("arch"),
        "teacher": teacher,
        "dataset": job.spec.get("data", {}).get("dataset"),
        "attempt": f"{job.attempt}/{job.max_attempts}",
        "progress": progress_line(job),
        "metrics": metric_terms(job.metrics),
        "created": job.created_at.isoformat(),
        "started": job.started_at.isoformat() if job.started_at else None,
        "finished": job.finished_at.isoformat() if job.finished_at else None,
    }
    if job.error:
        fields["error"] = f"{job.error.get('code')}: {job.error.get('message')}"
    return {k: v for k, v in fields.items() if v not in (None, "")}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: {"train": {"epochs": 3}} -> {"train.epochs": 3}."""
    if not isinstance(value, Mapping) or not value:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out |= flatten(item, f"{prefix}.{key}" if prefix else str(key))
    return out


def comparison(jobs: list[Job]) -> dict[str, list[Any]]:
    """Rows of `compare`, one value per job: outcome, best and final metrics, then the spec
    fields that are not the same in every job."""
    best = [j.best or {} for j in jobs]
    rows: dict[str, list[Any]] = {
        "status": [j.status for j in jobs],
        "method": [j.method for j in jobs],
        "best val_acc": [number(b.get("val_acc")) for b in best],
        "best epoch": [b.get("epoch") for b in best],
    }
    for key in sorted({k for j in jobs for k in j.metrics}):
        rows[f"final {key}"] = [number(j.metrics.get(key)) for j in jobs]
    specs = [flatten(j.spec) for j in jobs]
    for key in sorted({k for s in specs for k in s}):
        values = [s.get(key) for s in specs]
        if any(v != values[0] for v in values):
            rows[f"spec {key}"] = values
    return rows


def comparison_table(jobs: list[Job], rows: Mapping[str, list[Any]]) -> Table:
    table = Table("", *(f"{j.id}\n{j.name}" for j in jobs))
    for key, values in rows.items():
        table.add_row(key, *(number(v) if not isinstance(v, str) else v for v in values))
    return table
