"""bench/data_throughput.py still runs end to end on the CPU (tiny sizes): the project's and
the reference's images/s, their ratio, the KD step and epoch (run on the CPU here), the
memory figures for two dataset sizes and (e), the shards read from a bucket of a real S3
server on loopback against the local disk, are all produced."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_data_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    args = "--images 24 --workers 1 --batch 8 --size 32 --rss-images 8 16 --store"
    args += " --kd-cpu --kd-images 24 --kd-batch 8 --kd-teacher cnn_small --kd-student cnn_small"
    subprocess.run(
        [sys.executable, "bench/data_throughput.py", *args.split(), "--json", str(out)],
        cwd=ROOT,
        check=True,
        timeout=300,
        capture_output=True,
    )
    got = json.loads(out.read_text())
    figures = ["project", "reference", "project/reference", "kd_step", "kd_epoch", "kd_epoch/step"]
    assert all(got[name] > 0 for name in figures), got
    assert [r["images"] for r in got["rss"]] == [8, 16]
    assert all(r["dataset_bytes"] > 0 and r["peak_rss_bytes"] > 0 for r in got["rss"]), got
    store = got["store"]
    epochs = [store[side][epoch] for side in ("local", "store") for epoch in ("first", "cached")]
    assert all(e["images_per_s"] > 0 for e in epochs), store
    assert store["first store/local"] > 0 and store["cached store/local"] > 0, store
    assert store["store"]["peak_rss_growth_bytes"] > 0, store
