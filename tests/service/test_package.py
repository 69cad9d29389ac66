"""The wheel is what production runs (`pip install .`, then `distillery migrate`): it must carry
the Alembic scripts, and `migrate` must find them in the installed package, with no source tree
anywhere on the path."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from service.db.tables import Base

pytestmark = pytest.mark.slow  # builds a wheel, installs it in a new venv

ROOT = Path(__file__).resolve().parents[2]
# what is not source, in the folders the Dockerfile copies
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".distillery"
)

# Runs in the subprocess: where the project came from, then `distillery migrate`.
MIGRATE = """
import json, sys
import migrations, service
print(json.dumps({"service": service.__file__, "migrations": migrations.__file__,
                  "path": sys.path}), flush=True)
from service.cli import main
main(["migrate"])
"""


# Runs in the subprocess: the client imports from the install.
CLIENT = """
import json, distillery_client
from distillery_client import Client, InvalidRequest
print(json.dumps({"client": distillery_client.__file__}), flush=True)
"""


# Runs in the subprocess: the installed app serves the dashboard and the docs' assets.
DASHBOARD = ROOT / "service" / "dashboard"
UI_PATHS = [
    "/",
    "/ui/app.js",
    "/ui/style.css",
    "/ui/vendor/chart.umd.min.js",
    "/docs",
    "/redoc",
    "/docs-assets/swagger-ui-bundle.js",
    "/docs-assets/swagger-ui.css",
    "/docs-assets/redoc.standalone.js",
]
SERVE = f"""
import json, service
from fastapi.testclient import TestClient
from service.app import create_app
from service.config import Settings
client = TestClient(create_app(Settings(watchdog_s=0)))
status = {{path: client.get(path).status_code for path in {UI_PATHS!r}}}
print(json.dumps({{"service": service.__file__, "status": status}}), flush=True)
"""


def _pip(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    subprocess.run(
        [sys.executable, "-m", "pip", "-q", *args], cwd=cwd, env=env, check=True, timeout=300
    )


def docker_copies() -> list[str]:
    """What the Dockerfile's build copies from the tree (`COPY src... dest` lines)."""
    copied = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copied += words[1:-1]
    return copied


def copy_as_docker_does(src: Path) -> None:
    src.mkdir()
    for name in docker_copies():
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=NOT_SOURCE)
        else:
            shutil.copy2(ROOT / name, src / name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the project, built offline from what the Dockerfile copies, as its
    `pip install .` does (setuptools builds in place: build/ and the egg-info stay out of
    the working tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    copy_as_docker_does(src)
    out = tmp / "dist"
    _pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(out),
        str(src),
        cwd=tmp,
    )
    (whl,) = out.glob("distillery-*.whl")
    return whl


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed into a folder of its own (no dependencies: the venv has them)."""
    tmp = tmp_path_factory.mktemp("site")
    _pip("install", "--no-deps", "--no-index", "--target", str(tmp / "site"), str(wheel), cwd=tmp)
    return tmp / "site"


def test_wheel_carries_the_migrations_not_the_tests(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    versions = {
        f"migrations/versions/{p.name}" for p in (ROOT / "migrations/versions").glob("*.py")
    }
    assert len(versions) >= 7
    assert versions <= names
    assert {"migrations/__init__.py", "migrations/env.py", "migrations/script.py.mako"} <= names
    tops = {n.split("/", 1)[0] for n in names}
    assert "tests" not in tops and "bench" not in tops
    assert {"service", "worker", "migrations"} <= tops


def test_wheel_carries_the_dashboard_and_needs_the_docs_assets(wheel: Path) -> None:
    whl = zipfile.ZipFile(wheel)
    shipped = {
        f"service/dashboard/{p.relative_to(DASHBOARD).as_posix()}"
        for p in DASHBOARD.rglob("*")
        if p.is_file()
    }
    assert {"service/dashboard/index.html", "service/dashboard/app.js"} <= shipped
    assert shipped <= set(whl.namelist())
    (metadata,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
    # /docs and /redoc serve Swagger UI and ReDoc from this package's files
    assert "Requires-Dist: fastapi-offline" in whl.read(metadata).decode()


def run_installed(
    code: str, site: Path, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`python -c code` in `cwd` with only the installed wheel (`site`) on the path and none
    of this environment's settings but `env`; it must succeed."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DISTILLERY_"))}
    clean |= {"PYTHONPATH": str(site), **env}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_the_image_copies_every_package_the_project_ships() -> None:
    shipped = {"service", "worker", "migrations", "distillery_client"}  # pyproject's include
    assert shipped <= set(Path(name).name for name in docker_copies())


def test_installed_wheel_gives_the_cli_and_the_client(site: Path, tmp_path: Path) -> None:
    proc = run_installed(CLIENT, site, tmp_path, {"DISTILLERY_DATA_DIR": str(tmp_path / "data")})
    where = json.loads(proc.stdout.splitlines()[-1])
    assert Path(where["client"]).resolve().is_relative_to(site.resolve()), where
    script = site / "bin" / "distillery"  # the console script pip writes
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DISTILLERY_"))}
    env["PYTHONPATH"] = str(site)
    helped = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0, helped.stderr
    assert all(command in helped.stdout for command in ("up", "submit", "watch", "keys"))


def test_installed_wheel_serves_the_dashboard_and_docs(site: Path, tmp_path: Path) -> None:
    proc = run_installed(SERVE, site, tmp_path, {"DISTILLERY_DATA_DIR": str(tmp_path / "data")})
    served = json.loads(proc.stdout.splitlines()[-1])
    assert Path(served["service"]).resolve().is_relative_to(site.resolve()), served
    assert served["status"] == dict.fromkeys(UI_PATHS, 200), served


def test_installed_wheel_migrates_without_the_source_tree(site: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = tmp_path / "data"
    env = {
        "DISTILLERY_DATA_DIR": str(data),
        "DISTILLERY_DATABASE_URL": "",
        "DISTILLERY_BROKER_URL": "",
    }
    proc = run_installed(MIGRATE, site, elsewhere, env)
    where = json.loads(proc.stdout.splitlines()[0])
    for module in ("service", "migrations"):
        assert Path(where[module]).resolve().is_relative_to(site.resolve()), where
    # '' (python -c) is the subprocess's cwd, elsewhere
    assert ROOT not in {(elsewhere / p).resolve() for p in where["path"]}, where["path"]

    head = ScriptDirectory(str(ROOT / "migrations")).get_current_head()
    with sqlite3.connect(data / "distillery.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        versions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
    conn.close()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert versions == [head]
