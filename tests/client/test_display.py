"""How the CLI lays out jobs and events, as pure functions of what the API answered: a list
fits the terminal one line a job, a pipe gets whole values, and an epoch a later attempt
retrained shows that attempt's numbers."""

from datetime import datetime
from typing import Any

import pytest
from rich.console import Console

from distillery_client import display
from distillery_client.models import Event, Job

LONG_NAME = "digits-kd resnet8 from resnet32x4, temperature sweep, seed 0"


def job(i: int, **fields: Any) -> Job:
    base: dict[str, Any] = {
        "id": f"job_{i:024x}",
        "name": LONG_NAME,
        "status": "cancelling",
        "method": "supervised",
        "queue": "default",
        "teacher_job_id": None,
        "teacher_model_id": None,
        "init_model_id": None,
        "dataset_id": None,
        "attempt": 1,
        "max_attempts": 3,
        "progress": {"epoch": 3, "epochs": 30},
        "metrics": {"epoch": 3, "val_acc": 0.625},
        "best": {"val_acc": 0.636, "epoch": 2},
        "result": None,
        "error": None,
        "spec": {"student": {"arch": "resnet8"}},
        "created_at": datetime(2026, 12, 7, 17, 0),
        "started_at": None,
        "finished_at": None,
    }
    return Job(**(base | fields))


def rendered(jobs: list[Job], width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=True)
    console.print(display.jobs_table(jobs, width))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 100, 200])
def test_a_job_list_is_one_line_a_job_with_whole_ids(width: int) -> None:
    jobs = [job(1), job(2)]
    lines = rendered(jobs, width)
    assert len(lines) == 1 + len(jobs)  # a header, then one line each: nothing wrapped
    assert all(len(line) <= width for line in lines)
    assert [line.split()[0] for line in lines[1:]] == [j.id for j in jobs]
    header = lines[0].split()
    assert header[:2] == ["id", "name"] and "status" in header and "progress" in header
    assert "0.636" in lines[1] and "3/30" in lines[1]  # the best, not the latest 0.625


def test_a_narrow_terminal_drops_the_least_useful_columns_first() -> None:
    at_80 = rendered([job(1)], 80)[0].split()
    assert "method" not in at_80 and "student" not in at_80
    assert {"status", "progress", "best"} <= set(at_80)
    at_40 = rendered([job(1)], 40)
    assert at_40[0].split() == ["id", "status"] and at_40[1].startswith("job_")
    at_30 = rendered([job(1)], 30)
    assert all(len(line) <= 30 for line in at_30) and "…" in at_30[1]  # the id cut last


def test_a_pipe_gets_tab_separated_whole_values() -> None:
    text = display.tsv([display.job_row(job(1, name="two\twords\nhere"))])
    fields = text.removesuffix("\n").split("\t")
    assert fields == [
        f"job_{1:024x}",
        "two words here",
        "cancelling",
        "supervised",
        "resnet8",
        "3/30",
        "0.636",
        "2026-12-07 17:00",
    ]


def event(ident: int, attempt: int, type_: str = "metrics", **data: Any) -> Event:
    return Event(
        id=ident,
        type=type_,
        message="",
        data=data,
        attempt=attempt,
        created_at=datetime(2026, 12, 7, 17, 0, ident),
    )


def test_an_epoch_retrained_by_a_later_attempt_shows_that_attempts_numbers() -> None:
    events = [
        event(1, 1, epoch=1, val_acc=0.5),
        event(2, 1, epoch=2, val_acc=0.9),
        event(3, 1, "status", status="queued"),
        event(4, 2, epoch=2, val_acc=0.6),
        event(5, 2, epoch=3, val_acc=0.7),
    ]
    kept = display.latest_attempts(events)
    assert [e.id for e in kept] == [1, 3, 4, 5]
    feed = display.Feed()
    lines = [feed.line(e) for e in events]
    assert "epoch 2 " in lines[1] and "again" not in lines[1]
    assert "epoch 2 (again, attempt 2)" in lines[3] and "val_acc 0.6" in lines[3]
    assert "again" not in lines[4]
