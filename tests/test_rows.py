"""Results rows as types: results.json's rows (of every committed run, whichever version wrote it) load as ResultRow
and write back unchanged, and a personalised row's KD method and labels are fields, not text."""

import json
from pathlib import Path

import pytest

from harkd.experiment.rows import Cost, ResultRow, rows_of, split_name
from harkd.experiment.summary import summarise

COMMITTED = sorted((Path(__file__).parent.parent / "benchmarks" / "results").rglob("results.json"))


def _row(**changes) -> dict:
    row = {"dataset": "dsads", "fold": "loso-p1", "test_subjects": ["p1"], "seed": 0, "role": "personalised",
           "model": "cnn_student", "method": "logit+mixup+teacher", "channels": "position=right_arm;modality=acc",
           "n_channels": 3, "macro_f1": 0.7, "accuracy": 0.72, "epochs": 4, "train_time_s": 1.5,
           "params": 5731, "flops": 123584, "latency_ms_cpu": 0.1}
    return {**row, **changes}


def test_a_personalised_row_names_its_kd_method_and_labels_as_fields():
    row = ResultRow.from_json(_row())
    assert (row.method, row.labels, row.name) == ("logit+mixup", "teacher", "logit+mixup+teacher")
    assert row.cost == Cost(5731, 123584, 0.1) and row.key == ("personalised", "cnn_student", "logit+mixup+teacher")


@pytest.mark.parametrize(("role", "text", "parts"), [
    ("student", "smldist+freq", ("smldist+freq", None)),  # a student method's own "+" is part of its name
    ("personalised", "-", ("-", None)),  # the teacher scored on the personalised windows
    ("personalised", "none+untouched", ("none", "untouched")),
    ("teacher", "-", ("-", None))])
def test_only_a_personalised_students_method_carries_labels(role, text, parts):
    assert split_name(role, text) == parts


def test_optional_fields_are_written_only_when_set_and_in_the_old_key_order():
    plain = ResultRow.from_json(_row(role="student", method="logit")).to_json()
    assert list(plain) == [*list(_row())[:13], "params", "flops", "latency_ms_cpu"]
    guarded = ResultRow.from_json(_row(guard_kept_adapted="1/1", source="a/results.json")).to_json()
    assert list(guarded)[13:] == ["guard_kept_adapted", "params", "flops", "latency_ms_cpu", "source"]


@pytest.mark.parametrize("path", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_every_committed_runs_rows_load_and_write_back_unchanged(path):
    rows = json.loads(path.read_text())["rows"]
    typed = rows_of(rows)
    assert [row.to_json() for row in typed] == rows
    assert len(summarise(typed)) == len({row.key for row in typed})


def test_the_summary_of_typed_rows_is_the_summary_of_their_json():
    rows = [_row(seed=seed, method=method, macro_f1=f1) for seed, method, f1 in
            [(0, "none+untouched", 0.5), (1, "none+untouched", 0.6), (0, "none+teacher", 0.7), (1, "none+teacher", 0.8)]]
    typed = summarise(rows_of(rows))
    assert typed == summarise(rows)
    teacher_labels = next(s for s in typed if s.labels == "teacher")
    assert teacher_labels.to_json()["method"] == "none+teacher" and "labels" not in teacher_labels.to_json()
    assert teacher_labels.delta_vs_none_mean == pytest.approx(0.2) and teacher_labels.folds_won == 1
