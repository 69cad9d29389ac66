"""POST /v1/datasets over HTTP: real digits images as .npz and as an IDX archive, decoded
and checked at upload; ImageFolder archives of images of any sizes and modes, checked and
stored as they came in WebDataset shards; every refusal is a 4xx that stores nothing."""

import gzip
import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import webdataset as wds
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_digits

from service.app import create_app
from service.config import Settings, get_settings
from service.db.sessions import session_scope
from service.db.tables import Dataset
from service.ingest import datasets
from service.store import get_store
from tests.service.helpers import fields, nothing_stored_in, problem

OCTET = {"Content-Type": "application/octet-stream"}
NAMES = [f"digit_{d}" for d in range(10)]


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 1,797 8x8 digits, 0..16 scaled to uint8."""
    bunch = load_digits()
    return np.round(bunch.images * 255 / 16).astype(np.uint8), bunch.target.astype(np.int64)


def npz_bytes(compressed: bool = False, **arrays: Any) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def digits_npz(**overrides: Any) -> bytes:
    images, labels = digits_uint8()
    return npz_bytes(**({"images": images, "labels": labels, "class_names": NAMES} | overrides))


def idx_file(array: np.ndarray, magic: int) -> bytes:
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def idx_members(n_train: int = 1500) -> dict[str, bytes]:
    """The four gzipped IDX files; the digits after the first n_train are the test set."""
    images, labels = digits_uint8()
    return {
        "train-images-idx3-ubyte.gz": gzip.compress(idx_file(images[:n_train], 2051)),
        "train-labels-idx1-ubyte.gz": gzip.compress(idx_file(labels[:n_train], 2049)),
        "t10k-images-idx3-ubyte.gz": gzip.compress(idx_file(images[n_train:], 2051)),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_file(labels[n_train:], 2049)),
    }


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz", extra: list[Any] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def post(client: TestClient, data: bytes, **params: Any):
    return client.post("/v1/datasets", params=params, content=data, headers=OCTET)


def canonical(dataset_id: str) -> Path:
    """The stored dataset's canonical file, as its row names it."""
    with session_scope() as s:
        row = s.get(Dataset, dataset_id)
        assert row is not None
        path = get_store().local_path(datasets.canonical_key(row))
        assert path is not None  # the folder store: read in place
        return path


def folder_of(dataset_id: str) -> Path:
    """The dataset's folder in the (default, folder) store."""
    return get_settings().artifacts_dir.resolve() / "datasets" / dataset_id


def npz_of(dataset_id: str) -> Path:
    path = canonical(dataset_id)
    assert path == folder_of(dataset_id) / "data.npz"
    return path


@pytest.fixture
def nothing_stored(clean_db):
    with nothing_stored_in(Dataset, get_settings().artifacts_dir / "datasets"):
        yield


