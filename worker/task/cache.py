"""A worker's local copies of the store's objects that jobs read: datasets, teachers, starts,
route checkpoints. Files under DATA_DIR/cache, one per object at its key, each checked
against the sha256 its row records as it arrives (a copy that does not match is never
kept), at most DISTILLERY_CACHE_BYTES in all, the least recently used evicted first.

Safe for the processes of one host: an object is fetched under a lock of its own, to a
temporary name renamed into place, and the cache is trimmed under one lock; a file another
process still reads stays readable when it is evicted (it is only unlinked). Keys are
written once (a job's resume checkpoints, which are rewritten, never come through here), so
a file present is the object. A folder store's objects are read where they are: nothing is
copied (the embedded default). The objects of a bucket a dataset registered by URI names
(its shards, read where they lie) are held beside them, under uri/<bucket>/<key>, in the same
room (Cache.of_uri)."""

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from service.config import get_settings
from service.files import safe_child
from service.spec import uris
from service.store import Store, for_uri, get_store

log = logging.getLogger(__name__)
LOCKS = ".locks"  # a lock file per key, and TRIM for the whole cache
URIS = "uri"  # the folder of the objects read by URI, by bucket (no store key starts so)


class CacheTooSmall(Exception):
    """An object larger than the whole cache: it cannot be held."""


class Cache:
    def __init__(self, store: Store, root: Path, max_bytes: int, folder: str = "") -> None:
        """`folder`: where under `root` this store's objects are kept ("" for the store's)."""
        self.store, self.root, self.max_bytes = store, root, max_bytes
        self.folder = folder

    @classmethod
    def default(cls) -> "Cache":
        """This process's store, with the cache its settings give."""
        settings = get_settings()
        return cls(get_store(), settings.cache_dir.resolve(), settings.cache_bytes)

    @classmethod
    def of_uri(cls, uri: str) -> tuple["Cache", str]:
        """The cache of the bucket an s3:// URI names (in the default's room, counted and
        evicted with its other files), and the URI's key in it."""
        source, key = for_uri(uri)
        bucket, _ = uris.parse(uri)
        default = cls.default()
        return cls(source, default.root, default.max_bytes, f"{URIS}/{bucket}"), key

    def file(self, key: str) -> Path:
        """Where `key` is read from: the folder store's own file, else its place in the cache."""
        local = self.store.local_path(key)
        return local or safe_child(self.root, f"{self.folder}/{key}" if self.folder else key)

    def path(self, key: str, sha256: str | None = None, size: int | None = None) -> Path:
        """A local file with the object's bytes, fetched and checked against `sha256` unless
        it is here already. CacheTooSmall for an object larger than the whole cache."""
        dest = self.file(key)
        if self.store.is_folder or self._used(dest):
            return dest
        fetched = self._fetch(key, dest, sha256, size, keep=frozenset())
        assert fetched is not None  # with nothing kept, only an object too large has no room
        return fetched

    def warm(self, key: str, sha256: str, size: int, keep: frozenset[Path]) -> Path | None:
        """Fetch an object a job will read again (a shard) when room for it can be made
        without evicting any of `keep`; None when it cannot (CacheTooSmall: never)."""
        dest = self.file(key)
        if self.store.is_folder or self._used(dest):
            return dest
        return self._fetch(key, dest, sha256, size, keep)

    def _fetch(
        self, key: str, dest: Path, sha256: str | None, size: int | None, keep: frozenset[Path]
    ) -> Path | None:
        with self._locked(_lock_name(str(dest))):
            if self._used(dest):  # another process fetched it while this one waited
                return dest
            if size is None:
                meta = self.store.head(key)
                if meta is None:
                    raise FileNotFoundError(key)
                size = meta.size
            if size > self.max_bytes:
                raise CacheTooSmall(f"{key}: {size} bytes, DISTILLERY_CACHE_BYTES {self.max_bytes}")
            if not self._room(size, keep | {dest}):
                return None
            log.info("fetching %s (%d bytes) into the cache", key, size)
            return self.store.download(key, dest, sha256)

    def _used(self, path: Path) -> bool:
        """Whether `path` is cached; marks it used now (the order of eviction)."""
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        return True

    def _room(self, size: int, keep: frozenset[Path]) -> bool:
        """Evict the least recently used files until `size` more bytes fit; False (nothing
        evicted) when they cannot without evicting one of `keep`."""
        with self._locked("TRIM"):
            held = sorted(self._files(), key=lambda f: f[1].st_mtime)
            excess = sum(st.st_size for _, st in held) + size - self.max_bytes
            evictable = [(p, st) for p, st in held if p not in keep]
            if excess > sum(st.st_size for _, st in evictable):
                return False
            for path, st in evictable:
                if excess <= 0:
                    break
                path.unlink(missing_ok=True)
                excess -= st.st_size
                log.info("evicted %s from the cache (%d bytes)", path, st.st_size)
        return True

    def _files(self) -> Iterator[tuple[Path, os.stat_result]]:
        """Every cached file (not a lock, not a download in progress) and its stat; a
        download its process left when it was killed goes."""
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if d != LOCKS]
            for name in names:
                path = Path(folder) / name
                if name.startswith("."):
                    _drop_if_orphaned(path)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    yield path, path.stat()

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """An exclusive lock on the cache's `name`, between processes (flock)."""
        locks = self.root / LOCKS
        locks.mkdir(parents=True, exist_ok=True)
        with (locks / name).open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _drop_if_orphaned(path: Path) -> None:
    """Store.download's partial file (.<name>.<pid>.partial) whose process is gone."""
    _, pid, suffix = path.name.rsplit(".", 2) if path.name.count(".") >= 3 else ("", "", "")
    if suffix != "partial" or not pid.isdigit():
        return
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
    except PermissionError:  # alive, another user's
        pass


def _lock_name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]
