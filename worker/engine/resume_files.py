"""The resume checkpoints' file names and the sha256 recorded beside each, with no torch: the
worker's task (worker/task/context.py) restores a job's checkpoints from a bucket with the
digests their rows recorded, and the engine resumes from the newest that matches
(worker/engine/resume.py)."""

import json
import os
from pathlib import Path

RESUME, PREVIOUS = "resume.safetensors", "resume.prev.safetensors"
DIGESTS = ".digests"  # the sha256 of RESUME and PREVIOUS, as written (a suffix to each)


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGESTS)


def record_digest(path: Path, sha256: str) -> None:
    tmp = path.with_name(f".{path.name}{DIGESTS}.tmp")
    tmp.write_text(json.dumps({"name": path.name, "sha256": sha256}))
    os.replace(tmp, digest_path(path))
