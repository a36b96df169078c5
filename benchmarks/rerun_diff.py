"""How far two runs of the same cells land apart: row for row (a cell is dataset, fold, seed, role, model, method)
and for each method's mean over the shared folds x seeds.

    python benchmarks/rerun_diff.py RUN_A RUN_B [--json OUT.json]

RUN_A/RUN_B: run folders or their results.json. Only the cells both runs have are compared, so a two-fold rerun can
be checked against a committed eight-fold run. Prints how many cells are identical (macro-F1, accuracy and epochs
equal), the largest per-cell difference in macro-F1, and per method the difference of the means with its paired
spread; exits 1 when no cell is shared.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

CELL = ["dataset", "fold", "seed", "role", "model", "method"]
COMPARED = ["macro_f1", "accuracy", "epochs"]


def read_rows(run: Path) -> pd.DataFrame:
    path = run / "results.json" if run.is_dir() else run
    return pd.DataFrame(json.loads(path.read_text())["rows"])[CELL + COMPARED]


def compare(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    both = a.merge(b, on=CELL, suffixes=("_a", "_b"))
    if both.empty:
        return {"cells": 0}
    delta = both["macro_f1_b"] - both["macro_f1_a"]
    identical = np.logical_and.reduce([both[f"{c}_a"] == both[f"{c}_b"] for c in COMPARED])
    worst = both.loc[delta.abs().idxmax()]
    per_method = both.assign(delta=delta).groupby(["role", "model", "method"], sort=False).agg(
        cells=("delta", "size"), mean_a=("macro_f1_a", "mean"), mean_b=("macro_f1_b", "mean"),
        mean_delta=("delta", "mean"), std_delta=("delta", "std"), max_abs_delta=("delta", lambda d: d.abs().max()))
    return {"cells": len(both), "identical_cells": int(identical.sum()),
            "max_abs_delta_macro_f1": round(float(delta.abs().max()), 5),
            "worst_cell": {k: (v.item() if hasattr(v, "item") else v) for k, v in worst[CELL].items()},
            "mean_abs_delta_macro_f1": round(float(delta.abs().mean()), 5),
            "per_method": per_method.round(5).reset_index().to_dict("records")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--json", type=Path, help="also write the comparison here")
    args = parser.parse_args()
    result = {"command": " ".join(["python", "benchmarks/rerun_diff.py", *sys.argv[1:]]),
              **compare(read_rows(args.run_a), read_rows(args.run_b))}
    if not result["cells"]:
        print("no cell in common")
        return 1
    if args.json:  # before printing: a closed pipe (| head) must not lose it
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['cells']} cells in common, {result['identical_cells']} identical (macro-F1, accuracy, epochs); "
          f"largest |delta macro-F1| {100 * result['max_abs_delta_macro_f1']:.2f} points at {result['worst_cell']}; "
          f"mean |delta| {100 * result['mean_abs_delta_macro_f1']:.2f}")
    print(f"{'role/model/method':<40} {'cells':>5} {'mean A':>7} {'mean B':>7} "
          f"{'B - A':>7} {'± std':>6} {'max|d|':>7}")
    for m in result["per_method"]:
        print(f"{m['role'] + '/' + m['model'] + '/' + m['method']:<40} {m['cells']:>5} {100 * m['mean_a']:>7.2f} "
              f"{100 * m['mean_b']:>7.2f} {100 * m['mean_delta']:>+7.2f} {100 * np.nan_to_num(m['std_delta']):>6.2f} "
              f"{100 * m['max_abs_delta']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
