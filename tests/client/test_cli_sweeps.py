"""`distillery sweep ...` against a real API and worker: submit --wait follows a one-trial
sweep to its leaderboard; show, list and --json print it; a refused sweep names each field
at its line in the file; cancel and watch's exit codes."""

import json
from pathlib import Path

import pytest

from tests.client.conftest import cli
from tests.e2e.conftest import QUEUE, Service

# one backend, the production shape: the client only speaks HTTP, which e2e covers on both
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

SWEEP_YAML = f"""\
name: cli-sweep
base:
  method: {{name: supervised}}
  student: {{arch: cnn_small}}
  data: {{dataset: digits, val_fraction: 0.2}}
  train: {{epochs: 1, batch_size: 64}}
  resources: {{queue: {QUEUE}}}
space:
  train.optimizer.lr: {{choices: [0.1]}}
trials: 1
"""


def sweep_file(tmp: Path, text: str) -> Path:
    path = tmp / "sweep.yaml"
    path.write_text(text)
    return path


def test_submit_wait_follows_the_sweep_to_its_leaderboard(svc: Service, tmp_path: Path) -> None:
    result = cli(svc, "sweep", "submit", str(sweep_file(tmp_path, SWEEP_YAML)), "--wait")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    sweep_id = lines[0]
    assert sweep_id.startswith("swp_")
    assert any(line.startswith("search 0 succeeded  val_acc ") for line in lines)
    assert lines[-1].startswith(f"{sweep_id} succeeded  best ")
    assert lines[-1].endswith("train.optimizer.lr=0.1")

    shown = cli(svc, "sweep", "show", sweep_id)
    assert shown.exit_code == 0 and "leaderboard" in shown.stdout
    assert "compute: 1 epochs of 1 unpruned (0% saved by pruning)" in shown.stdout
    as_json = json.loads(cli(svc, "sweep", "show", sweep_id, "--json").stdout)
    assert as_json["status"] == "succeeded" and as_json["leaderboard"][0]["seeds"] == [0]
    listed = cli(svc, "sweep", "list").stdout.splitlines()
    row = next(line.split("\t") for line in listed if line.startswith(sweep_id))
    assert row[:5] == [sweep_id, "cli-sweep", "succeeded", "done", "1"]
    finished = cli(svc, "sweep", "cancel", sweep_id)
    assert finished.exit_code == 4 and "already succeeded" in finished.stderr


def test_a_refused_sweep_names_each_field_at_its_line(svc: Service, tmp_path: Path) -> None:
    bad = SWEEP_YAML.replace("{choices: [0.1]}", "{low: 0.2, high: 0.1}").replace(
        "epochs: 1", "epochs: 0"
    )
    result = cli(svc, "sweep", "submit", str(sweep_file(tmp_path, bad)))
    assert result.exit_code == 2, result.output
    errors = result.stderr.splitlines()
    assert any("space.train.optimizer.lr:" in e and "(line 9)" in e for e in errors), errors
    assert any("base.train.epochs:" in e and "(line 6)" in e for e in errors), errors
    assert "Traceback" not in result.output


def test_cancel_and_watch_exit_codes(svc: Service, tmp_path: Path) -> None:
    idle = SWEEP_YAML.replace(f"queue: {QUEUE}", "queue: default")  # no worker takes it
    sweep_id = cli(svc, "sweep", "submit", str(sweep_file(tmp_path, idle))).stdout.strip()
    cancelled = cli(svc, "sweep", "cancel", sweep_id)
    assert cancelled.stdout.strip() == f"{sweep_id} cancelled"
    watched = cli(svc, "sweep", "watch", sweep_id)
    assert watched.exit_code == 3 and watched.stdout.splitlines()[-1] == f"{sweep_id} cancelled"
    assert cli(svc, "sweep", "watch", "swp_missing").exit_code == 4
