import ast
from pathlib import Path

import pytest

from worker.engine.registry import Registry, UnknownName

ENGINE = Path(__file__).resolve().parents[3] / "worker" / "engine"
FORBIDDEN = {"service", "celery", "sqlalchemy", "fastapi"}


def test_duplicate_name_raises() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="duplicate thing name 'a'"):
        reg.register("a")(2)


def test_unknown_name_lists_known_ones() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("b")(1)
    reg.register("a")(2)
    with pytest.raises(UnknownName, match="unknown thing 'c'; known: a, b"):
        reg.get("c")
    assert isinstance(UnknownName("x"), ValueError)
    assert reg.names() == ("a", "b")


def test_engine_never_imports_the_service_side() -> None:
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            offenders += [f"{path.name}: {root}" for root in roots & FORBIDDEN]
    assert offenders == []
