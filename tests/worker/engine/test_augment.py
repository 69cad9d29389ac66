import pytest
import torch
import torch.nn.functional as F

from worker.engine.data import augment_batch, batches, crop_at, num_batches


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


def test_none_is_identity() -> None:
    x = torch.randn(4, 3, 8, 8)
    assert augment_batch(x, "none") is x


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
    out = augment_batch(numbered(n, size, size), "crop", torch.Generator().manual_seed(1))
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
    out = augment_batch(x, "crop_flip", torch.Generator().manual_seed(2))
    dy, dx, flipped = decode(out)
    assert flipped.float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert dy.abs().max() <= 4 and dx.abs().max() <= 4
    # Flipped and unflipped samples see the same offset distribution.
    assert dx[flipped].float().mean().item() == pytest.approx(0.0, abs=0.15)


def test_views_are_fresh_and_reproducible() -> None:
    x = torch.randn(32, 3, 16, 16)
    a = augment_batch(x, "crop_flip", torch.Generator().manual_seed(5))
    b = augment_batch(x, "crop_flip", torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    first, second = augment_batch(x, "crop_flip", g), augment_batch(x, "crop_flip", g)
    assert torch.equal(a, b) and torch.equal(a, first)
    assert not torch.equal(first, second)


def test_channels_last_input_stays_channels_last() -> None:
    x = torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    out = augment_batch(x, "crop", torch.Generator().manual_seed(0))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_training_batches_cover_every_sample_once() -> None:
    x, y = torch.arange(130).float()[:, None], torch.arange(130)
    got = list(batches(x, y, 32, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b) for _, b in got] == [32, 32, 32, 32, 2]
    seen = torch.cat([b for _, b in got])
    assert sorted(seen.tolist()) == list(range(130)) and seen.tolist() != list(range(130))
    assert all(torch.equal(bx[:, 0].long(), by) for bx, by in got)


def test_training_drops_a_single_trailing_sample_but_eval_keeps_it() -> None:
    x, y = torch.zeros(65, 1), torch.arange(65)
    train = list(batches(x, y, 32, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b) for _, b in train] == [32, 32] and num_batches(65, 32, shuffle=True) == 2
    evaluation = list(batches(x, y, 32, shuffle=False))
    assert [len(b) for _, b in evaluation] == [32, 32, 1] and num_batches(65, 32, False) == 3
    assert torch.equal(torch.cat([b for _, b in evaluation]), y)


def test_each_share_of_a_global_batch_gets_the_views_one_process_would_draw() -> None:
    x = torch.randn(8, 3, 16, 16)
    one = torch.Generator().manual_seed(3)
    whole = augment_batch(x, "crop_flip", one)
    for rank in range(2):
        g = torch.Generator().manual_seed(3)
        part = augment_batch(x[rank * 4 : (rank + 1) * 4], "crop_flip", g, part=(rank, 2))
        assert torch.equal(part, whole[rank * 4 : (rank + 1) * 4])
        # every process's generator moved as far as the one-process draw: the ranks stay in step
        assert torch.equal(g.get_state(), one.get_state())
