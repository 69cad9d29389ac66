"""A real service (API under uvicorn + a Celery worker, tests/e2e/conftest.py) for the client
and the CLI, and one real 1-epoch job trained through `distillery submit --wait`, shared by
the whole package on each backend."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from distillery_client import Client
from distillery_client.cli import app
from tests.conftest import Backend
from tests.e2e.conftest import QUEUE, Service, fresh_service

SPEC_YAML = f"""\
name: digits-cli
method: {{name: supervised}}
student: {{arch: resnet8}}
data: {{dataset: digits, val_fraction: 0.2}}
train:
  epochs: 1
  batch_size: 64
resources: {{queue: {QUEUE}}}
"""


def cli(service: Service, *args: str) -> Result:
    """`distillery --url <service> ARGS`, in this process."""
    return CliRunner().invoke(app, ["--url", service.url, *args])


@pytest.fixture(scope="package")
def svc(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with fresh_service(backend, tmp_path_factory.mktemp(f"logs-client-{backend.name}")) as service:
        yield service


@pytest.fixture(scope="package")
def api(svc: Service) -> Iterator[Client]:
    with Client(svc.url) as c:
        yield c


@pytest.fixture(scope="package")
def submitted(svc: Service, tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, str]:
    """`distillery submit spec.yaml --wait` on a 1-epoch job: its output and the job id."""
    spec = tmp_path_factory.mktemp("spec") / "digits.yaml"
    spec.write_text(SPEC_YAML)
    result = cli(svc, "submit", str(spec), "--wait")
    return result, result.stdout.splitlines()[0]


@pytest.fixture(scope="package")
def trained(submitted: tuple[Result, str]) -> str:
    """The id of the succeeded job."""
    result, job_id = submitted
    assert result.exit_code == 0, result.output
    return job_id


def spec_file(tmp: Path, text: str) -> Path:
    path = tmp / "spec.yaml"
    path.write_text(text)
    return path
