"""An API refusal as the client raises it: its text names each field at fault with its
message (the app's answer over HTTP, in this process, on each backend, made into the
client's exception as Client.send does)."""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from distillery_client import InvalidRequest
from distillery_client.errors import from_response
from service.app import create_app
from service.config import Settings
from service.errors import FieldError, InvalidSpec


@pytest.fixture
def app(clean_db: Any) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(watchdog_s=0))) as c:
        yield c


def test_an_invalid_requests_text_gives_each_fields_message(app: TestClient) -> None:
    spec = {"method": {"name": "supervised"}, "student": {"arch": "resnet8"}}
    answer = app.post(
        "/v1/jobs", json={**spec, "data": {"dataset": "digits"}, "train": {"epochs": 0}}
    )
    exc = from_response(answer)
    assert isinstance(exc, InvalidRequest)
    [error] = exc.errors
    lines = str(exc).splitlines()
    assert lines[0] == exc.headline and lines[0].startswith("422 ")
    assert lines[1:] == [f"  {error.field}: {error.message}"]
    assert error.field == "train.epochs" and error.message


def test_the_servers_error_text_gives_each_fields_message_too() -> None:
    exc = InvalidSpec([FieldError("train.epochs", "must be at least 1")])
    assert str(exc).splitlines() == [
        "invalid job spec: train.epochs",
        "  train.epochs: must be at least 1",
    ]