@pytest.fixture
def small_budget(clean_db) -> Iterator[None]:
    """Archives may unpack to 200 kB and hold 8 members."""
    env = {"DISTILLERY_MAX_DECOMPRESSED_BYTES": "200000", "DISTILLERY_MAX_ARCHIVE_FILES": "8"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


# --- npz -------------------------------------------------------------------------------------


def test_npz_upload_is_checked_and_stored_canonically(client):
    body = digits_npz()
    r = post(client, body, name="digits")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert r.headers["location"] == f"/v1/datasets/{ds['id']}"
    assert (ds["format"], ds["name"], ds["num_classes"], ds["in_channels"]) == (
        "npz",
        "digits",
        10,
        1,
    )
    assert (ds["input_size"], ds["num_train"], ds["num_val"]) == (8, 1797, None)
    assert ds["class_names"] == NAMES and sum(ds["class_counts"]) == 1797
    assert (ds["upload_sha256"], ds["upload_size"]) == (hashlib.sha256(body).hexdigest(), len(body))
    path = npz_of(ds["id"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ds["sha256"]
    side = {"min": 8, "median": 8, "max": 8}
    counts = np.bincount(digits_uint8()[1], minlength=10).tolist()
    assert ds["splits"] == {
        "train": {"count": 1797, "class_counts": counts, "width": side, "height": side}
    }
    with np.load(path, allow_pickle=False) as npz:
        assert npz["images"].shape == (1797, 8, 8, 1) and npz["images"].dtype == np.uint8
        assert npz["labels"].dtype == np.int64
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds
    assert [d["id"] for d in client.get("/v1/datasets").json()["data"]] == [ds["id"]]


def test_npz_with_its_own_validation_split(client):
    images, labels = digits_uint8()
    rgb = np.repeat(images[..., None], 3, axis=3)
    body = npz_bytes(
        images=rgb[:1500], labels=labels[:1500], val_images=rgb[1500:], val_labels=labels[1500:]
    )
    ds = post(client, body).json()
    assert (ds["in_channels"], ds["num_train"], ds["num_val"]) == (3, 1500, 297)
    assert ds["class_names"] == [str(d) for d in range(10)]


def test_the_format_is_recognised_or_given(client):
    assert post(client, digits_npz(), format="npz").status_code == 201
    assert post(client, tar_bytes(idx_members())).json()["format"] == "idx"


def _refused(client: TestClient, body: bytes, status: int = 422, **params: Any) -> dict:
    return problem(post(client, body, **params), status)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"labels": np.full(1797, 10)}, "labels out of range"),
        ({"labels": np.full(1797, -1)}, "labels out of range"),
        ({"labels": np.zeros(5, np.int64)}, "1797 images but 5 labels"),
        ({"images": np.zeros((1797, 8, 8), np.float32)}, "must be uint8"),
        ({"images": np.zeros((1797, 8, 6), np.uint8)}, "must be square"),
        ({"class_names": np.array([1, 2])}, "1-D array of strings"),
        ({"extra": np.zeros(3)}, "unexpected array 'extra'"),
    ],
)
def test_mislabelled_or_misshapen_npz_is_a_422(client, nothing_stored, overrides, says):
    body = _refused(client, digits_npz(**overrides))
    assert says in body["detail"] and fields(body) == ["body"]


def test_corrupt_npz_is_a_422(client, nothing_stored):
    good = digits_npz()
    for bad in (good[: len(good) // 2], b"not a zip at all", good[:-10]):
        assert "dataset refused" in _refused(client, bad)["detail"]


def test_pickled_arrays_are_refused(client, nothing_stored):
    objects = np.array([{"a": 1}] * 1797, dtype=object)
    body = _refused(client, digits_npz(labels=objects))
    assert "Python objects" in body["detail"]


def test_labels_must_fit_num_classes(client, nothing_stored):
    images, labels = digits_uint8()
    body = _refused(client, npz_bytes(images=images, labels=labels), num_classes=5)
    assert body["code"] == "labels_out_of_range"


def test_npz_decompression_bomb_is_a_413(client, small_budget, nothing_stored):
    images, labels = digits_uint8()
    big = np.zeros((4000, 64, 64), np.uint8)  # 16 MB of zeros compress to ~16 kB
    body = npz_bytes(compressed=True, images=big, labels=np.zeros(4000, np.int64))
    assert len(body) < 100_000
    assert _refused(client, body, 413)["code"] == "dataset_too_large"


def test_an_npz_header_that_lies_is_refused(client, nothing_stored):
    body = bytearray(digits_npz())
    at = body.index(b"(1797, 8, 8)")
    body[at : at + 12] = b"(9797, 8, 8)"
    assert "dataset refused" in _refused(client, bytes(body))["detail"]


def test_over_max_upload_bytes_is_a_413(clean_db, nothing_stored):
    with TestClient(create_app(Settings(watchdog_s=0, max_upload_bytes=50_000))) as small:
        assert problem(post(small, digits_npz()), 413)["code"] == "body_too_large"


def test_other_content_types_are_a_415(client, nothing_stored):
    r = client.post("/v1/datasets", files={"file": ("d.npz", digits_npz())})
    assert problem(r, 415)["code"] == "unsupported_media_type"


# --- IDX archives ----------------------------------------------------------------------------


@pytest.mark.parametrize("pack", ["tar.gz", "tar", "zip"])
def test_idx_archive_keeps_the_test_set_as_validation(client, pack):
    members = idx_members()
    body = (
        zip_bytes(members)
        if pack == "zip"
        else tar_bytes(members, "w:gz" if pack == "tar.gz" else "w")
    )
    r = post(client, body, format="idx")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["num_train"], ds["num_val"], ds["num_classes"], ds["input_size"]) == (
        1500,
        297,
        10,
        8,
    )
    with np.load(npz_of(ds["id"]), allow_pickle=False) as npz:
        assert np.array_equal(npz["val_images"][..., 0], digits_uint8()[0][1500:])


KAGGLE = {  # Kaggle's MNIST names, unzipped, in a folder of their own
    "train-images-idx3-ubyte.gz": "mnist/train-images.idx3-ubyte",
    "train-labels-idx1-ubyte.gz": "mnist/train-labels.idx1-ubyte",
    "t10k-images-idx3-ubyte.gz": "mnist/t10k-images.idx3-ubyte",
    "t10k-labels-idx1-ubyte.gz": "mnist/t10k-labels.idx1-ubyte",
}


def test_idx_with_kaggle_names_and_class_names_has_per_split_counts(client):
    members = {KAGGLE[name]: gzip.decompress(data) for name, data in idx_members().items()}
    r = post(client, zip_bytes(members), class_names=NAMES)
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["format"], ds["class_names"], ds["num_train"], ds["num_val"]) == (
        "idx",
        NAMES,
        1500,
        297,
    )
    labels = digits_uint8()[1]
    side = {"min": 8, "median": 8, "max": 8}
    assert ds["splits"] == {
        "train": {
            "count": 1500,
            "class_counts": np.bincount(labels[:1500], minlength=10).tolist(),
            "width": side,
            "height": side,
        },
        "val": {
            "count": 297,
            "class_counts": np.bincount(labels[1500:], minlength=10).tolist(),
            "width": side,
            "height": side,
        },
    }
    assert ds["class_counts"] == np.bincount(labels, minlength=10).tolist()  # both splits
    with np.load(npz_of(ds["id"]), allow_pickle=False) as npz:
        assert list(npz["class_names"]) == NAMES
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds


