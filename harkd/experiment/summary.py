"""Aggregate the per-run rows of results.json: mean ± std per (role, model, method), each method's gain over its
baseline, per-fold means and gains, personalised students as a fraction of the teacher, and student/teacher cost
ratios.

A run is one (fold, seed); every statistic pools the runs of one (role, model, method). Gains pair the runs by
(fold, seed) with the same model's baseline: "none" (the student alone) for students, "none+untouched" (the kept
student alone, not personalised) for personalised students, so a method is only compared on the same split and seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from harkd.errors import HarkdError
from harkd.experiment.rows import (PERSONALISED_LABELS, REFERENCE, UNTOUCHED, ResultRow, rows_frame, rows_of,
                                   split_name)

KEY = ["role", "model", "method"]
RUN = ["fold", "seed"]
BASELINE = "none"
# Role -> the method each of its methods is compared with. Personalised rows are scored on other windows than the
# plain ones, so they are compared with the kept student alone on those windows.
BASELINES = {"student": BASELINE, "personalised": f"{BASELINE}+{UNTOUCHED}"}
TEACHER_METHOD = REFERENCE  # the method of teacher rows, and of the teacher scored on the personalised windows
COST = ["params", "flops", "latency_ms_cpu"]
_ROLE_ORDER = {"teacher": 0, "semantic": 1, "student": 2, "personalised": 3}
Rows = Sequence[ResultRow | Mapping[str, Any]]  # typed, or as read from results.json


@dataclass(frozen=True)
class MethodSummary:
    """The runs of one (role, model, method) pooled; `method` and `labels` as in ResultRow, `name` their text.

    n runs; macro_f1/accuracy mean and std (ddof=1, 0 for one run); params, flops, latency_ms_cpu: medians over the
    runs; delta_vs_none_mean: mean paired macro-F1 difference to the same model's baseline in BASELINES ("none" for
    students, "none+untouched" for personalised students); folds_won / folds_total: folds whose seed-mean macro-F1
    beats the baseline's (the last three None for teacher, semantic and baseline rows, and for a method with no
    paired baseline run); of_teacher: a personalised student's mean paired fraction of the teacher's macro-F1 on the
    same windows (None for other rows)."""

    role: str
    model: str
    method: str
    labels: str | None
    n: int
    macro_f1_mean: float
    macro_f1_std: float
    accuracy_mean: float
    accuracy_std: float
    params: int
    flops: int
    latency_ms_cpu: float
    delta_vs_none_mean: float | None = None
    folds_won: int | None = None
    folds_total: int | None = None
    of_teacher: float | None = None

    @property
    def name(self) -> str:
        return self.method if self.labels is None else f"{self.method}+{self.labels}"

    @property
    def is_reference(self) -> bool:
        """The teacher's or semantic classifier's entry (on the personalised windows too): no KD method."""
        return self.method == REFERENCE

    def to_json(self) -> dict[str, Any]:
        """results.json's summary entry (the keys every version wrote)."""
        entry = asdict(self)
        del entry["labels"]
        return {**entry, "method": self.name}


def order_key(role: str, model: str, method: str) -> tuple:
    """Teacher, semantic classifier, students, personalised students, each by model with its baseline first;
    personalised methods by kept method ("none" first), then labels in PERSONALISED_LABELS order."""
    kept, labels = split_name(role, method)
    kept = kept if labels is not None else ""  # only a personalised student's method has a kept method
    rank = PERSONALISED_LABELS.index(labels) if labels in PERSONALISED_LABELS else len(PERSONALISED_LABELS)
    return (_ROLE_ORDER.get(role, len(_ROLE_ORDER)), model, method != BASELINES.get(role), kept != BASELINE, kept,
            rank, method)


def _frame(rows: Rows) -> pd.DataFrame:
    frame = rows_frame(rows_of(rows))
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


