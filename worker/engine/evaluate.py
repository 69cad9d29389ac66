"""Validation accuracy and loss; the runner also uses it to measure a teacher."""

import torch
import torch.nn.functional as F
from torch import nn

from worker.engine.data.images import Images
from worker.engine.device import (
    autocast,
    memory_format,
    place,
    resolve_device,
    resolve_precision,
)
from worker.engine.zoo.base import eval_mode


def evaluate(
    model: nn.Module,
    images: Images,
    batch_size: int,
    device: str | torch.device,
    precision: str,
) -> dict[str, float]:
    """{"val_acc", "val_loss"} of `model` on `images`. Moves the model to `device`."""
    if len(images) == 0:
        raise ValueError("cannot evaluate on an empty split")
    dev = resolve_device(device)
    fmt = memory_format(dev)
    place(model, dev)
    with eval_mode(model), torch.inference_mode(), autocast(dev, resolve_precision(precision, dev)):
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev)
        for xb, yb in images.ordered(batch_size):  # a split not placed yet is on the host
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            logits = model(xb.contiguous(memory_format=fmt)).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(dim=1) == yb).sum()
        loss, acc = (torch.stack([loss_sum, correct]) / len(images)).tolist()
    return {"val_acc": acc, "val_loss": loss}