def test_idx_class_names_must_cover_the_labels(client, nothing_stored):
    body = _refused(client, tar_bytes(idx_members()), class_names=NAMES[:5])
    assert body["code"] == "labels_out_of_range"


@pytest.mark.parametrize("fmt", ["npz", "imagefolder"])
def test_class_names_are_only_for_idx(client, nothing_stored, fmt):
    body = digits_npz() if fmt == "npz" else zip_bytes(imagefolder_members(n=40))
    assert "class_names are for IDX" in _refused(client, body, class_names=NAMES)["detail"]


def test_truncated_gz_is_a_422(client, nothing_stored):
    members = idx_members()
    gz = members["train-images-idx3-ubyte.gz"]
    members["train-images-idx3-ubyte.gz"] = gz[: len(gz) // 2]
    assert "truncated gzip" in _refused(client, tar_bytes(members))["detail"]


def test_wrong_magic_is_a_422(client, nothing_stored):
    members = idx_members()
    members["train-labels-idx1-ubyte.gz"] = gzip.compress(idx_file(np.zeros(1500), 2051))
    body = _refused(client, tar_bytes(members))
    assert body["code"] == "bad_magic" and "expected 2049" in body["detail"]


def test_idx_counts_must_match(client, nothing_stored):
    members = idx_members()
    members["t10k-labels-idx1-ubyte.gz"] = gzip.compress(idx_file(np.zeros(3), 2049))
    assert _refused(client, tar_bytes(members))["code"] == "count_mismatch"


def test_missing_idx_file_is_a_422(client, nothing_stored):
    members = idx_members()
    del members["t10k-images-idx3-ubyte.gz"]
    assert "missing IDX files" in _refused(client, tar_bytes(members), format="idx")["detail"]


@pytest.mark.parametrize("name", ["../evil.gz", "/abs/evil.gz", "a/../../evil.gz"])
def test_zip_and_tar_slip_are_refused(client, nothing_stored, name):
    for pack in (tar_bytes, zip_bytes):
        body = _refused(client, pack(idx_members() | {name: b"x"}), format="idx")
        assert body["code"] == "unsafe_archive" and "unsafe path" in body["detail"]


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE])
def test_links_and_devices_in_tar_are_refused(client, nothing_stored, kind):
    link = tarfile.TarInfo("train-images-idx3-ubyte.gz")
    link.type, link.linkname = kind, "/etc/passwd"
    body = _refused(client, tar_bytes({}, extra=[link]), format="idx")
    assert body["code"] == "unsafe_archive"


def test_symlink_in_zip_is_refused(client, nothing_stored):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("train-images-idx3-ubyte.gz")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    body = _refused(client, buf.getvalue(), format="idx")
    assert body["code"] == "unsafe_archive"


