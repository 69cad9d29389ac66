"""DDP with gloo on the CPU: two processes take the step one process takes on the same
global batch (same losses, same weights), and only rank 0 reports and writes checkpoints."""

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from worker.engine.data import DataSplit, load_dataset
from worker.engine.distributed import broadcast_from_main, process_group
from worker.engine.loop import train
from worker.engine.zoo import build_model

from .helpers import Recorder, first_train, make_plan

pytestmark = pytest.mark.slow  # spawns training processes

WORLD = 2


def digits_1536() -> DataSplit:
    """Digits cut to 24 whole batches of 64, so one process drops no partial batch either."""
    data = load_dataset("digits", val_fraction=0.1, seed=0)
    return first_train(data, 1536)


def kd_plan(data: DataSplit, checkpoint_dir: Path):
    torch.manual_seed(7)
    teacher = build_model("mlp", data.num_classes, 1)
    return make_plan(
        data,
        checkpoint_dir,
        arch="mlp",
        method="kd",
        teacher=teacher,
        epochs=2,
        precision="fp32",
        augment="crop",
    )


def rank_main(rank: int, workdir: Path) -> None:
    torch.set_num_threads(1)
    with process_group(rank, WORLD, workdir / "rendezvous", torch.device("cpu")):
        recorder = Recorder()
        plan = kd_plan(digits_1536(), workdir / f"rank{rank}")
        result = train(plan, recorder)
        apart = torch.nn.Linear(2, 2).requires_grad_(False)
        apart.weight.fill_(rank)  # each rank its own weights, as if they had drifted
        broadcast_from_main(apart)
    save_file(plan.method.student.state_dict(), str(workdir / f"student{rank}.safetensors"))
    save_file(apart.state_dict(), str(workdir / f"apart{rank}.safetensors"))
    report = {"history": result.history, "epochs": len(recorder.epochs)}
    report |= {"steps": len(recorder.steps), "checkpoints": len(recorder.checkpoints)}
    (workdir / f"report{rank}.json").write_text(json.dumps(report))


def test_two_gloo_processes_match_one_on_the_same_global_batch(tmp_path: Path) -> None:
    mp.spawn(rank_main, args=(tmp_path,), nprocs=WORLD, join=True)
    plan = kd_plan(digits_1536(), tmp_path / "single")
    single = train(plan, Recorder())

    reports = [json.loads((tmp_path / f"report{r}.json").read_text()) for r in range(WORLD)]
    for key in ("train_loss", "train_ce", "train_kd", "val_acc"):
        want = [h[key] for h in single.history]
        for report in reports:
            got = [h[key] for h in report["history"]]
            assert torch.allclose(torch.tensor(got), torch.tensor(want), rtol=1e-5), key
    expected = plan.method.student.state_dict()
    for r in range(WORLD):
        weights = load_file(str(tmp_path / f"student{r}.safetensors"))
        for name, value in expected.items():
            assert torch.allclose(weights[name], value, atol=1e-5), (r, name)

    assert (reports[0]["epochs"], reports[0]["steps"]) == (2, 2 * 24)
    assert reports[0]["checkpoints"] == 2 and (tmp_path / "rank0/resume.safetensors").exists()
    assert reports[1] | {"history": None} == {
        "history": None,
        "epochs": 0,
        "steps": 0,
        "checkpoints": 0,
    }
    assert not (tmp_path / "rank1").exists()
    apart = [load_file(str(tmp_path / f"apart{r}.safetensors"))["weight"] for r in range(WORLD)]
    assert torch.equal(apart[1], torch.zeros(2, 2)) and torch.equal(apart[0], apart[1])
