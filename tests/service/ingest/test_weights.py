"""The safetensors header parser and the signature check, without torch."""

import json
import struct
import subprocess
import sys

import pytest

from service.ingest import weights


def file_of(entries: dict, data: bytes = b"") -> bytes:
    header = json.dumps(entries).encode()
    return struct.pack("<Q", len(header)) + header + data


def parse(raw: bytes) -> weights.Header:
    length = weights.header_length(raw[:8])
    return weights.parse_header(raw[8 : 8 + length])


def test_a_valid_header_parses():
    raw = file_of(
        {
            "__metadata__": {"format": "pt"},
            "b": {"dtype": "F16", "shape": [2], "data_offsets": [8, 12]},
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        },
        bytes(12),
    )
    header = parse(raw)
    assert header.tensors["b"] == weights.TensorInfo("F16", (2,), 8, 12)
    assert header.metadata == {"format": "pt"} and header.file_size == len(raw)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"PK\x03\x04\x14\x00\x00\x00", "header length"),  # a zip (torch.save) file
        (b"\x80\x04\x95", "shorter than"),  # a pickle
        (struct.pack("<Q", 4) + b"[12]", "not a JSON object"),
        (struct.pack("<Q", 4) + b"\xff\xfe{}", "not JSON"),
        (file_of({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}), "unknown dtype"),
        (file_of({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}), "do not fit"),
        (file_of({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}), "malformed"),
        (file_of({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}), "start at 0"),
        (file_of({"a": {"dtype": "F32", "shape": [1]}}), "malformed"),
        (file_of({"__metadata__": {"k": 1}}), "__metadata__"),
    ],
)
def test_anything_else_is_not_safetensors(raw, why):
    with pytest.raises(weights.NotSafetensors, match="not a safetensors file") as info:
        parse(raw)
    assert why in str(info.value)


def test_every_architecture_has_a_signature():
    from service.spec.names import ARCHITECTURES

    assert set(weights.signatures()) == set(ARCHITECTURES)


def test_symbols_resolve_to_this_uploads_shape():
    assert weights.expected_shape([256, "C*64"], 10, 3) == [256, 192]
    assert weights.expected_shape(["K", 64], 100, 3) == [100, 64]


def test_the_api_checks_weights_without_torch():
    """The API image has no torch: the upload path must not import it."""
    code = (
        "import sys, service.app, service.ingest.models, service.ingest.weights; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
