"""The client stands alone (no server stack) and cannot drift from the API: its types have
the fields the app's OpenAPI document gives, its default URL is the API's default address."""

import subprocess
import sys

import pytest

import distillery_client
from distillery_client import models
from distillery_client.client import MAX_PAGE
from service.app import create_app
from service.config import Settings

# Runs in a subprocess: the server stack made unimportable, then the client and its CLI.
BLOCKED = """
import sys
BLOCK = ("torch", "fastapi", "sqlalchemy", "celery", "kombu", "service", "worker", "starlette")

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ImportError(f"the client imported {name}")

sys.meta_path.insert(0, Refuse())
import distillery_client, distillery_client.cli
from distillery_client import Client
Client("http://127.0.0.1:1").close()
print("ok")
"""

# the client's type -> the app's schema it mirrors
MIRRORS = {
    models.Job: "JobOut",
    models.JobList: "JobList",
    models.Event: "EventOut",
    models.EventList: "EventList",
    models.Artifact: "ArtifactOut",
    models.ArtifactList: "ArtifactList",
    models.Model: "ModelOut",
    models.ModelList: "ModelList",
    models.Dataset: "DatasetOut",
    models.DatasetList: "DatasetList",
    models.SizeSummary: "SizeSummary",
    models.Split: "SplitOut",
    models.Readiness: "Readiness",
    models.Webhook: "WebhookOut",
    models.WebhookCreated: "WebhookCreated",
    models.WebhookList: "WebhookList",
    models.WebhookEvent: "WebhookEventOut",
    models.WebhookEventList: "WebhookEventList",
    models.Delivery: "DeliveryOut",
    models.DeliveryList: "DeliveryList",
    models.Worker: "WorkerOut",
    models.WorkerList: "WorkerList",
    models.Recipe: "RecipeOut",
    models.RecipeList: "RecipeList",
    models.Published: "PublishedOut",
    models.Runs: "RunsOut",
    models.LeaderboardRow: "LeaderboardRow",
    models.Compute: "ComputeOut",
    models.Trial: "TrialOut",
    models.SweepSummary: "SweepSummary",
    models.Sweep: "SweepOut",
    models.SweepList: "SweepList",
    models.Problem: "Problem",
    models.ProblemField: "ProblemField",
}


def test_the_client_imports_without_the_server_stack() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.fixture(scope="module")
def document() -> dict:
    return create_app(Settings(watchdog_s=0)).openapi()


@pytest.fixture(scope="module")
def schemas(document: dict) -> dict:
    return document["components"]["schemas"]


@pytest.mark.parametrize("model", list(MIRRORS), ids=lambda m: m.__name__)
def test_client_types_have_the_api_fields(model: type, schemas: dict) -> None:
    schema = schemas[MIRRORS[model]]
    assert set(model.model_fields) == set(schema["properties"])
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    assert required == set(schema.get("required", [])) - {"object"} - _defaulted(model)


def _defaulted(model: type) -> set[str]:
    return {n for n, f in model.model_fields.items() if not f.is_required()}


def test_every_response_body_has_a_client_type(document: dict) -> None:
    """A new route's answer (or error) needs its type here, and a call in the client."""
    answered = {
        media["schema"]["$ref"].rsplit("/", 1)[1]
        for operations in document["paths"].values()
        for operation in operations.values()
        for response in operation["responses"].values()
        for media in response.get("content", {}).values()
        if "$ref" in media.get("schema", {})
    }
    assert answered and answered <= set(MIRRORS.values()), answered - set(MIRRORS.values())


def test_default_url_is_the_api_default_address() -> None:
    fields = Settings.model_fields
    url = f"http://{fields['host'].default}:{fields['port'].default}"
    assert url == distillery_client.DEFAULT_URL


def test_max_page_is_the_apis_largest_limit(document: dict) -> None:
    limits = [
        p["schema"]["maximum"]
        for path in ("/v1/jobs", "/v1/models", "/v1/datasets", "/v1/sweeps")
        for p in document["paths"][path]["get"]["parameters"]
        if p["name"] == "limit"
    ]
    assert limits == [MAX_PAGE] * 4
