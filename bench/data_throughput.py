"""Data throughput: the project's image pipeline against torchvision's ImageFolder, on
ImageNet-shaped JPEGs the bench makes itself, measured side by side in one run.

    python bench/data_throughput.py                       # 2000 JPEGs, workers = cores
    python bench/data_throughput.py --images 20000 --workers 16 --json out.json

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
Nothing is asserted; ratios a/b and epoch/step are printed. The bench runs as a job's
training process does: in its environment (worker/task/supervisor.py TRAINING_ENV: huge pages for
torch's large blocks) and with its threads (worker/job/threads.py: the free cores less the
W decoders). Neither changes (b), whose batches are made in its workers' shared memory.
"""

import argparse
import io
import json
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

from service.ingest import archives, imagefolder, shards  # noqa: E402
from service.ingest.archives import Budget  # noqa: E402
from service.spec.job import JobSpec  # noqa: E402
from worker.engine import loop  # noqa: E402
from worker.engine.data import augment_batch, load_dataset  # noqa: E402
from worker.engine.data.images import Streamed  # noqa: E402
from worker.engine.methods import Batch, create  # noqa: E402
from worker.engine.zoo import build_model  # noqa: E402
from worker.job.build import load_data, method_kwargs, plan_for  # noqa: E402
from worker.job.rank import peak_rss  # noqa: E402
from worker.job.threads import Threads  # noqa: E402
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
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)  # (d)'s own process
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


def streamed(index: Path, size: int, workers: int) -> Any:
    """The stored upload as a job streams it: rrc_flip at `size`, `workers` decoders."""
    return load_dataset(
        "upload", 0.01, 0, "rrc_flip", size, shards=shards.read(index), workers=workers
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, args.size)
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
    print(json.dumps(got, indent=1))
    if args.json:
        args.json.write_text(json.dumps(got, indent=1))
    return got


if __name__ == "__main__":
    main()
