"""`distillery list` and the other list commands when piped (a tab-separated line a row,
values whole), and `events` of a job resumed from an older checkpoint (each epoch once, with
the latest attempt's numbers), against a real API and worker."""

import json
from pathlib import Path

import pytest
from sqlalchemy import update

from service.db.sessions import session_scope
from service.db.tables import Job, utcnow
from service.jobs import lifecycle
from tests.client.conftest import SPEC_YAML, cli, spec_file
from tests.e2e.conftest import Service

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

IDLE_YAML = SPEC_YAML.replace("resources: {queue: e2e}", "resources: {queue: default}")


def idle_job(svc: Service, tmp_path: Path, name: str) -> str:
    """A job in a queue no worker takes: it stays queued."""
    text = IDLE_YAML.replace("name: digits-cli", f"name: {name}")
    result = cli(svc, "submit", str(spec_file(tmp_path, text)))
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_a_piped_list_is_one_tab_separated_line_a_job(svc: Service, tmp_path: Path) -> None:
    long_name = "a job name long enough to wrap any table at eighty columns, twice over"
    ids = [idle_job(svc, tmp_path, long_name) for _ in range(2)]
    listed = cli(svc, "list", "--status", "queued", "--limit", "500")
    assert listed.exit_code == 0, listed.output
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    mine = {r[0]: r for r in rows if r[0] in ids}
    assert sorted(mine) == sorted(ids)  # whole ids, first
    assert {tuple(r[1:6]) for r in mine.values()} == {
        (long_name, "queued", "supervised", "resnet8", "")
    }
    assert all(len(r) == 8 for r in rows)
    as_json = json.loads(cli(svc, "list", "--json", "--limit", "500").stdout)
    assert set(ids) <= {j["id"] for j in as_json}


def test_the_other_piped_lists_are_tab_separated_too(svc: Service) -> None:
    url = "http://127.0.0.1:9/a-receiver-url-long-enough-to-be-cut-on-a-terminal"
    hook_id = cli(svc, "webhooks", "create", url).stdout.split()[0]
    rows = [line.split("\t") for line in cli(svc, "webhooks", "list").stdout.splitlines()]
    assert [r[:2] for r in rows if r[0] == hook_id] == [[hook_id, url]]
    cli(svc, "webhooks", "delete", hook_id)


def retrain_epoch_two(job_id: str) -> None:
    """Attempt 1 records epochs 1-2 and its worker is lost; attempt 2 (from epoch 1's
    checkpoint) records epoch 2 again, then epoch 3, and succeeds."""
    with session_scope() as s:
        assert lifecycle.claim(s, job_id, "w1", lease_s=60) is not None
    for epoch, val_acc in ((1, 0.5), (2, 0.9)):
        with session_scope() as s:
            assert lifecycle.record_epoch(s, job_id, "w1", {"epoch": epoch, "val_acc": val_acc})
    with session_scope() as s:  # the lease runs out; the API's watchdog or this one requeues
        s.execute(update(Job).where(Job.id == job_id).values(lease_until=utcnow()))
    with session_scope() as s:
        lifecycle.watchdog(s)
    with session_scope() as s:
        assert lifecycle.claim(s, job_id, "w2", lease_s=60) is not None
    for epoch, val_acc in ((2, 0.6), (3, 0.7)):
        with session_scope() as s:
            assert lifecycle.record_epoch(s, job_id, "w2", {"epoch": epoch, "val_acc": val_acc})
    with session_scope() as s:
        assert lifecycle.finish(s, job_id, "w2", result={}) == "succeeded"


def test_events_show_a_retrained_epoch_once_with_the_latest_attempts_numbers(
    svc: Service, tmp_path: Path
) -> None:
    job_id = idle_job(svc, tmp_path, "resumed")
    retrain_epoch_two(job_id)
    for args in ([], ["--follow"]):
        lines = cli(svc, "events", job_id, *args).stdout.splitlines()
        epochs = [line.split("metrics: ")[1] for line in lines if " metrics: " in line]
        assert epochs == ["epoch 1  val_acc 0.5", "epoch 2  val_acc 0.6", "epoch 3  val_acc 0.7"]
    raw = [json.loads(line) for line in cli(svc, "events", job_id, "--json").stdout.splitlines()]
    assert [(e["data"]["epoch"], e["attempt"]) for e in raw if e["type"] == "metrics"] == [
        (1, 1),
        (2, 2),
        (3, 2),
    ]
    compared = json.loads(cli(svc, "compare", job_id, job_id, "--json").stdout)["rows"]
    assert compared["best val_acc"] == ["0.7", "0.7"] and compared["best epoch"] == [3, 3]
