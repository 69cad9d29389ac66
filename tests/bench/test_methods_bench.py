"""bench/methods.py still runs end to end (tiny settings): a bench that rots is no bench."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_methods_bench_prints_a_row_per_method() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "bench/methods.py",
            "--device",
            "cpu",
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--teacher-epochs",
            "2",
            "--teacher",
            "resnet8",
            "--student",
            "cnn_small",
            "--methods",
            "scratch,kd,rco",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    rows = [line.split()[0] for line in out.splitlines()[2:]]
    assert rows == ["scratch", "kd", "rco"], out
    assert "+-" in out.splitlines()[-1]
