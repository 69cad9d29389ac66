"""Every third-party module the code imports is declared in pyproject.toml, where the part that
imports it is installed: the API and the client by the core dependencies, the worker by the
`worker` extra, the tests and benches by `dev`. An undeclared import works in a developer's
long-lived venv and fails on a fresh install (CI's, or the production images')."""

import ast
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FIRST_PARTY = {"service", "worker", "migrations", "distillery_client", "tests", "bench"}
# which requirement lists install each part
PARTS = {
    "service": [],
    "distillery_client": [],
    "migrations": [],
    "worker": ["worker"],
    "tests": ["worker", "dev"],
    "bench": ["worker", "dev"],
}


def _name(requirement: str) -> str:
    """The canonical distribution name of a requirement string (PEP 503)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


@cache
def _provided(extras: tuple[str, ...]) -> frozenset[str]:
    """Distributions the core dependencies plus `extras` declare, with what those declare
    in turn (fastapi brings starlette, celery brings kombu)."""
    declared = {_name(r) for r in PROJECT["dependencies"]}
    for extra in extras:
        declared |= {_name(r) for r in PROJECT["optional-dependencies"][extra]}
    for dist in list(declared):
        for req in metadata.requires(dist) or []:
            if "extra ==" not in req:
                declared.add(_name(req))
    return frozenset(declared)


def _imports(part: str) -> set[str]:
    """Top-level names of the modules imported anywhere under `part`."""
    tops: set[str] = set()
    for path in (ROOT / part).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                tops.add(node.module.split(".")[0])
    return tops - FIRST_PARTY - set(sys.stdlib_module_names)


@pytest.mark.parametrize("part", list(PARTS))
def test_every_import_is_declared_where_the_part_is_installed(part: str) -> None:
    dists = metadata.packages_distributions()
    provided = _provided(tuple(PARTS[part]))
    missing = {
        top: dists.get(top, ["?"])
        for top in _imports(part)
        if not {_name(d) for d in dists.get(top, [])} & provided
    }
    assert not missing, f"{part} imports modules pyproject.toml does not declare: {missing}"
