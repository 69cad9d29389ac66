"""The README's code blocks run. Each fence names its language: `python` runs here, in this
venv, in a folder holding what the walk-through downloads; `json` parses; `text` is output
and not code. `sh`/`bash` and `python needs-service` run in tests/e2e/test_readme.py against
a real service; `no-test` marks a block that cannot run there (installs, placeholders)."""

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.spec.job import JobSpec
from service.spec.sweep import SweepSpec, space_problems

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(.*)$")
LANGUAGES = {"python", "sh", "bash", "json", "text"}
TAGS = {"needs-service", "no-test"}


@dataclass(frozen=True)
class Block:
    line: int  # of its opening fence, 1-based
    language: str
    tags: frozenset[str]
    code: str

    def runs_here(self) -> bool:
        return self.language == "python" and not self.tags

    def runs_with_a_service(self) -> bool:
        shell = self.language in ("sh", "bash") and not self.tags
        return shell or (self.language == "python" and self.tags == {"needs-service"})


def blocks(text: str | None = None) -> list[Block]:
    """The fenced blocks of the README, in order."""
    found, opened, code = [], None, []
    for n, line in enumerate((text or (ROOT / "README.md").read_text()).splitlines(), 1):
        match = FENCE.match(line)
        if opened is None and match:
            opened, code = (n, match.group(1).split()), []
        elif opened is not None and line.strip() == "```":
            words = opened[1] or [""]
            found.append(Block(opened[0], words[0], frozenset(words[1:]), "\n".join(code)))
            opened = None
        elif opened is not None:
            code.append(line)
    assert opened is None, f"README line {opened[0]}: a fence is never closed"
    return found


def test_every_block_says_what_it_is() -> None:
    for block in blocks():
        assert block.language in LANGUAGES, f"README line {block.line}: {block.language!r}"
        assert block.tags <= TAGS, f"README line {block.line}: {sorted(block.tags)}"


def test_the_parser_reads_info_strings() -> None:
    text = "a\n```python needs-service\nx = 1\n```\n```text\n$ ls\n```\n"
    assert blocks(text) == [
        Block(2, "python", frozenset({"needs-service"}), "x = 1"),
        Block(5, "text", frozenset(), "$ ls"),
    ]


def test_json_blocks_parse_and_each_is_a_spec() -> None:
    """A job spec, or a sweep (a base spec and a space)."""
    for block in (b for b in blocks() if b.language == "json"):
        body = json.loads(block.code)
        if "space" in body:
            assert space_problems(SweepSpec.model_validate(body)) == [], block.line
            continue
        body["teacher"] = {"job": "job_0"}  # the README's is a placeholder
        JobSpec.model_validate(body)


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    """What the walk-through downloads (student.safetensors, model.json), from an untrained
    cnn_small here: the blocks run against the real engine, not against a trained job."""
    from worker.engine.checkpoint import save_weights
    from worker.engine.zoo import build_model

    save_weights(tmp_path / "student.safetensors", build_model("cnn_small", 10, 1))
    spec = JobSpec.model_validate(
        {
            "method": {"name": "supervised"},
            "student": {"arch": "cnn_small"},
            "data": {"dataset": "digits", "val_fraction": 0.2},
        }
    )
    card = {
        "architecture": "cnn_small",
        "num_classes": 10,
        "in_channels": 1,
        "spec": spec.model_dump(mode="json"),
        "metrics": {"final": {"val_acc": 0.1}},
    }
    (tmp_path / "model.json").write_text(json.dumps(card))
    return tmp_path


def test_the_python_blocks_run(downloads: Path) -> None:
    ran = []
    for block in filter(Block.runs_here, blocks()):
        proc = subprocess.run(
            [sys.executable, "-c", block.code],
            cwd=downloads,
            capture_output=True,
            text=True,
            timeout=300,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 0, f"README line {block.line}:\n{proc.stderr}"
        ran.append(block.line)
    assert ran, "no python block ran"
