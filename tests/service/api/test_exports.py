"""The spec's `exports` field at the door: known formats only, at most two."""

import pytest

from tests.service.helpers import fields, problem


def test_exports_default_to_none(client, spec_body):
    r = client.post("/v1/jobs", json=spec_body)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["exports"] == []


def test_exports_are_kept_in_the_resolved_spec(client, spec_body):
    r = client.post("/v1/jobs", json=spec_body | {"exports": ["onnx", "torchscript"]})
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["exports"] == ["onnx", "torchscript"]


@pytest.mark.parametrize(
    ("exports", "field"),
    [
        (["tflite"], "exports.0"),
        (["onnx", "coreml"], "exports.1"),
        ("onnx", "exports"),
        (["onnx", "torchscript", "onnx"], "exports"),
    ],
)
def test_bad_exports_name_the_field_and_create_nothing(
    client, spec_body, count_jobs, exports, field
):
    body = problem(client.post("/v1/jobs", json=spec_body | {"exports": exports}), 422)
    assert fields(body) == [field]
    assert count_jobs() == 0
