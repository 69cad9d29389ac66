"""The methods table: every method the spec knows, run as a user runs it (over HTTP, on a
real worker) on Fashion-MNIST; mean +- std of the final validation accuracy over seeds, the
gain over a scratch run and over KD (paired by seed), and each paper's claim beside it.

    python -m bench.methods --epochs 10 --seeds 0 1 2
    python -m bench.methods --epochs 30 --seeds 0 --methods scratch,kd,reviewkd

Data: Debian's dataset-fashion-mnist (--data), the first --train-images training images and
the first --val-images test images as the validation split, uploaded as an npz. Teacher:
resnet20, supervised, --teacher-epochs, a route checkpoint every 3 epochs (RCO's anchors).
Students: resnet8. All: SGD 0.05 momentum 0.9 wd 5e-4, cosine, batch 128, pad-and-crop,
fp32 on the CPU, one thread a job, --parallel jobs at a time (`distillery up` in --workdir).
Each method with its defaults, but what it needs to run here (METHOD_PARAMS).

Resumable: each finished job is appended to --results at once; the same command again runs
only what is missing (the service in --workdir keeps the dataset and the teacher, and a job
stopped mid-way resumes from its checkpoint: every submission carries an Idempotency-Key).
"""

import argparse
import contextlib
import gzip
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.claims import CLAIMS
from distillery_client import Client
from distillery_client.models import Job
from service.spec.methods import PARAMS_MODELS, method_name

