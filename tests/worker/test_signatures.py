"""service/spec/signatures.json is what the zoo builds today, and real weights pass its check."""

import json

import pytest
from safetensors.torch import save

from service.ingest import weights
from worker import signatures
from worker.engine.zoo import build_model


def test_committed_signatures_are_current():
    """If this fails, run `python -m worker.signatures` and commit service/spec/signatures.json."""
    fresh = signatures.signatures()
    assert json.loads(signatures.PATH.read_text()) == fresh
    assert signatures.PATH.read_text() == signatures.render(fresh)


def header_of(state: dict) -> weights.Header:
    raw = save(state)
    header = weights.parse_header(raw[8 : 8 + weights.header_length(raw)])
    assert header.file_size == len(raw)
    return header


@pytest.mark.parametrize("arch", sorted(weights.signatures()))
def test_real_weights_fit_their_signature_at_other_shapes(arch):
    # neither pair the signatures were made from: the symbols must carry over
    model = build_model(arch, 7, 2)
    assert weights.signature_problems(header_of(dict(model.state_dict())), arch, 7, 2) == []
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    assert weights.signature_problems(header_of(half), arch, 7, 2) == []
    assert weights.signature_problems(header_of(dict(model.state_dict())), arch, 8, 2) != []


def test_a_dimension_that_follows_nothing_is_an_error():
    with pytest.raises(ValueError, match="follows neither"):
        signatures.symbolic((5, 6))
    assert signatures.symbolic((192, 64)) == "C*64"
    assert signatures.symbolic((10, 100)) == "K"


@pytest.mark.parametrize(
    ("arch", "num_classes", "in_channels"),
    [
        ("resnet8", 10, 3),
        ("wrn_16_2", 7, 1),
        ("mobilenetv2", 100, 3),
        ("timm/resnet18", 7, 3),
        ("timm/mobilenetv3_small_050", 1000, 3),
        ("timm/deit_tiny_distilled_patch16_224", 12, 3),  # two classifiers
    ],
)
def test_the_apis_parameter_count_is_the_built_models(arch, num_classes, in_channels):
    """Admission sizes a job's training state by it (service/jobs/admission.py)."""
    model = build_model(arch, num_classes, in_channels)
    trained = sum(p.numel() for p in model.parameters())
    counted = weights.param_count(arch, num_classes, in_channels)
    assert counted == trained  # timm's: counted with a 3-channel stem, as these are
