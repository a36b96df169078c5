"""The code's shape: layers that import only downward, short named functions, modules of a readable size."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harkd"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES = 40  # a function's body, after its signature and docstring (typer commands declare options there)
MAX_MODULE_LINES = 500


def _long_functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            if body and node.end_lineno - body[0].lineno + 1 > MAX_FUNCTION_LINES:
                yield node.name, node.end_lineno - body[0].lineno + 1


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_function_is_longer_than_40_lines_and_no_module_than_500(path):
    long = dict(_long_functions(path))
    assert not long, f"{path.name}: split these into named steps: {long}"
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES, f"{path.name}: split the module by concern"


def test_each_layer_imports_only_the_layers_below_it_and_no_module_cycle():
    """pyproject.toml's import-linter contracts (the README's Layout gives the order)."""
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                             "lint_imports_command()"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_runner_no_longer_knows_tsaks_rep_names():
    runner = (PACKAGE / "experiment" / "runner.py").read_text() + (PACKAGE / "experiment" / "fold_unit.py").read_text()
    assert "REP_NAMES" not in runner and "experiment.teacher" in runner