def _paired(runs: pd.DataFrame, reference: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """`runs`' macro_f1 beside the reference's (macro_f1_ref) of the same run; empty when no run pairs, or when
    the reference has several rows for one run (several teachers: no single reference)."""
    if reference.duplicated(on).any():
        return pd.DataFrame(columns=[*on, "macro_f1", "macro_f1_ref"])
    return runs[on + ["macro_f1"]].merge(reference[on + ["macro_f1"]], on=on, suffixes=("", "_ref"))


def _paired_with_baseline(frame: pd.DataFrame, role: str, model: str, method: str) -> pd.DataFrame:
    baseline = BASELINES.get(role)
    if baseline is None or method == baseline:
        return pd.DataFrame(columns=[*RUN, "macro_f1", "macro_f1_ref"])
    same = frame[(frame["role"] == role) & (frame["model"] == model)]
    return _paired(same[same["method"] == method], same[same["method"] == baseline], RUN)


def _gain(frame: pd.DataFrame, role: str, model: str, method: str) -> dict:
    paired = _paired_with_baseline(frame, role, model, method)
    if paired.empty:
        return {}
    by_fold = paired.groupby("fold", sort=False)[["macro_f1", "macro_f1_ref"]].mean()
    return {"delta_vs_none_mean": float((paired["macro_f1"] - paired["macro_f1_ref"]).mean()),
            "folds_won": int((by_fold["macro_f1"] > by_fold["macro_f1_ref"]).sum()),
            "folds_total": len(by_fold)}


def _of_teacher(frame: pd.DataFrame, role: str, method: str, runs: pd.DataFrame) -> float | None:
    """Mean over runs of a personalised student's macro-F1 / the teacher's on the same windows, paired by fold and
    seed; in a comparison of runs with different teachers, by source run too (each run's own teacher)."""
    if role != "personalised" or method == TEACHER_METHOD:
        return None
    teacher = frame[(frame["role"] == role) & (frame["method"] == TEACHER_METHOD)]
    on = RUN + ["source"] if teacher.duplicated(RUN).any() and "source" in frame else RUN
    paired = _paired(runs, teacher, on)
    return None if paired.empty else float((paired["macro_f1"] / paired["macro_f1_ref"]).mean())


def summarise(rows: Rows) -> list[MethodSummary]:
    """One entry per (role, model, method), in `order_key` order."""
    typed = rows_of(rows)
    frame = _frame(typed)
    if frame.empty:
        return []
    parts = {row.key: (row.method, row.labels) for row in typed}  # the frame's None labels read back as NaN
    summary = []
    for (role, model, method), runs in frame.groupby(KEY, sort=False):
        kd_method, labels = parts[(role, model, method)]
        summary.append(MethodSummary(
            role=role, model=model, method=kd_method, labels=labels, n=len(runs),
            macro_f1_mean=float(runs["macro_f1"].mean()), macro_f1_std=_std(runs["macro_f1"]),
            accuracy_mean=float(runs["accuracy"].mean()), accuracy_std=_std(runs["accuracy"]),
            params=int(runs["params"].median()), flops=int(runs["flops"].median()),
            latency_ms_cpu=float(runs["latency_ms_cpu"].median()), **_gain(frame, role, model, method),
            of_teacher=_of_teacher(frame, role, method, runs)))
    return sorted(summary, key=lambda s: order_key(s.role, s.model, s.name))


@dataclass(frozen=True)
class StudentRatio:
    """A student model against a teacher model: 1 - student/teacher params and FLOPs; teacher/student latency."""

    model: str
    teacher: str
    params_reduction: float
    flops_reduction: float
    speedup: float


def ratios(rows: Rows) -> list[StudentRatio]:
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
    return [StudentRatio(student, teacher, float(1 - s["params"] / t["params"]), float(1 - s["flops"] / t["flops"]),
                         float(t["latency_ms_cpu"] / s["latency_ms_cpu"]))
            for (_, teacher), t in teachers.iterrows() for (_, student), s in students.iterrows()]


def fold_means(rows: Rows) -> pd.DataFrame:
    """Macro-F1 averaged over seeds: index = fold (in run order), columns = (role, model, method) in `order_key`
    order; NaN where a fold lacks that run."""
    frame = _frame(rows)
    if frame.empty:
        return pd.DataFrame()
    table = frame.pivot_table(index="fold", columns=KEY, values="macro_f1", aggfunc="mean")
    return table.reindex(index=pd.unique(frame["fold"]), columns=sorted(table.columns, key=lambda c: order_key(*c)))


def fold_deltas(rows: Rows) -> dict[tuple[str, str, str], pd.Series]:
    """Per (role, model, method) with a paired baseline run, in `order_key` order: its macro-F1 minus the
    baseline's per fold (each a mean over the fold's paired seeds), indexed by fold in run order."""
    frame = _frame(rows)
    if frame.empty:
        return {}
    deltas = {}
    for key in sorted(frame.groupby(KEY).groups, key=lambda k: order_key(*k)):
        paired = _paired_with_baseline(frame, *key)
        if not paired.empty:
            difference = paired["macro_f1"] - paired["macro_f1_ref"]
            deltas[key] = difference.groupby(paired["fold"], sort=False).mean()
    return deltas
