"""Exports of every zoo family: written, run back through onnxruntime / torch.jit.load, and
equal to the PyTorch model; an export that does not reproduce its model raises."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from worker.engine.zoo import build_model
from worker.job.exports import (
    OPSET,
    TOLERANCE,
    ExportError,
    check_parity,
    export_onnx,
    export_torchscript,
)

pytestmark = pytest.mark.slow  # traces and exports every zoo family

# one architecture per family; VGG's pooling depends on the input size, so it gets 32x32x3
FAMILIES = [
    ("cnn_small", (1, 8, 8)),
    ("resnet8", (3, 32, 32)),
    ("wrn_16_1", (1, 8, 8)),
    ("vgg8", (3, 32, 32)),
    ("mobilenetv2_half", (1, 8, 8)),
    ("shufflenetv1", (1, 8, 8)),
    ("shufflenetv2", (1, 8, 8)),
    ("mlp", (1, 8, 8)),
    ("timm/mobilenetv3_small_050", (3, 32, 32)),
    ("timm/resnet18", (1, 32, 32)),
]


def zoo_model(arch: str, channels: int) -> nn.Module:
    """A zoo model with a wide head: freshly initialised, some heads give near-equal logits
    and a comparison of predictions would test nothing."""
    torch.manual_seed(0)
    model = build_model(arch, 10, channels)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.5)
    return model.train()  # exports must switch to eval mode themselves


def reference(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("arch", "shape"), FAMILIES, ids=[a for a, _ in FAMILIES])
def test_every_family_exports_to_onnx_and_torchscript(
    arch: str, shape: tuple[int, int, int], tmp_path: Path
) -> None:
    model = zoo_model(arch, shape[0])
    onnx_result = export_onnx(model, shape, tmp_path / "m.onnx")
    ts_result = export_torchscript(model, shape, tmp_path / "m.pt")
    assert onnx_result == {
        "format": "onnx",
        "opset": OPSET,
        "max_abs_diff": onnx_result["max_abs_diff"],
        "file": "m.onnx",
    }
    assert ts_result["format"] == "torchscript" and ts_result["file"] == "m.pt"
    assert 0 <= onnx_result["max_abs_diff"] <= TOLERANCE
    assert 0 <= ts_result["max_abs_diff"] <= TOLERANCE

    # reloaded independently, at batch sizes other than the exporters', incl. a single image
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    for n in (1, 16):
        x = torch.randn((n, *shape), generator=torch.Generator().manual_seed(n))
        expected = reference(model, x)
        from_onnx = session.run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(from_onnx, expected.numpy(), atol=TOLERANCE)
        assert (from_onnx.argmax(1) == expected.argmax(1).numpy()).all()
        with torch.no_grad():
            assert torch.equal(scripted(x).argmax(1), expected.argmax(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.pt"]  # no temp files


def test_onnx_file_is_self_contained_at_the_chosen_opset(tmp_path: Path) -> None:
    export_onnx(zoo_model("mlp", 1), (1, 8, 8), tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert list(tmp_path.iterdir()) == [tmp_path / "m.onnx"]  # no external weights file


def test_export_leaves_the_callers_model_alone(tmp_path: Path) -> None:
    model = zoo_model("cnn_small", 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_torchscript(model, (1, 8, 8), tmp_path / "m.pt")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class Noisy(nn.Module):
    """Not a function of its input: no export can reproduce it."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)[:, :10] + torch.randn(x.shape[0], 10)


@pytest.mark.parametrize("export", [export_onnx, export_torchscript])
def test_an_export_that_differs_raises_and_writes_nothing(export, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export(Noisy(), (1, 8, 8), tmp_path / "m.out")
    assert list(tmp_path.iterdir()) == []


def test_parity_refuses_a_flipped_prediction_within_the_tolerance() -> None:
    # each logit moves by less than the tolerance, but the reference's margin was clear
    expected = torch.tensor([[1.0, 1.0 - 1.5 * TOLERANCE]])
    got = torch.tensor([[1.0 - 0.8 * TOLERANCE, 1.0 - 0.7 * TOLERANCE]])
    with pytest.raises(ExportError, match="predicts other classes"):
        check_parity("onnx", expected, got)


def test_parity_lets_a_near_tie_flip() -> None:
    expected = torch.tensor([[1.0, 1.0 - TOLERANCE / 10], [3.0, 0.0]])
    got = torch.tensor([[1.0 - TOLERANCE / 10, 1.0], [3.0, 0.0]])
    assert check_parity("onnx", expected, got) == pytest.approx(TOLERANCE / 10, rel=1e-3)


@pytest.mark.parametrize(
    ("got", "message"),
    [(torch.full((2, 3), float("nan")), "differs"), (torch.zeros(2, 4), "shape")],
)
def test_parity_refuses_nan_and_wrong_shapes(got: Tensor, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        check_parity("torchscript", torch.zeros(2, 3), got)
