"""`harkd compare`: several runs' results.json merged into one comparison (e.g. the KD zoo, TSAK and SMLDist, each
run with its own teacher on the same folds and seeds), written as results.json + report.md like a single run.

The runs must share dataset, folds and seeds, or the table would compare methods on different data. A run present
in several inputs (the same fold, seed, role, model and method: typically the student alone, "none") is taken from
the first input that has it; how far the copies differ is reported, so a non-deterministic baseline shows up.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harkd.errors import HarkdError
from harkd.experiment.families import best_per_family
from harkd.experiment.rows import ResultRow, rows_of
from harkd.experiment.summary import summarise


def read_results(path: Path) -> dict[str, Any]:
    """A run's results.json (given the file or its folder), checked for the keys a comparison reads."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    try:
        results = json.loads(file.read_text())
    except FileNotFoundError:
        raise HarkdError(f"compare: no results.json at {file}") from None
    except json.JSONDecodeError as exc:
        raise HarkdError(f"compare: {file} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    missing = {"rows", "class_names", "confusion", "command", "wall_time_s"} - set(results)
    if missing:
        raise HarkdError(f"compare: {file} lacks key(s) {sorted(missing)}; is it a harkd run's results.json?")
    results["source"] = str(file)
    return results


def _plan(results: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    rows = rows_of(results["rows"])
    return (tuple(sorted({r.dataset for r in rows})), tuple(sorted({r.fold for r in rows})),
            tuple(sorted({r.seed for r in rows})))


def merge_results(runs: Sequence[dict[str, Any]], command: str) -> dict[str, Any]:
    """One results dict (the shape `write_report` renders) holding every run's rows, duplicates taken once."""
    if len(runs) < 2:
        raise HarkdError("compare: give at least two runs")
    first = runs[0]
    for run in runs[1:]:
        if _plan(run) != _plan(first):
            (d1, f1, s1), (d2, f2, s2) = _plan(first), _plan(run)
            raise HarkdError(f"compare: {run['source']} ran dataset {list(d2)}, folds {list(f2)}, seeds {list(s2)} "
                             f"but {first['source']} ran {list(d1)}, {list(f1)}, {list(s1)}; compare the same "
                             f"folds and seeds")
        if run["class_names"] != first["class_names"]:
            raise HarkdError(f"compare: {run['source']} and {first['source']} have different classes")
    rows: dict[tuple, ResultRow] = {}
    confusion: dict[str, Any] = {}
    differences: list[float] = []
    for run in runs:
        for row in rows_of(run["rows"]):
            key = (*row.key, row.fold, row.seed)
            if key in rows:
                differences.append(abs(row.macro_f1 - rows[key].macro_f1))
            else:
                rows[key] = replace(row, source=run["source"])
        for name, matrix in run["confusion"].items():
            confusion.setdefault(name, matrix)
    merged = {
        "harkd_version": first.get("harkd_version", ""), "started": first.get("started", ""), "command": command,
        "wall_time_s": sum(run["wall_time_s"] for run in runs), "machine": first.get("machine", ""),
        "config": {"runs": [{"source": run["source"], "command": run["command"], "config": run.get("config")}
                            for run in runs]},
        "class_names": first["class_names"], "rows": [row.to_json() for row in rows.values()],
        "confusion": confusion,
        "shared_runs": {"count": len(differences),
                        "max_abs_macro_f1_difference": float(np.max(differences)) if differences else 0.0},
    }
    summary = summarise(list(rows.values()))
    merged["summary"] = [entry.to_json() for entry in summary]
    merged["best_per_family"] = best_per_family(merged["config"], summary)
    return merged


__all__ = ["merge_results", "read_results"]
