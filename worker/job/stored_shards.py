"""A stored dataset's shards when they lie in a bucket: the store's, or the one a dataset
registered by URI names (each of its shards' entries has its `uri`). Each split reads a
sample from the worker's cache once its shard is there, else by one ranged request to where
it lies; a thread of each training process meanwhile fetches the shards into the cache, in
order, while the cache has room for them without evicting this dataset's own, so later
epochs read local files. Host memory stays flat: a shard is streamed to disk, and a sample
is read at a time."""

import logging
import multiprocessing
import os
import sys
import threading
from typing import Any

from service.spec import uris
from service.store import Store, StoreError, for_uri, get_store
from worker.engine.data.decode import ShardFiles
from worker.task.cache import Cache, CacheTooSmall

log = logging.getLogger(__name__)


class CachedShards(ShardFiles):
    """A split's samples: from a shard's file in the cache when it is there, else by range
    from where it lies (`sources`: a key of the store, or an s3:// URI). Picklable: each
    DataLoader worker opens its own files and clients."""

    def __init__(self, paths: list[str], sources: list[str]) -> None:
        super().__init__(paths)
        self.sources = sources

    def __call__(self, shard: int, offset: int, size: int) -> bytes:
        try:
            fd = self._fd(shard)
        except FileNotFoundError:  # not fetched yet (or evicted): one ranged request
            store, key = located(self.sources[shard])
            return store.read_at(key, offset, size)
        return os.pread(fd, size, offset)


def located(source: str) -> tuple[Store, str]:
    """The store and key of a shard's source: an s3:// URI where it lies, else a store key."""
    return for_uri(source) if source.startswith(uris.SCHEME) else (get_store(), source)


def cache_of(source: str, cache: Cache) -> tuple[Cache, str]:
    """The cache a shard is fetched into, and its key there."""
    return Cache.of_uri(source) if source.startswith(uris.SCHEME) else (cache, source)


def loader_start() -> str:
    """How the loader's workers start: from a forkserver (obstore's client does not survive a
    fork of a process that has used it, and this one puts checkpoints), which imports this
    process's main module once, so that a worker it forks starts with torch and the engine
    imported (multiprocessing preloads a main module run as a script, not one run with -m)."""
    main = getattr(sys.modules["__main__"], "__spec__", None)
    if main is not None:
        multiprocessing.set_forkserver_preload([main.name])
    return "forkserver"


def read_from_bucket(
    index: dict[str, Any], dataset_key: str | None, cache: Cache
) -> threading.Thread | None:
    """Give each split of `index` (as service.ingest.shards.read gives it) whose shards lie
    in a bucket a CachedShards reader, and start fetching its shards into the cache: a shard
    with a `uri` is read there, the others from the store's bucket when `dataset_key` (the
    index's key) is given (None: a folder store, its files read in place). The thread that
    fetches them; None when no split has a reader."""
    prefix = dataset_key.rpartition("/")[0] if dataset_key is not None else None
    wanted: list[tuple[Cache, str, str, int]] = []
    for split in index["splits"].values():
        sources = [s for shard in split["shards"] if (s := _source(shard, prefix))]
        if len(sources) < len(split["shards"]):  # a folder store's files: read in place
            continue
        held = [cache_of(source, cache) for source in sources]
        split["reader"] = CachedShards([str(c.file(k)) for c, k in held], sources)
        for (c, key), shard in zip(held, split["shards"], strict=True):
            wanted.append((c, key, shard["sha256"], shard["size"]))
    if not wanted:
        return None
    warming = threading.Thread(target=warm, args=(wanted,), daemon=True, name="shards")
    warming.start()
    return warming


def _source(shard: dict[str, Any], prefix: str | None) -> str | None:
    if "uri" in shard:
        return str(shard["uri"])
    return f"{prefix}/{shard['name']}" if prefix is not None else None


def warm(wanted: list[tuple[Cache, str, str, int]]) -> None:
    """Fetch the shards (cache, key, sha256, size) into the cache, in order, until one does
    not fit beside the others (the rest are read by range every epoch)."""
    keep = frozenset(cache.file(key) for cache, key, _, _ in wanted)
    for cache, key, sha256, size in wanted:
        try:
            if cache.warm(key, sha256, size, keep) is None:
                log.warning("the cache has no room for %s: read by range each epoch", key)
                return
        except (StoreError, OSError, CacheTooSmall) as exc:  # reads fall back to ranges
            log.warning("could not fetch %s into the cache: %s", key, exc)
            return
