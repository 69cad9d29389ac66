"""A stored dataset's shards when the store is a bucket. Each split reads a sample from the
worker's cache once its shard is there, else by one ranged request to the store; a thread of
each training process meanwhile fetches the shards into the cache, in order, while the cache
has room for them without evicting this dataset's own, so later epochs read local files.
Host memory stays flat: a shard is streamed to disk, and a sample is read at a time."""

import logging
import multiprocessing
import os
import sys
import threading
from typing import Any

from service.store import StoreError, get_store
from worker.engine.data.decode import ShardFiles
from worker.task.cache import Cache, CacheTooSmall

log = logging.getLogger(__name__)


class CachedShards(ShardFiles):
    """A split's samples: from a shard's file in the cache when it is there, else from the
    store by range. Picklable: each DataLoader worker opens its own files and client."""

    def __init__(self, paths: list[str], keys: list[str]) -> None:
        super().__init__(paths)
        self.keys = keys

    def __call__(self, shard: int, offset: int, size: int) -> bytes:
        try:
            fd = self._fd(shard)
        except FileNotFoundError:  # not fetched yet (or evicted): one ranged request
            return get_store().read_at(self.keys[shard], offset, size)
        return os.pread(fd, size, offset)


def loader_start() -> str:
    """How the loader's workers start: from a forkserver (obstore's client does not survive a
    fork of a process that has used it, and this one puts checkpoints), which imports this
    process's main module once, so that a worker it forks starts with torch and the engine
    imported (multiprocessing preloads a main module run as a script, not one run with -m)."""
    main = getattr(sys.modules["__main__"], "__spec__", None)
    if main is not None:
        multiprocessing.set_forkserver_preload([main.name])
    return "forkserver"


def read_from_bucket(index: dict[str, Any], dataset_key: str, cache: Cache) -> threading.Thread:
    """Give each split of `index` (as service.ingest.shards.read gives it) a CachedShards
    reader, and start fetching its shards into the cache: the thread that fetches them
    (bench/data_throughput.py waits on it to time an epoch read from the cache)."""
    prefix = dataset_key.rpartition("/")[0]
    wanted: list[tuple[str, str, int]] = []
    for split in index["splits"].values():
        keys = [f"{prefix}/{shard['name']}" for shard in split["shards"]]
        split["reader"] = CachedShards([str(cache.file(k)) for k in keys], keys)
        wanted += [(k, s["sha256"], s["size"]) for k, s in zip(keys, split["shards"], strict=True)]
    fetching = threading.Thread(target=warm, args=(cache, wanted), daemon=True, name="shards")
    fetching.start()
    return fetching


def warm(cache: Cache, wanted: list[tuple[str, str, int]]) -> None:
    """Fetch the shards (key, sha256, size) into the cache, in order, until one does not fit
    beside the others (the rest are read from the store every epoch)."""
    keep = frozenset(cache.file(key) for key, _, _ in wanted)
    for key, sha256, size in wanted:
        try:
            if cache.warm(key, sha256, size, keep) is None:
                log.warning("the cache has no room for %s: read from the store each epoch", key)
                return
        except (StoreError, OSError, CacheTooSmall) as exc:  # reads fall back to ranges
            log.warning("could not fetch %s into the cache: %s", key, exc)
            return
