"""A run's results as types: one `ResultRow` per (fold, seed, role, model, method), made by scoring and read by the
summary, the report, its figures, `harkd compare` and the sensor search's report. results.json keeps the dicts it
has always held (`to_json` / `from_json`), so results written by any earlier version still load."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Sequence

import pandas as pd

ROLES = ("teacher", "semantic", "student", "personalised")
REFERENCE = "-"  # the method of a teacher's and a semantic classifier's rows: no KD method
# A personalised student is fine-tuned on the labels of one of these, after the kept student as it was trained
# (untouched); "guarded" is the guard's choice between the teacher-labelled student and the untouched one.
UNTOUCHED, GUARDED = "untouched", "guarded"
PERSONALISED_LABELS = (UNTOUCHED, "self", "teacher", GUARDED, "true")


@dataclass(frozen=True)
class Cost:
    """What a model costs per window: parameters, FLOPs and batch-1 CPU latency; the same in every fold."""

    params: int = 0
    flops: int = 0
    latency_ms_cpu: float = 0.0


@dataclass(frozen=True)
class ResultRow:
    """One model of one (fold, seed) scored on its windows. A personalised student's `method` is the KD method its
    kept student was trained with and `labels` the labels it was fine-tuned on; results.json spells the two as one
    text, "<method>+<labels>" (`name`)."""

    dataset: str
    fold: str
    test_subjects: tuple[str, ...]
    seed: int
    role: str
    model: str
    method: str
    channels: str
    n_channels: int
    macro_f1: float
    accuracy: float
    epochs: int
    train_time_s: float
    labels: str | None = None
    guard_kept_adapted: str | None = None  # guarded rows: on how many of the fold's workers the adapted student shipped
    cost: Cost = Cost()
    source: str | None = None  # rows merged by `harkd compare`: the results file each came from

    @property
    def name(self) -> str:
        """The method as tables and results.json name it."""
        return self.method if self.labels is None else f"{self.method}+{self.labels}"

    @property
    def key(self) -> tuple[str, str, str]:
        return self.role, self.model, self.name

    def costing(self, cost: Cost) -> ResultRow:
        return replace(self, cost=cost)

    def to_json(self) -> dict[str, Any]:
        """results.json's row: the keys and order every version wrote."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_IN_JSON}
        row.update(method=self.name, test_subjects=list(self.test_subjects))
        for optional in ("guard_kept_adapted", "source"):
            if row[optional] is None:
                del row[optional]
        source = row.pop("source", None)
        row.update(asdict(self.cost))
        return row if source is None else {**row, "source": source}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ResultRow:
        method, labels = split_name(row["role"], row["method"])
        known = {f.name for f in fields(cls)} - _NOT_IN_JSON
        given = {k: v for k, v in row.items() if k in known}
        return cls(**{**given, "method": method, "labels": labels, "test_subjects": tuple(row["test_subjects"]),
                      "cost": Cost(**{k: row[k] for k in ("params", "flops", "latency_ms_cpu") if k in row})})


_NOT_IN_JSON = {"labels", "cost"}


def split_name(role: str, name: str) -> tuple[str, str | None]:
    """A method's name as results.json spells it → (KD method, labels): labels only for a personalised student."""
    if role != "personalised" or name == REFERENCE or "+" not in name:
        return name, None
    method, labels = name.rsplit("+", 1)
    return method, labels


def rows_of(rows: Sequence[ResultRow | Mapping[str, Any]]) -> list[ResultRow]:
    """Rows as types, whether read from results.json or made by this run."""
    return [row if isinstance(row, ResultRow) else ResultRow.from_json(row) for row in rows]


def rows_frame(rows: Sequence[ResultRow]) -> pd.DataFrame:
    """One line per row with results.json's columns ("method" as `name`): for the summary's pooling."""
    return pd.DataFrame([row.to_json() for row in rows])


__all__ = ["Cost", "GUARDED", "PERSONALISED_LABELS", "REFERENCE", "ROLES", "ResultRow", "UNTOUCHED", "rows_frame",
           "rows_of", "split_name"]
