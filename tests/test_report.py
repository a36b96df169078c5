import math
import random

import pytest

from harkd.errors import HarkdError
from harkd.experiment.report import format_summary_table, write_report
from harkd.experiment.summary import fold_deltas, ratios, summarise

RUNS = [("loso-p1", 0), ("loso-p1", 1), ("loso-p2", 0), ("loso-p2", 1)]
# Per (role, model, method): macro-F1 and CPU latency for the runs above, in that order.
F1 = {("teacher", "tsak_teacher", "-"): [0.90, 0.80, 0.70, 0.60],
      ("semantic", "tsak_semantic", "-"): [0.80, 0.80, 0.80, 0.80],
      ("student", "cnn_student", "none"): [0.50, 0.60, 0.70, 0.40],
      ("student", "cnn_student", "logit"): [0.60, 0.70, 0.60, 0.40]}
LATENCY = {"tsak_teacher": [4.0, 5.0, 6.0, 100.0], "tsak_semantic": [3.0] * 4,
           ("cnn_student", "none"): [1.0, 1.0, 2.0, 2.0], ("cnn_student", "logit"): [1.0, 2.0, 2.0, 3.0]}
COST = {"tsak_teacher": (1_000_000, 40_000_000, 45), "tsak_semantic": (50_000, 2_000_000, 45),
        "cnn_student": (100_000, 1_000_000, 3)}
CLASSES = ["walk", "run", "sit"]


def make_rows():
    rows = []
    for (role, model, method), scores in F1.items():
        latencies = LATENCY.get(model) or LATENCY[(model, method)]
        params, flops, n_channels = COST[model]
        for (fold, seed), f1, latency in zip(RUNS, scores, latencies):
            rows.append({"dataset": "dsads", "fold": fold, "test_subjects": [fold[-2:]], "seed": seed, "role": role,
                         "model": model, "method": method, "channels": "position=right_arm;modality=acc",
                         "n_channels": n_channels, "macro_f1": f1, "accuracy": f1 + 0.05, "params": params,
                         "flops": flops, "latency_ms_cpu": latency, "epochs": 10, "train_time_s": 1.5})
    return rows


# Personalised to the left-out worker, scored on other windows than the plain rows, for the same runs.
PERSONALISED = {("personalised", "tsak_teacher", "-"): [0.80, 0.80, 0.50, 0.50],
                ("personalised", "cnn_student", "none+untouched"): [0.40, 0.40, 0.25, 0.25],
                ("personalised", "cnn_student", "none+self"): [0.40, 0.36, 0.30, 0.20],
                ("personalised", "cnn_student", "none+teacher"): [0.60, 0.64, 0.45, 0.40],
                ("personalised", "cnn_student", "none+true"): [0.72, 0.72, 0.45, 0.45]}


def personalised_rows():
    template = {r["model"]: r for r in make_rows()}
    return [{**template[model], "role": role, "method": method, "fold": fold, "seed": seed, "macro_f1": f1,
             "accuracy": f1, "test_subjects": [fold[-2:]]}
            for (role, model, method), scores in PERSONALISED.items() for (fold, seed), f1 in zip(RUNS, scores)]


def make_results(rows=None):
    confusion = [[8, 2, 0], [1, 9, 0], [0, 0, 0]]  # "sit" never in a test fold: its row must not divide by zero
    return {"rows": make_rows() if rows is None else rows, "class_names": CLASSES,
            "confusion": {f"{r}/{m}/{k}": confusion for r, m, k in F1},
            "config": {"dataset": "dsads", "seeds": [0, 1], "methods": ["none", "logit"]},
            "command": "harkd run configs/dsads.yaml", "wall_time_s": 3725.4, "machine": "test-host",
            "harkd_version": "0.1.0", "started": "2025-01-01T00:00:00"}


def test_summary_statistics_match_hand_computed_values():
    summary = summarise(make_rows())
    assert [(s.role, s.model, s.name) for s in summary] == list(F1)
    teacher, semantic, alone, logit = summary
    # teacher: mean of .9 .8 .7 .6; deviations ±.15, ±.05 -> sample variance .05 / 3
    assert teacher.n == 4
    assert teacher.macro_f1_mean == pytest.approx(0.75)
    assert teacher.macro_f1_std == pytest.approx(math.sqrt(0.05 / 3))
    assert teacher.accuracy_mean == pytest.approx(0.80)
    assert teacher.accuracy_std == pytest.approx(math.sqrt(0.05 / 3))
    assert (teacher.params, teacher.flops, teacher.latency_ms_cpu) == (1_000_000, 40_000_000, 5.5)
    assert teacher.delta_vs_none_mean is None and teacher.folds_won is None
    assert semantic.macro_f1_mean == pytest.approx(0.80) and semantic.macro_f1_std == 0.0
    assert alone.macro_f1_mean == pytest.approx(0.55)
    assert alone.macro_f1_std == pytest.approx(math.sqrt(0.05 / 3))
    assert alone.latency_ms_cpu == 1.5 and alone.folds_total is None
    # logit: deviations .025 .125 .025 -.175 from .575 -> squares sum to .0475
    assert logit.macro_f1_mean == pytest.approx(0.575)
    assert logit.macro_f1_std == pytest.approx(math.sqrt(0.0475 / 3))
    # paired differences +.1 +.1 -.1 0; fold means p1 .65 vs .55 (won), p2 .50 vs .55 (lost)
    assert logit.delta_vs_none_mean == pytest.approx(0.025)
    assert (logit.folds_won, logit.folds_total) == (1, 2)
    assert logit.latency_ms_cpu == 2.0


