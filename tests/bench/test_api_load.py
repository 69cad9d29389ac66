"""bench/api_load.py still runs end to end on the CPU (tiny load): its own database, redis,
API and worker come up, every figure is reported, no request fails, and every accepted job
ends, each run once. Whether a job succeeds is the worker tests' business, not this one's."""

import json
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.conftest import PG_ADMIN

ROOT = Path(__file__).resolve().parents[2]


JOBS = 3  # each trains (one worker, one at a time): few keep the test short


def test_api_load_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    args = f"--submitters 2 --pollers 5 --jobs {JOBS} --duration 5 --poll-interval 0.2"
    args += " --drain-timeout 90"
    run = subprocess.run(
        [sys.executable, "bench/api_load.py", *args.split(), "--json", str(out)],
        cwd=ROOT,
        timeout=170,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(out.read_text())
    keys = ["cores", "parameters", "submissions_per_s", "accepted", "latency_ms", "requests"]
    keys += ["errors", "reconciliation", "drain_s"]
    assert all(k in got for k in keys), sorted(got)
    for kind in ("submit", "status", "list"):
        assert got["latency_ms"][kind]["count"] > 0, got["latency_ms"]
        assert {"p50", "p99", "max"} <= set(got["latency_ms"][kind]), got["latency_ms"]
    assert got["errors"] == {"total": 0}, got["errors"]
    rec = got["reconciliation"]
    assert got["accepted"] == rec["accepted"] == JOBS, rec
    assert rec["terminal"] == JOBS and rec["not_terminal"] == 0, rec
    assert rec["succeeded"] + rec["failed"] == JOBS, rec
    assert rec["ran_twice"] == 0 and rec["unknown_in_db"] == 0, rec
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:  # its database was dropped
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database")]
    assert got["database"].startswith("distillery_bench_") and got["database"] not in names
