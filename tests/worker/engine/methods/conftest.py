from pathlib import Path

import pytest
from torch import nn

from tests.worker.engine.helpers import Recorder, make_plan
from worker.engine.data import DataSplit
from worker.engine.loop import train


@pytest.fixture(scope="session")
def mlp_teacher(digits: DataSplit, tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    """A digits teacher in a second of training (an MLP, 3 epochs: about 0.9 accuracy)."""
    plan = make_plan(digits, Path(tmp_path_factory.mktemp("mlp_teacher")), arch="mlp", epochs=3)
    train(plan, Recorder())
    return plan.method.output_model()
