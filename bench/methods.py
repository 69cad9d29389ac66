"""Every method from one teacher, over N seeds: mean +- std val accuracy and wall time.

    python bench/methods.py --dataset digits --device cpu --seeds 3
    python bench/methods.py --dataset synthetic --teacher resnet32x4 --student resnet8x4 \\
        --device cuda --epochs 30 --teacher-epochs 60

Runs each run as a job would, without the service: a job spec (its defaults are the
service's), checked by the admission rules and built by worker/job/build.py, then trained in
this process. One supervised teacher (its route checkpoints are RCO's), then a scratch
student, KD and each requested method with the same student and data.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from service.errors import InvalidSpec
from service.files import sha256_file
from service.jobs import admission
from service.spec.job import JobSpec
from service.spec.methods import TeacherFacts
from worker.engine.loop import Quiet, train
from worker.job.build import build
from worker.task.inputs import JobInputs, TeacherSource

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
TEACHER_JOB = "bench-teacher"


def drops(epochs: int) -> list[int]:
    return sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)} - {epochs})


def job_spec(
    method: dict[str, Any],
    arch: str,
    args: argparse.Namespace,
    seed: int,
    epochs: int,
    teacher: TeacherFacts | None,
) -> JobSpec:
    """The job spec of one run, resolved and checked as admission would."""
    spec = JobSpec.model_validate(
        {
            "method": method,
            "teacher": {"job": teacher.ident} if teacher else None,
            "student": {"arch": arch},
            "data": {"dataset": args.dataset, "val_fraction": 0.2, "split_seed": 0},
            "train": {
                "epochs": epochs,
                "batch_size": args.batch_size,
                "seed": seed,
                "optimizer": {"name": "sgd", "lr": args.lr},
                "schedule": {"name": "multistep", "milestones": drops(epochs), "gamma": 0.1},
            },
        }
    )
    try:
        return admission.resolve(spec, spec.data.builtin_shape(), teacher)
    except InvalidSpec as exc:
        raise SystemExit("; ".join(f"{e.field}: {e.message}" for e in exc.errors)) from exc


def run_job(spec: JobSpec, inputs: JobInputs, device: str) -> tuple[float, float]:
    """Build the job as the worker does, train it; its val accuracy and wall time."""
    plan = build(spec, inputs, device).plan
    started = time.perf_counter()
    result = train(plan, Quiet())
    return result.final_metrics["val_acc"], time.perf_counter() - started


def teacher_for(args: argparse.Namespace, workdir: Path) -> tuple[TeacherFacts, JobInputs]:
    """Trains the teacher; what admission knows of it, and what its students' jobs read."""
    spec = job_spec({"name": "supervised"}, args.teacher, args, 0, args.teacher_epochs, None)
    acc, secs = run_job(spec, JobInputs(job_dir=workdir), args.device)
    print(f"teacher {args.teacher}: val_acc {acc:.4f} in {secs:.1f}s")
    route = {int(p.stem[6:]): p for p in (workdir / "checkpoints" / "route").glob("epoch_*")}
    num_classes, in_channels = spec.student_shape()
    weights = route[max(route)]  # the last epoch's: the converged teacher
    facts = TeacherFacts(
        field="teacher.job",
        ident=TEACHER_JOB,
        arch=args.teacher,
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=None,
        route=sorted(route),
        lr_drops=spec.train.schedule.lr_drops(),
    )
    source = TeacherSource(
        arch=args.teacher,
        num_classes=num_classes,
        in_channels=in_channels,
        path=weights,
        sha256=sha256_file(weights),
        job_id=TEACHER_JOB,
    )
    inputs = JobInputs(
        job_dir=workdir, teacher=source, route=route, teacher_lr_drops=facts.lr_drops
    )
    return facts, inputs


def bench_method(
    name: str,
    teacher: tuple[TeacherFacts, JobInputs],
    args: argparse.Namespace,
    root: Path,
) -> tuple[list[float], list[float]]:
    accs, secs = [], []
    facts, from_teacher = teacher
    method = dict(METHODS[name])
    if method["name"] == "kdcl":
        method["peers"] = [args.student]
    for seed in range(args.seeds):
        workdir = root / f"{name}-{seed}"
        if name in NO_TEACHER:
            spec = job_spec(method, args.student, args, seed, args.epochs, None)
            inputs = JobInputs(job_dir=workdir)
        else:
            spec = job_spec(method, args.student, args, seed, args.epochs, facts)
            inputs = JobInputs(
                job_dir=workdir,
                teacher=from_teacher.teacher,
                route=from_teacher.route,
                teacher_lr_drops=from_teacher.teacher_lr_drops,
            )
        acc, sec = run_job(spec, inputs, args.device)
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
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--teacher", default="resnet20")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        teacher = teacher_for(args, root / "teacher")
        print(
            f"{'method':10} {'val_acc %':>17} {'wall s':>17}   ({args.seeds} seeds, "
            f"{args.student} student, {args.dataset}, {args.device})"
        )
        for name in args.methods.split(","):
            accs, secs = bench_method(name, teacher, args, root)
            print(f"{name:10} {fmt(accs, 100)} {fmt(secs)}", flush=True)


if __name__ == "__main__":
    main()
