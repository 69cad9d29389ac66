"""The worker's cache of the store's objects (worker/task/cache.py), on a bucket of a real S3
server on loopback and on the default folder store: fetched once and verified, the least
recently used evicted first within its size, and one copy when two processes ask at once."""

import hashlib
import multiprocessing
import os
import subprocess
from pathlib import Path

import pytest

from service.store import Corrupt, Store, get_store
from tests.s3 import S3Server
from worker.task.cache import Cache, CacheTooSmall


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Store:
    env = s3_server.store_env("cache")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Store(env["DISTILLERY_STORE_URL"])


def put(store: Store, key: str, size: int) -> str:
    """An object of `size` random bytes; its sha256."""
    data = os.urandom(size)
    store.put_bytes(key, data)
    return hashlib.sha256(data).hexdigest()


def cached(root: Path) -> list[str]:
    """The cache's files (no locks), by key."""
    files = (p for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts)
    return sorted(p.relative_to(root).as_posix() for p in files)


def test_a_folder_store_is_read_in_place(tmp_path: Path) -> None:
    store = Store((tmp_path / "store").as_uri(), root=tmp_path / "store")
    put(store, "models/m/weights.safetensors", 10)
    cache = Cache(store, tmp_path / "cache", 1 << 20)
    path = cache.path("models/m/weights.safetensors")
    assert path == tmp_path / "store" / "models" / "m" / "weights.safetensors"
    assert not (tmp_path / "cache").exists()  # nothing copied


def test_an_object_is_fetched_once_and_checked(bucket: Store, tmp_path: Path) -> None:
    sha = put(bucket, "models/m/weights.safetensors", 1000)
    cache = Cache(bucket, tmp_path, 1 << 20)
    path = cache.path("models/m/weights.safetensors", sha)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    bucket.delete("models/m/weights.safetensors")
    assert cache.path("models/m/weights.safetensors", sha) == path  # not asked for again

    put(bucket, "models/bad/weights.safetensors", 1000)
    with pytest.raises(Corrupt):
        cache.path("models/bad/weights.safetensors", "0" * 64)
    assert cached(tmp_path) == ["models/m/weights.safetensors"]  # no copy, no partial


def test_the_least_recently_used_go_first(bucket: Store, tmp_path: Path) -> None:
    for name in "abc":
        put(bucket, f"d/{name}", 100)
    cache = Cache(bucket, tmp_path, 250)
    cache.path("d/a")
    cache.path("d/b")
    cache.path("d/a")  # used again: b is now the oldest
    cache.path("d/c")
    assert cached(tmp_path) == ["d/a", "d/c"]
    with pytest.raises(CacheTooSmall):
        put(bucket, "d/big", 300)
        cache.path("d/big")


def test_warming_never_evicts_what_it_keeps(bucket: Store, tmp_path: Path) -> None:
    shas = {name: put(bucket, f"ds/{name}", 100) for name in "abc"}
    cache = Cache(bucket, tmp_path, 250)
    keep = frozenset(cache.file(f"ds/{name}") for name in "abc")
    assert cache.warm("ds/a", shas["a"], 100, keep) == cache.file("ds/a")
    assert cache.warm("ds/b", shas["b"], 100, keep) == cache.file("ds/b")
    assert cache.warm("ds/c", shas["c"], 100, keep) is None  # it would evict a or b
    assert cached(tmp_path) == ["ds/a", "ds/b"]


def _fetch(root: str, key: str, sha256: str, out: "multiprocessing.Queue[str]") -> None:
    out.put(str(Cache(get_store(), Path(root), 8 << 20).path(key, sha256)))


@pytest.mark.slow  # starts two processes
def test_two_processes_asking_at_once_share_one_copy(bucket: Store, tmp_path: Path) -> None:
    sha = put(bucket, "models/m/weights.safetensors", 3 << 20)
    spawn = multiprocessing.get_context("spawn")  # fresh processes, as two jobs' are
    out = spawn.Queue()
    procs = [
        spawn.Process(target=_fetch, args=(str(tmp_path), "models/m/weights.safetensors", sha, out))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    paths = {out.get(timeout=60) for _ in procs}
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert paths == {str(tmp_path / "models" / "m" / "weights.safetensors")}
    assert cached(tmp_path) == ["models/m/weights.safetensors"]
    assert hashlib.sha256(Path(paths.pop()).read_bytes()).hexdigest() == sha


def test_a_download_its_killed_process_left_goes_at_the_next_fetch(
    bucket: Store, tmp_path: Path
) -> None:
    dead = tmp_path / "d" / f".a.{_pid_of_exited()}.partial"
    dead.parent.mkdir()
    dead.write_bytes(b"half")
    alive = tmp_path / "d" / f".b.{os.getpid()}.partial"  # this process's, in progress
    alive.write_bytes(b"half")
    put(bucket, "d/c", 10)
    Cache(bucket, tmp_path, 1000).path("d/c")
    assert not dead.exists() and alive.exists()


def _pid_of_exited() -> int:
    """The pid of a process that has exited and been reaped: no process has it now."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
