"""harkd compare: runs merged on the same folds and seeds, shared runs taken once, mismatches refused."""

import json

import pytest

from conftest import assert_one_line_error, run_cli
from harkd.errors import HarkdError
from harkd.experiment.compare import merge_results, read_results

COST = {"params": 10, "flops": 100, "latency_ms_cpu": 0.1, "epochs": 3, "train_time_s": 1.0}


def row(fold, seed, role, model, method, f1):
    return {"dataset": "synth", "fold": fold, "test_subjects": [fold], "seed": seed, "role": role, "model": model,
            "method": method, "channels": "c", "n_channels": 3, "macro_f1": f1, "accuracy": f1, **COST}


def results(source, rows, classes=("a", "b")):
    return {"rows": rows, "class_names": list(classes), "confusion": {}, "command": f"harkd run {source}",
            "wall_time_s": 10.0, "source": source, "config": {}}


def zoo_and_smldist(none_f1_in_second=0.5):
    zoo = results("zoo", [row(f, 0, "teacher", "big", "-", 0.9) for f in ("p1", "p2")]
                  + [row(f, 0, "student", "cnn", "none", 0.5) for f in ("p1", "p2")]
                  + [row("p1", 0, "student", "cnn", "fitnets", 0.6), row("p2", 0, "student", "cnn", "fitnets", 0.4)])
    sml = results("sml", [row(f, 0, "teacher", "mnv3", "-", 0.8) for f in ("p1", "p2")]
                  + [row(f, 0, "student", "cnn", "none", none_f1_in_second) for f in ("p1", "p2")]
                  + [row(f, 0, "student", "cnn", "smldist", 0.7) for f in ("p1", "p2")])
    return zoo, sml


def test_merge_takes_shared_runs_once_and_pairs_every_method_with_the_same_baseline():
    merged = merge_results(zoo_and_smldist(), "test")
    summary = {(s["role"], s["model"], s["method"]): s for s in merged["summary"]}
    assert set(summary) == {("teacher", "big", "-"), ("teacher", "mnv3", "-"), ("student", "cnn", "none"),
                            ("student", "cnn", "fitnets"), ("student", "cnn", "smldist")}
    assert summary[("student", "cnn", "none")]["n"] == 2  # not 4: the shared baseline counts once
    assert summary[("student", "cnn", "smldist")]["delta_vs_none_mean"] == pytest.approx(0.2)
    assert summary[("student", "cnn", "fitnets")]["folds_won"] == 1
    assert merged["shared_runs"] == {"count": 2, "max_abs_macro_f1_difference": 0.0}


def test_a_baseline_that_differs_between_runs_is_reported():
    merged = merge_results(zoo_and_smldist(none_f1_in_second=0.47), "test")
    assert merged["shared_runs"]["max_abs_macro_f1_difference"] == pytest.approx(0.03)
    none_rows = [r for r in merged["rows"] if r["method"] == "none"]
    assert {r["source"] for r in none_rows} == {"zoo"} and {r["macro_f1"] for r in none_rows} == {0.5}


def test_runs_on_other_folds_or_classes_are_refused():
    zoo, sml = zoo_and_smldist()
    sml["rows"] = [r for r in sml["rows"] if r["fold"] == "p1"]
    with pytest.raises(HarkdError, match="folds"):
        merge_results([zoo, sml], "test")
    zoo, sml = zoo_and_smldist()
    sml["class_names"] = ["a", "c"]
    with pytest.raises(HarkdError, match="different classes"):
        merge_results([zoo, sml], "test")
    with pytest.raises(HarkdError, match="at least two"):
        merge_results([zoo], "test")


def test_cli_writes_the_merged_report_and_names_a_missing_run(tmp_path):
    for run in zoo_and_smldist():
        folder = tmp_path / run["source"]
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({k: v for k, v in run.items() if k != "source"}))
    done = run_cli("compare", str(tmp_path / "zoo"), str(tmp_path / "sml"), "--out", str(tmp_path / "cmp"),
                   data_root=tmp_path, check=True)
    assert "smldist" in done.stdout
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "merged from:" in report and "| student | cnn | smldist |" in report
    assert read_results(tmp_path / "cmp")["shared_runs"]["count"] == 2

    missing = run_cli("compare", str(tmp_path / "zoo"), str(tmp_path / "nope"), "--out", str(tmp_path / "x"),
                      data_root=tmp_path)
    assert_one_line_error(missing, "no results.json", "nope")
    assert not (tmp_path / "x").exists()


def personalised(source, teacher, teacher_f1, methods):
    """A run's personalised rows on folds p1, p2 (seed 0): its teacher on those windows, then method -> F1s."""
    rows = [row(f, 0, "personalised", teacher, "-", f1) for f, f1 in zip(("p1", "p2"), teacher_f1)]
    rows += [row(f, 0, "personalised", "cnn", method, f1) for method, f1s in methods.items()
             for f, f1 in zip(("p1", "p2"), f1s)]
    return rows


@pytest.mark.parametrize("second_teacher", ["big", "mnv3"])
def test_personalised_rows_merge_beside_the_plain_ones_each_paired_with_its_runs_teacher(second_teacher):
    zoo, sml = zoo_and_smldist()
    zoo["rows"] += personalised("zoo", "big", [0.8, 0.6], {"none+untouched": [0.4, 0.3], "none+teacher": [0.6, 0.3]})
    sml["rows"] += personalised("sml", second_teacher, [0.8, 0.6] if second_teacher == "big" else [0.5, 0.5],
                                {"none+untouched": [0.4, 0.3], "smldist+teacher": [0.5, 0.45]})
    merged = merge_results([zoo, sml], "test")
    summary = {(s["role"], s["model"], s["method"]): s for s in merged["summary"]}
    assert [key for key in summary if key[0] == "personalised"] == [  # by model, each baseline first
        ("personalised", "big", "-"), ("personalised", "cnn", "none+untouched"),
        ("personalised", "cnn", "none+teacher"), ("personalised", "cnn", "smldist+teacher"),
        *[("personalised", "mnv3", "-")] * (second_teacher == "mnv3")]
    # the plain "none" (2 runs), the untouched student (2) and, with one teacher, the teacher's rows (2) are shared
    assert merged["shared_runs"]["count"] == (6 if second_teacher == "big" else 4)
    assert summary[("personalised", "cnn", "none+untouched")]["n"] == 2
    ours, theirs = summary[("personalised", "cnn", "none+teacher")], summary[("personalised", "cnn", "smldist+teacher")]
    assert ours["delta_vs_none_mean"] == pytest.approx(0.1) and ours["of_teacher"] == pytest.approx((0.75 + 0.5) / 2)
    assert theirs["delta_vs_none_mean"] == pytest.approx(0.125) and theirs["folds_won"] == 2
    # each run's students as a fraction of that run's teacher: .5/.8 .45/.6 with "big", .5/.5 .45/.5 with "mnv3"
    expected = (0.625 + 0.75) / 2 if second_teacher == "big" else (1.0 + 0.9) / 2
    assert theirs["of_teacher"] == pytest.approx(expected)