def test_gz_bomb_is_a_413(client, small_budget, nothing_stored):
    members = idx_members()
    members["train-images-idx3-ubyte.gz"] = gzip.compress(bytes(10_000_000))
    body = _refused(client, tar_bytes(members), 413)
    assert "unpacks to more than 200000 bytes" in body["detail"]


def test_too_many_members_is_a_413(client, small_budget, nothing_stored):
    members = idx_members() | {f"junk{i}": b"" for i in range(10)}
    assert "more than 8 archive members" in _refused(client, tar_bytes(members), 413)["detail"]


def test_not_an_archive_is_a_422(client, nothing_stored):
    assert "not a zip or tar archive" in _refused(client, b"\x00" * 100, format="idx")["detail"]


# --- ImageFolder archives ----------------------------------------------------------------------


def png(image: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def imagefolder_members(split: bool = True, n: int = 200) -> dict[str, bytes]:
    """root/train/<digit>/i.png and root/val/<digit>/i.png (the last fifth), or
    root/<digit>/i.png without a split."""
    images, labels = digits_uint8()
    out = {}
    for i in range(n):
        where = ("val/" if i >= n * 4 // 5 else "train/") if split else ""
        out[f"digits/{where}{labels[i]}/{i}.png"] = png(images[i])
    return out


def shard_samples(dataset_id: str) -> dict[str, list[tuple[str, bytes, int]]]:
    """Per split, every stored sample as (extension, bytes, label), read from the dataset's
    shards with the `webdataset` package; the index and each shard's sha256 checked."""
    index_path = canonical(dataset_id)
    assert index_path == folder_of(dataset_id) / "index.json"
    index = json.loads(index_path.read_text())
    out: dict[str, list[tuple[str, bytes, int]]] = {}
    for split, info in index["splits"].items():
        urls = [str(index_path.parent / shard["name"]) for shard in info["shards"]]
        for url, shard in zip(urls, info["shards"], strict=True):
            assert hashlib.sha256(Path(url).read_bytes()).hexdigest() == shard["sha256"]
        samples = []
        for sample in wds.WebDataset(urls, shardshuffle=False):
            (ext,) = set(sample) - {"__key__", "__url__", "__local_path__", "cls"}
            samples.append((ext, sample[ext], int(sample["cls"].decode())))
        assert len(samples) == info["count"] == sum(s["count"] for s in info["shards"])
        out[split] = samples
    return out


def expected_samples(
    members: dict[str, bytes], class_names: list[str], top: str = ""
) -> dict[str, Counter]:
    """Per split, the (extension, bytes, label) an ImageFolder's images should be stored as."""
    out: dict[str, Counter] = {}
    for name, data in members.items():
        parts = name.removeprefix(top).split("/")
        if len(parts) < 2 or not name.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".bmp")):
            continue
        split = parts[0] if len(parts) == 3 else "train"
        ext = {"jpeg": "jpg"}.get(name.rsplit(".", 1)[1], name.rsplit(".", 1)[1])
        out.setdefault(split, Counter())[(ext, data, class_names.index(parts[-2]))] += 1
    return out


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("pack", ["zip", "tar.gz"])
def test_imagefolder_tree(client, pack, split):
    members = imagefolder_members(split) | {"digits/.DS_Store": b"junk", "README.txt": b"hi"}
    body = zip_bytes(members) if pack == "zip" else tar_bytes(members)
    r = post(client, body)
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["format"], ds["num_classes"], ds["in_channels"], ds["input_size"]) == (
        "imagefolder",
        10,
        1,
        8,
    )
    assert (ds["num_train"], ds["num_val"]) == ((160, 40) if split else (200, None))
    assert ds["class_names"] == [str(d) for d in range(10)]
    assert set(ds["splits"]) == ({"train", "val"} if split else {"train"})
    assert ds["sha256"] == hashlib.sha256(canonical(ds["id"]).read_bytes()).hexdigest()
    stored = {k: Counter(v) for k, v in shard_samples(ds["id"]).items()}
    assert stored == expected_samples(members, ds["class_names"], "digits/")
    _, labels = digits_uint8()
    assert ds["class_counts"] == np.bincount(labels[:200], minlength=10).tolist()


def test_colour_and_gray_images_become_rgb(client):
    members = imagefolder_members(False, n=40)
    first = next(iter(members))
    members[first] = png(np.zeros((8, 8), np.uint8), "RGB")
    assert post(client, zip_bytes(members)).json()["in_channels"] == 3


