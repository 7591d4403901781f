"""The layers show in the folders and lower layers never import higher ones, directly or through other modules, and
no modules import each other: read every import (ast, at any depth of a file), follow them transitively, and check."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
TOP = ("workbench.ui", "workbench.views", "workbench.session", "workbench.report", "workbench.cli")
FORBIDDEN = {  # module prefix -> what it must not import
    "workbench.engine": (*TOP, "workbench.backends", "workbench.samples", "workbench.measure", "workbench.precision"),
    "workbench.graph": (*TOP, "workbench.backends", "workbench.samples", "workbench.engine"),
    "workbench.models": (*TOP, "workbench.samples", "workbench.backends", "workbench.precision"),
    "workbench.precision": (*TOP, "workbench.backends", "workbench.measure"),
    "workbench.backends": (*TOP, "workbench.measure"),
    "workbench.measure": TOP,
    "workbench.results": (*TOP, "workbench.backends"),
    "workbench.trtplan": (*TOP, "workbench.backends", "workbench.session"),
    "workbench.cache": (*TOP, "workbench.backends"),
    "workbench.lint": (*TOP, "workbench.backends", "workbench.samples", "workbench.precision"),
    "workbench.inside": ("workbench.ui", "workbench.views", "workbench.report", "workbench.cli"),  # above the session
    "workbench.tune": ("workbench.ui", "workbench.views", "workbench.report", "workbench.cli", "workbench.backends"),
    "workbench.views": ("workbench.ui", "workbench.session", "workbench.report", "workbench.cli",
                        "workbench.backends"),
}
# The plan is a value every layer carries (results, lint, views): importing it is not importing the transforms.
VALUES = ("workbench.precision.plan",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved), at any depth of the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        rules = [banned for prefix, banned in FORBIDDEN.items() if module == prefix or module.startswith(prefix + ".")]
        for name in _imports(path):
            for banned in (b for rule in rules for b in rule):
                if name == banned or name.startswith(banned + "."):
                    problems.append(f"{module} imports {name}")
    return problems


def test_lower_layers_never_import_higher_ones():
    assert _violations() == []


def _graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name like workbench.engine.EngineGraph counts as its module;
    the root package, which only re-exports lazily, is left out)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}

    def module_of(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {module: {found for name in _imports(path) if (found := module_of(name)) not in (None, module, "workbench")}
            for module, path in modules.items()}


def _chains(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module `start` reaches, with one import chain that gets there (breadth first: a shortest one)."""
    chains, queue = {start: [start]}, [start]
    while queue:
        module = queue.pop(0)
        for found in sorted(graph.get(module, ())):
            if found not in chains:
                chains[found] = [*chains[module], found]
                queue.append(found)
    del chains[start]
    return chains


def _transitive_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module in sorted(graph):
        banned = [b for prefix, rule in FORBIDDEN.items() if module == prefix or module.startswith(prefix + ".")
                  for b in rule]
        for found, chain in _chains({m: graph[m] - set(VALUES) for m in graph}, module).items():
            if any(found == b or found.startswith(b + ".") for b in banned):
                problems.append(" -> ".join(chain))
    return problems


def test_lower_layers_never_import_higher_ones_through_other_modules():
    assert _transitive_violations(_graph()) == []


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    return sorted(" -> ".join([module, *_chains(graph, found)[module]]) for module in graph
                  for found in graph[module] if module in _chains(graph, found))


def test_no_modules_import_each_other():
    assert _cycles(_graph()) == []


def test_the_transitive_reader_finds_a_higher_layer_behind_a_lower_one():
    graph = {"workbench.views.tuning": {"workbench.tune"}, "workbench.tune": {"workbench.session"},
             "workbench.session": {"workbench.tune"}}
    assert _transitive_violations(graph) == ["workbench.views.tuning -> workbench.tune -> workbench.session"]
    assert _cycles(graph) == ["workbench.session -> workbench.tune -> workbench.session",
                              "workbench.tune -> workbench.session -> workbench.tune"]


def test_the_rule_reader_sees_relative_imports():
    assert "workbench.engine.EngineGraph" in _imports(PACKAGE / "results.py")  # `from .engine import EngineGraph`
    assert "workbench.engine.Backend" in _imports(PACKAGE / "backends" / "__init__.py")


def test_the_tuning_views_load_neither_the_session_nor_the_engines():
    code = ("import sys, workbench.views.tuning; loaded = [m for m in ('workbench.session', 'workbench.backends') "
            "if m in sys.modules]; print(loaded); sys.exit(1 if loaded else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("module", ["workbench.trtplan", "workbench.engine", "workbench.graph"])
def test_engine_free_modules_load_neither_onnxruntime_nor_torch(module):
    code = (f"import sys, {module}; heavy = [m for m in ('onnxruntime', 'torch', 'openvino') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
