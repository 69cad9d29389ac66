"""The model card's measurements: data fingerprint, accuracy per class, latency."""

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from service.spec.job import JobSpec
from worker.engine.data import load_dataset
from worker.engine.zoo import build_model
from worker.job.model_card import (
    data_fingerprint,
    dataset_lineage,
    latency_ms,
    per_class_accuracy,
)


def test_fingerprint_is_stable_and_changes_with_the_split() -> None:
    first, again = load_dataset("digits", 0.2, 0), load_dataset("digits", 0.2, 0)
    assert data_fingerprint(first) == data_fingerprint(again)
    assert data_fingerprint(first) != data_fingerprint(load_dataset("digits", 0.2, 1))
    assert data_fingerprint(first) != data_fingerprint(load_dataset("digits", 0.3, 0))


class Constant(nn.Module):
    """Always predicts class `c`."""

    logits: Tensor

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("logits", torch.eye(num_classes)[c])

    def forward(self, x: Tensor) -> Tensor:
        return self.logits.expand(len(x), -1)


def test_per_class_accuracy_names_every_class() -> None:
    data = load_dataset("digits", 0.2, 0)
    data.class_names = [*data.class_names, "never_seen"]  # a class with no validation sample
    model = Constant(3, 11)
    accuracy = per_class_accuracy(model, data, 64, "cpu", "fp32")
    assert list(accuracy) == [*(str(c) for c in range(10)), "never_seen"]
    assert accuracy["3"] == 1.0 and accuracy["never_seen"] is None
    assert all(accuracy[str(c)] == 0.0 for c in range(10) if c != 3)


def test_latency_times_each_batch_size_once() -> None:
    model = build_model("cnn_small", 10, 1)
    latency = latency_ms(model, (1, 8, 8), [64, 1, 64], "cpu", "fp32")
    assert latency["device"] == "cpu" and latency["precision"] == "fp32"
    assert [run["batch_size"] for run in latency["runs"]] == [1, 64]
    for run in latency["runs"]:
        assert 5 <= run["iterations"] <= 20 and 0 < run["p50"] <= run["p90"]


def spec_on(dataset: str, **data: object) -> JobSpec:
    return JobSpec.model_validate(
        {
            "method": {"name": "supervised"},
            "student": {"arch": "cnn_small", "num_classes": 3, "in_channels": 1},
            "data": {"dataset": dataset, "val_fraction": 0.1, **data},
            "train": {"epochs": 1, "batch_size": 8},
        }
    )


def test_val_fraction_is_named_only_where_it_split_the_data(tmp_path: Path) -> None:
    rng, path = np.random.default_rng(0), tmp_path / "d.npz"
    images = rng.integers(0, 256, (40, 6, 6, 1), dtype=np.uint8)  # canonical NHWC
    labels = np.arange(40) % 3
    np.savez(path, images=images, labels=labels, class_names=np.array(["a", "b", "c"]))
    split = load_dataset("upload", 0.1, 0, path=str(path))
    np.savez(path, images=images, labels=labels, class_names=np.array(["a", "b", "c"]),
             val_images=images[:9], val_labels=labels[:9])  # fmt: skip
    own = load_dataset("upload", 0.1, 0, path=str(path))
    spec = spec_on("upload", upload="ds_1")
    assert dataset_lineage(spec, split)["val_fraction"] == 0.1
    assert "val_fraction" not in dataset_lineage(spec, own)
    assert dataset_lineage(spec, own)["val_size"] == 9
