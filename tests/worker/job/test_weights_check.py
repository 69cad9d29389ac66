"""An uploaded timm model's weights checked against its architecture (worker/job/weights_check.py),
and the check run as the task runs it, in a process of its own (worker/task/check_runner.py)."""

from pathlib import Path

import pytest
from safetensors.torch import save_file

from worker.engine.zoo import build_model
from worker.job.weights_check import check

ARCH = "timm/mobilenetv3_small_050"


def weights(tmp_path: Path, arch: str, num_classes: int) -> Path:
    path = tmp_path / f"{arch.replace('/', '-')}-{num_classes}.safetensors"
    state = {k: v.contiguous() for k, v in build_model(arch, num_classes, 3).state_dict().items()}
    save_file(state, str(path))
    return path


def test_fitting_weights_are_ready_with_their_size_and_output(tmp_path: Path) -> None:
    outcome = check(ARCH, 5, 3, 32, weights(tmp_path, ARCH, 5))
    model = build_model(ARCH, 5, 3)
    assert outcome == {
        "status": "ready",
        "parameters": sum(p.numel() for p in model.parameters()),
        "output_shape": [5],
    }


@pytest.mark.parametrize(
    ("arch", "num_classes", "says"),
    [
        ("timm/resnet18", 5, "missing keys: blocks."),  # another architecture's weights
        (ARCH, 7, "classifier.bias (7,) != (5,)"),  # another class count
    ],
)
def test_weights_that_do_not_fit_are_invalid_naming_the_keys(
    tmp_path: Path, arch: str, num_classes: int, says: str
) -> None:
    outcome = check(ARCH, 5, 3, 32, weights(tmp_path, arch, num_classes))
    assert outcome["status"] == "invalid"
    assert any(says in problem for problem in outcome["problems"]), outcome


def test_a_file_that_is_not_safetensors_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x80\x04not a safetensors file")
    outcome = check(ARCH, 5, 3, 32, path)
    assert outcome["status"] == "invalid" and "safetensors" in outcome["problems"][0]
