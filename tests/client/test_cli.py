"""`distillery`'s client commands against a real API and worker, through typer's runner:
what they print and the exit codes scripts rely on."""

import json
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import Result

from distillery_client import Client, display
from distillery_client.transfer import sha256_of
from tests.client.conftest import SPEC_YAML, cli, spec_file
from tests.e2e.conftest import Service
from tests.e2e.test_fleet import registered
from tests.service.jobs.test_webhooks import Receiver

# one backend, the production shape: the client only speaks HTTP, which e2e covers on both
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

IDLE_YAML = SPEC_YAML.replace("resources: {queue: e2e}", "resources: {queue: default}")


def test_submit_wait_trains_to_success_with_numbers(submitted: tuple[Result, str]) -> None:
    result, job_id = submitted
    assert result.exit_code == 0, result.output
    assert job_id.startswith("job_")
    metrics = [line for line in result.stdout.splitlines() if " metrics: epoch 1 " in line]
    assert len(metrics) == 1 and "val_acc" in metrics[0] and "train_loss" in metrics[0]
    assert result.stdout.splitlines()[-1].startswith(f"{job_id} succeeded")


def test_a_refused_field_is_printed_against_the_file(
    svc: Service, api: Client, tmp_path: Path
) -> None:
    before = [j.id for j in api.iter_jobs()]
    bad = spec_file(tmp_path, SPEC_YAML.replace("epochs: 1", "epochs: -3"))
    result = cli(svc, "submit", str(bad))
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()  # log records may come first (httpx logs each request)
    headline = lines.index(f"{bad}: Invalid request")  # the title; each field on its own line
    assert "train.epochs:" in lines[headline + 1] and "(line 6)" in lines[headline + 1]
    assert "Traceback" not in result.output
    assert [j.id for j in api.iter_jobs()] == before
    unreadable = spec_file(tmp_path, "train: [unclosed")
    assert cli(svc, "submit", str(unreadable)).exit_code == 2


def test_watch_exits_by_outcome(svc: Service, trained: str, tmp_path: Path) -> None:
    assert cli(svc, "watch", trained).exit_code == 0
    idle = cli(svc, "submit", str(spec_file(tmp_path, IDLE_YAML)))
    job_id = idle.stdout.strip()
    assert cli(svc, "cancel", job_id).stdout.strip() == f"{job_id} cancelled"
    cancelled = cli(svc, "watch", job_id)
    assert cancelled.exit_code == 3 and cancelled.stdout.splitlines()[-1] == f"{job_id} cancelled"
    missing = cli(svc, "watch", "job_missing")
    assert missing.exit_code == 4 and "not found" in missing.stderr


def test_list_show_events_and_json(svc: Service, trained: str) -> None:
    listed = cli(svc, "--json", "list", "--status", "succeeded", "--limit", "500")
    assert trained in [j["id"] for j in json.loads(listed.stdout)]
    assert trained[:10] in cli(svc, "list").stdout
    shown = cli(svc, "show", trained).stdout
    assert "succeeded" in shown and "epoch 1/1" in shown and "val_acc" in shown
    assert json.loads(cli(svc, "show", trained, "--json").stdout)["id"] == trained
    events = cli(svc, "events", trained).stdout
    assert "job succeeded" in events and "metrics: epoch 1" in events


def test_download_verifies_and_refuses_a_tampered_file(
    svc: Service, api: Client, trained: str, tmp_path: Path
) -> None:
    out = tmp_path / "student.safetensors"
    result = cli(svc, "download", trained, "student.safetensors", "-o", str(out))
    assert result.exit_code == 0, result.output
    listed = {a.name: a.sha256 for a in api.list_artifacts(trained).data}
    assert sha256_of(out) == listed["student.safetensors"]
    stored = Path(svc.env["DISTILLERY_DATA_DIR"], "artifacts", "jobs", trained, "model.json")
    original = stored.read_bytes()
    stored.write_bytes(original[:-2] + b" }")
    try:
        refused = cli(svc, "download", trained, "model.json", "-o", str(tmp_path / "m.json"))
    finally:
        stored.write_bytes(original)
    assert refused.exit_code == 5 and "sha256" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.safetensors"]


def test_compare_shows_metrics_and_differing_spec(
    svc: Service, trained: str, tmp_path: Path
) -> None:
    other = cli(svc, "submit", str(spec_file(tmp_path, IDLE_YAML.replace("64", "32"))))
    other_id = other.stdout.strip()
    cli(svc, "cancel", other_id)
    rows = json.loads(cli(svc, "compare", trained, other_id, "--json").stdout)["rows"]
    assert rows["status"] == ["succeeded", "cancelled"]
    assert rows["best val_acc"][0] and rows["best val_acc"][1] == ""
    assert rows["spec train.batch_size"] == [64, 32]
    assert rows["spec resources.queue"] == ["e2e", "default"]
    assert "spec student.arch" not in rows
    table = cli(svc, "compare", trained, other_id)
    assert table.exit_code == 0 and "best val_acc" in table.stdout


