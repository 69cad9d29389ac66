"""Training speed on a shared host: the README's digits teacher job (supervised resnet8,
batch 64) run as a job's training process runs it, with its default threads
(worker/job/threads.py: from the free cores, looked at again while training) against fixed
counts, on the host as it is ("idle") and beside one process spinning `while True: pass`.

    python bench/threads.py                           # 3 rounds, threads 1 and all the cores
    python bench/threads.py --epochs 1 --rounds 1 --threads 1 --json out.json   # tiny

Every run is a fresh process training in a fresh job dir; rounds alternate between the
settings, so a drift in load falls on all of them alike. A run's figure is its training
images/s over all its epochs; each setting's is the median of its rounds. Printed per case:
the ratio default/best (best: the fastest setting, the default included). Nothing is asserted.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.task.supervisor import training_env  # noqa: E402  (no torch in it)

ROOT = Path(__file__).resolve().parents[1]
CASES = ("idle", "busy")
DEFAULT = "default"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4, help="epochs of each run (the README's: 8)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each setting (median)")
    p.add_argument("--threads", type=int, nargs="+", default=sorted({1, cores}))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # one run, in this job dir
    return p.parse_args(argv)


def job_spec(epochs: int, device: str) -> dict[str, Any]:
    """The README's walk-through teacher, `epochs` long (its lr drop 2 epochs before the end)."""
    schedule = {"name": "multistep", "milestones": [max(1, epochs - 2)]}
    return {
        "name": "digits-teacher",
        "method": {"name": "supervised", "route_every": 4},
        "student": {"arch": "resnet8"},
        "data": {"dataset": "digits", "val_fraction": 0.2},
        "train": {
            "epochs": epochs,
            "batch_size": 64,
            "device": device,
            "optimizer": {"lr": 0.1},
            "schedule": schedule if epochs > 2 else {"name": "constant"},
        },
    }


def child(job_dir: Path, epochs: int, device: str) -> None:
    """One run, as worker/job/rank.py trains: the threads first, build, train adapting."""
    import torch

    from service.spec.job import JobSpec
    from worker.engine import loop
    from worker.job.build import build
    from worker.job.threads import Adapting, Threads
    from worker.task.inputs import JobInputs

    threads = Threads.first_look(world=1)
    spec = JobSpec.model_validate(job_spec(epochs, device))
    built = build(spec, JobInputs(job_dir=job_dir), spec.train.device)
    threads.set_decoders(built.data.train.decoders)
    result = loop.train(built.plan, Adapting(loop.Quiet(), threads))
    rates = [epoch["images_per_s"] for epoch in result.history]
    out = {"images_per_s": statistics.harmonic_mean(rates), "threads": torch.get_num_threads()}
    print(json.dumps(out))


def run(setting: str, args: argparse.Namespace, job_dir: Path) -> dict[str, float]:
    """A fresh training process's images/s with `setting` threads ("default": the choice),
    and its threads at the end."""
    env = training_env() | {"DISTILLERY_TRAIN_THREADS": "0" if setting == DEFAULT else setting}
    cmd = [sys.executable, __file__, "--child", str(job_dir), "--epochs", str(args.epochs)]
    cmd += ["--device", args.device]
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.splitlines()[-1]))


def measure_case(args: argparse.Namespace, settings: list[str], root: Path) -> dict[str, Any]:
    rounds: dict[str, list[float]] = {s: [] for s in settings}
    chosen = []  # the default's threads at the end of each run
    for r in range(args.rounds):
        for setting in settings:
            got = run(setting, args, root / f"{setting}-{r}")
            print(f"{root.name} round {r + 1} {setting}: {got}", file=sys.stderr, flush=True)
            rounds[setting].append(got["images_per_s"])
            chosen += [int(got["threads"])] if setting == DEFAULT else []
    medians = {s: statistics.median(values) for s, values in rounds.items()}
    return {
        "images_per_s": medians,
        "rounds": rounds,
        "default_threads": chosen,
        "default/best": medians[DEFAULT] / max(medians.values()),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    settings = [DEFAULT, *(str(n) for n in args.threads)]
    out: dict[str, Any] = {"cores": len(os.sched_getaffinity(0)), "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        out["idle"] = measure_case(args, settings, Path(tmp) / "idle")
        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            out["busy"] = measure_case(args, settings, Path(tmp) / "busy")
        finally:
            spin.kill()
            spin.wait()
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child, args.epochs, args.device)
        return
    out = measure(args)
    print(f"digits job, {args.epochs} epochs, {out['cores']} cores, median of {args.rounds}")
    for case in CASES:
        figures = out[case]["images_per_s"]
        shown = "  ".join(f"{s} {v:8.0f}" for s, v in figures.items())
        ratio, chosen = out[case]["default/best"], out[case]["default_threads"]
        print(f"  {case:5s} images/s  {shown}   default/best {ratio:.2f}  (default: {chosen})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
