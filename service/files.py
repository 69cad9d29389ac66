"""Plain file helpers both sides use, with no database: a file's sha256, read in chunks, and
a child path that cannot escape its root. Worker files import these without SQLAlchemy."""

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def safe_child(root: Path, name: str) -> Path:
    """root/name, refusing anything that would escape root."""
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()) or path == root.resolve():
        raise ValueError(f"unsafe artifact name {name!r}")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
