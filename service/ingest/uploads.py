"""Streamed uploads: bytes go to a temp file beside their destination while they are hashed
and counted, and are renamed into place only once they are whole and checked. Memory stays
flat whatever the size: at most one chunk and one write buffer are held. The size cap itself
is BodySizeLimit's (service/api/middleware.py), counted as the body streams in. The files an
upload makes are then put to the store (service/store.py) before their row is recorded; a
failed upload deletes what it had put."""

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import event
from sqlalchemy.orm import Session

from service.ingest import weights
from service.store import StoreError, get_store

log = logging.getLogger(__name__)
FLUSH = 1 << 20  # bytes gathered before one write (in a thread: the event loop never waits)


@dataclass(frozen=True)
class Received:
    sha256: str
    size: int
    header: weights.Header


class Sink:
    """A temp file beside `dest` that hashes and counts what is written to it."""

    def __init__(self, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.dest = dest
        self.tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        self.file: IO[bytes] = self.tmp.open("xb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.file.write(data)
        self.digest.update(data)
        self.size += len(data)

    def commit(self) -> None:
        """Durably rename into place: a reader sees the whole file or none."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.dest)
        fd = os.open(self.dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


class HeaderReader:
    """Collects a safetensors file's first bytes until its header can be parsed."""

    def __init__(self) -> None:
        self.prefix = bytearray()
        self.header: weights.Header | None = None

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while self.header is None:
            need = 8 if len(self.prefix) < 8 else 8 + weights.header_length(self.prefix)
            take = need - len(self.prefix)
            self.prefix += view[:take]
            view = view[take:]
            if len(self.prefix) < need:
                return
            if need > 8:
                self.header = weights.parse_header(bytes(self.prefix[8:]))


async def write_all(
    sink: Sink, chunks: AsyncIterator[bytes], inspect: Callable[[bytes], None] | None = None
) -> None:
    """Write every chunk to `sink`, gathered into large writes made in a thread. `inspect`
    sees each chunk first and raises to refuse the upload."""
    pending = bytearray()
    async for chunk in chunks:
        if inspect is not None:
            inspect(chunk)
        if len(pending) + len(chunk) < FLUSH:
            pending += chunk
            continue
        if pending:
            await asyncio.to_thread(sink.write, pending)
            pending = bytearray()
        await asyncio.to_thread(sink.write, chunk)
    if pending:
        await asyncio.to_thread(sink.write, pending)


async def receive_safetensors(
    chunks: AsyncIterator[bytes], dest: Path, check: Callable[[weights.Header], None]
) -> Received:
    """Stream a safetensors file to `dest`. `check` sees the header as soon as it has
    arrived and raises to refuse the file; a refused, truncated or interrupted upload leaves
    nothing behind. Raises weights.NotSafetensors for bytes that are not safetensors."""
    sink = await asyncio.to_thread(Sink, dest)
    reader = HeaderReader()

    def inspect(chunk: bytes) -> None:
        if reader.header is None:
            reader.feed(chunk)
            if reader.header is not None:
                check(reader.header)

    try:
        await write_all(sink, chunks, inspect)
        header = _whole(reader, sink.size)
        await asyncio.to_thread(sink.commit)
    except BaseException:
        await asyncio.to_thread(sink.discard)
        raise
    return Received(sink.digest.hexdigest(), sink.size, header)


def _whole(reader: HeaderReader, size: int) -> weights.Header:
    if reader.header is None:
        raise weights.NotSafetensors(
            f"not a safetensors file: {size} bytes end before its header does"
        )
    expected = reader.header.file_size
    if size != expected:
        why = "truncated" if size < expected else "trailing bytes after the last tensor"
        raise weights.NotSafetensors(f"{why}: the file is {size} bytes, its header says {expected}")
    return reader.header


async def drain(chunks: AsyncIterator[bytes]) -> None:
    """Read the rest of a refused body, so the client, still sending, gets to read the 4xx."""
    async for _ in chunks:
        pass


def discard(directory: Path) -> None:
    """Remove what an upload left under `directory`."""
    shutil.rmtree(directory, ignore_errors=True)


def put_folder(prefix: str, directory: Path) -> int:
    """Every file an upload made in `directory` (service.store.scratch_dir) as an object
    under `prefix`; their bytes."""
    return get_store().put_folder(prefix, directory)


def unstage(prefix: str, directory: Path) -> None:
    """After a failed upload: whatever it had put under `prefix` goes, and its files. A
    store that cannot be reached keeps what it had (logged): with no row, nothing counts
    it against a quota."""
    try:
        get_store().delete_prefix(prefix)
    except StoreError as exc:
        log.error("could not delete %s/ after a failed upload: %s", prefix, exc)
    discard(directory)


def clear_scratch(directory: Path) -> None:
    """An upload's files once they are put: a bucket's scratch copies go; a folder store's
    (`directory` is in the store) stay."""
    if not get_store().is_folder:
        discard(directory)


def delete_after_commit(s: Session, prefix: str) -> None:
    """Delete the objects under `prefix` once the deletion of their row is committed (never
    before). A store that cannot be reached then keeps them (logged): no row counts them."""

    def delete(_s: Session) -> None:
        try:
            get_store().delete_prefix(prefix)
        except StoreError as exc:
            log.error("could not delete %s/ after its row: %s", prefix, exc)

    event.listen(s, "after_commit", delete, once=True)
