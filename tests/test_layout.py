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


def imported_names(path: Path, known: set[str], type_hints: bool = True) -> set[str]:
    """The project modules (and top-level third-party packages) a file imports, anywhere in it
    (with `type_hints` False, leaving out the imports under `if TYPE_CHECKING:`)."""
    found: set[str] = set()
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    if not type_hints:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
    for node in ast.walk(tree):
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


def graph(type_hints: bool = True) -> dict[str, set[str]]:
    """module -> the project modules it imports (a package import counts as its __init__)."""
    known = set(modules())
    return {name: {m for m in imported_names(path, known, type_hints) if m in known and m != name}
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


# ---------------------------------------------------------------- frameworks live in their package

# The top-level modules of each framework package's framework (backends/<package>/ may import them).
FRAMEWORK_PACKAGES = {"torch": ("torch",), "jax": ("jax", "jaxlib", "flax", "optax")}
# A workload's model files are the workload's (workloads/<name>/torch_model.py, flax_model.py and the
# shared workloads/flax_layout.py): they import the framework whose engines build them, nothing else does.
WORKLOAD_MODEL_FILES = {"torch_model": "torch", "flax_model": "jax", "flax_layout": "jax"}


def framework_owner(name: str) -> str | None:
    """The framework package whose framework module `name` may import, or None for none."""
    parts = name.split(".")
    if parts[0] == "backends" and len(parts) > 1 and parts[1] in FRAMEWORK_PACKAGES:
        return parts[1]
    if parts[0] == "workloads":
        return WORKLOAD_MODEL_FILES.get(parts[-1])
    return None


@pytest.mark.parametrize("name", sorted(modules()))
def test_a_framework_is_imported_only_inside_its_package(name):
    imported = {m.split(".")[0] for m in imported_names(modules()[name], set())} & set(FRAMEWORKS)
    owner = framework_owner(name)
    allowed = set(FRAMEWORK_PACKAGES[owner]) if owner else set()
    assert imported <= allowed, f"{name} imports {sorted(imported - allowed)}: only backends/<framework>/ may"


def test_the_harness_reaches_a_framework_package_only_through_the_registry():
    """harness/ imports `backends` (the registry) and framework-free modules beside it, never
    backends/torch/ or backends/jax/ themselves."""
    reaching = {m: sorted(d for d in deps if framework_owner(d) and d.startswith("backends."))
                for m, deps in graph().items() if m.split(".")[0] == "harness"}
    assert not {m: d for m, d in reaching.items() if d}


def test_nothing_the_harness_imports_imports_a_framework():
    """Everything the CLI reaches by imports (the registry and each framework package's __init__
    included) is framework-free; frameworks come in only by name, in a backend's own child process."""
    edges, seen, todo = graph(), set(), ["harness.__main__"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    assert {"backends", "backends.torch", "backends.jax"} <= seen
    dirty = {m for m in seen if {d.split(".")[0] for d in imported_names(modules()[m], set())} & set(FRAMEWORKS)}
    assert not dirty, f"reached from harness.__main__ and importing a framework: {sorted(dirty)}"


def test_every_registered_framework_has_its_package():
    import backends
    for name, framework in backends.FRAMEWORKS.items():
        assert name in FRAMEWORK_PACKAGES, f"{name}: add its modules to FRAMEWORK_PACKAGES"
        for module in filter(None, (framework.gpu_check, framework.iwae, framework.probe, framework.info)):
            assert module.startswith(f"backends.{name}.") and module in modules(), module
    for engine, spec in backends.REGISTRY.items():
        if not spec.module.startswith("tests."):
            assert spec.module.startswith(f"backends.{spec.framework}."), (engine, spec.module)


# ---------------------------------------------------------------- folders in layers

# Which folder may import which (besides the utilities every folder may use), drawn one way: a layer
# imports only layers below it. The CLI is on top; data and workloads import nothing above them.
UTILITIES = {"harness", "harness.errors", "harness.atomic", "harness.channel"}
LAYERS: dict[str, set[str]] = {
    "workloads": set(),  # a model file names harness.config for type hints only (under TYPE_CHECKING)
    "harness.data": set(),
    "harness.counter_noise": set(),  # the noise definition, NumPy only (its framework twins live in backends/)
    "harness.config": {"workloads"},
    "harness.draws": {"harness.config", "harness.counter_noise", "workloads"},
    "harness.measurement": {"harness.config", "workloads"},
    "backends": {"harness.config", "harness.draws", "harness.counter_noise", "harness.data", "workloads"},
    "harness.execution": {"backends", "harness.measurement", "harness.config", "harness.draws", "harness.data",
                          "workloads"},
    "harness.sweeps": {"harness.execution", "harness.measurement", "harness.config", "harness.data", "workloads"},
    "harness.verification": {"backends", "harness.execution", "harness.measurement", "harness.config",
                             "harness.draws", "workloads"},  # execution: parity runs each backend in a child
    "harness.evaluation": {"backends", "harness.execution", "harness.sweeps", "harness.measurement",
                           "harness.config", "harness.draws", "harness.data", "workloads"},
    "harness.reporting": {"harness.verification", "harness.evaluation", "harness.sweeps", "harness.execution",
                          "harness.measurement", "harness.config", "harness.draws", "harness.data", "workloads"},
    "harness.cli": {"harness.reporting", "harness.verification", "harness.evaluation", "harness.sweeps",
                    "harness.execution", "backends", "harness.measurement", "harness.config", "harness.draws",
                    "harness.data", "workloads"},
    "harness.__main__": {"harness.cli"},
}
# Imports against the layers that are known and being removed: the verdict's and compare's text
# moves into harness/reporting/ (issue 23). Delete an entry when its import goes (a test says so).
PENDING: set[tuple[str, str]] = set()


def folder_of(module: str) -> str:
    """The layer of a module: harness.<folder> (or harness.<module> for a file at harness/'s top),
    or the top-level package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "harness" and len(parts) > 1 else parts[0]


def test_the_layers_point_one_way():
    assert find_cycle(LAYERS) is None
    assert not UTILITIES & set(LAYERS)


def test_every_folder_is_in_a_layer():
    assert {folder_of(m) for m in modules()} - UTILITIES == set(LAYERS)


def layer_violations(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The imports (module, imported) of `edges` that reach a folder not below the importer's."""
    return sorted((m, d) for m, deps in edges.items() for d in deps
                  if folder_of(d) != folder_of(m) and folder_of(d) not in UTILITIES
                  and folder_of(d) not in LAYERS[folder_of(m)] and (m, d) not in PENDING)


def test_the_layer_check_finds_an_upward_import():
    """measure.py importing harness/execution/devices.py (as it did) is caught; a utility is not."""
    assert layer_violations({"harness.measurement.measure": {"harness.execution.devices", "harness.errors"},
                             "harness.execution.runner": {"harness.measurement.measure"}}) == [
        ("harness.measurement.measure", "harness.execution.devices")]


def test_folders_import_only_the_layers_below_them():
    wrong = layer_violations(graph(type_hints=False))
    assert not wrong, "imports against the layers: " + ", ".join(f"{m} -> {d}" for m, d in wrong)


def test_pending_exceptions_still_exist():
    edges = graph(type_hints=False)
    gone = sorted(pair for pair in PENDING if pair[1] not in edges.get(pair[0], set()))
    assert not gone, f"no longer imported, remove from PENDING: {gone}"

