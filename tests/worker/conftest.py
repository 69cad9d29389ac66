import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """In-process training on one thread. Two OpenMP threads on a 2-core host where any other
    process holds a core spin at every barrier: an epoch of cnn_small on digits took 9 s so,
    0.06 s on one thread. A training process chooses its own (worker/job/threads.py)."""
    torch.set_num_threads(1)
