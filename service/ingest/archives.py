"""Reading uploaded archives (zip, tar, tar.gz) without trusting them: no absolute paths or
"..", no links or devices, at most `max_files` members, and at most `max_bytes` unpacked in
all, counted while reading (a declared size is never trusted alone). Nothing is extracted:
members are read into memory one at a time."""

import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from service.errors import DistilleryError, FieldError
from service.spec.limits import CONTROL_CHARS

CHUNK = 1 << 20


def printable_names(names: list[str], what: str) -> None:
    """Class names become text columns and folder names: no NUL or other control character."""
    if bad := [n for n in names if CONTROL_CHARS.search(n)]:
        raise BadUpload(f"{what} must not contain control characters: {bad[:3]!r}")


class BadUpload(DistilleryError):
    """An upload that is not what it claims to be, or is unsafe to unpack."""

    def __init__(self, message: str, code: str = "invalid_dataset", status: int = 422) -> None:
        super().__init__(
            f"dataset refused: {message}",
            [FieldError("body", message)],
            status=status,
            code=code,
            title="Dataset refused" if status == 422 else "Dataset too large",
        )


def too_large(message: str) -> BadUpload:
    return BadUpload(message, code="dataset_too_large", status=413)


@dataclass
class Budget:
    """What is left to unpack; every read draws from it."""

    max_files: int
    max_bytes: int
    files: int = 0
    bytes: int = field(default=0)

    def count_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise too_large(f"more than {self.max_files} archive members (at {name!r})")

    def spend(self, n: int, name: str) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise too_large(f"unpacks to more than {self.max_bytes} bytes (at {name!r})")


def safe_name(name: str) -> str:
    """The member's normalised relative path; refuses absolute paths and "..": zip/tar slip."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise BadUpload(f"unsafe path in archive: {name!r}", code="unsafe_archive")
    return "/".join(p for p in path.parts if p != ".")


def _read(f: IO[bytes], budget: Budget, name: str) -> bytes:
    out = bytearray()
    while chunk := f.read(CHUNK):
        budget.spend(len(chunk), name)
        out += chunk
    return bytes(out)


def kind(path: Path) -> str:
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise BadUpload("not a zip or tar archive")


def names(path: Path, budget: Budget) -> list[str]:
    """Every regular file's safe name, checking each member (no data read)."""
    return [name for name, _ in _members(path, budget, read=False)]


def files(path: Path, budget: Budget) -> Iterator[tuple[str, bytes]]:
    """(safe name, bytes) of each regular file, in archive order."""
    for name, data in _members(path, budget, read=True):
        assert data is not None
        yield name, data


def _members(path: Path, budget: Budget, *, read: bool) -> Iterator[tuple[str, bytes | None]]:
    try:
        if kind(path) == "zip":
            yield from _zip(path, budget, read)
        else:
            yield from _tar(path, budget, read)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise BadUpload(f"corrupt archive: {exc}") from exc


def _zip(path: Path, budget: Budget, read: bool) -> Iterator[tuple[str, bytes | None]]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = safe_name(info.filename)
            budget.count_file(name)
            if info.is_dir():
                continue
            ftype = stat.S_IFMT(info.external_attr >> 16)  # unix mode bits, when a unix zip
            if ftype not in (0, stat.S_IFREG):
                raise BadUpload(f"links and devices are refused: {name!r}", code="unsafe_archive")
            if info.flag_bits & 0x1:
                raise BadUpload(f"encrypted member: {name!r}")
            if not read:
                yield name, None
                continue
            with zf.open(info) as f:  # zipfile stops at the declared size and checks the CRC
                yield name, _read(f, budget, name)


def _tar(path: Path, budget: Budget, read: bool) -> Iterator[tuple[str, bytes | None]]:
    with tarfile.open(path, "r:*") as tf:
        for info in tf:
            name = safe_name(info.name)
            budget.count_file(name)
            if info.isdir():
                continue
            if not info.isfile():
                what = "links" if info.issym() or info.islnk() else "devices and fifos"
                raise BadUpload(f"{what} are refused: {name!r}", code="unsafe_archive")
            if not read:
                yield name, None
                continue
            f = tf.extractfile(info)
            assert f is not None
            data = _read(f, budget, name)
            if len(data) != info.size:
                raise BadUpload(f"truncated member: {name!r}")
            yield name, data


def gunzip(data: bytes, budget: Budget, name: str) -> bytes:
    """Decompress a gzip member in bounded steps, so a bomb stops at the budget."""
    d = zlib.decompressobj(wbits=31)
    out = bytearray()
    pending = data
    try:
        while pending or not d.eof:
            chunk = d.decompress(pending, CHUNK)
            pending = d.unconsumed_tail
            budget.spend(len(chunk), name)
            out += chunk
            if not chunk and not pending:
                break
        if not d.eof:
            raise BadUpload(f"truncated gzip: {name!r}")
    except zlib.error as exc:
        raise BadUpload(f"corrupt gzip {name!r}: {exc}") from exc
    return bytes(out)