STUDENT, TEACHER = "resnet8", "resnet20"
METHOD_PARAMS: dict[str, dict[str, Any]] = {
    "kdcl": {"peers": [STUDENT]},  # one more resnet8 trained beside the student
    "rco": {"anchors": "every_n"},  # every route checkpoint of the teacher
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
CLASSES += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TRAIN = {
    "batch_size": 128,
    "precision": "fp32",
    "device": "cpu",
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "schedule": {"name": "cosine"},
}
POLL_S = 5.0


def rows() -> dict[str, tuple[dict[str, Any], bool]]:
    """Table row -> (method params, whether it takes the teacher), from the spec's methods:
    "scratch" is `supervised`; a method with `logit_standardisation` also gets a "+ls" row."""
    found: dict[str, tuple[dict[str, Any], bool]] = {}
    for model in PARAMS_MODELS:
        name = method_name(model)
        row = "scratch" if name == "supervised" else name
        params = {"name": name, **METHOD_PARAMS.get(name, {})}
        found[row] = (params, model.needs_teacher)
        if "logit_standardisation" in model.model_fields:
            found[f"{row}+ls"] = ({**params, "logit_standardisation": True}, model.needs_teacher)
    first = ["scratch", "kd"]  # every gain is measured against these
    return {r: found[r] for r in first + sorted(set(found) - set(first))}


def fashion_npz(folder: Path, train: int, val: int) -> bytes:
    """The first `train` training and `val` test images of Fashion-MNIST's IDX files."""

    def idx(name: str, count: int, item: int) -> np.ndarray:
        with gzip.open(folder / f"{name}-ubyte.gz") as f:
            data = f.read()
        header = 16 if item > 1 else 8  # images: magic, count, rows, cols; labels: magic, count
        return np.frombuffer(data, np.uint8, count * item, offset=header)

    out = io.BytesIO()
    np.savez(
        out,
        images=idx("train-images-idx3", train, 784).reshape(-1, 28, 28),
        labels=idx("train-labels-idx1", train, 1).astype(np.int64),
        val_images=idx("t10k-images-idx3", val, 784).reshape(-1, 28, 28),
        val_labels=idx("t10k-labels-idx1", val, 1).astype(np.int64),
        class_names=np.array(CLASSES),
    )
    return out.getvalue()


class Results:
    """The JSON file each finished run is appended to, for one setting."""

    def __init__(self, path: Path, setting: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"setting": setting, "runs": {}}
        if path.exists():
            self.data = json.loads(path.read_text())
            if self.data["setting"] != setting:
                raise SystemExit(
                    f"{path} holds runs of another setting ({self.data['setting']}); "
                    "name another --results and --workdir"
                )

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def run(self, row: str, epochs: int, seed: int) -> dict[str, Any] | None:
        return self.data["runs"].get(f"{row}/{epochs}/{seed}")

    def add_run(self, key: str, run: dict[str, Any]) -> None:
        self.data["runs"][key] = run
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        tmp.replace(self.path)


@contextlib.contextmanager
def service(workdir: Path, parallel: int) -> Iterator[Client]:
    """`distillery up` on its own data dir and port, `parallel` one-thread jobs at a time:
    the embedded service whatever the caller's environment names (its database, broker and
    store are the data dir's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {
        "DISTILLERY_DATA_DIR": str(workdir),
        "DISTILLERY_DATABASE_URL": "",
        "DISTILLERY_BROKER_URL": "",
        "DISTILLERY_STORE_URL": "",
        "DISTILLERY_WORKER_CONCURRENCY": str(parallel),
        "DISTILLERY_TRAIN_THREADS": "1",
    }
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "service.cli", "up", "--port", str(port)]
    with (workdir / "up.log").open("ab") as log:
        up = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    client = Client(f"http://127.0.0.1:{port}", retries=20)
    try:
        wait_ready(client, up, workdir)
        yield client
    finally:
        client.close()
        os.killpg(up.pid, signal.SIGTERM)  # a running job saves where it is and is requeued
        up.wait(timeout=120)


def wait_ready(client: Client, up: subprocess.Popen[bytes], workdir: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise SystemExit(f"`distillery up` exited; see {workdir / 'up.log'}")
        with contextlib.suppress(Exception):
            client.readyz()
            return
        time.sleep(0.5)
    raise SystemExit(f"the service was not ready in 120 s; see {workdir / 'up.log'}")


def job_spec(
    results: Results,
    name: str,
    method: dict[str, Any],
    arch: str,
    teacher: str | None,
    **train: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "method": method,
        "teacher": {"job": teacher} if teacher else None,
        "student": {"arch": arch},
        "data": {"dataset": "upload", "upload": results.get("dataset"), "augment": "crop"},
        "train": TRAIN | train,
    }


def ensure_inputs(client: Client, args: argparse.Namespace, results: Results) -> None:
    """The uploaded dataset and the trained teacher, made once."""
    if results.get("dataset") is None:
        path = args.workdir / "fashion-mnist.npz"
        path.write_bytes(fashion_npz(args.data, args.train_images, args.val_images))
        results.set("dataset", client.upload_dataset(path, name="fashion-mnist").id)
    if results.get("teacher") is None:
        method = {"name": "supervised", "route_every": 3}
        spec = job_spec(results, "bench-teacher", method, TEACHER, None, epochs=args.teacher_epochs)
        submitted = client.create_job(spec, f"bench-{results.get('dataset')}-teacher")
        job = wait_all(client, {"teacher": submitted.id})["teacher"]
        if job.status != "succeeded":
            raise SystemExit(f"the teacher {job.id} {job.status}: {job.error}")
        results.set("teacher", {"job": job.id, "val_acc": job.metrics["val_acc"]})
        print(f"teacher {TEACHER}: val_acc {job.metrics['val_acc']:.4f} ({job.id})", flush=True)


def wait_all(
    client: Client, jobs: dict[str, str], on_end: Callable[[str, Job], None] | None = None
) -> dict[str, Job]:
    """Poll `jobs` (key -> job id) until each has ended; `on_end(key, job)` as each does."""
    ended: dict[str, Job] = {}
    while True:
        for key, job_id in jobs.items():
            if key not in ended and (job := client.get_job(job_id)).done:
                ended[key] = job
                if on_end:
                    on_end(key, job)
        if len(ended) == len(jobs):
            return ended
        time.sleep(POLL_S)


def run_missing(
    client: Client, args: argparse.Namespace, results: Results, table: dict[str, Any]
) -> None:
    """Submit every (row, seed) the results lack, in row order, and record each as it ends."""
    teacher = results.get("teacher")["job"]
    jobs = {}
    for row, (method, needs_teacher) in table.items():
        for seed in args.seeds:
            if results.run(row, args.epochs, seed) is None:
                key, by = f"{row}/{args.epochs}/{seed}", teacher if needs_teacher else None
                spec = job_spec(results, f"bench-{row}", method, STUDENT, by, epochs=args.epochs)
                spec["train"]["seed"] = seed
                jobs[key] = client.create_job(spec, f"bench-{results.get('dataset')}-{key}").id
    wait_all(client, jobs, lambda key, job: record(client, results, key, job))


def record(client: Client, results: Results, key: str, job: Job) -> None:
    """A succeeded job's final val_acc, time and warnings into the results; any job printed."""
    val_acc = job.metrics.get("val_acc")
    print(f"{key}: {job.status} val_acc {val_acc} ({job.id})", flush=True)
    if job.status != "succeeded":
        return
    warnings = [e.message for e in client.iter_events(job.id) if e.type == "warning"]
    start, end = job.started_at, job.finished_at
    seconds = (end - start).total_seconds() if start and end else None
    run = {"job": job.id, "val_acc": val_acc, "seconds": seconds, "warnings": warnings}
    results.add_run(key, run)


def table(results: Results, rows: list[str], epochs: int, seeds: list[int]) -> list[str]:
    """The markdown table of the runs there are: per seed, mean +- std, the gains paired by
    seed, the jobs warned to be below scratch, the paper's claim and the mean wall time."""
    accs = {row: seed_accs(results, row, epochs, seeds) for row in rows}
    seed_names = " / ".join(map(str, seeds))
    lines = [
        f"| method | seeds {seed_names} | mean +- std | against scratch | against KD | "
        "warned below scratch | the paper's claim | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        got = accs[row]
        if not got:
            continue
        per_seed = " / ".join(f"{100 * got[s]:.2f}" if s in got else "-" for s in seeds)
        over_scratch = "" if row == "scratch" else paired_gain(got, accs.get("scratch", {}))
        over_kd = "" if row in ("scratch", "kd") else paired_gain(got, accs.get("kd", {}))
        runs = [results.run(row, epochs, s) for s in got]
        warned = sum(below_scratch(run) for run in runs)
        lines.append(
            f"| `{row}` | {per_seed} | {mean_std(list(got.values()))} | {over_scratch} | "
            f"{over_kd} | {warned} of {len(got)} | {claim(row)} | {wall_s(runs)} |"
        )
    return lines


def seed_accs(results: Results, row: str, epochs: int, seeds: list[int]) -> dict[int, float]:
    runs = {s: results.run(row, epochs, s) for s in seeds}
    return {s: run["val_acc"] for s, run in runs.items() if run is not None}


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} +- {100 * std:.2f}"


def paired_gain(got: dict[int, float], base: dict[int, float]) -> str:
    """The mean over the seeds both have of the difference, in points."""
    common = sorted(set(got) & set(base))
    if not common:
        return ""
    return f"{100 * statistics.fmean(got[s] - base[s] for s in common):+.2f}"


def wall_s(runs: list[dict[str, Any] | None]) -> str:
    """The mean seconds the runs' jobs ran, started to finished."""
    seconds = [run["seconds"] for run in runs if run and run.get("seconds") is not None]
    return f"{statistics.fmean(seconds):.0f}" if seconds else ""


def below_scratch(run: dict[str, Any] | None) -> bool:
    return run is not None and any("did not help" in w for w in run["warnings"])


def claim(row: str) -> str:
    found = CLAIMS.get(row)
    return f"{found.gain:+.2f} over {found.over} ({found.setting}; {found.source})" if found else ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="each student's")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", help="comma-separated table rows (default: every one)")
    p.add_argument("--teacher-epochs", type=int, default=15)
    p.add_argument("--train-images", type=int, default=10_000)
    p.add_argument("--val-images", type=int, default=10_000)
    p.add_argument("--parallel", type=int, default=2, help="jobs at a time, one thread each")
    p.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--results", type=Path, default=Path("bench-results/methods.json"))
    p.add_argument("--workdir", type=Path, help="the service's data dir (default: beside results)")
    args = p.parse_args(argv)
    args.workdir = (
        args.workdir or args.results.with_name(f"{args.results.stem}-service")
    ).resolve()
    return args


def chosen_rows(methods: str | None) -> dict[str, tuple[dict[str, Any], bool]]:
    every = rows()
    if methods is None:
        return every
    names = methods.split(",")
    if unknown := [n for n in names if n not in every]:
        raise SystemExit(f"unknown rows {unknown}; known: {', '.join(every)}")
    return {n: every[n] for n in every if n in names}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    table_rows = chosen_rows(args.methods)
    setting = {
        "data": str(args.data),
        "train_images": args.train_images,
        "val_images": args.val_images,
        "teacher": TEACHER,
        "teacher_epochs": args.teacher_epochs,
        "student": STUDENT,
    }
    results = Results(args.results, setting)
    if any(results.run(r, args.epochs, s) is None for r in table_rows for s in args.seeds):
        with service(args.workdir, args.parallel) as client:
            ensure_inputs(client, args, results)
            run_missing(client, args, results, table_rows)
    teacher = results.get("teacher")
    print(
        f"\nstudents {args.epochs} epochs; teacher {TEACHER} val_acc {100 * teacher['val_acc']:.2f}"
    )
    print("\n".join(table(results, list(table_rows), args.epochs, args.seeds)))


if __name__ == "__main__":
    main()
