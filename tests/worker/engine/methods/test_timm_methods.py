"""Every method on timm architectures (students, teachers, KDCL peers), through timm's own
feature API for the methods that read stage features."""

import pytest
import torch

from tests.worker.engine.helpers import batch, make_method
from worker.engine.methods.reviewkd import ReviewKD
from worker.engine.zoo import build_model

SHAPE = (3, 32, 32)
STUDENT, TEACHER = "timm/mobilenetv3_small_050", "timm/resnet18"


def step(name: str, **params: object) -> dict[str, float]:
    torch.manual_seed(0)
    student = build_model(STUDENT, 5, 3)
    teacher = build_model(TEACHER, 5, 3) if name in ("kd", "reviewkd", "iekd") else None
    method = make_method(name, student, teacher, SHAPE, **params).train()
    x, y = torch.randn(4, *SHAPE), torch.tensor([0, 1, 2, 3])
    terms = method.losses(batch(x, y, "crop_flip", torch.Generator().manual_seed(0)), epoch=5)
    total = torch.stack([t.float() for t in terms.values()]).sum()
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    if teacher is not None:
        assert all(p.grad is None for p in teacher.parameters())  # the teacher only answers
    return {k: float(v.detach()) for k, v in terms.items()}


@pytest.mark.parametrize(
    ("name", "params", "terms"),
    [
        ("kd", {}, {"ce", "kd"}),
        ("reviewkd", {"weight": 1.0}, {"ce", "hcl"}),
        ("iekd", {}, {"ce", "inh", "exp"}),
        ("ddgsd", {}, {"ce", "kl", "mmd"}),
        ("kdcl", {"peers": [TEACHER]}, {"ce_0", "kd_0", "ce_1", "kd_1"}),
    ],
)
def test_each_method_trains_timm_models(name: str, params: dict, terms: set[str]) -> None:
    got = step(name, **params)
    assert set(got) == terms and all(torch.isfinite(torch.tensor(v)) for v in got.values())


def test_reviewkd_sizes_its_fusion_from_both_timm_models() -> None:
    torch.manual_seed(0)
    student, teacher = build_model(STUDENT, 5, 3), build_model(TEACHER, 5, 3)
    method = make_method("reviewkd", student, teacher, SHAPE, weight=1.0)
    assert isinstance(method, ReviewKD)
    # resnet18's five stages (64, 64, 128, 256, 512 channels) and its pooled 512 features
    assert [abf.conv2[0].out_channels for abf in method.abfs] == [64, 64, 128, 256, 512, 512]
    assert len(method.abfs) == 6


def test_kdcl_keeps_a_timm_peer_under_a_file_safe_name() -> None:
    torch.manual_seed(0)
    method = make_method("kdcl", build_model(STUDENT, 5, 3), None, SHAPE, peers=[TEACHER])
    assert list(method.extra_models()) == ["peer1_timm-resnet18"]
