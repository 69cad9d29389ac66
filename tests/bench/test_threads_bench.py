"""bench/threads.py still runs end to end (tiny: one epoch, one round, threads 1): both
cases, each setting's images/s, the default's threads and its ratio to the best."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_threads_bench_reports_both_cases(tmp_path: Path) -> None:
    out = tmp_path / "threads.json"
    args = f"--epochs 1 --rounds 1 --threads 1 --json {out}"
    subprocess.run(
        [sys.executable, "bench/threads.py", *args.split()],
        cwd=ROOT,
        check=True,
        timeout=1800,  # minutes on a crowded 2-core host: each run starts torch afresh
        capture_output=True,
    )
    got = json.loads(out.read_text())
    assert got["epochs"] == 1 and got["cores"] >= 1
    for case in ("idle", "busy"):
        figures = got[case]
        assert set(figures["images_per_s"]) == {"default", "1"}, figures
        assert all(rate > 0 for rate in figures["images_per_s"].values())
        assert [len(r) for r in figures["rounds"].values()] == [1, 1]
        assert len(figures["default_threads"]) == 1 and figures["default_threads"][0] >= 1
        assert 0 < figures["default/best"] <= 1
