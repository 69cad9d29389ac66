from pathlib import Path

import pytest
import torch

from worker.engine.checkpoint import (
    CheckpointError,
    flatten_optimizer,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
    unflatten_optimizer,
)
from worker.engine.zoo import build_model


def test_roundtrip_keeps_tensors_dtypes_and_meta(tmp_path: Path) -> None:
    tensors = {
        "w": torch.randn(3, 4),
        "rng": torch.get_rng_state(),
        "count": torch.tensor(7),
        "half": torch.randn(2, dtype=torch.bfloat16),
        "view": torch.randn(4, 4).t(),  # not contiguous
    }
    meta = {"epoch": 3, "history": [{"val_acc": 0.5}], "name": "x"}
    save_checkpoint(tmp_path / "c.safetensors", tensors=tensors, meta=meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "c.safetensors")
    assert loaded_meta == meta
    assert loaded.keys() == tensors.keys()
    for name, value in tensors.items():
        assert loaded[name].dtype == value.dtype and torch.equal(loaded[name], value)


def test_a_save_leaves_no_temporary_file(tmp_path: Path) -> None:
    # a write that fails half-way, on a real full disk: test_checkpoint_safety.py
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, tensors={"a": torch.ones(2)}, meta={"v": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
    tensors, meta = load_checkpoint(path)
    assert meta == {"v": 1} and torch.equal(tensors["a"], torch.ones(2))


def test_weights_roundtrip(tmp_path: Path) -> None:
    source = build_model("resnet8", 10, 1)
    with torch.no_grad():
        source(torch.randn(4, 1, 8, 8))  # move BatchNorm running stats off their init
    save_weights(tmp_path / "w.safetensors", source)
    target = build_model("resnet8", 10, 1)
    load_weights(target, tmp_path / "w.safetensors")
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_strict_load_names_the_offending_keys(tmp_path: Path) -> None:
    save_weights(tmp_path / "cnn.safetensors", build_model("cnn_small", 10, 1))
    with pytest.raises(CheckpointError) as info:
        load_weights(build_model("resnet8", 10, 1), tmp_path / "cnn.safetensors")
    message = str(info.value)
    assert "missing keys: " in message and "layer1.0.conv1.weight" in message
    assert "unexpected keys: " in message and "stages.0.conv.weight" in message

    with pytest.raises(CheckpointError, match=r"shape mismatch: fc.bias \(10,\) != \(5,\)"):
        load_weights(build_model("cnn_small", 5, 1), tmp_path / "cnn.safetensors")


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_optimizer_state_roundtrip_continues_identically(tmp_path: Path, name: str) -> None:
    def make() -> tuple[torch.nn.Linear, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        if name == "sgd":
            return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, torch.optim.AdamW(model.parameters(), lr=0.1)

    def step(model: torch.nn.Linear, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()
        model(torch.ones(4, 3)).square().sum().backward()
        optimizer.step()

    model, optimizer = make()
    step(model, optimizer)
    tensors, meta = flatten_optimizer(optimizer)
    save_checkpoint(
        tmp_path / "o.safetensors", tensors=tensors | dict(model.state_dict()), meta=meta
    )
    loaded, loaded_meta = load_checkpoint(tmp_path / "o.safetensors")
    copy, copy_optimizer = make()
    copy.load_state_dict({k: loaded[k] for k in ("weight", "bias")})
    unflatten_optimizer(copy_optimizer, loaded, loaded_meta)
    step(model, optimizer)
    step(copy, copy_optimizer)
    assert torch.equal(model.weight, copy.weight) and torch.equal(model.bias, copy.bias)
