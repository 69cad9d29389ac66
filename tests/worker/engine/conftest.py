import pytest

from worker.engine.data import DataSplit, load_dataset


@pytest.fixture(scope="session")
def digits() -> DataSplit:
    return load_dataset("digits", val_fraction=0.1, seed=0)