def test_summary_does_not_depend_on_row_order():
    rows = make_rows()
    random.Random(0).shuffle(rows)
    assert [s.to_json() for s in summarise(rows)] == [pytest.approx(s.to_json()) for s in summarise(make_rows())]  # sums


def test_a_single_run_has_zero_std_and_repeated_runs_are_rejected():
    rows = make_rows()
    single = summarise(rows[:1])[0]
    assert single.n == 1 and single.macro_f1_std == 0.0 and single.accuracy_std == 0.0
    with pytest.raises(HarkdError, match="repeat a run"):
        summarise(rows + rows[:1])


def test_ratios_pool_all_methods_of_a_student():
    [ratio] = ratios(make_rows())
    assert ratio.model == "cnn_student" and ratio.teacher == "tsak_teacher"
    assert ratio.params_reduction == pytest.approx(0.9)
    assert ratio.flops_reduction == pytest.approx(0.975)
    # teacher median 5.5 ms; student median over none and logit runs (1 1 1 2 2 2 2 3) is 2.0 ms
    assert ratio.speedup == pytest.approx(2.75)


def test_format_summary_table_is_aligned():
    lines = format_summary_table(summarise(make_rows())).splitlines()
    assert len(lines) == 2 + len(F1)
    assert len({len(line) for line in lines}) == 1
    assert lines[0].split()[:3] == ["role", "model", "method"]
    assert "57.50 ± 12.58" in lines[-1] and "+2.50" in lines[-1] and "1/2" in lines[-1]


