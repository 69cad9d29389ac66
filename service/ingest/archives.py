"""Reading uploaded archives (zip, tar, tar.gz) without trusting them: no absolute paths or
"..", no links, devices or sparse members, at most `max_files` members and `max_bytes`
unpacked. What an archive declares is checked before anything is inflated: each member's
size against the cap, unpacked-to-packed ratios against MAX_UNPACK_RATIO, zip methods other
than stored and deflate, zip members that overlap. Reading then stops at the declared sizes,
the cap and the ratio, whatever the data holds (a tar's stream is cut off at the ratio).
Nothing is extracted: members are read into memory one at a time."""

import gzip
import io
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from service.errors import DistilleryError, FieldError
from service.spec.limits import CONTROL_CHARS

CHUNK = 1 << 20
MAX_UNPACK_RATIO = 100  # unpacked bytes per packed byte: an archive, a member, a gzip file
RATIO_FLOOR = 1 << 20  # unpacking to at most this is never refused for its ratio
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
LOCAL_HEADER = struct.Struct("<4s22xHH")  # a zip member's signature, name and extra lengths
TAR_REFUSED = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}  # compressed tars other than gzip


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


def unsafe(message: str) -> BadUpload:
    return BadUpload(message, code="unsafe_archive")


def check_ratio(unpacked: int, packed: int, what: str) -> None:
    """413 when `what` unpacks to more than MAX_UNPACK_RATIO times its packed size."""
    if unpacked > max(MAX_UNPACK_RATIO * packed, RATIO_FLOOR):
        raise too_large(
            f"{what} unpacks to {unpacked} bytes from {packed}: more than "
            f"{MAX_UNPACK_RATIO} times its size"
        )


@dataclass
class Budget:
    """What is left to unpack; every declared size and every read draws from it."""

    max_files: int
    max_bytes: int
    files: int = 0
    bytes: int = 0
    declared: int = 0

    def count_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise too_large(f"more than {self.max_files} archive members (at {name!r})")

    def declare(self, n: int, name: str) -> None:
        """Count a member's declared size before reading it: a bomb is refused unopened."""
        self.declared += n
        if self.declared > self.max_bytes:
            raise too_large(
                f"declares more than {self.max_bytes} bytes unpacked ({name!r} declares {n})"
            )

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


def _read(f: IO[bytes], budget: Budget, name: str, declared: int) -> bytes:
    """The member's bytes, read no further than one byte past its declared size."""
    out = bytearray()
    while chunk := f.read(min(CHUNK, declared + 1 - len(out))):
        budget.spend(len(chunk), name)
        out += chunk
    if len(out) != declared:
        what = "more" if len(out) > declared else "fewer"
        raise BadUpload(f"{name!r} holds {what} bytes than the {declared} its header declares")
    return bytes(out)


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
        if zipfile.is_zipfile(path):
            yield from _zip(path, budget, read)
        else:
            yield from _tar(path, budget, read)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise BadUpload(f"corrupt archive: {exc}") from exc


# --- zip ---------------------------------------------------------------------------------


def check_zip(zf: zipfile.ZipFile, path: Path, budget: Budget) -> None:
    """What the zip's central directory declares, checked before any member is inflated:
    each member's method, size and ratio, the archive's ratio, and no two members overlap."""
    infos = zf.infolist()
    for info in infos:
        budget.count_file(info.filename)
        _check_zip_member(info, budget)
    total = sum(info.file_size for info in infos)
    check_ratio(total, path.stat().st_size, "the archive")
    _no_overlap(path, infos, zf.start_dir)


def _check_zip_member(info: zipfile.ZipInfo, budget: Budget) -> None:
    name, method = info.filename, info.compress_type
    if method not in ZIP_METHODS:
        accepted = ", ".join(ZIP_METHODS.values())
        raise unsafe(f"{name!r} is compressed with zip method {method}; accepted: {accepted}")
    if method == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise unsafe(
            f"{name!r} is stored uncompressed in {info.compress_size} bytes but declares "
            f"{info.file_size}"
        )
    budget.declare(info.file_size, name)
    check_ratio(info.file_size, info.compress_size, f"member {name!r}")


def _no_overlap(path: Path, infos: list[zipfile.ZipInfo], directory_at: int) -> None:
    """Each member's header and data end where the next member starts, at the latest: the
    "better zip bomb" has many members inflate one shared kernel."""
    with path.open("rb") as f:
        spans = sorted((i.header_offset, _data_end(f, i), i.filename) for i in infos)
    after = [(start, name) for start, _, name in spans[1:]]
    for (_, end, name), (start, other) in zip(
        spans, [*after, (directory_at, "the central directory")], strict=True
    ):
        if end > start:
            raise unsafe(f"{name!r} overlaps {other!r} (a zip bomb's trick)")


