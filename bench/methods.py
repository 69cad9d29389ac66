"""Every method from one teacher, over N seeds: mean +- std val accuracy and wall time.

    python bench/methods.py --dataset digits --device cpu --seeds 3
    python bench/methods.py --dataset synthetic --teacher resnet32x4 --student resnet8x4 \\
        --device cuda --epochs 30 --teacher-epochs 60

Runs the engine directly (no service): one supervised teacher (with route checkpoints for
RCO), then a scratch student, KD and each requested method with the same student and data.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from worker.engine.data import load_dataset
from worker.engine.loop import Quiet, TrainPlan, train
from worker.engine.methods import create
from worker.engine.models import build_model

METHODS: dict[str, dict[str, Any]] = {
    "scratch": {"name": "supervised"},
    "kd": {"name": "kd"},
    "kdcl": {"name": "kdcl", "ensemble": "general"},
    "ddgsd": {"name": "ddgsd"},
    "rco": {"name": "rco"},
    "iekd": {"name": "iekd", "ae_epochs": 5},
    "reviewkd": {"name": "reviewkd"},
}
NO_TEACHER = {"scratch", "kdcl", "ddgsd"}


def run_one(
    method: Any,
    data: Any,
    args: argparse.Namespace,
    seed: int,
    epochs: int,
    workdir: Path,
    milestones: list[int],
) -> tuple[float, float]:
    schedule = {"name": "multistep", "milestones": milestones, "gamma": 0.1}
    plan = TrainPlan(
        method=method,
        data=data,
        epochs=epochs,
        batch_size=args.batch_size,
        optimizer={"name": "sgd", "lr": args.lr, "momentum": 0.9, "weight_decay": 5e-4},
        schedule=schedule,
        seed=seed,
        precision="auto",
        device=args.device,
        augment=data.default_augment,
        checkpoint_dir=workdir,
        save_route=method.saves_route,
    )
    started = time.perf_counter()
    result = train(plan, Quiet())
    return result.final_metrics["val_acc"], time.perf_counter() - started


def drops(epochs: int) -> list[int]:
    return sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)} - {epochs})


def teacher_for(data: Any, args: argparse.Namespace, workdir: Path) -> tuple[Any, dict]:
    torch.manual_seed(0)
    model = build_model(args.teacher, data.num_classes, data.input_shape[0])
    method = create(
        "supervised", student=model, teacher=None, params={}, input_shape=data.input_shape
    )
    acc, secs = run_one(
        method, data, args, 0, args.teacher_epochs, workdir, drops(args.teacher_epochs)
    )
    print(f"teacher {args.teacher}: val_acc {acc:.4f} in {secs:.1f}s")
    route = sorted((workdir / "route").glob("epoch_*.safetensors"))
    extra = {
        "route": [{"epoch": int(p.stem[6:]), "path": str(p)} for p in route],
        "teacher_epochs": args.teacher_epochs,
        "teacher_milestones": drops(args.teacher_epochs),
    }
    return model.eval(), extra


def bench_method(
    name: str, teacher: Any, route: dict, data: Any, args: argparse.Namespace, root: Path
) -> tuple[list[float], list[float]]:
    accs, secs = [], []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        student = build_model(args.student, data.num_classes, data.input_shape[0])
        params = {k: v for k, v in METHODS[name].items() if k != "name"}
        if name == "kdcl":
            params["peers"] = [args.student]
        params |= route | {"student_epochs": args.epochs} if name == "rco" else {}
        method = create(
            METHODS[name]["name"],
            student=student,
            teacher=None if name in NO_TEACHER else teacher,
            params=params,
            input_shape=data.input_shape,
        )
        workdir = root / f"{name}-{seed}"
        acc, sec = run_one(method, data, args, seed, args.epochs, workdir, drops(args.epochs))
        accs.append(acc)
        secs.append(sec)
    return accs, secs


def fmt(values: list[float], scale: float = 1.0) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:7.2f} +- {std:5.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits", choices=["digits", "synthetic"])
    p.add_argument("--device", default="auto")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--teacher", default="resnet20")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args()
    data = load_dataset(args.dataset, 0.2, 0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        teacher, route = teacher_for(data, args, root / "teacher")
        print(
            f"{'method':10} {'val_acc %':>17} {'wall s':>17}   ({args.seeds} seeds, "
            f"{args.student} student, {args.dataset}, {args.device})"
        )
        for name in args.methods.split(","):
            accs, secs = bench_method(name, teacher, route, data, args, root)
            print(f"{name:10} {fmt(accs, 100)} {fmt(secs)}", flush=True)


if __name__ == "__main__":
    main()
