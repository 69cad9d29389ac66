"""Batched augmentation on tensors, on whatever device the batch lives on.

No Python loop per sample: offsets and flips are drawn for the whole batch and applied with
one advanced-indexing gather, so the same code runs on a GPU without a host round trip.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

FLIPS = {"crop": False, "crop_flip": True}  # the modes that pad and crop: whether they flip
AUGMENT_MODES = ("none", *FLIPS)


def augment_batch(
    x: Tensor,
    mode: str,
    generator: torch.Generator | None = None,
    part: tuple[int, int] = (0, 1),
) -> Tensor:
    """A fresh random view of `x` (N, C, H, W); "none" returns `x` itself.

    `part` = (rank, world): `x` is that share of a global batch of N * world. The draws are
    made for the whole global batch and this share's slice is applied, so every process keeps
    the same generator state and the views are those one process would draw.
    """
    if mode == "none":
        return x
    flips = FLIPS[mode]
    n, _, h, _ = x.shape
    rank, world = part
    mine = slice(rank * n, (rank + 1) * n)
    pad = crop_padding(h)
    oy = draw_ints(2 * pad + 1, n * world, generator, x.device)[mine]
    ox = draw_ints(2 * pad + 1, n * world, generator, x.device)[mine]
    flip = None
    if flips:
        flip = draw_ints(2, n * world, generator, x.device)[mine].bool()
    return crop_at(x, pad, oy, ox, flip)


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
