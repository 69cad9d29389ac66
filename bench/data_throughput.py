"""Data throughput: the project's image pipeline against torchvision's ImageFolder, on
ImageNet-shaped JPEGs the bench makes itself, measured side by side in one run.

    python bench/data_throughput.py                       # 2000 JPEGs, workers = cores
    python bench/data_throughput.py --images 20000 --workers 16 --json out.json
    python bench/data_throughput.py --store               # and (e): the shards from a bucket

The JPEGs have varied sizes around 500x375 and 1000 classes; they are stored the way an
upload stores them (service/ingest/imagefolder.py: checked, then WebDataset shards), and also kept
as an ImageFolder tree on disk for the reference.
  (a) project    a streamed epoch from the shards: W DataLoader processes read and decode
                 (TorchCodec, or Pillow at a reduced scale for large JPEGs; resize to the
                 base), then RandomResizedCrop(224) + flip and normalisation on the
                 training device, as images/s
  (a')delivered  the W processes' side of (a) alone: batches decoded to the base size and
                 handed over, the training process doing nothing else (on a GPU the
                 augmentation costs the CPU nothing; on a CPU, (a) shares its cores with it)
  (b) reference  torchvision's ImageFolder with PIL decode, RandomResizedCrop(224),
                 RandomHorizontalFlip and PILToTensor in a DataLoader with the same W
  (c) on a GPU   KD timm/resnet50 -> timm/resnet18 at 224 in bf16, run as a job runs it
                 (worker/job/build.py, loop.start_run): the step alone on one resident batch
                 against a whole epoch streamed from the shards (--kd-images)
  (d) memory     peak RSS growth of a process streaming one epoch, for two dataset sizes
  (e) --store    the (a) shards read from a bucket of an S3 server on loopback (moto's, as
                 the tests run it: tests/s3.py) against the same shards on local disk, each
                 in a process of its own reading as a job's does (worker/job/build.py
                 data_options: through the worker's cache, worker/job/stored_shards.py):
                 the first epoch (cache empty; shards fetched meanwhile) and a later one
                 (every shard in the cache), as images/s delivered (W decoders, no
                 augmentation), their ratios store/local, and each process's peak RSS growth
Nothing is asserted; ratios a/b, epoch/step and store/local are printed. The bench runs as a job's
training process does: in its environment (worker/task/supervisor.py TRAINING_ENV: huge pages for
torch's large blocks) and with its threads (worker/job/threads.py: the free cores less the
W decoders). Neither changes (b), whose batches are made in its workers' shared memory.
"""

import argparse
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.task.supervisor import training_env  # noqa: E402  (no torch in it)

os.environ.update(training_env())  # before torch: its allocator reads it once

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from service.config import get_settings  # noqa: E402
from service.ingest import archives, imagefolder, shards  # noqa: E402
from service.ingest.archives import Budget  # noqa: E402
from service.spec.job import JobSpec  # noqa: E402
from service.store import Store, dataset_key, dataset_prefix  # noqa: E402
from worker.engine import loop  # noqa: E402
from worker.engine.data import augment_batch, load_dataset  # noqa: E402
from worker.engine.data.images import Streamed  # noqa: E402
from worker.engine.methods import Batch, create  # noqa: E402
from worker.engine.zoo import build_model  # noqa: E402
from worker.job.build import load_data, method_kwargs, plan_for  # noqa: E402
from worker.job.rank import peak_rss  # noqa: E402
from worker.job.stored_shards import loader_start, read_from_bucket  # noqa: E402
from worker.job.threads import Threads  # noqa: E402
from worker.task.cache import Cache  # noqa: E402
from worker.task.context import dataset_file  # noqa: E402
from worker.task.inputs import JobInputs  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000, help="JPEGs for (a) and (b)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224, help="the training image size")
    p.add_argument("--kd-images", type=int, default=4096, help="(c): on a GPU, or --kd-cpu")
    p.add_argument("--kd-batch", type=int, default=128)
    p.add_argument("--kd-teacher", default="timm/resnet50")
    p.add_argument("--kd-student", default="timm/resnet18")
    p.add_argument("--kd-cpu", action="store_true", help="run (c) on the CPU too (tests)")
    p.add_argument("--rss-images", type=int, nargs=2, default=[500, 2000], help="(d) sizes")
    p.add_argument("--store", action="store_true", help="(e): the shards from a bucket too")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)  # (d)'s own process
    p.add_argument("--epochs-child", help=argparse.SUPPRESS)  # (e)'s own processes
    return p.parse_args(argv)