def _data_end(f: IO[bytes], info: zipfile.ZipInfo) -> int:
    f.seek(info.header_offset)
    raw = f.read(LOCAL_HEADER.size)
    if len(raw) < LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
        raise BadUpload(f"corrupt archive: no local header for {info.filename!r}")
    _, name_len, extra_len = LOCAL_HEADER.unpack(raw)
    return info.header_offset + LOCAL_HEADER.size + name_len + extra_len + info.compress_size


def _zip(path: Path, budget: Budget, read: bool) -> Iterator[tuple[str, bytes | None]]:
    with zipfile.ZipFile(path) as zf:
        check_zip(zf, path, budget)
        for info in zf.infolist():
            name = safe_name(info.filename)
            if info.is_dir():
                continue
            ftype = stat.S_IFMT(info.external_attr >> 16)  # unix mode bits, when a unix zip
            if ftype not in (0, stat.S_IFREG):
                raise unsafe(f"links and devices are refused: {name!r}")
            if info.flag_bits & 0x1:
                raise BadUpload(f"encrypted member: {name!r}")
            if not read:
                yield name, None
                continue
            with zf.open(info) as f:  # zipfile stops at the declared size and checks the CRC
                yield name, _read(f, budget, name, info.file_size)


# --- tar ---------------------------------------------------------------------------------


class Capped(io.RawIOBase):
    """A tar's unpacked stream, refused once it passes MAX_UNPACK_RATIO times the archive's
    size: whatever its headers say (a pax header is read whole), inflating stops there."""

    def __init__(self, stream: IO[bytes] | gzip.GzipFile, packed: int) -> None:
        self.stream, self.packed, self.unpacked = stream, packed, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size >= 0 else CHUNK)
        self.unpacked += len(data)
        check_ratio(self.unpacked, self.packed, "the archive")
        return data


def _unpacked(f: IO[bytes]) -> IO[bytes] | gzip.GzipFile:
    magic = f.read(6)
    f.seek(0)
    if refused := next((v for k, v in TAR_REFUSED.items() if magic.startswith(k)), None):
        raise BadUpload(f"a {refused}-compressed tar is not accepted: send zip, tar or tar.gz")
    return gzip.GzipFile(fileobj=f) if magic.startswith(b"\x1f\x8b") else f


def _open_tar(stream: Capped) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=stream, mode="r|")
    except tarfile.ReadError as exc:
        raise BadUpload("not a zip or tar archive") from exc


def _tar(path: Path, budget: Budget, read: bool) -> Iterator[tuple[str, bytes | None]]:
    size = path.stat().st_size
    with path.open("rb") as f, _open_tar(Capped(_unpacked(f), size)) as tf:
        for info in tf:
            name = safe_name(info.name)
            budget.count_file(name)
            if info.isdir():
                continue
            check_tar_member(info, name)
            budget.declare(info.size, name)
            check_ratio(budget.declared, size, f"the archive (at {name!r})")
            if not read:
                yield name, None
                continue
            member = tf.extractfile(info)
            assert member is not None
            yield name, _read(member, budget, name, info.size)


def check_tar_member(info: tarfile.TarInfo, name: str) -> None:
    if info.issym() or info.islnk():
        raise unsafe(f"links are refused: {name!r}")
    if info.ischr() or info.isblk() or info.isfifo():
        raise unsafe(f"devices and fifos are refused: {name!r}")
    if not info.isfile():
        raise unsafe(f"{name!r} is a tar member of type {info.type!r}, not a file or folder")
    if info.issparse():
        raise unsafe(f"sparse members are refused: {name!r}")
    if info.size < 0:
        raise BadUpload(f"corrupt archive: {name!r} declares a negative size")


# --- gzip members ------------------------------------------------------------------------


def gunzip(data: bytes, budget: Budget, name: str) -> bytes:
    """Decompress a gzip member in bounded steps, so a bomb stops at the budget or the ratio."""
    d = zlib.decompressobj(wbits=31)
    out = bytearray()
    pending = data
    try:
        while pending or not d.eof:
            chunk = d.decompress(pending, CHUNK)
            pending = d.unconsumed_tail
            budget.spend(len(chunk), name)
            out += chunk
            check_ratio(len(out), len(data), repr(name))
            if not chunk and not pending:
                break
        if not d.eof:
            raise BadUpload(f"truncated gzip: {name!r}")
    except zlib.error as exc:
        raise BadUpload(f"corrupt gzip {name!r}: {exc}") from exc
    return bytes(out)
