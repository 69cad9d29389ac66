"""Archive bombs posted to /v1/datasets: each is a clear 413 or 422 naming the member and the
limit, stores nothing, and costs the API no more CPU than a normal upload of its size (CPU
seconds of this process, where the app runs: a ratio, never a wall time)."""

import time
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import get_settings
from service.db.tables import Dataset
from tests.service.api.test_datasets import encoded, noise, npz_bytes, post
from tests.service.helpers import nothing_stored_in, problem
from tests.service.ingest import bombs
from tests.service.ingest.bombs import GIB, Member

CAP = 8 * GIB  # the default max_decompressed_bytes
BOMB_MIB = 9216  # 9 GiB of zeros: a 9.5 MB deflate stream


@pytest.fixture
def nothing_stored(clean_db):
    with nothing_stored_in(Dataset, get_settings().artifacts_dir / "datasets"):
        yield


def images(n: int, side: int = 16) -> list[Member]:
    """`n` noise JPEGs in two class folders, 0/ and 1/."""
    rng = np.random.default_rng(0)
    return [
        bombs.honest(f"{i % 2}/{i}.jpg", encoded(noise(rng, side, side), "JPEG", quality=95))
        for i in range(n)
    ]


def classic_zip() -> bytes:
    return bombs.zip_of([*images(4), Member("1/bomb.png", bombs.deflated_zeros(BOMB_MIB), 9 * GIB)])


def better_zip() -> bytes:
    """100 members that each inflate one kernel of 9 GiB of zeros."""
    names = [f"{i % 2}/{i}.png" for i in range(100)]
    return bombs.overlapping_zip(names, bombs.deflated_zeros(BOMB_MIB), 9 * GIB)


def lying_zip() -> bytes:
    """9 GiB of zeros behind a directory that declares 1000 bytes, with their CRC."""
    lie = Member("1/bomb.png", bombs.deflated_zeros(BOMB_MIB), 1000, zlib.crc32(bytes(1000)))
    return bombs.zip_of([*images(4), lie])


def huge_tar() -> bytes:
    return bombs.tar_gz_of(bombs.declaring("1/bomb.png", 9 * GIB), BOMB_MIB)


BOMBS: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "classic zip": (classic_zip, 413, f"('1/bomb.png' declares {9 * GIB})"),
    "better zip bomb": (better_zip, 413, f"declares more than {CAP} bytes unpacked ('0/0.png'"),
    "lying zip": (lying_zip, 422, "1/bomb.png is not a readable image"),
    "huge tar": (huge_tar, 413, f"declares more than {CAP} bytes unpacked"),
}


@pytest.mark.parametrize("kind", BOMBS)
def test_a_bomb_is_refused_naming_the_member_and_the_limit(client, nothing_stored, kind):
    build, status, says = BOMBS[kind]
    body = problem(post(client, build()), status)
    assert says in body["detail"]
    assert body["code"] == ("dataset_too_large" if status == 413 else "invalid_dataset")


def test_a_bomb_costs_no_more_cpu_than_a_normal_upload(client):
    """Before the directory was checked, the classic zip took the API past a minute of CPU
    (inflating to the 8 GiB cap); now each bomb costs at most twice a normal upload of
    at least its size (JPEGs, stored as a dataset)."""
    built = {kind: build() for kind, (build, _, _) in BOMBS.items()}
    normal = normal_upload(max(len(b) for b in built.values()))
    normal_cpu, r = cpu_of(client, normal)
    assert r.status_code == 201, r.text
    for kind, body in built.items():
        bomb_cpu, r = cpu_of(client, body)
        assert r.status_code == BOMBS[kind][1], r.text
        assert bomb_cpu <= 2 * normal_cpu, (kind, bomb_cpu, normal_cpu)


def normal_upload(size: int) -> bytes:
    """An ImageFolder zip of 256x256 noise JPEGs of at least `size` bytes."""
    n = size // len(bombs.zip_of(images(1, 256))) + 2
    body = bombs.zip_of(images(n, 256))
    assert len(body) >= size
    return body


def cpu_of(client: TestClient, body: bytes):
    start = time.process_time()
    r = post(client, body)
    return time.process_time() - start, r


def test_an_npz_past_the_ratio_is_a_413(client, nothing_stored):
    """Under the cap, but 100 MB of blank images compressed a thousandfold."""
    blank = np.zeros((25_000, 64, 64), np.uint8)
    body = npz_bytes(compressed=True, images=blank, labels=np.zeros(25_000, np.int64))
    detail = problem(post(client, body), 413)["detail"]
    assert "member 'images.npy' unpacks to" in detail