def test_images_of_several_sizes_are_accepted(client):
    members = imagefolder_members(n=40)
    members["digits/train/3/big.png"] = png(np.zeros((9, 9), np.uint8))
    members["digits/train/3/wide.png"] = png(np.zeros((6, 13), np.uint8))  # 13 wide, 6 high
    r = post(client, zip_bytes(members))
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["input_size"] is None and ds["num_train"] == 34
    train = ds["splits"]["train"]
    assert train["width"] == {"min": 8, "median": 8, "max": 13}
    assert train["height"] == {"min": 6, "median": 8, "max": 9}
    assert ds["splits"]["val"]["width"] == ds["splits"]["val"]["height"]


def noise(rng: np.random.Generator, width: int, height: int, channels: int = 3) -> Image.Image:
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels)


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def mixed_members() -> dict[str, bytes]:
    """Two classes of images of many sizes, modes and formats, with a val split: 5 train
    (3 cat, 2 dog) and 3 val (1 cat, 2 dog). Sizes are width x height as displayed."""
    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display: stored 30x12, shown 12x30
    return {
        "pets/train/cat/rgb.jpg": encoded(noise(rng, 40, 30), "JPEG"),
        "pets/train/cat/palette.png": encoded(noise(rng, 17, 23).convert("P"), "PNG"),
        "pets/train/cat/alpha.PNG": encoded(noise(rng, 24, 16).convert("RGBA"), "PNG"),
        "pets/train/dog/gray.png": encoded(noise(rng, 9, 12, 1), "PNG"),
        "pets/train/dog/cmyk.jpeg": encoded(noise(rng, 20, 28).convert("CMYK"), "JPEG"),
        "pets/val/cat/photo.webp": encoded(noise(rng, 21, 33), "WEBP"),
        "pets/val/dog/bitmap.bmp": encoded(noise(rng, 10, 14), "BMP"),
        "pets/val/dog/rotated.jpg": encoded(noise(rng, 30, 12), "JPEG", exif=exif.tobytes()),
    }


def test_imagefolder_of_mixed_sizes_and_modes_is_stored_as_it_came(client):
    members = mixed_members()
    assert Image.open(io.BytesIO(members["pets/train/dog/cmyk.jpeg"])).mode == "CMYK"
    assert Image.open(io.BytesIO(members["pets/train/cat/palette.png"])).mode == "P"
    body = zip_bytes(members)
    r = post(client, body, name="pets")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["format"], ds["name"], ds["class_names"], ds["num_classes"]) == (
        "imagefolder",
        "pets",
        ["cat", "dog"],
        2,
    )
    assert (ds["in_channels"], ds["input_size"], ds["num_train"], ds["num_val"]) == (3, None, 5, 3)
    assert ds["class_counts"] == [4, 4]
    assert ds["splits"] == {
        "train": {
            "count": 5,
            "class_counts": [3, 2],
            "width": {"min": 9, "median": 20, "max": 40},
            "height": {"min": 12, "median": 23, "max": 30},
        },
        "val": {  # the rotated JPEG counts as 12 wide, 30 high
            "count": 3,
            "class_counts": [1, 2],
            "width": {"min": 10, "median": 12, "max": 21},
            "height": {"min": 14, "median": 30, "max": 33},
        },
    }
    assert (ds["upload_sha256"], ds["upload_size"]) == (hashlib.sha256(body).hexdigest(), len(body))
    assert ds["sha256"] == hashlib.sha256(canonical(ds["id"]).read_bytes()).hexdigest()
    stored = shard_samples(ds["id"])
    assert {k: Counter(v) for k, v in stored.items()} == expected_samples(
        {n.lower(): data for n, data in members.items()}, ds["class_names"], "pets/"
    )
    assert {ext for samples in stored.values() for ext, _, _ in samples} == {
        "jpg",
        "png",
        "webp",
        "bmp",
    }
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds


def test_grayscale_only_imagefolder_has_one_channel(client):
    rng = np.random.default_rng(1)
    members = {
        f"{c}/{i}.{fmt.lower()}": encoded(noise(rng, 6 + i, 5, 1), fmt)
        for c in ("a", "b")
        for i, fmt in enumerate(("PNG", "JPEG", "BMP"))
    }
    ds = post(client, tar_bytes(members)).json()
    assert (ds["in_channels"], ds["input_size"], ds["num_val"]) == (1, None, None)
    assert ds["splits"]["train"]["width"] == {"min": 6, "median": 7, "max": 8}


