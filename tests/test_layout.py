"""The package layout: no import cycles, the CLI on top, a framework-free core (checked with `ast`).

Every import counts, including those inside functions: a lazy import still ties the two modules
together, it only hides the cycle until run time.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "backends", "workloads")
FRAMEWORKS = ("torch", "jax", "jaxlib", "flax", "optax")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imported_names(path: Path, known: set[str]) -> set[str]:
    """The project modules (and top-level third-party packages) a file imports, anywhere in it."""
    found: set[str] = set()
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            # `from pkg import module` depends on that module; `from pkg import name` on pkg itself
            found.update(submodules or {base})
    return found


def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a package import counts as its __init__)."""
    known = set(modules())
    return {name: {m for m in imported_names(path, known) if m in known and m != name}
            for name, path in modules().items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_imports_the_cli():
    importers = {m for m, deps in graph().items()
                 if any(d == "harness.cli" or d.startswith("harness.cli.") for d in deps)
                 and not (m == "harness.cli" or m.startswith("harness.cli.") or m == "harness.__main__")}
    assert not importers, f"the CLI is imported by {sorted(importers)}"


@pytest.mark.parametrize("name", sorted(m for m in modules() if m.split(".")[0] == "harness"))
def test_the_core_never_imports_a_framework(name):
    path = modules()[name]
    frameworks = {m.split(".")[0] for m in imported_names(path, set())} & set(FRAMEWORKS)
    assert not frameworks, f"{name} imports {sorted(frameworks)}"
