"""Aggregate the per-run rows of results.json: mean ± std per (role, model, method), each KD method's gain over
the same student trained alone, per-fold means, and student/teacher cost ratios.

A run is one (fold, seed); every statistic pools the runs of one (role, model, method). Gains over "none" pair the
runs by (fold, seed), so a method is only compared with the student alone on the same split and seed.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd

from harkd.errors import HarkdError

KEY = ["role", "model", "method"]
RUN = ["fold", "seed"]
BASELINE = "none"
COST = ["params", "flops", "latency_ms_cpu"]
_ROLE_ORDER = {"teacher": 0, "semantic": 1, "student": 2}


def order_key(role: str, model: str, method: str) -> tuple:
    """Teacher, semantic classifier, then students by model, each model's "none" before its KD methods."""
    return _ROLE_ORDER.get(role, len(_ROLE_ORDER)), model, method != BASELINE, method


def _frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    duplicated = frame[frame.duplicated(KEY + RUN, keep=False)]
    if not duplicated.empty:
        first = duplicated.iloc[0]
        # A repeated run would count twice in the means and pair ambiguously with "none".
        raise HarkdError(f"results: {len(duplicated)} rows repeat a run, e.g. fold {first['fold']} seed "
                         f"{first['seed']} {first['role']}/{first['model']}/{first['method']}")
    return frame


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _gain_over_none(frame: pd.DataFrame, role: str, model: str, method: str) -> dict:
    gain = {"delta_vs_none_mean": None, "folds_won": None, "folds_total": None}
    if role != "student" or method == BASELINE:
        return gain
    student = frame[(frame["role"] == role) & (frame["model"] == model)]
    runs = student.loc[student["method"] == method, RUN + ["macro_f1"]]
    alone = student.loc[student["method"] == BASELINE, RUN + ["macro_f1"]]
    paired = runs.merge(alone, on=RUN, suffixes=("", "_none"))
    if paired.empty:
        return gain
    by_fold = paired.groupby("fold", sort=False)[["macro_f1", "macro_f1_none"]].mean()
    return {"delta_vs_none_mean": float((paired["macro_f1"] - paired["macro_f1_none"]).mean()),
            "folds_won": int((by_fold["macro_f1"] > by_fold["macro_f1_none"]).sum()),
            "folds_total": len(by_fold)}


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """One dict per (role, model, method), plain Python values (JSON-ready), in `order_key` order.

    Keys: role, model, method, n (runs), macro_f1_mean/std, accuracy_mean/std (std with ddof=1, 0 for one run),
    params, flops, latency_ms_cpu (medians over the runs), delta_vs_none_mean (mean paired macro-F1 difference to
    the same student's "none"), folds_won / folds_total (folds whose seed-mean macro-F1 beats "none"'s). The last
    three are None for teacher, semantic and "none" rows, and for a method with no paired "none" run.
    """
    frame = _frame(rows)
    if frame.empty:
        return []
    summary = []
    for (role, model, method), runs in frame.groupby(KEY, sort=False):
        summary.append({
            "role": role, "model": model, "method": method, "n": len(runs),
            "macro_f1_mean": float(runs["macro_f1"].mean()), "macro_f1_std": _std(runs["macro_f1"]),
            "accuracy_mean": float(runs["accuracy"].mean()), "accuracy_std": _std(runs["accuracy"]),
            "params": int(runs["params"].median()), "flops": int(runs["flops"].median()),
            "latency_ms_cpu": float(runs["latency_ms_cpu"].median()),
            **_gain_over_none(frame, role, model, method),
        })
    return sorted(summary, key=lambda s: order_key(s["role"], s["model"], s["method"]))


def ratios(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Each student model against each teacher model: params_reduction and flops_reduction (1 - student/teacher)
    and speedup (teacher latency / student latency).

    Costs are medians over all of a model's runs: the architecture does not depend on the KD method, so pooling the
    methods only steadies the latency measurement.
    """
    frame = _frame(rows)
    if frame.empty:
        return []
    cost = frame.groupby(["role", "model"])[COST].median()
    roles = cost.index.get_level_values("role")
    teachers, students = cost[roles == "teacher"], cost[roles == "student"]
    return [{"model": student, "teacher": teacher,
             "params_reduction": float(1 - s["params"] / t["params"]),
             "flops_reduction": float(1 - s["flops"] / t["flops"]),
             "speedup": float(t["latency_ms_cpu"] / s["latency_ms_cpu"])}
            for (_, teacher), t in teachers.iterrows() for (_, student), s in students.iterrows()]


def fold_means(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Macro-F1 averaged over seeds: index = fold (in run order), columns = (role, model, method) in `order_key`
    order; NaN where a fold lacks that run."""
    frame = _frame(rows)
    if frame.empty:
        return pd.DataFrame()
    table = frame.pivot_table(index="fold", columns=KEY, values="macro_f1", aggfunc="mean")
    return table.reindex(index=pd.unique(frame["fold"]), columns=sorted(table.columns, key=lambda c: order_key(*c)))
