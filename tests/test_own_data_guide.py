"""docs/own-data.md is run as written: its YAML files are written where their first line says, a synthetic folder of
CSVs of the shape it describes is put beside them, and its commands run in order (the run with one epoch)."""

import re
import shlex
from pathlib import Path

import numpy as np

from conftest import WALK_ACTIVITIES, WALK_COLUMNS, WALK_SUBJECTS, WALK_TRIALS, run_cli, walk_signals

GUIDE = Path(__file__).parents[1] / "docs" / "own-data.md"
QUICK = ["teacher.train.epochs=1", "semantic.train.epochs=1", "students.train.epochs=1", "split.folds=[s01]",
         "latency_runs=2"]


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", GUIDE.read_text(), re.S)


def _commands() -> list[list[str]]:
    """Every `harkd ...` line of the guide's bash blocks, continuation lines joined."""
    lines = "\n".join(_blocks("bash")).replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.startswith("harkd ")]


def _write_csv(path: Path, signals: np.ndarray) -> None:
    rows = [",".join(f"{v:.5f}" for v in row) for row in signals]
    path.write_text("\n".join([",".join(WALK_COLUMNS), *rows]) + "\n")


def test_the_guide_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the guide's paths are relative
    for block in _blocks("yaml"):
        target = tmp_path / block.splitlines()[0].removeprefix("# ")
        target.parent.mkdir(exist_ok=True)
        target.write_text(block)
    for subject in WALK_SUBJECTS:
        for activity in WALK_ACTIVITIES:
            for trial in WALK_TRIALS:
                _write_csv(tmp_path / "walkdata" / f"{subject}_{activity}_t{trial}.csv",
                           walk_signals(subject, activity, trial))
    for trial in WALK_TRIALS:  # the new worker: 40 s per trial, walking then sitting, unlabelled
        _write_csv(tmp_path / "newworker" / f"w01_t{trial}.csv",
                   np.concatenate([walk_signals("s01", "walk", trial, 400), walk_signals("s01", "sit", trial, 400)]))
    commands = _commands()
    assert [c[:2] for c in commands] == [["data", "check"], ["data", "install"], ["data", "info"],
                                         ["run", "walkdata.yaml"], ["data", "install"],
                                         ["personalise", commands[-1][1]]]
    root = tmp_path / "root"
    outputs = []
    for args in commands:
        if args[0] == "run":
            args = [*args, *QUICK]
        outputs.append(run_cli(*args, data_root=root, check=True).stdout)
    assert "12 recordings, 3 subjects" in outputs[0] and "walkdata: no problems" in outputs[0]
    assert "units: acc m/s^2; gyro rad/s" in outputs[2]
    assert (tmp_path / "runs" / "walkdata" / "report.md").is_file()
    assert (tmp_path / "w01-student.pt").is_file() and "calibration windows of w01" in outputs[-1]
