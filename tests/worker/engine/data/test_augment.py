import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from tests.worker.engine.helpers import normalised, tensor_images
from worker.engine.data import Augment, augment_batch, crop_at, num_batches
from worker.engine.data import augment as augment_module
from worker.engine.data.augment import RRC_TRIES, centre_crop, rrc_boxes
from worker.engine.data.images import Resident

CPU = torch.device("cpu")


def views(
    x: torch.Tensor, mode: str, generator: torch.Generator | None = None, **kw
) -> torch.Tensor:
    """`augment_batch` at the images' own size (the pad-and-crop modes' base is the size)."""
    return augment_batch(x, Augment(mode, x.shape[-1]), normalised, generator, **kw)


def numbered(n: int, h: int, w: int) -> torch.Tensor:
    """Images whose pixel (i, j) holds 1 + i * w + j: every value tells where it came from."""
    grid = 1 + torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    return grid.expand(n, 1, h, w).clone()


def decode(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Offsets (dy, dx in [-pad, pad]) and flips from the centre pixels of a numbered crop.

    The centre pixel of a crop never falls in the padding, since pad <= H / 8.
    """
    _, _, h, w = out.shape
    centre = out[:, 0, h // 2, w // 2] - 1
    flipped = out[:, 0, h // 2, w // 2 + 1] < out[:, 0, h // 2, w // 2]
    col = centre % w
    dx = torch.where(flipped, col - (w - 1 - w // 2), col - w // 2)
    dy = torch.div(centre, w, rounding_mode="floor") - h // 2
    return dy.long(), dx.long(), flipped


def test_none_is_identity_at_the_training_size() -> None:
    x = torch.randn(4, 3, 8, 8)
    out = views(x, "none")
    assert torch.equal(out, x) and out.data_ptr() == x.data_ptr()  # a view, nothing copied


def test_none_is_the_centre_crop_of_a_larger_base() -> None:
    x = torch.randn(4, 3, 12, 12)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    out = augment_batch(x, Augment("none", 8), normalised, g)
    assert torch.equal(out, x[:, :, 2:10, 2:10]) and torch.equal(out, centre_crop(x, 8))
    assert torch.equal(g.get_state(), state)  # nothing drawn
    # an odd margin: its extra row and column are left at the end
    y = torch.arange(11 * 11.0).reshape(1, 1, 11, 11)
    assert torch.equal(centre_crop(y, 8), y[:, :, 1:9, 1:9])


def test_crop_at_equals_slicing_the_padded_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 16, 12, generator=g)
    pad = 2
    oy = torch.tensor([0, 1, 2, 3, 4, 0])
    ox = torch.tensor([4, 3, 2, 1, 0, 2])
    flip = torch.tensor([False, True, False, True, False, True])
    out = crop_at(x, pad, oy, ox, flip)
    padded = F.pad(x, (pad, pad, pad, pad))
    for i in range(6):
        want = padded[i, :, oy[i] : oy[i] + 16, ox[i] : ox[i] + 12]
        assert torch.equal(out[i], want.flip(-1) if flip[i] else want)


@pytest.mark.parametrize(("size", "pad"), [(8, 1), (32, 4)])
def test_crop_offsets_are_uniform(size: int, pad: int) -> None:
    n = 9000
    out = views(numbered(n, size, size), "crop", torch.Generator().manual_seed(1))
    dy, dx, flipped = decode(out)
    assert not flipped.any()
    positions = 2 * pad + 1
    for offsets in (dy, dx):
        counts = torch.bincount(offsets + pad, minlength=positions)
        assert len(counts) == positions  # nothing outside [-pad, pad]
        expected = n / positions
        assert (counts - expected).abs().max() < 0.1 * expected


def test_crop_flip_flips_half_the_samples() -> None:
    n = 10000
    x = numbered(n, 32, 32)
    out = views(x, "crop_flip", torch.Generator().manual_seed(2))
    dy, dx, flipped = decode(out)
    assert flipped.float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert dy.abs().max() <= 4 and dx.abs().max() <= 4
    # Flipped and unflipped samples see the same offset distribution.
    assert dx[flipped].float().mean().item() == pytest.approx(0.0, abs=0.15)


@pytest.mark.parametrize("mode", ["crop_flip", "rrc_flip"])
def test_views_are_fresh_and_reproducible(mode: str) -> None:
    x = torch.randn(32, 3, 16, 16)
    a = views(x, mode, torch.Generator().manual_seed(5))
    b = views(x, mode, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    first, second = views(x, mode, g), views(x, mode, g)
    assert torch.equal(a, b) and torch.equal(a, first)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("mode", ["crop", "rrc_flip"])
def test_channels_last_input_stays_channels_last(mode: str) -> None:
    x = torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    out = augment_batch(x, Augment(mode, 14), normalised, torch.Generator().manual_seed(0))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_training_batches_cover_every_sample_once() -> None:
    x, y = torch.arange(130).float()[:, None, None, None], torch.arange(130)
    got = list(tensor_images(x, y).epoch(32, torch.Generator().manual_seed(0)))
    assert [len(b) for _, b in got] == [32, 32, 32, 32, 2]
    seen = torch.cat([b for _, b in got])
    assert sorted(seen.tolist()) == list(range(130)) and seen.tolist() != list(range(130))
    assert all(torch.equal(bx[:, 0, 0, 0].long(), by) for bx, by in got)


def test_training_drops_a_single_trailing_sample_but_eval_keeps_it() -> None:
    x, y = torch.zeros(65, 1, 1, 1), torch.arange(65)
    images = tensor_images(x, y)
    train = list(images.epoch(32, torch.Generator().manual_seed(0)))
    assert [len(b) for _, b in train] == [32, 32] and num_batches(65, 32, shuffle=True) == 2
    evaluation = list(images.ordered(32))
    assert [len(b) for _, b in evaluation] == [32, 32, 1] and num_batches(65, 32, False) == 3
    assert torch.equal(torch.cat([b for _, b in evaluation]), y)


@pytest.mark.parametrize(("mode", "size"), [("crop_flip", 16), ("rrc_flip", 12)])
def test_each_share_of_a_global_batch_gets_the_views_one_process_would_draw(
    mode: str, size: int
) -> None:
    x = torch.randn(8, 3, 16, 16)
    augment = Augment(mode, size)
    one = torch.Generator().manual_seed(3)
    whole = augment_batch(x, augment, normalised, one)
    for rank in range(2):
        g = torch.Generator().manual_seed(3)
        part = augment_batch(x[rank * 4 : (rank + 1) * 4], augment, normalised, g, part=(rank, 2))
        assert torch.equal(part, whole[rank * 4 : (rank + 1) * 4])
        # every process's generator moved as far as the one-process draw: the ranks stay in step
        assert torch.equal(g.get_state(), one.get_state())


# "rrc_flip": RandomResizedCrop (torchvision's draw), resized (roi_align on a GPU, each crop
# on its own on a CPU), and a flip


def test_rrc_flip_keeps_a_larger_base_and_gives_the_training_size() -> None:
    augment = Augment("rrc_flip", 28)
    assert augment.base == 32  # round(28 / 0.875)
    assert Augment("rrc_flip", 224).base == 256 and Augment("crop_flip", 28).base == 28
    x = torch.rand(5, 3, augment.base, augment.base)
    out = augment_batch(x, augment, normalised, torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 28, 28) and out.dtype == x.dtype
    # bilinear sampling within the image: no value outside the image's range
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6


def torchvision_params(height: int, width: int, u: list[list[float]]) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params (scale (0.08, 1), ratio (3/4, 4/3)), written
    out again in float64 Python: (top, left, h, w). u[k] holds try k's four uniform draws
    (area, log ratio, and, standing for its randint calls, left and top)."""
    area = height * width
    log_lo, log_hi = math.log(3 / 4), math.log(4 / 3)
    for u_area, u_ratio, u_left, u_top in u:
        target_area = area * (0.08 + (1.0 - 0.08) * u_area)
        aspect_ratio = math.exp(log_lo + (log_hi - log_lo) * u_ratio)
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = math.floor(u_top * (height - h + 1))  # torch.randint(0, height - h + 1)
            left = math.floor(u_left * (width - w + 1))
            return top, left, h, w
    in_ratio = width / height  # the fallback: a centre crop
    if in_ratio < 3 / 4:
        w, h = width, int(round(width / (3 / 4)))
    elif in_ratio > 4 / 3:
        h, w = height, int(round(height * (4 / 3)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize(("height", "width"), [(32, 32), (9, 9), (14, 12), (3, 3)])
def test_rrc_boxes_are_torchvisions_for_the_same_draws(height: int, width: int) -> None:
    n = 2000
    g = torch.Generator().manual_seed(11)
    state = g.get_state()
    boxes = rrc_boxes(n, height, width, g, torch.device("cpu"))
    g.set_state(state)
    u = torch.rand((4, n, RRC_TRIES), generator=g, dtype=torch.float32).double()
    assert boxes.shape == (n, 4)
    for i in range(n):
        top, left, h, w = torchvision_params(height, width, u[:, i].T.tolist())
        assert boxes[i].tolist() == [left, top, left + w, top + h], i
    x1, y1, x2, y2 = boxes.T
    bw, bh = x2 - x1, y2 - y1
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
    assert (x1 == x1.round()).all() and (bw >= 1).all() and (bh >= 1).all()
    if height * width >= 81:  # rounding each side by up to half a pixel
        area = height * width
        assert ((bw + 0.5) * (bh + 0.5) >= 0.08 * area).all()
        assert ((bw - 0.5) * (bh - 0.5) <= area).all()
        assert ((bw + 0.5) / (bh - 0.5) >= 3 / 4).all()
        assert ((bw - 0.5) / (bh + 0.5) <= 4 / 3).all()
        fraction = bw * bh / area
        assert fraction.min() < 0.15 and fraction.max() > 0.9  # the whole range is drawn


def test_tiny_images_fall_back_to_the_whole_image() -> None:
    # A 1x1 image: a try fits only when both sides round to 1; whichever fails all ten tries
    # gets the whole image, as torchvision's fallback gives for a square image.
    boxes = rrc_boxes(500, 1, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert (boxes == torch.tensor([0.0, 0.0, 1.0, 1.0])).all()


@pytest.mark.parametrize(("base", "size"), [(8, 8), (8, 16), (16, 8)])
def test_a_whole_image_box_is_a_bilinear_resize(base: int, size: int, monkeypatch) -> None:
    n = 64
    whole = torch.tensor([[0.0, 0.0, float(base), float(base)]]).expand(n, 4)
    monkeypatch.setattr(augment_module, "rrc_boxes", lambda *args: whole)
    x = torch.randn(n, 3, base, base, generator=torch.Generator().manual_seed(0))
    out = augment_batch(x, Augment("rrc_flip", size), normalised, torch.Generator().manual_seed(1))
    # identity, upsampling, and a 2x reduction (each output pixel the mean of two)
    resized = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    flipped = torch.zeros(n, dtype=torch.bool)
    for i in range(n):
        if torch.allclose(out[i], resized[i], atol=1e-5):
            continue
        torch.testing.assert_close(out[i], resized[i].flip(-1), atol=1e-5, rtol=0)
        flipped[i] = True
    assert 0.3 < flipped.float().mean() < 0.7


def test_a_box_of_the_training_size_is_a_plain_crop(monkeypatch) -> None:
    n, base, size = 16, 12, 7
    corners = torch.randint(0, base - size + 1, (n, 2), generator=torch.Generator().manual_seed(2))
    boxes = torch.cat([corners, corners + size], dim=1).float()
    monkeypatch.setattr(augment_module, "rrc_boxes", lambda *args: boxes)
    x = torch.randn(n, 2, base, base)
    out = augment_batch(x, Augment("rrc_flip", size), normalised, torch.Generator().manual_seed(3))
    for i, (left, top) in enumerate(corners.tolist()):
        crop = x[i, :, top : top + size, left : left + size]
        ok = torch.allclose(out[i], crop, atol=1e-6)
        assert ok or torch.allclose(out[i], crop.flip(-1), atol=1e-6), i


def random_boxes(n: int, base: int, seed: int) -> torch.Tensor:
    return rrc_boxes(n, base, base, torch.Generator().manual_seed(seed), torch.device("cpu"))


@pytest.mark.parametrize(("base", "size"), [(37, 32), (16, 12), (12, 20)])
def test_the_cpus_crops_are_torchvisions_resized_crop(base: int, size: int) -> None:
    n = 48
    x = torch.randn(n, 3, base, base, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    boxes = random_boxes(n, base, 1)
    flip = torch.arange(n) % 3 == 0
    out = augment_module.crops_resized(x, boxes, flip, size)
    assert out.is_contiguous(memory_format=torch.channels_last)
    for i, (left, top, right, bottom) in enumerate(boxes.int().tolist()):
        want = TF.resized_crop(
            x[i], top, left, bottom - top, right - left, [size, size], antialias=False
        )
        want = TF.horizontal_flip(want) if flip[i] else want
        torch.testing.assert_close(out[i], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("base", "size"), [(37, 32), (16, 12), (12, 20)])
def test_the_cpus_crops_and_roi_align_sample_alike_inside_each_box(base: int, size: int):
    """The same bilinear samples; only those within a pixel of a box's edge may differ (the
    CPU's repeat the edge, roi_align reads beyond it)."""
    n = 48
    x = torch.randn(n, 3, base, base, generator=torch.Generator().manual_seed(0))
    boxes = random_boxes(n, base, 2)
    flip = torch.arange(n) % 2 == 0
    per_crop = augment_module.crops_resized(x, boxes, flip, size)
    batched = augment_module.boxes_resized(x, boxes, flip, size)
    for i, (left, top, right, bottom) in enumerate(boxes.tolist()):
        # output pixel j samples the box at left - 0.5 + (j + 0.5) * scale: inside it by one
        # pixel's interpolation distance when that point is >= left and <= right - 1
        inside = []
        for lo, hi in ((top, bottom), (left, right)):
            scale = (hi - lo) / size
            at = lo - 0.5 + (torch.arange(size) + 0.5) * scale
            inside.append((at >= lo) & (at <= hi - 1))
        rows, cols = inside
        cols = cols.flip(0) if flip[i] else cols
        if rows.any() and cols.any():
            a = per_crop[i][:, rows][:, :, cols]
            b = batched[i][:, rows][:, :, cols]
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_a_batch_on_the_cpu_is_resized_crop_by_crop() -> None:
    """augment_batch on a CPU takes the draws random_resized_crop makes (boxes, then flips)
    to `crops_resized`, not to roi_align (whose edges differ at these small sizes)."""
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    out = augment_batch(x, Augment("rrc_flip", 14), normalised, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    boxes = rrc_boxes(32, 16, 16, g, torch.device("cpu"))
    flip = torch.randint(0, 2, (32,), generator=g).bool()
    assert torch.equal(out, augment_module.crops_resized(x, boxes, flip, 14))
    assert not torch.allclose(out, augment_module.boxes_resized(x, boxes, flip, 14))


@pytest.mark.parametrize("mode", ["none", "crop", "crop_flip", "rrc_flip"])
def test_a_view_normalised_after_it_is_cut_is_the_view_of_the_normalised_batch(mode: str):
    """augment_batch normalises a stored uint8 batch after cutting where that is cheaper (a
    CPU's random resized crops, centre crops): the same view as cutting the normalised
    batch, to within the uint8 resize's rounding (one level of 255)."""
    pixels = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=pixels)
    x = x.contiguous(memory_format=torch.channels_last)  # as the decoders hand it over
    images = Resident(torch.arange(16), [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], 28, CPU, pixels=x)
    augment = Augment(mode, 28 if mode in ("none", "rrc_flip") else 32)
    norm = images.normalise
    got = augment_batch(x, augment, norm, torch.Generator().manual_seed(5))
    want = augment_batch(norm(x), augment, normalised, torch.Generator().manual_seed(5))
    assert got.dtype == torch.float32 and got.shape == want.shape
    # one uint8 level in the normalised units of the narrowest std, and float32's rounding of
    # it (300 random batches differed by at most 1.0002 levels)
    level = 1.01 / 255 / 0.2
    exact = mode != "rrc_flip"
    torch.testing.assert_close(got, want, atol=0 if exact else level, rtol=0)
    if not exact:
        assert not torch.equal(got, want)  # the CPU's random crops did resize the uint8 pixels
