"""DIST under DDP on two gloo processes: each rank's intra-class term is over its own share
of the global batch, so the step is the mean of the two shares' DIST, not DIST of the
whole batch (the authors' per-GPU batches behave the same)."""

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn

from tests.worker.engine.helpers import batch, make_method
from worker.engine.data.loader import shard_of
from worker.engine.distributed import Shard, process_group, wrap
from worker.engine.methods import Method

pytestmark = pytest.mark.slow  # spawns two processes

WORLD = 2


def fixed() -> tuple[Method, torch.Tensor, torch.Tensor]:
    """The same DIST method (MLPs) and global batch of 8 in every process."""
    torch.manual_seed(3)
    student, teacher = (nn.Sequential(nn.Flatten(), nn.Linear(4, 5)) for _ in range(2))
    method = make_method("dist", student, teacher, (1, 2, 2), temperature=1.0)
    x, y = torch.randn(8, 1, 2, 2), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    return method, x, y


def gradients(method: Method) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in method.student.named_parameters() if p.grad is not None}


def rank_main(rank: int, workdir: Path) -> None:
    torch.set_num_threads(1)
    with process_group(rank, WORLD, workdir / "rendezvous", torch.device("cpu")):
        method, x, y = fixed()
        model = wrap(method, torch.device("cpu"), Shard(rank, WORLD))
        mine = shard_of(torch.arange(8), rank, WORLD)  # as the loop cuts each global batch
        terms = model(batch(x[mine], y[mine]), 0)
        sum(terms.values()).backward()  # DDP averages the two ranks' gradients
    save_file(gradients(method), str(workdir / f"grads{rank}.safetensors"))


def loss_gradients(method: Method, parts: list[torch.Tensor], x, y) -> dict[str, torch.Tensor]:
    """Gradients of the mean over `parts` of the method's loss on each part."""
    method.student.zero_grad()
    for part in parts:
        (sum(method.losses(batch(x[part], y[part]), 0).values()) / len(parts)).backward()
    return gradients(method)


def test_each_rank_relates_its_own_share_of_the_batch(tmp_path: Path) -> None:
    mp.spawn(rank_main, args=(tmp_path,), nprocs=WORLD, join=True)
    method, x, y = fixed()
    halves = loss_gradients(method, [torch.arange(4), torch.arange(4, 8)], x, y)
    whole = loss_gradients(method, [torch.arange(8)], x, y)
    for rank in range(WORLD):
        got = load_file(str(tmp_path / f"grads{rank}.safetensors"))
        assert got.keys() == halves.keys()
        for name, value in halves.items():
            assert torch.allclose(got[name], value, atol=1e-6), (rank, name)
        assert not all(torch.allclose(got[n], whole[n], atol=1e-4) for n in whole)
