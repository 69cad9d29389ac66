"""bench/train_throughput.py still runs end to end on the CPU (tiny sizes): every figure and
ratio the README quotes is produced and positive."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_throughput_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    args = "--device cpu --teacher mlp --student mlp --samples 64 --batch 16"
    args += f" --research-batch 8 --steps 1 --rounds 1 --json {out}"
    subprocess.run(
        [sys.executable, "bench/train_throughput.py", *args.split()],
        cwd=ROOT,
        check=True,
        timeout=300,
        capture_output=True,
    )
    got = json.loads(out.read_text())
    figures = ["engine", "reference", "research", "engine_epoch", "engine_streamed_epoch"]
    ratios = ["engine/reference", "engine/research", "epoch/step", "streamed_epoch/step"]
    assert all(got[name] > 0 for name in figures + ratios), got
    assert got["device"] == "cpu" and got["rounds"]["engine"][0] == got["engine"]
