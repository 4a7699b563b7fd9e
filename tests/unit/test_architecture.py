"""The shape of the package, checked: the rules of the README's Layout section that code can break silently."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "llmlabel"
#: the longest a function may be (a longer one does several things: split it at its steps)
MAX_FUNCTION_LINES = 80
#: the orchestration of labeling: the Labeler, around the engine, prompting, raw results and calibration pieces
ORCHESTRATION = PACKAGE / "labeling" / "labeler.py"
MAX_ORCHESTRATION_LINES = 300


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in sorted(PACKAGE.rglob("*.py"))]


def test_no_function_is_longer_than_80_lines():
    long = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, tree in _modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_no_module_imports_another_modules_private_name():
    private = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.module}.{alias.name}"
               for path, tree in _modules() for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmlabel")
               for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert private == []


def test_the_orchestration_stays_small():
    lines = len(ORCHESTRATION.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_ORCHESTRATION_LINES, f"{ORCHESTRATION.name} has {lines} lines"


#: the orchestrator: runs a recipe of any kind end to end (kinds label sub-recipes through `RunContext.label`)
ORCHESTRATOR = "llmlabel.kinds.run"


def test_only_the_cli_and_the_public_api_import_the_orchestrator():
    importers = sorted(str(path.relative_to(PACKAGE.parent)) for path, tree in _modules() for node in ast.walk(tree)
                       if (isinstance(node, ast.ImportFrom) and node.module == ORCHESTRATOR)
                       or (isinstance(node, ast.Import) and any(a.name == ORCHESTRATOR for a in node.names))
                       or (isinstance(node, ast.Constant) and node.value == ORCHESTRATOR))
    assert set(importers) <= {"llmlabel/cli.py", "llmlabel/__init__.py"}, importers


def test_the_library_never_imports_its_test_infrastructure():
    importers = sorted(str(path.relative_to(PACKAGE.parent)) for path, tree in _modules()
                       if "testing" not in path.relative_to(PACKAGE).parts[:1]
                       for node in ast.walk(tree)
                       if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmlabel.testing"))
                       or (isinstance(node, ast.Import) and any(a.name.startswith("llmlabel.testing")
                                                                 for a in node.names)))
    assert importers == []
