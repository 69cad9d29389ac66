"""bench/methods.py runs end to end through the service (tiny settings) and picks up where it
stopped: a bench that rots is no bench, and hours of training must survive a stop."""

import gzip
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.methods import fashion_npz, rows
from service.spec.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]


def write_idx(folder: Path, n: int) -> None:
    """Fashion-MNIST's four IDX files (gzipped), n random images each, as Debian ships them."""
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        header = np.array([2051, n, 28, 28], ">u4").tobytes()
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(header + images.tobytes())
        )
        header = np.array([2049, n], ">u4").tobytes()
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(header + labels.tobytes())
        )


def test_every_method_of_the_spec_is_a_row() -> None:
    table = rows()
    assert set(METHODS) - {"supervised"} <= set(table) and list(table)[:2] == ["scratch", "kd"]
    assert table["kdcl"] == ({"name": "kdcl", "peers": ["resnet8"]}, False)
    assert table["rco"] == ({"name": "rco", "anchors": "every_n"}, True)


def test_the_first_images_of_each_split(tmp_path: Path) -> None:
    write_idx(tmp_path, 5)
    with np.load(io.BytesIO(fashion_npz(tmp_path, 3, 2))) as npz:
        assert npz["images"].shape == (3, 28, 28) and npz["val_images"].shape == (2, 28, 28)
        with gzip.open(tmp_path / "train-images-idx3-ubyte.gz") as f:
            first = np.frombuffer(f.read(), np.uint8, 784 * 3, offset=16)
        assert np.array_equal(npz["images"].ravel(), first)
        assert list(npz["class_names"])[-1] == "Ankle boot"


def bench(tmp_path: Path, methods: str) -> str:
    cmd = [sys.executable, "-m", "bench.methods", "--epochs", "1", "--seeds", "0"]
    cmd += ["--methods", methods, "--train-images", "96", "--val-images", "64"]
    cmd += ["--teacher-epochs", "1", "--data", str(tmp_path / "idx")]
    cmd += ["--results", str(tmp_path / "methods.json")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_the_bench_trains_through_the_service_and_resumes_from_its_results(
    tmp_path: Path,
) -> None:
    (tmp_path / "idx").mkdir()
    write_idx(tmp_path / "idx", 96)
    first = bench(tmp_path, "scratch")
    results = json.loads((tmp_path / "methods.json").read_text())
    scratch = results["runs"]["scratch/1/0"]["job"]
    assert "| `scratch` |" in first

    second = bench(tmp_path, "scratch,kd")  # only kd is missing: only kd trains
    again = json.loads((tmp_path / "methods.json").read_text())
    assert again["runs"]["scratch/1/0"]["job"] == scratch
    assert (again["dataset"], again["teacher"]) == (results["dataset"], results["teacher"])
    db = tmp_path / "methods-service" / "distillery.db"
    with sqlite3.connect(db) as conn:
        names = sorted(name for (name,) in conn.execute("SELECT name FROM jobs"))
    assert names == ["bench-kd", "bench-scratch", "bench-teacher"]
    [kd_row] = [line for line in second.splitlines() if line.startswith("| `kd` |")]
    assert "+1.60 over scratch" in kd_row  # the paper's claim beside it
    assert float(kd_row.split("|")[-2]) > 0  # the mean wall time of its job
    kd, scratch_run = again["runs"]["kd/1/0"], again["runs"]["scratch/1/0"]
    warned = any("did not help" in w for w in kd["warnings"])  # the job compared itself
    assert warned == (kd["val_acc"] < scratch_run["val_acc"]), kd

    third = bench(tmp_path, "scratch,kd")  # nothing missing: no service, the same table
    assert third.splitlines()[-3:] == second.splitlines()[-3:]
