"""The README's walk-through against a real `distillery up`: every `sh`/`bash` block, every
plain `python` and `python needs-service` block that is not `no-test`, in order, in one shell
(so `$TEACHER` carries on), in a folder laid out as `make run` leaves it
(`.venv/bin/activate`, the `distillery` command). `localhost:8000` becomes the port this test
serves on."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port
from tests.e2e.test_up import ready, wait_for
from tests.test_readme import ROOT, Block, blocks

pytestmark = pytest.mark.slow
RAN = "README-BLOCK-RAN"


def lay_out(folder: Path) -> None:
    """A `.venv/bin` with `distillery` (this checkout's CLI) and an `activate` putting it first."""
    bin_ = folder / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "distillery").write_text(f'#!/bin/sh\nexec {sys.executable} -m service.cli "$@"\n')
    (bin_ / "distillery").chmod(0o755)
    (bin_ / "activate").write_text(f'PATH="{bin_}:$PATH"\n')


def script(runnable: list[Block], port: int, folder: Path) -> str:
    lines = ["set -eo pipefail"]
    for block in runnable:
        code = block.code.replace("localhost:8000", f"localhost:{port}")
        if block.language == "python":
            path = folder / f"block_{block.line}.py"
            path.write_text(code)
            code = f"{shlex.quote(sys.executable)} {path.name}"
        lines += [code, f"echo; echo {RAN} {block.line}"]  # a JSON answer ends in no newline
    return "\n".join(lines) + "\n"


def test_the_readme_walk_through_runs(tmp_path: Path) -> None:
    runnable = [b for b in blocks() if b.runs_with_a_service() or b.runs_here()]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env |= {"PYTHONPATH": str(ROOT), "DISTILLERY_URL": f"http://127.0.0.1:{port}"}
    env["DISTILLERY_TRAIN_THREADS"] = "1"  # a shared test host: all cores crawl beside others
    lay_out(tmp_path)
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "up", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_for(lambda: ready(client), 60)
        proc = subprocess.run(
            ["bash", "-c", script(runnable, port, tmp_path)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        up.terminate()
        up.wait(timeout=60)
        log.close()
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stderr[-4000:]
    ran = [int(n) for n in re.findall(rf"^{RAN} (\d+)$", proc.stdout, re.MULTILINE)]
    assert ran == [b.line for b in runnable]  # every block that can run ran, in order
    measured, reported = re.search(r"val_acc (\S+), the job reported (\S+)", proc.stdout).groups()
    assert measured == reported  # the loaded student scores what the job said
