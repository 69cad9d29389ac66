"""IDX (MNIST-family) archives read straight through service.ingest.datafiles, no app or database:
the file-name spellings idx_role accepts, and from_idx on real archives of sklearn's digits
written as IDX bytes, with and without class names."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from service.ingest.archives import BadUpload, Budget
from service.ingest.datafiles import from_idx, idx_role
from tests.service.api.test_datasets import NAMES, digits_uint8, idx_file, tar_bytes, zip_bytes

N_TRAIN = 1500
TRAIN_IMAGES, TRAIN_LABELS = ("train", "images"), ("train", "labels")
VAL_IMAGES, VAL_LABELS = ("val", "images"), ("val", "labels")


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("train-images-idx3-ubyte", TRAIN_IMAGES),
        ("train-images-idx3-ubyte.gz", TRAIN_IMAGES),
        ("train-images.idx3-ubyte", TRAIN_IMAGES),  # Kaggle's spelling
        ("train-images.idx3-ubyte.gz", TRAIN_IMAGES),
        ("train_images_idx3_ubyte", TRAIN_IMAGES),
        ("TRAIN-Images-IDX3-UBYTE.GZ", TRAIN_IMAGES),
        ("mnist/raw/train-labels-idx1-ubyte", TRAIN_LABELS),
        ("train-labels.idx1-ubyte", TRAIN_LABELS),
        ("emnist-balanced-train-images-idx3-ubyte", TRAIN_IMAGES),
        ("gzip/emnist-balanced-train-labels-idx1-ubyte.gz", TRAIN_LABELS),
        ("fashion-train-labels-idx1-ubyte", TRAIN_LABELS),
        ("t10k-images-idx3-ubyte", VAL_IMAGES),
        ("t10k-labels.idx1-ubyte.gz", VAL_LABELS),
        ("T10K_IMAGES_IDX3_UBYTE", VAL_IMAGES),
        ("test-images-idx3-ubyte", VAL_IMAGES),
        ("emnist-letters-test-labels-idx1-ubyte.gz", VAL_LABELS),
        ("fashion_test_images.idx3-ubyte", VAL_IMAGES),
        # not an IDX name
        ("train-images-idx1-ubyte", None),  # images are idx3
        ("t10k-labels-idx3-ubyte.gz", None),  # labels are idx1
        ("train-images-idx2-ubyte", None),
        ("pretrain-images-idx3-ubyte", None),  # the split is a whole word
        ("valid-images-idx3-ubyte", None),
        ("train-images-idx3-ubyte.zip", None),
        ("train-images-idx3-ubyte.gz.part", None),
        ("train-images-idx3-ubyte.txt", None),
        ("train-images-idx3", None),
        ("train-images", None),
        ("trainimagesidx3ubyte", None),
        ("README.md", None),
        ("", None),
        # hidden files
        ("__MACOSX/train-images-idx3-ubyte", None),
        ("__macosx/mnist/t10k-labels-idx1-ubyte.gz", None),
        ("__MACOSX/._train-images-idx3-ubyte.gz", None),
        ("._train-images-idx3-ubyte", None),
        (".train-labels-idx1-ubyte", None),
        ("mnist/.cache/train-images-idx3-ubyte", None),
    ],
)
def test_idx_role(name, role):
    assert idx_role(name) == role


# --- from_idx on real archives -----------------------------------------------------------------

KAGGLE = {  # mixed: two members gzipped, two plain
    TRAIN_IMAGES: "train-images.idx3-ubyte.gz",
    TRAIN_LABELS: "train-labels.idx1-ubyte",
    VAL_IMAGES: "t10k-images.idx3-ubyte",
    VAL_LABELS: "t10k-labels.idx1-ubyte.gz",
}
PREFIXED = {
    TRAIN_IMAGES: "emnist-digits/emnist-digits-train-images-idx3-ubyte",
    TRAIN_LABELS: "emnist-digits/emnist-digits-train-labels-idx1-ubyte.gz",
    VAL_IMAGES: "emnist-digits/emnist-digits-test-images-idx3-ubyte.gz",
    VAL_LABELS: "emnist-digits/emnist-digits-test-labels-idx1-ubyte",
}


def members(spelling: dict[tuple[str, str], str]) -> dict[str, bytes]:
    """The digits as four IDX files, named by `spelling`; a .gz name is gzipped."""
    images, labels = digits_uint8()
    arrays = {
        TRAIN_IMAGES: idx_file(images[:N_TRAIN], 2051),
        TRAIN_LABELS: idx_file(labels[:N_TRAIN], 2049),
        VAL_IMAGES: idx_file(images[N_TRAIN:], 2051),
        VAL_LABELS: idx_file(labels[N_TRAIN:], 2049),
    }
    return {
        name: gzip.compress(arrays[role]) if name.endswith(".gz") else arrays[role]
        for role, name in spelling.items()
    }


def archive(tmp_path: Path, files: dict[str, bytes], pack: str = "zip") -> Path:
    path = tmp_path / f"upload.{pack}"
    path.write_bytes(zip_bytes(files) if pack == "zip" else tar_bytes(files, "w:gz"))
    return path


def budget() -> Budget:
    return Budget(max_files=100, max_bytes=50_000_000)


@pytest.mark.parametrize("pack", ["zip", "tar.gz"])
@pytest.mark.parametrize("spelling", [KAGGLE, PREFIXED], ids=["kaggle", "prefixed"])
def test_from_idx_reads_every_spelling(tmp_path, pack, spelling):
    junk = {  # macOS's resource forks and other files are passed over
        "__MACOSX/._train-images.idx3-ubyte.gz": b"not idx",
        "._t10k-labels.idx1-ubyte.gz": b"not idx",
        "README.txt": b"digits",
    }
    path = archive(tmp_path, members(spelling) | junk, pack)
    decoded = from_idx(path, budget(), None)
    images, labels = digits_uint8()
    assert decoded.shape == (10, 1, 8)
    assert decoded.class_names == [str(d) for d in range(10)]
    assert np.array_equal(decoded.images[..., 0], images[:N_TRAIN])
    assert np.array_equal(decoded.labels, labels[:N_TRAIN])
    assert decoded.val_images is not None and decoded.val_labels is not None
    assert np.array_equal(decoded.val_images[..., 0], images[N_TRAIN:])
    assert np.array_equal(decoded.val_labels, labels[N_TRAIN:])


@pytest.mark.parametrize("num_classes", [None, 10])
def test_class_names_are_taken(tmp_path, num_classes):
    path = archive(tmp_path, members(KAGGLE), "tar.gz")
    decoded = from_idx(path, budget(), num_classes, class_names=NAMES)
    assert decoded.class_names == NAMES
    splits = decoded.splits()
    both = np.add(splits["train"]["class_counts"], splits["val"]["class_counts"])
    assert both.tolist() == list(np.bincount(digits_uint8()[1]))


@pytest.mark.parametrize(
    ("num_classes", "names", "code", "says"),
    [
        (None, NAMES[:9], "labels_out_of_range", "classes are 0..8"),
        (10, NAMES[:9], "invalid_dataset", "9 class names, but num_classes=10"),
        (None, NAMES + ["digit_10"], None, None),  # an 11th class, with no images, is allowed
        (12, NAMES + ["digit_10"], "invalid_dataset", "11 class names, but num_classes=12"),
        (None, NAMES[:9] + ["digit_0"], "invalid_dataset", "class names must be distinct"),
    ],
)
def test_class_names_must_fit_the_labels(tmp_path, num_classes, names, code, says):
    path = archive(tmp_path, members(PREFIXED))
    if code is None:
        assert from_idx(path, budget(), num_classes, names).class_names == names
        return
    with pytest.raises(BadUpload) as exc:
        from_idx(path, budget(), num_classes, names)
    assert exc.value.code == code
    assert says in exc.value.detail


@pytest.mark.parametrize("pack", ["zip", "tar.gz"])
def test_two_files_for_one_role_are_refused_by_name(tmp_path, pack):
    files = members(KAGGLE) | {"copy/TRAIN-IMAGES-IDX3-UBYTE": idx_file(digits_uint8()[0], 2051)}
    with pytest.raises(BadUpload) as exc:
        from_idx(archive(tmp_path, files, pack), budget(), None)
    detail = exc.value.detail
    assert "two IDX files for train images" in detail
    assert "'train-images.idx3-ubyte.gz'" in detail
    assert "'copy/TRAIN-IMAGES-IDX3-UBYTE'" in detail


def test_missing_roles_are_named_with_what_the_archive_holds(tmp_path):
    files = members(KAGGLE)
    del files[KAGGLE[VAL_IMAGES]]
    files["t10k-images.idx1-ubyte"] = b""  # images must be idx3: not taken for val images
    files["__MACOSX/t10k-labels.idx1-ubyte.gz"] = b""
    del files[KAGGLE[VAL_LABELS]]
    with pytest.raises(BadUpload) as exc:
        from_idx(archive(tmp_path, files), budget(), None)
    detail = exc.value.detail
    assert "missing IDX files for val images, val labels" in detail
    assert "train images" not in detail
    for name in files:
        assert repr(name) in detail


def test_an_archive_without_idx_files_says_what_it_holds(tmp_path):
    files = {f"img/{i}.png": b"" for i in range(25)}
    with pytest.raises(BadUpload) as exc:
        from_idx(archive(tmp_path, files, "tar.gz"), budget(), None)
    detail = exc.value.detail
    assert "missing IDX files for train images, train labels, val images, val labels" in detail
    assert "'img/0.png'" in detail and "and 5 more" in detail
