"""Files in and out: uploads read in chunks, downloads saved only when their sha256 is the
one expected."""

import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from distillery_client.errors import ChecksumMismatch

CHUNK = 1 << 20
Progress = Callable[[int, int], None]  # (bytes so far, bytes in all)


def read_chunks(file: Path, size: int, progress: Progress | None = None) -> Iterator[bytes]:
    """`file`'s bytes, a chunk at a time, reporting how far it got."""
    done = 0
    with file.open("rb") as f:
        while chunk := f.read(CHUNK):
            done += len(chunk)
            if progress:
                progress(done, size)
            yield chunk


def save_verified(
    chunks: Iterable[bytes],
    path: Path,
    sha256: str,
    size: int,
    progress: Progress | None = None,
) -> None:
    """Write `chunks` to `path` (through a temporary file beside it) if their sha256 is
    `sha256`; else remove what was written and raise ChecksumMismatch."""
    part = path.with_name(f".{path.name}.part")
    digest, done = hashlib.sha256(), 0
    try:
        with part.open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, size)
        if digest.hexdigest() != sha256:
            raise ChecksumMismatch(
                f"{path.name}: sha256 {digest.hexdigest()} is not the listed {sha256}"
            )
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)


def sha256_of(path: str | Path) -> str:
    """A file's sha256, hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