def test_truncated_jpeg_is_a_422_naming_it(client, nothing_stored):
    members = mixed_members()
    jpeg = members["pets/train/cat/rgb.jpg"]
    members["pets/train/cat/rgb.jpg"] = jpeg[: len(jpeg) // 2]
    detail = _refused(client, zip_bytes(members))["detail"]
    assert "pets/train/cat/rgb.jpg" in detail and "not a readable image" in detail


def test_a_jpg_that_is_no_image_is_a_422_naming_it(client, nothing_stored):
    members = mixed_members() | {"pets/train/dog/x.jpg": b"<html>not an image</html>" * 4}
    detail = _refused(client, zip_bytes(members))["detail"]
    assert "pets/train/dog/x.jpg" in detail and "not a readable image" in detail


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda m: m | {"digits/train/3/bad.png": b"\x89PNG\r\n\x1a\nnope"}, "readable image"),
        (
            lambda m: m | {"digits/train/3/thin.png": png(np.zeros((8, 3), np.uint8))},
            "digits/train/3/thin.png is 3x8",
        ),
        (lambda m: m | {"digits/val/x/1.png": png(np.zeros((8, 8), np.uint8))}, "no train"),
        (lambda m: m | {"digits/4.png": png(np.zeros((8, 8), np.uint8))}, "must sit in"),
        (lambda m: {"a.txt": b"x"}, "no images"),
    ],
)
def test_bad_imagefolder_is_a_422(client, nothing_stored, change, says):
    body = _refused(client, zip_bytes(change(imagefolder_members())), format="imagefolder")
    assert says in body["detail"]


def test_truncated_png_is_a_422(client, nothing_stored):
    members = imagefolder_members()
    name = next(iter(members))
    members[name] = members[name][:40]
    assert "readable image" in _refused(client, tar_bytes(members))["detail"]


def test_imagefolder_symlink_is_refused(client, nothing_stored):
    link = tarfile.TarInfo("digits/train/1/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../../etc/passwd"
    body = _refused(client, tar_bytes(imagefolder_members(), extra=[link]))
    assert body["code"] == "unsafe_archive"


# --- as the data of a job ----------------------------------------------------------------------


@pytest.fixture
def uploaded(client) -> str:
    return str(post(client, digits_npz()).json()["id"])


def test_a_job_trains_on_an_upload_with_its_shape(client, spec_body, uploaded):
    spec_body["data"] = {"dataset": "upload", "upload": uploaded}
    r = client.post("/v1/jobs", json=spec_body)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["dataset_id"] == uploaded
    assert (job["spec"]["student"]["num_classes"], job["spec"]["student"]["in_channels"]) == (
        10,
        1,
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"dataset": "upload", "upload": "ds_nope"}, "data.upload"),
        ({"dataset": "upload"}, "data"),
        ({"dataset": "digits", "upload": "ds_x"}, "data"),
    ],
)
def test_bad_upload_references_are_a_422(client, spec_body, count_jobs, data, field):
    spec_body["data"] = data
    body = problem(client.post("/v1/jobs", json=spec_body), 422)
    assert field in fields(body) and count_jobs() == 0


def test_student_must_fit_the_upload(client, spec_body, uploaded):
    spec_body["data"] = {"dataset": "upload", "upload": uploaded}
    spec_body["student"]["in_channels"] = 3
    body = problem(client.post("/v1/jobs", json=spec_body), 422)
    assert fields(body) == ["student.in_channels"]


def test_delete_is_refused_while_a_job_uses_it(client, spec_body, uploaded):
    spec_body["data"] = {"dataset": "upload", "upload": uploaded}
    job = client.post("/v1/jobs", json=spec_body).json()
    r = client.delete(f"/v1/datasets/{uploaded}")
    assert problem(r, 409)["code"] == "dataset_in_use"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert client.delete(f"/v1/datasets/{uploaded}").status_code == 204
    assert not folder_of(uploaded).exists()
    assert problem(client.get(f"/v1/datasets/{uploaded}"), 404)["code"] == "not_found"
    assert problem(client.delete(f"/v1/datasets/{uploaded}"), 404)["code"] == "not_found"
