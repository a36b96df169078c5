"""The code's shape: the experiment package stays a composition of short, named stages."""

import ast
from pathlib import Path

import pytest

EXPERIMENT = Path(__file__).resolve().parents[1] / "harkd" / "experiment"
MAX_LINES = 40


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("path", sorted(EXPERIMENT.glob("*.py")), ids=lambda p: p.name)
def test_no_function_in_the_experiment_package_is_longer_than_40_lines(path):
    long = {name: lines for name, lines in _functions(path) if lines > MAX_LINES}
    assert not long, f"{path.name}: split these into named steps: {long}"


def test_the_runner_no_longer_knows_tsaks_rep_names():
    runner = (EXPERIMENT / "runner.py").read_text()
    assert "REP_NAMES" not in runner and "experiment.teacher" in runner
