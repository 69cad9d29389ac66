"""An uploaded ImageFolder read back from its WebDataset shards: held in memory or streamed
by DataLoader workers, the batches are the same."""

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from service.ingest import archives, imagefolder, shards
from service.ingest.archives import Budget
from tests.photos import photo_zip
from worker.engine.data import Resident, Streamed, load_dataset


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("shards")
    archive = root / "photos.zip"
    archive.write_bytes(photo_zip(classes=3, per_class=12))
    budget = Budget(1000, 1 << 30)
    imagefolder.store(archive, archives.names(archive, budget), budget, root / "ds", None)
    return shards.read(root / "ds" / shards.INDEX)


def load(stored: dict, resident_bytes: int, workers: int = 0, **kw: object):
    return load_dataset(
        "upload", 0.25, 0, kw.get("augment", "auto"), kw.get("image_size", 24),
        shards=stored, resident_bytes=resident_bytes, workers=workers,
    )  # fmt: skip


def test_held_and_streamed_shards_give_the_same_batches(stored: dict) -> None:
    held, streamed = load(stored, 1 << 30), load(stored, 0, workers=1)
    assert isinstance(held.train, Resident) and held.train.pixels.dtype == torch.uint8
    assert isinstance(streamed.train, Streamed)
    assert held.augment == streamed.augment and held.augment.mode == "rrc_flip"  # mixed sizes
    assert held.input_shape == (3, 24, 24) and held.train.pixels.shape[-1] == 27  # 24 / 0.875
    np.testing.assert_allclose(held.mean, streamed.mean, rtol=1e-9)
    np.testing.assert_allclose(held.std, streamed.std, rtol=1e-9)
    # the streamed statistics were summed in another order: compare pixels under one set
    train, val = (p.with_stats(held.mean, held.std) for p in (streamed.train, streamed.val))
    pairs = [
        (held.train.epoch(8, torch.Generator().manual_seed(3)),
         train.epoch(8, torch.Generator().manual_seed(3))),
        (held.val.ordered(8), val.ordered(8)),
    ]  # fmt: skip
    for a, b in pairs:
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)
    labels = held.train.labels.tolist() + held.val.labels.tolist()
    assert np.bincount(labels).tolist() == [12, 12, 12]


def test_a_streamed_split_starts_its_loader_workers_once(stored: dict) -> None:
    held, streamed = load(stored, 1 << 30), load(stored, 0, workers=2)
    train = streamed.train.with_stats(held.mean, held.std)
    others = {p.pid for p in multiprocessing.active_children()}
    workers = []
    for epoch in range(3):
        if epoch == 1:  # a pass dropped part-way (as RCO's gap estimate does) spoils none after
            next(train.epoch(8, torch.Generator()))
        a, b = (part.epoch(8, torch.Generator().manual_seed(epoch)) for part in (held.train, train))
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)
        workers.append({p.pid for p in multiprocessing.active_children()} - others)
    assert len(workers[0]) == 2 and workers[0] == workers[1] == workers[2]


def test_images_of_several_sizes_need_a_training_size(stored: dict) -> None:
    with pytest.raises(ValueError, match="image_size"):
        load(stored, 0, image_size=None)


def test_the_decoded_base_is_the_centre_square_resized(tmp_path: Path) -> None:
    from PIL import Image

    from worker.engine.data.decode import decode

    left, right = np.zeros((20, 10, 3), np.uint8), np.full((20, 10, 3), 255, np.uint8)
    wide = np.concatenate([np.full((20, 5, 3), 9, np.uint8), left, right, left[:, :5]], axis=1)
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)  # 30 x 20: the centre square is columns 5..25
    out = decode(path.read_bytes(), 3, 20)
    assert out.shape == (3, 20, 20) and out.dtype == torch.uint8
    assert torch.equal(out.permute(1, 2, 0), torch.from_numpy(wide[:, 5:25]))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpegs_decode_to_pillows_pixels_in_every_orientation(mode: str) -> None:
    """A JPEG in the dataset's mode goes to TorchCodec's decoder (decode.py): the pixels
    Pillow gives, oriented as ImageOps.exif_transpose orients them."""
    import io

    from PIL import Image, ImageOps

    from worker.engine.data.decode import by_torchcodec, decode

    rng = np.random.default_rng(0)
    low = Image.fromarray(rng.integers(0, 256, (5, 8, 3), dtype=np.uint8))
    image = low.resize((37, 23), Image.Resampling.BILINEAR).convert(mode)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        out = io.BytesIO()
        image.save(out, "JPEG", quality=90, exif=exif.tobytes())
        with Image.open(io.BytesIO(out.getvalue())) as file:
            assert by_torchcodec(file, mode, 23)
            assert not by_torchcodec(file, mode, 11)  # twice the base: Pillow's draft decode
            want = np.atleast_3d(np.asarray(ImageOps.exif_transpose(file).convert(mode)))
        h, w, _ = want.shape
        top, left = (h - 23) // 2, (w - 23) // 2
        got = decode(out.getvalue(), 1 if mode == "L" else 3, 23)  # the square, not resized
        square = torch.from_numpy(want[top : top + 23, left : left + 23].copy())
        assert torch.equal(got.permute(1, 2, 0), square), orientation