def make_jpegs(root: Path, count: int, seed: int = 0) -> Path:
    """An ImageFolder tree of `count` JPEGs, 1000 classes, sides around 500x375, and the same
    stored as an upload stores it; returns the stored index."""
    rng = np.random.default_rng(seed)
    tree, archive = root / "tree", root / "upload.zip"
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for n in range(count):
            w, h = int(rng.integers(400, 600)), int(rng.integers(300, 450))
            low = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
            im = Image.fromarray(low).resize((w, h), Image.Resampling.BILINEAR)
            out = io.BytesIO()
            im.save(out, "JPEG", quality=90)
            name = f"n{n % 1000:04d}/{n:07d}.jpg"
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_bytes(out.getvalue())
            zf.writestr(name, out.getvalue())
    budget = Budget(10 * count, 1 << 40)
    names = archives.names(archive, budget)
    imagefolder.store(archive, names, budget, root / "stored", None)
    archive.unlink()
    return root / "stored" / shards.INDEX


def project(index: Path, size: int, workers: int, batch: int, device: torch.device) -> float:
    """(a): images/s of a streamed epoch, augmented on `device`."""
    data = streamed(index, size, workers)
    train = data.train.place(device, "stream")
    generator = torch.Generator(device=device).manual_seed(0)
    started, seen = time.perf_counter(), 0
    for x, _ in train.epoch(batch, generator):
        view = augment_batch(x, data.augment, train.normalise, generator)
        seen += len(view)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def delivered(index: Path, size: int, workers: int, batch: int) -> float:
    """(a'): images/s the W decoding processes deliver when the training process does nothing
    else with them, as when the augmentation runs on a GPU: the CPU side of (a) alone."""
    data = streamed(index, size, workers)
    assert isinstance(data.train, Streamed)
    started, seen = time.perf_counter(), 0
    for x, _ in data.train.in_order(batch):
        seen += len(x)
    return seen / (time.perf_counter() - started)


def streamed(index: Path | dict[str, Any], size: int, workers: int, **reading: Any) -> Any:
    """The stored upload (its index file, or the index as read) as a job streams it: rrc_flip
    at `size`, `workers` decoders, how they start and read as `reading` says."""
    found = shards.read(index) if isinstance(index, Path) else index
    return load_dataset(
        "upload", 0.01, 0, "rrc_flip", size, shards=found, workers=workers, **reading
    )


def reference(tree: Path, size: int, workers: int, batch: int) -> float:
    """(b): images/s of torchvision's ImageFolder pipeline."""
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.PILToTensor(),
        ]
    )
    loader = torch.utils.data.DataLoader(
        datasets.ImageFolder(str(tree), transform=transform),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
    )
    started, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += len(x)
    return seen / (time.perf_counter() - started)


def kd_spec(args: argparse.Namespace, device: str) -> JobSpec:
    """The KD job (c) runs, as a job is resolved: the service's KD defaults, bf16 on CUDA,
    the uploaded shards streamed."""
    return JobSpec.model_validate(
        {
            "method": {"name": "kd"},
            "teacher": {"job": "bench-teacher"},
            "student": {"arch": args.kd_student, "num_classes": 1000, "in_channels": 3},
            "data": {
                "dataset": "upload",
                "upload": "bench",
                "image_size": args.size,
                "augment": "rrc_flip",
                "val_fraction": 0.01,
            },
            "train": {
                "epochs": 1,
                "batch_size": args.kd_batch,
                "device": device,
                "data_placement": "stream",
                "schedule": {"name": "constant"},
            },
        }
    )


