"""Data throughput: the project's image pipeline against torchvision's ImageFolder, on
ImageNet-shaped JPEGs the bench makes itself, measured side by side in one run.

    python bench/data_throughput.py                       # 2000 JPEGs, workers = cores
    python bench/data_throughput.py --images 20000 --workers 16 --json out.json

The JPEGs have varied sizes around 500x375 and 1000 classes; they are stored the way an
upload stores them (service/imagefolder.py: checked, then WebDataset shards), and also kept
as an ImageFolder tree on disk for the reference.
  (a) project    a streamed epoch from the shards: W DataLoader processes read and decode
                 (draft-mode JPEG, resize to the base), then RandomResizedCrop(224) + flip
                 on the training device, as images/s
  (b) reference  torchvision's ImageFolder with PIL decode, RandomResizedCrop(224),
                 RandomHorizontalFlip and PILToTensor in a DataLoader with the same W
  (c) on a GPU   KD timm/resnet50 -> timm/resnet18 at 224 in bf16: the step alone on resident
                 tensors against a whole epoch streamed from the shards (--gpu-images)
  (d) memory     peak RSS growth of a process streaming one epoch, for two dataset sizes
Nothing is asserted; ratios a/b and epoch/step are printed.
"""

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service import imagefolder, shards  # noqa: E402
from service.archives import Budget  # noqa: E402
from worker.engine.data import augment_batch, load_dataset  # noqa: E402
from worker.engine.data.images import Streamed  # noqa: E402

SIZE = 224


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000, help="JPEGs for (a) and (b)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--gpu-images", type=int, default=4096, help="(c) on a GPU")
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
    imagefolder.store(archive, Budget(10 * count, 1 << 40), root / "stored", None)
    archive.unlink()
    return root / "stored" / shards.INDEX


def project(index: Path, workers: int, batch: int, device: torch.device) -> float:
    """(a): images/s of a streamed epoch, augmented on `device`."""
    data = load_dataset(
        "upload", 0.01, 0, "rrc_flip", SIZE, shards=shards.read(index), workers=workers
    )
    train = data.train.place(device, "stream")
    generator = torch.Generator(device=device).manual_seed(0)
    started, seen = time.perf_counter(), 0
    for x, _ in train.epoch(batch, generator):
        view = augment_batch(x, data.augment, generator)
        seen += len(view)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def reference(tree: Path, workers: int, batch: int) -> float:
    """(b): images/s of torchvision's ImageFolder pipeline."""
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(SIZE),
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


def gpu_kd(index: Path, workers: int, batch: int) -> dict[str, float]:
    """(c): KD resnet50 -> resnet18 in bf16, images/s of the step alone and of an epoch."""
    import timm

    from worker.engine.methods import Batch, create

    device = torch.device("cuda")
    data = load_dataset(
        "upload", 0.01, 0, "rrc_flip", SIZE, shards=shards.read(index), workers=workers
    )
    train = data.train.place(device, "stream")
    teacher = timm.create_model("resnet50", num_classes=1000).to(device)
    student = timm.create_model("resnet18", num_classes=1000).to(device)
    kd = method_kwargs_for("kd")
    method = create("kd", student=student, teacher=teacher, input_shape=(3, SIZE, SIZE), **kd)
    method = method.to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9, fused=True)
    generator = torch.Generator(device=device).manual_seed(0)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", torch.bfloat16):
            terms = method(Batch(x, y, data.augment, generator), 0)
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()

    resident = torch.randn(batch, 3, data.augment.base, data.augment.base, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    for _ in range(5):
        step(resident, labels)
    torch.cuda.synchronize()
    started, steps = time.perf_counter(), max(1, len(train) // batch)
    for _ in range(steps):
        step(resident, labels)
    torch.cuda.synchronize()
    step_rate = steps * batch / (time.perf_counter() - started)
    started, seen = time.perf_counter(), 0
    for x, y in train.epoch(batch, generator):
        step(x, y)
        seen += len(y)
    torch.cuda.synchronize()
    epoch_rate = seen / (time.perf_counter() - started)
    return {"kd_step": step_rate, "kd_epoch": epoch_rate, "epoch/step": epoch_rate / step_rate}


def method_kwargs_for(name: str) -> dict[str, Any]:
    """A method's engine keywords with its spec defaults (service/method_params.py)."""
    from service.method_params import PARAMS_MODELS, method_name

    params = {method_name(m): m for m in PARAMS_MODELS}[name].model_validate({"name": name})
    return params.model_dump(exclude={"name"})


def rss_child(index: Path) -> None:
    """(d) in its own process: peak RSS growth while streaming one epoch."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = load_dataset("upload", 0.01, 0, "rrc_flip", SIZE, shards=shards.read(index), workers=2)
    assert isinstance(data.train, Streamed)
    generator = torch.Generator().manual_seed(0)
    for x, _ in data.train.epoch(64, generator):
        augment_batch(x, data.augment, generator)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    print(json.dumps({"peak_rss_growth_bytes": growth}))


def rss_growth(root: Path, count: int) -> dict[str, int]:
    index = make_jpegs(root / f"rss{count}", count, seed=1)
    dataset = sum(f.stat().st_size for f in index.parent.rglob("*.tar"))
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(index)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {"images": count, "dataset_bytes": dataset, **json.loads(out.splitlines()[-1])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child)
        return {}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        index = make_jpegs(root, args.images)
        got: dict[str, Any] = {"device": str(device), "cores": len(os.sched_getaffinity(0))}
        got |= {"images": args.images, "workers": args.workers}
        got["project"] = project(index, args.workers, args.batch, device)
        got["reference"] = reference(root / "tree", args.workers, args.batch)
        got["project/reference"] = got["project"] / got["reference"]
        if device.type == "cuda":
            got |= gpu_kd(make_jpegs(root / "gpu", args.gpu_images), args.workers, 128)
        got["rss"] = [rss_growth(root, n) for n in args.rss_images]
    print(json.dumps(got, indent=1))
    if args.json:
        args.json.write_text(json.dumps(got, indent=1))
    return got


if __name__ == "__main__":
    main()
