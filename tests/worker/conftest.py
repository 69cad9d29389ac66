import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """In-process training on one thread: two OpenMP threads on a 2-core host where any other
    process holds a core spin at every barrier (the README's figures). A training process
    chooses its own (worker/job/threads.py)."""
    torch.set_num_threads(1)
