"""Batched augmentation on tensors, on whatever device the batch lives on: crops, boxes and
flips drawn for the whole batch and applied with one gather or one `roi_align` (on a CPU,
`crops_resized` resizes each random crop on its own, from uint8 pixels when stored so).
A batch comes as stored, at its split's base size, not normalised. Normalisation is affine
per channel, so it commutes with crops, flips and bilinear resizing: a view is normalised
after it is cut where that costs less, before where it must be (pad-and-crop, whose zero
padding is the mean; roi_align, which takes floats). "rrc_flip" is the ImageNet recipe
(RandomResizedCrop + flip); evaluation takes the centre, as timm evaluates."""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

FLIPS = {"crop": False, "crop_flip": True}  # the modes that pad and crop: whether they flip
AUGMENT_MODES = ("none", *FLIPS, "rrc_flip")
CROP_PCT = 0.875  # "rrc_flip": the base is size / CROP_PCT; evaluation crops its centre
RRC_SCALE, RRC_RATIO, RRC_TRIES = (0.08, 1.0), (3 / 4, 4 / 3), 10


@dataclass(frozen=True)
class Augment:
    mode: str  # one of AUGMENT_MODES
    size: int  # the training size: what the model sees

    @property
    def base(self) -> int:
        """The size the split's images are kept at."""
        return round(self.size / CROP_PCT) if self.mode == "rrc_flip" else self.size


def augment_batch(
    x: Tensor,
    augment: Augment,
    normalise: Callable[[Tensor], Tensor],
    generator: torch.Generator | None = None,
    part: tuple[int, int] = (0, 1),
) -> Tensor:
    """A fresh random view of `x` (N, C, base, base, as stored) at the training size,
    normalised by `normalise` (the split's, images.py Normalise).

    `part` = (rank, world): `x` is that share of a global batch of N * world. The draws are
    made for the whole global batch and this share's slice is applied, so every process keeps
    the same generator state and the views are those one process would draw.
    """
    if augment.mode == "none":
        return normalise(centre_crop(x, augment.size))
    if augment.mode == "rrc_flip":
        if x.device.type == "cpu":
            return normalise(random_resized_crop(x, augment.size, generator, part))
        return random_resized_crop(normalise(x), augment.size, generator, part)
    x = normalise(x)
    n, _, h, _ = x.shape
    rank, world = part
    mine = slice(rank * n, (rank + 1) * n)
    pad = crop_padding(h)
    oy = draw_ints(2 * pad + 1, n * world, generator, x.device)[mine]
    ox = draw_ints(2 * pad + 1, n * world, generator, x.device)[mine]
    flip = None
    if FLIPS[augment.mode]:
        flip = draw_ints(2, n * world, generator, x.device)[mine].bool()
    return crop_at(x, pad, oy, ox, flip)


def centre_crop(x: Tensor, size: int) -> Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def random_resized_crop(
    x: Tensor, size: int, generator: torch.Generator | None, part: tuple[int, int]
) -> Tensor:
    """torchvision's RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, ten tries, then the
    whole image) and a horizontal flip for half, per sample, bilinear."""
    n, _, h, w = x.shape
    rank, world = part
    mine = slice(rank * n, (rank + 1) * n)
    boxes = rrc_boxes(n * world, h, w, generator, x.device)[mine]
    flip = draw_ints(2, n * world, generator, x.device)[mine].bool()
    resize = crops_resized if x.device.type == "cpu" else boxes_resized
    return resize(x, boxes, flip, size)


def boxes_resized(x: Tensor, boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """Every box of its image resized to size x size in one `roi_align`, mirrored where `flip`
    is set (no host round trip: the GPU's way). A sample next to a box's edge reads the
    pixels beyond it."""
    index = torch.arange(len(x), device=x.device, dtype=x.dtype)[:, None]
    rois = torch.cat([index, boxes.to(x.dtype)], dim=1)
    # One bilinear sample per output pixel: a box is at most base / size = 1 / CROP_PCT times
    # the output, too little reduction to alias; roi_align's adaptive two-by-two sampling of
    # such boxes only costs time (README, Data throughput).
    out = roi_align(x, rois, size, aligned=True, sampling_ratio=1)
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.contiguous(memory_format=memory_format_of(x))


def crops_resized(x: Tensor, boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """Each box cropped, resized and mirrored on its own, as torchvision's resized_crop does
    (the CPU's way: a sixth of roi_align's time and the batched flip's there). The same
    samples as `boxes_resized`, except that one next to a box's edge repeats the edge."""
    shape = (len(x), x.shape[1], size, size)
    out = torch.empty(shape, dtype=x.dtype, memory_format=memory_format_of(x))
    corners, mirrored = boxes.int().tolist(), flip.tolist()
    for i, (x1, y1, x2, y2) in enumerate(corners):
        crop = x[i : i + 1, :, y1:y2, x1:x2]
        view = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0]
        out[i] = view.flip(-1) if mirrored[i] else view
    return out


def rrc_boxes(
    n: int, h: int, w: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """(n, 4) boxes x1, y1, x2, y2 in pixels, drawn as torchvision draws them."""
    source = generator.device if generator is not None else device
    u = torch.rand((4, n, RRC_TRIES), generator=generator, device=source).to(device)
    area = h * w * (RRC_SCALE[0] + (RRC_SCALE[1] - RRC_SCALE[0]) * u[0])
    lo, hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    ratio = torch.exp(lo + (hi - lo) * u[1])
    bw, bh = torch.sqrt(area * ratio).round(), torch.sqrt(area / ratio).round()
    fits = (bw > 0) & (bw <= w) & (bh > 0) & (bh <= h)
    first = torch.where(fits.any(dim=1), fits.int().argmax(dim=1), -1)
    pick = first.clamp(min=0)[:, None]
    bw, bh = bw.gather(1, pick)[:, 0], bh.gather(1, pick)[:, 0]
    x1 = ((w - bw + 1) * u[2].gather(1, pick)[:, 0]).floor()
    y1 = ((h - bh + 1) * u[3].gather(1, pick)[:, 0]).floor()
    whole = first < 0  # no try fitted: torchvision's fallback, the whole image
    bw, bh = torch.where(whole, float(w), bw), torch.where(whole, float(h), bh)
    x1, y1 = torch.where(whole, 0.0, x1), torch.where(whole, 0.0, y1)
    return torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1)


def crop_padding(height: int) -> int:
    return max(1, height // 8)


def draw_ints(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """n uniform ints in [0, high), drawn where the generator lives, then moved to `device`."""
    source = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=source).to(device)


def crop_at(x: Tensor, pad: int, oy: Tensor, ox: Tensor, flip: Tensor | None = None) -> Tensor:
    """Crop each zero-padded image at its own offset (oy, ox), mirrored where `flip` is set.

    Equal to `F.pad(x, [pad] * 4)[i, :, oy[i]:oy[i] + H, ox[i]:ox[i] + W]` per sample i.
    Padding is zero in normalised space, i.e. the dataset mean.
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if flip is not None:
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    cols = ox[:, None] + cols  # (N, W)
    out = padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return out.contiguous(memory_format=memory_format_of(x))


def memory_format_of(x: Tensor) -> torch.memory_format:
    # A 1-channel or 1x1 tensor is both formats at once; only a strict channels_last stays so.
    strict = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if strict else torch.contiguous_format