def test_the_live_view_shows_progress_and_metrics(api: Client, trained: str) -> None:
    job = api.get_job(trained)
    metrics = [e for e in api.iter_events(trained) if e.type == "metrics"][-1]
    console = Console(record=True, width=120, force_terminal=True)
    console.print(display.watch_view(job, metrics.data, None))
    text = console.export_text()
    assert "epoch  1/1" in text and "succeeded" in text and "val_acc" in text
    steps = job.progress["steps_per_epoch"]
    assert f"step   {steps}/{steps}" in text


def test_webhooks_commands_register_list_show_deliveries_and_retry(
    svc: Service, tmp_path: Path
) -> None:
    receiver = Receiver()
    try:
        created = cli(svc, "webhooks", "create", receiver.url, "--event", "job.cancelled")
        assert created.exit_code == 0, created.output
        hook_id, secret = created.stdout.split()
        assert hook_id.startswith("wh") and secret.startswith("whsec_")
        assert hook_id in listed(svc)
        assert "active" in cli(svc, "webhooks", "list").stdout
        assert cli(svc, "webhooks", "resume", hook_id).stdout.strip() == f"{hook_id} active"
        assert json.loads(cli(svc, "webhooks", "events", hook_id, "--json").stdout) == []
        idle = cli(svc, "submit", str(spec_file(tmp_path, IDLE_YAML))).stdout.strip()
        assert cli(svc, "cancel", idle).exit_code == 0
        deliveries = delivered(svc, hook_id)
        assert [(d["event"], d["job_id"], d["last_status_code"]) for d in deliveries] == [
            ("job.cancelled", idle, 200)
        ]
        table = cli(svc, "webhooks", "deliveries", hook_id).stdout
        assert deliveries[0]["id"][:8] in table and "200" in table
        retried = cli(svc, "webhooks", "retry", hook_id, deliveries[0]["id"])
        assert retried.exit_code == 0 and retried.stdout.startswith(deliveries[0]["id"])
        assert len(delivered(svc, hook_id, attempts=2)) == 1
        assert len(receiver.payloads(secret)) == 2  # signed with the secret the CLI printed
    finally:
        receiver.close()
    assert cli(svc, "webhooks", "delete", hook_id).stdout.strip() == f"{hook_id} deleted"
    assert hook_id not in listed(svc)
    assert cli(svc, "webhooks", "retry", hook_id, "msg_missing").exit_code == 4


def listed(svc: Service) -> list[str]:
    return [h["id"] for h in json.loads(cli(svc, "webhooks", "list", "--json").stdout)]


def delivered(svc: Service, hook_id: str, attempts: int = 1) -> list[dict]:
    """The webhook's deliveries once each succeeded after `attempts` attempts."""
    deadline = time.monotonic() + 30
    while True:
        shown = json.loads(cli(svc, "webhooks", "deliveries", hook_id, "--json").stdout)
        if shown and all(d["status"] == "succeeded" and d["attempts"] == attempts for d in shown):
            return list(shown)
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)


def test_workers_lists_the_fleet(svc: Service, api: Client) -> None:
    worker = registered(svc)
    assert [w.name for w in api.list_workers().data if w.live] == [worker["name"]]
    listed = json.loads(cli(svc, "workers", "--json").stdout)
    assert [(w["name"], w["live"]) for w in listed] == [(worker["name"], True)]
    table = cli(svc, "workers").stdout
    assert worker["name"] in table and f"{worker['memory_bytes'] / 2**30:.1f} GiB" in table


def test_recipes_list_and_show(svc: Service, api: Client) -> None:
    pair = "dkd-cifar100-resnet32x4-resnet8x4"
    recipe = api.get_recipe(pair)
    assert recipe.method == "dkd" and recipe.top1 == 76.32 and recipe.spec["method"]["beta"] == 8
    filters = ["--method", "dkd", "--teacher", "resnet32x4", "--student", "resnet8x4"]
    piped = cli(svc, "recipes", "list", *filters).stdout.splitlines()
    assert [line.split("\t") for line in piped] == [
        [pair, "dkd", "resnet32x4", "resnet8x4", "76.32"],
        ["dkd-ls-cifar100-resnet32x4-resnet8x4", "dkd", "resnet32x4", "resnet8x4", "77.01"],
    ]
    assert len(json.loads(cli(svc, "recipes", "list", "--json").stdout)) == len(
        api.list_recipes().data
    )
    shown = cli(svc, "recipes", "show", pair)
    assert shown.exit_code == 0 and "res32x4_res8x4.yaml" in shown.stdout
    assert "resnet32x4 -> resnet8x4" in shown.stdout and '"beta": 8.0' in shown.stdout
    assert cli(svc, "recipes", "show", "no-such-recipe").exit_code == 4
