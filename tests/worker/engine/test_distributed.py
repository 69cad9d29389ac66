"""Which failures of a collective mean a peer went away (worker/engine/distributed.py): a
rank of a job across nodes that sees one exits EXIT_NODE_LOST and the job is requeued, any
other failure is the job's own. (Through real processes: tests/e2e/test_nodes.py kills a
node mid-epoch.)"""

import pytest
import torch.distributed as dist

from worker.engine.distributed import lost_peer

# as torch 2.14's gloo raises them: a peer killed mid-allreduce, and a peer that hangs
GLOO_RESET = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
    "[127.0.0.1]:62170: Connection reset by peer. This is typically caused by a remote worker "
    "hanging or bugs in the application."
)
GLOO_TIMEOUT = (
    "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting "
    "600000ms for recv operation to complete"
)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError(GLOO_RESET),
        RuntimeError(GLOO_TIMEOUT),
        dist.DistBackendError("NCCL communicator was aborted on rank 1"),
        dist.DistNetworkError("failed to recv, got 0 bytes"),
    ],
)
def test_a_peer_gone_mid_collective_is_a_lost_peer(exc: Exception) -> None:
    assert lost_peer(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (16x64 and 32x10)"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        ValueError("the training split needs at least two samples per process"),
    ],
)
def test_the_jobs_own_failures_are_not(exc: Exception) -> None:
    assert not lost_peer(exc)
