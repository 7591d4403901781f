"""The layers show in the folders and lower layers never import higher ones: read every import (ast) and check."""
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
    "workbench.inside": ("workbench.ui", "workbench.views", "workbench.report", "workbench.cli", "workbench.backends"),
    "workbench.tune": ("workbench.ui", "workbench.views", "workbench.report", "workbench.cli", "workbench.backends"),
    "workbench.views": ("workbench.ui", "workbench.session", "workbench.report", "workbench.cli",
                        "workbench.backends"),
}


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


def test_the_rule_reader_sees_relative_imports():
    assert "workbench.engine.EngineGraph" in _imports(PACKAGE / "results.py")  # `from .engine import EngineGraph`
    assert "workbench.engine.Backend" in _imports(PACKAGE / "backends" / "__init__.py")


@pytest.mark.parametrize("module", ["workbench.trtplan", "workbench.engine", "workbench.graph"])
def test_engine_free_modules_load_neither_onnxruntime_nor_torch(module):
    code = (f"import sys, {module}; heavy = [m for m in ('onnxruntime', 'torch', 'openvino') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