def kd(args: argparse.Namespace, index: Path, workdir: Path, device: str) -> dict[str, float]:
    """(c): the engine's KD step alone on a resident batch, and its whole streamed epoch, as
    a job runs them (worker/job/build.py, loop.start_run): images/s of each and their ratio."""
    spec, inputs = kd_spec(args, device), JobInputs(job_dir=workdir, dataset_path=index)
    data = load_data(spec, inputs)
    teacher = build_model(args.kd_teacher, 1000, 3)
    student = build_model(args.kd_student, 1000, 3)
    kwargs = method_kwargs(spec, inputs)
    method = create("kd", student=student, teacher=teacher, input_shape=data.input_shape, **kwargs)
    run = loop.start_run(plan_for(spec, inputs, method, data, device), loop.Quiet())
    x, y = next(iter(run.data.train.epoch(args.kd_batch, run.generator)))
    batch = Batch(x, y, data.augment, run.data.train.normalise, run.generator)
    steps = max(1, len(data.train) // args.kd_batch)
    for _ in range(min(5, steps)):  # warm-up: cuDNN autotuning, allocator
        loop.train_step(run, batch, 0)
    synchronize(run.device)
    started = time.perf_counter()
    for _ in range(steps):
        loop.train_step(run, batch, 0)
    synchronize(run.device)
    step_rate = steps * len(y) / (time.perf_counter() - started)
    epoch_rate = loop.train_epoch(run, 0)["images_per_s"]
    return {"kd_step": step_rate, "kd_epoch": epoch_rate, "kd_epoch/step": epoch_rate / step_rate}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_child(index: Path, size: int) -> None:
    """(d) in its own process: peak RSS growth while streaming one epoch."""
    before = peak_rss()
    data = streamed(index, size, workers=2)
    assert isinstance(data.train, Streamed)
    generator = torch.Generator().manual_seed(0)
    for x, _ in data.train.epoch(64, generator):
        augment_batch(x, data.augment, data.train.normalise, generator)
    peak = peak_rss()
    print(json.dumps({"peak_rss_bytes": peak, "peak_rss_growth_bytes": peak - before}))


def rss_growth(root: Path, count: int, size: int) -> dict[str, int]:
    index = make_jpegs(root / f"rss{count}", count, seed=1)
    dataset = sum(f.stat().st_size for f in index.parent.rglob("*.tar"))
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(index), "--size", str(size)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {"images": count, "dataset_bytes": dataset, **json.loads(out.splitlines()[-1])}


def epochs_child(source: str, size: int, workers: int, batch: int) -> None:
    """(e) in its own process, reading as a job's training process does: the local shards
    (`source`: their index file) or, with DISTILLERY_STORE_URL set, the bucket's (`source`:
    the index's key) through the worker's cache. Images/s of the first epoch and, once the
    shards are all fetched, of another; the peak RSS growth."""
    Threads.first_look(world=1).set_decoders(workers)
    before = peak_rss()
    if get_settings().store_url:  # as worker/job/build.py data_options reads a bucket's
        cache = Cache.default()
        index = shards.read(dataset_file(cache, source, None))  # as a job's inputs are
        fetching = read_from_bucket(index, source, cache)
        data = streamed(index, size, workers, loader_start=loader_start())
    else:
        index = shards.read(Path(source))
        fetching, data = None, streamed(index, size, workers)
    where = [s["reader"].paths if "reader" in s else s["paths"] for s in index["splits"].values()]
    paths = [p for split in where for p in split]
    held = sum(os.path.exists(p) for p in paths)  # fetched already, as load_dataset ran
    first = epoch_rate(data.train, batch)
    if fetching is not None:
        fetching.join()  # a later epoch of a job: its cache holds the shards (room allowing)
    cached = epoch_rate(data.train, batch)
    growth = peak_rss() - before
    got = {"first": first, "cached": cached, "peak_rss_growth_bytes": growth}
    print(json.dumps(got | {"shards": len(paths), "shards_held_at_first": held}))


def epoch_rate(train: Streamed, batch: int) -> dict[str, float]:
    """One shuffled epoch, handed over by the decoders and not augmented (the reading side
    alone, where a bucket and a disk differ): seconds to its first batch (the first epoch
    starts the decoders) and images/s after it."""
    generator = torch.Generator().manual_seed(0)
    started, seen = time.perf_counter(), 0
    batches = iter(train.epoch(batch, generator))
    next(batches)
    first = time.perf_counter()
    for x, _ in batches:
        seen += len(x)
    return {"start_s": first - started, "images_per_s": seen / (time.perf_counter() - first)}


def store_epochs(args: argparse.Namespace, index: Path, root: Path) -> dict[str, Any]:
    """(e): the shards of `index` put in a bucket of an S3 server on loopback, as an upload
    puts them (Store.put_folder), then read from there and from the local disk."""
    from tests.s3 import S3Server  # a dev dependency, as bench/ is

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server: a line a request
    server = S3Server().start()
    try:
        env = server.store_env("bench")
        os.environ.update(server.aws_env())  # obstore's client reads them; (e) runs last
        Store(env["DISTILLERY_STORE_URL"]).put_folder(dataset_prefix("bench"), index.parent)
        local = epochs(args, str(index), {"DISTILLERY_DATA_DIR": str(root / "local-worker")})
        key = dataset_key("bench", shards.INDEX)
        store = epochs(args, key, env | {"DISTILLERY_DATA_DIR": str(root / "store-worker")})
    finally:
        server.stop()
    return {
        "local": local,
        "store": store,
        "first store/local": rate(store["first"]) / rate(local["first"]),
        "cached store/local": rate(store["cached"]) / rate(local["cached"]),
    }


def rate(epoch: dict[str, float]) -> float:
    return epoch["images_per_s"]


def epochs(args: argparse.Namespace, source: str, env: dict[str, str]) -> dict[str, Any]:
    """epochs_child's figures, run with `env` (and no store unless `env` names one)."""
    base = {k: v for k, v in os.environ.items() if k != "DISTILLERY_STORE_URL"}
    command = [sys.executable, __file__, "--epochs-child", source]
    command += ["--size", str(args.size), "--workers", str(args.workers)]
    command += ["--batch", str(args.batch)]
    out = subprocess.run(command, env=base | env, check=True, stdout=subprocess.PIPE, text=True)
    return dict(json.loads(out.stdout.splitlines()[-1]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, args.size)
        return {}
    if args.epochs_child:
        epochs_child(args.epochs_child, args.size, args.workers, args.batch)
        return {}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    Threads.first_look(world=1).set_decoders(args.workers)  # a job's process with W decoders
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        index = make_jpegs(root, args.images)
        got: dict[str, Any] = {"device": str(device), "cores": len(os.sched_getaffinity(0))}
        got |= {"images": args.images, "workers": args.workers}
        got["project"] = project(index, args.size, args.workers, args.batch, device)
        got["delivered"] = delivered(index, args.size, args.workers, args.batch)
        got["reference"] = reference(root / "tree", args.size, args.workers, args.batch)
        got["project/reference"] = got["project"] / got["reference"]
        got["delivered/reference"] = got["delivered"] / got["reference"]
        if device.type == "cuda" or args.kd_cpu:
            kd_index = make_jpegs(root / "kd", args.kd_images)
            got |= kd(args, kd_index, root / "kd-job", str(device))
        got["rss"] = [rss_growth(root, n, args.size) for n in args.rss_images]
        if args.store:
            got["store"] = store_epochs(args, index, root)
    print(json.dumps(got, indent=1))
    if args.json:
        args.json.write_text(json.dumps(got, indent=1))
    return got


if __name__ == "__main__":
    main()
