"""The house's layout, read from the source with ast: in each wing (service, worker) a room is
a top-level file or a subpackage. No import circle between modules or between rooms (imports
under TYPE_CHECKING count; imports inside functions do not), and the forbidden arrows stay
absent: no torch at import time in service or worker/task, no database in service/spec, no
service or worker.task/job in worker/engine, nothing of worker in service, no database in
worker/job but through its main.
`python -m tests.test_layout` prints each wing's rooms, floors and arrows."""

import ast
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WINGS = ("service", "worker")
TORCH = ("torch", "torchvision", "torchcodec", "timm")
# what service/ imports from worker/ (nothing: the API image has no worker code to run)
SERVICE_FROM_WORKER: tuple[str, ...] = ()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every first-party module of the wings, by dotted name."""
    paths = (p for wing in WINGS for p in (ROOT / wing).rglob("*.py"))
    return {module_name(p): p for p in sorted(paths)}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def top_level(body: list[ast.stmt], typing_too: bool) -> Iterator[ast.stmt]:
    """The statements a module runs when imported (with TYPE_CHECKING blocks when
    `typing_too`): not function bodies."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.If) and is_type_checking(node) and not typing_too:
            yield from top_level(node.orelse, typing_too)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, [])
            yield from top_level([n for n in inner if isinstance(n, ast.stmt)], typing_too)
        for handler in getattr(node, "handlers", []):
            yield from top_level(handler.body, typing_too)


def imported(module: str, node: ast.stmt) -> list[str]:
    """The dotted names an import statement names; a `from x import y` names x.y when that
    is a module, else x."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if modules()[module].name != "__init__.py":
            package = package[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules() else base for a in node.names]


@cache
def imports(module: str, when: str) -> frozenset[str]:
    """What `module` imports: "runtime" (executed at import), "static" (with TYPE_CHECKING
    blocks), or "anywhere" (function bodies too)."""
    tree = ast.parse(modules()[module].read_text(), str(modules()[module]))
    nodes = ast.walk(tree) if when == "anywhere" else top_level(tree.body, when == "static")
    return frozenset(name for node in nodes for name in imported(module, node))


def first_party(name: str) -> str | None:
    """The first-party module an imported name loads, or None."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def arrows(when: str) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports."""
    graph: dict[str, set[str]] = {}
    for module in modules():
        found = {first_party(n) for n in imports(module, when)}
        graph[module] = {m for m in found if m and m != module}
    return graph


def closure(module: str) -> set[str]:
    """Every name imported when `module` is imported, through first-party modules."""
    seen, todo, names = {module}, [module], set()
    while todo:
        for name in imports(todo.pop(), "runtime"):
            names.add(name)
            if (found := first_party(name)) and found not in seen:
                seen.add(found)
                todo.append(found)
    return names | seen


def room(module: str) -> tuple[str, str] | None:
    """(wing, room) of a module: its top-level file or subpackage; None for a wing's
    __init__."""
    parts = module.split(".")
    return (parts[0], parts[1]) if len(parts) > 1 else None


def rooms(wing: str) -> dict[str, set[str]]:
    """Room -> the rooms of the same wing it imports."""
    graph: dict[str, set[str]] = {}
    for module, targets in arrows("static").items():
        if (here := room(module)) and here[0] == wing:
            there = {room(t) for t in targets}
            graph.setdefault(here[1], set()).update(
                r[1] for r in there if r and r[0] == wing and r[1] != here[1]
            )
    return graph


def circle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of the graph, as a path that comes back to its start; [] when none."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each room's floor: 1 for a room that imports no other, else one above its highest."""
    floor: dict[str, int] = {}

    def of(node: str) -> int:
        if node not in floor:
            floor[node] = 1 + max((of(n) for n in graph.get(node, ())), default=0)
        return floor[node]

    for node in graph:
        of(node)
    return floor


def in_wing(prefix: str) -> list[str]:
    return [m for m in modules() if m == prefix or m.startswith(prefix + ".")]


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a dotted name is one of `prefixes` or inside one."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(
    package: str, found: Callable[[str], set[str]], forbidden: tuple[str, ...]
) -> dict[str, list[str]]:
    """{module: the forbidden names it imports} for the modules of `package` that do."""
    hits = {m: sorted(n for n in found(m) if under(n, forbidden)) for m in in_wing(package)}
    return {m: names for m, names in hits.items() if names}


def anywhere(module: str) -> set[str]:
    return set(imports(module, "anywhere"))


def test_no_module_imports_itself_round_a_circle() -> None:
    assert circle(arrows("static")) == []


@pytest.mark.parametrize("wing", WINGS)
def test_no_room_imports_itself_round_a_circle(wing: str) -> None:
    assert circle(rooms(wing)) == []


@pytest.mark.parametrize("package", ["service", "worker.task"])
def test_no_torch_at_import_time(package: str) -> None:
    assert offenders(package, closure, TORCH) == {}


def test_the_spec_imports_no_database() -> None:
    assert offenders("service.spec", closure, ("sqlalchemy", "service.db")) == {}


def test_a_training_process_reaches_the_database_only_through_its_main() -> None:
    """rank.py reports through JobContext; the rest of worker/job are files in, files out."""
    found = offenders("worker.job", closure, ("sqlalchemy", "service.db"))
    assert set(found) <= {"worker.job.rank"}


def test_the_engine_imports_nothing_of_the_service_or_the_worker_glue() -> None:
    glue = ("service", "worker.task", "worker.job", "celery", "sqlalchemy", "fastapi")
    assert offenders("worker.engine", anywhere, glue) == {}


def test_the_service_imports_of_the_worker_only_what_is_listed() -> None:
    found = {n for m in in_wing("service") for n in anywhere(m) if under(n, ("worker",))}
    assert found == set(SERVICE_FROM_WORKER)


def figures(wing: str) -> tuple[int, int, int]:
    """(rooms, floors, arrows) of a wing."""
    graph = rooms(wing)
    return len(graph), max(floors(graph).values()), sum(len(t) for t in graph.values())


def main() -> None:
    for wing in WINGS:
        graph = rooms(wing)
        if found := circle(graph):
            sys.stdout.write(f"{wing}/: a circle, {' -> '.join(found)}\n")
            continue
        count, height, edges = figures(wing)
        sys.stdout.write(f"{wing}/: {count} rooms on {height} floors, {edges} arrows\n")
        by_floor = floors(graph)
        for level in range(1, height + 1):
            names = sorted(r for r, f in by_floor.items() if f == level)
            sys.stdout.write(f"  floor {level}: {', '.join(names)}\n")


if __name__ == "__main__":
    main()