def test_write_report_writes_tables_and_figures(tmp_path):
    path = write_report(make_results(), tmp_path / "out")
    text = path.read_text()
    assert path == tmp_path / "out" / "report.md"
    assert text.startswith("# Knowledge distillation on dsads\n")
    assert "- command: `harkd run configs/dsads.yaml`" in text
    assert "wall time 1:02:05, machine: test-host, harkd 0.1.0" in text
    assert "- 2 fold(s): loso-p1, loso-p2; seed(s): 0, 1" in text
    assert "- student `cnn_student`: 3 channels (`position=right_arm;modality=acc`)" in text
    assert '"methods": [' in text
    assert ("| teacher | tsak_teacher | - | 4 | 75.00 ± 12.91 | 80.00 ± 12.91 |  |  | 1,000,000 | 40.000 | 5.500 |"
            in text)
    assert "| semantic | tsak_semantic | - | 4 | 80.00 ± 0.00 | 85.00 ± 0.00 |  |  | 50,000 | 2.000 | 3.000 |" in text
    assert ("| student | cnn_student | none | 4 | 55.00 ± 12.91 | 60.00 ± 12.91 |  |  | 100,000 | 1.000 | 1.500 |"
            in text)
    assert ("| student | cnn_student | logit | 4 | 57.50 ± 12.58 | 62.50 ± 12.58 | +2.50 | 1/2 | 100,000 | 1.000 "
            "| 2.000 |") in text
    assert "| cnn_student | tsak_teacher | 90.0 | 97.5 | 2.75 |" in text
    assert ("| fold | teacher/tsak_teacher/- | semantic/tsak_semantic/- | student/cnn_student/none "
            "| student/cnn_student/logit |") in text
    assert "| loso-p1 | 85.00 | 80.00 | 55.00 | 65.00 |" in text
    assert "| loso-p2 | 65.00 | 80.00 | 55.00 | 50.00 |" in text

    assert "![macro-F1 gain over the baseline per fold](paired_delta.png)" in text
    assert "## Personalised" not in text  # no personalised rows, no section and no figure of them
    images = ["macro_f1.png", "paired_delta.png", "f1_vs_cost.png", "confusion_teacher_tsak_teacher.png",
              "confusion_student_cnn_student_none.png", "confusion_student_cnn_student_logit.png"]
    for name in images:
        assert f"]({name})" in text
        assert (tmp_path / "out" / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # nothing else: no semantic confusion matrix and no temp files left behind
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(images + ["report.md"])


def test_fold_deltas_are_paired_gains_per_fold_mean_over_seeds():
    deltas = fold_deltas(make_rows() + personalised_rows())
    assert list(deltas) == [("student", "cnn_student", "logit"), ("personalised", "cnn_student", "none+self"),
                            ("personalised", "cnn_student", "none+teacher"),
                            ("personalised", "cnn_student", "none+true")]
    # logit - none: p1 +.1 +.1, p2 -.1 0
    assert deltas[("student", "cnn_student", "logit")].to_dict() == pytest.approx({"loso-p1": 0.1, "loso-p2": -0.05})
    assert deltas[("personalised", "cnn_student", "none+teacher")].to_dict() == pytest.approx(
        {"loso-p1": 0.22, "loso-p2": 0.175})


def test_personalised_rows_are_compared_with_the_untouched_student_and_the_teacher_on_the_same_windows():
    summary = {(s.role, s.model, s.name): s for s in summarise(make_rows() + personalised_rows())}
    assert list(summary)[len(F1):] == [("personalised", "cnn_student", "none+untouched"),
                                       ("personalised", "cnn_student", "none+self"),
                                       ("personalised", "cnn_student", "none+teacher"),
                                       ("personalised", "cnn_student", "none+true"),
                                       ("personalised", "tsak_teacher", "-")]
    untouched = summary[("personalised", "cnn_student", "none+untouched")]
    teacher = summary[("personalised", "tsak_teacher", "-")]
    assert untouched.delta_vs_none_mean is None and untouched.of_teacher == pytest.approx(0.5)
    assert teacher.delta_vs_none_mean is None and teacher.of_teacher is None
    # self - untouched: 0 -.04 +.05 -.05; fold means p1 .38 < .40, p2 .25 = .25 (a tie is not a win)
    self_ = summary[("personalised", "cnn_student", "none+self")]
    assert (self_.delta_vs_none_mean, self_.folds_won, self_.folds_total) == (pytest.approx(-0.01), 0, 2)
    # teacher labels: +.20 +.24 +.20 +.15; of the teacher .60/.80 .64/.80 .45/.50 .40/.50
    ours = summary[("personalised", "cnn_student", "none+teacher")]
    assert (ours.delta_vs_none_mean, ours.folds_won) == (pytest.approx(0.1975), 2)
    assert ours.of_teacher == pytest.approx((0.75 + 0.8 + 0.9 + 0.8) / 4)
    assert summary[("personalised", "cnn_student", "none+true")].of_teacher == pytest.approx(0.9)
    assert summary[("student", "cnn_student", "logit")].of_teacher is None  # plain rows: no such share


def test_the_report_has_a_personalised_section_with_bounds_and_the_share_of_the_teacher(tmp_path):
    text = write_report(make_results(make_rows() + personalised_rows()), tmp_path).read_text()
    section = text[text.index("## Personalised to the new worker"):text.index("## Macro-F1 against cost")]
    assert "| none+untouched | none (the kept student, not fine-tuned) | 4 | 32.50 ± 8.66 |  |  | 50.0 |" in section
    assert "| none+self | its own (self-training, lower bound) | 4 | 31.50 ± 8.70 | -1.00 | 0/2 |" in section
    assert "| none+teacher | the teacher's | 4 | 52.25 ± 11.56 | +19.75 | 2/2 | 81.2 |" in section
    assert "| none+true | the worker's true labels (upper bound, reported only) | 4 | 58.50 ± 15.59 | +26.00 | 2/2 " \
           "| 90.0 |" in section
    assert "| teacher `tsak_teacher` |  | 4 | 65.00 ± 17.32 |  |  |  |" in section
    assert ("Best with the teacher's labels: none+teacher, 52.25 macro-F1, 81.2% of the teacher on the same "
            "windows, +19.75 points over `none+untouched`, won 2/2 folds.") in section
    assert "| personalised | cnn_student | none+teacher | 4 | 52.25 ± 11.56 |" in text  # in the summary too
    for name in ("personalised.png", "paired_delta.png", "f1_vs_cost.png"):
        assert f"]({name})" in text and (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_single_run_shows_means_without_a_spread(tmp_path):
    rows = [r for r in make_rows() + personalised_rows() if (r["fold"], r["seed"]) == RUNS[0]]
    text = write_report(make_results(rows), tmp_path).read_text()
    table_lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table_lines) > 10 and not [line for line in table_lines if "±" in line]
    assert "| student | cnn_student | logit | 1 | 60.00 | 65.00 | +10.00 | 1/1 |" in text
    assert "| none+teacher | the teacher's | 1 | 60.00 | +20.00 | 1/1 | 75.0 |" in text
