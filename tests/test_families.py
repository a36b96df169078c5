"""KD method families: declared at registration, listed by `harkd methods`, derived for config methods from their
terms, and each student's best method per family in results.json and report.md."""

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harkd.cli import app
from harkd.distill import Distiller, distiller_family, distiller_names, register_distiller
from harkd.experiment.compare import merge_results, read_results
from harkd.experiment.config import MethodSpec
from harkd.experiment.families import best_per_family, method_families, method_family, tsak_vs_zoo_sentence
from harkd.experiment.report import write_report
from harkd.experiment.summary import summarise

FAMILY = {**dict.fromkeys(["sc_logit", "attn_rep", "causal_rep", "combi_rep", "tsak_all"], "tsak"),
          **dict.fromkeys(["logit", "fitnets", "at", "sp", "rkd", "pkt", "nst", "crd", "dkd"], "zoo"),
          **dict.fromkeys(["smld_stage", "smld_logit", "smld_freq", "smld_memory", "smldist"], "smldist"),
          "none": "none"}
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_every_registered_strategy_has_its_family():
    assert {name: distiller_family(name) for name in distiller_names()} == FAMILY


def test_registering_without_a_known_family_is_an_error():
    before = distiller_names()
    with pytest.raises(ValueError, match="KD strategy 'mine': no family given; register it with family= one of"):
        register_distiller("mine")
    with pytest.raises(ValueError, match="KD strategy 'mine': unknown family 'Zoo'"):
        register_distiller("mine", family="Zoo", weight=2.0)(Distiller)
    with pytest.raises(ValueError, match="unknown family 'mixed'"):  # a method's family, never a strategy's
        register_distiller("mine", family="mixed")
    assert distiller_names() == before


def test_methods_command_shows_each_family():
    runner = CliRunner()
    listing = json.loads(runner.invoke(app, ["methods", "--json"]).stdout)
    assert {name: entry["family"] for name, entry in listing.items()} == FAMILY
    lines = runner.invoke(app, ["methods"]).stdout.splitlines()
    assert [line.split()[:2] for line in lines[::2]] == [[name, FAMILY[name]] for name in distiller_names()]


def family(values):
    return method_family(MethodSpec.parse(values, "methods[0]"))


def test_method_family_from_its_terms():
    assert family("logit") == "zoo"  # Hinton KD is a zoo baseline, not TSAK
    assert family("sc_logit") == "tsak"
    assert family({"name": "stage", "terms": [{"distiller": "smld_stage", "weight": 2}]}) == "smldist"
    assert family({"name": "reps", "terms": [{"distiller": "attn_rep"}, {"distiller": "causal_rep", "weight": 5}]}) \
        == "tsak"
    assert family({"name": "mix", "terms": [{"distiller": "logit"}, {"distiller": "combi_rep"}]}) == "mixed"
    assert family("none") == "none"
    assert family({"name": "alone", "terms": []}) == "none"
    assert family({"name": "self_kd", "teacher": "self", "terms": [{"distiller": "logit"}]}) == "self"
    assert family({"name": "self_tsak", "teacher": "self", "terms": [{"distiller": "sc_logit"}]}) == "self"


def test_method_families_read_each_merged_runs_config():
    first = {"students": {"models": ["cnn"]}, "methods": ["none", {"name": "kd", "terms": [{"distiller": "logit"}]}]}
    second = {"students": {"models": [{"model": "mobilenet_v3_1d", "params": {"preset": "tiny"}}]},
              "methods": [{"name": "kd", "terms": [{"distiller": "smldist"}]}, "gone_strategy"]}
    again = {"students": {"models": ["cnn"]}, "methods": [{"name": "kd", "terms": [{"distiller": "sc_logit"}]}]}
    merged = {"runs": [{"source": "a", "config": first},
                       {"source": "bc", "config": {"runs": [{"config": second}, {"config": again}]}},
                       {"source": "old", "config": None}]}
    assert method_families(merged) == {
        "cnn": {"none": "none", "kd": "zoo"},  # the first definition wins, as merge_results takes its runs
        "mobilenet_v3_1d(preset=tiny)": {"kd": "smldist", "gone_strategy": "unknown"}}
    assert method_families({}) == {} and method_families(None) == {}


def rows_for(model, f1):
    """Rows for one student: method -> macro-F1 on folds p1, p2 (seed 0)."""
    return [{"dataset": "synth", "fold": fold, "test_subjects": [fold], "seed": 0, "role": "student", "model": model,
             "method": method, "channels": "c", "n_channels": 3, "macro_f1": score, "accuracy": score, "params": 10,
             "flops": 100, "latency_ms_cpu": 0.1, "epochs": 3, "train_time_s": 1.0}
            for method, scores in f1.items() for fold, score in zip(("p1", "p2"), scores)]


def run(source, model, methods, f1):
    return {"rows": rows_for(model, f1), "class_names": ["a", "b"], "confusion": {}, "command": f"harkd run {source}",
            "wall_time_s": 10.0, "source": source, "config": {"students": {"models": [model]}, "methods": methods}}


def tsak_and_zoo():
    """Two runs, one student each: cnn's TSAK best (sc_logit) beats its zoo best (rkd); tiny's (combi_rep) loses
    to at. `legacy` is in the rows but in no config."""
    cnn = run("tsak", "cnn", ["none", "logit", "rkd", "sc_logit", "attn_rep",
                              {"name": "mix", "terms": [{"distiller": "logit"}, {"distiller": "combi_rep"}]},
                              {"name": "selfkd", "teacher": "self", "terms": [{"distiller": "logit"}]}],
              {"none": (0.50, 0.60), "logit": (0.60, 0.58), "rkd": (0.55, 0.65), "sc_logit": (0.62, 0.64),
               "attn_rep": (0.40, 0.50), "mix": (0.70, 0.70), "selfkd": (0.52, 0.61), "legacy": (0.90, 0.90)})
    tiny = run("sml", "tiny", ["none", "smld_stage", "fitnets", "at", "combi_rep"],
               {"none": (0.50, 0.50), "smld_stage": (0.60, 0.60), "fitnets": (0.55, 0.45), "at": (0.70, 0.70),
                "combi_rep": (0.60, 0.62)})
    return cnn, tiny


def best(model, family_name, method, mean, std, delta, won):
    return {"model": model, "family": family_name, "method": method, "n": 2, "macro_f1_mean": pytest.approx(mean),
            "macro_f1_std": pytest.approx(std), "delta_vs_none_mean": pytest.approx(delta), "folds_won": won,
            "folds_total": 2}


def test_best_per_family_numbers_on_a_hand_made_comparison():
    merged = merge_results(tsak_and_zoo(), "harkd compare tsak sml")
    found = merged["best_per_family"]
    assert found == best_per_family(merged["config"], summarise(merged["rows"]))
    assert found["families"]["cnn"] == {"none": "none", "attn_rep": "tsak", "legacy": "unknown", "logit": "zoo",
                                        "mix": "mixed", "rkd": "zoo", "sc_logit": "tsak", "selfkd": "self"}
    d = math.sqrt(0.0002)  # sample std of two scores 0.02 apart
    assert found["best"] == [
        # sc_logit .63 beats attn_rep .45; paired Δ +.12 +.04
        best("cnn", "tsak", "sc_logit", 0.63, d, 0.08, 2),
        # rkd .60 beats logit .59 (whose Δ +.10 -.02 wins only p1); `legacy` (.90) has no family and never wins
        best("cnn", "zoo", "rkd", 0.60, math.sqrt(0.005), 0.05, 2),
        best("cnn", "self", "selfkd", 0.565, math.sqrt(0.00405), 0.015, 2),
        best("cnn", "mixed", "mix", 0.70, 0.0, 0.15, 2),
        best("tiny", "tsak", "combi_rep", 0.61, d, 0.11, 2),
        # at .70 beats fitnets .50 (Δ +.05 -.05: one fold won)
        best("tiny", "zoo", "at", 0.70, 0.0, 0.20, 2),
        best("tiny", "smldist", "smld_stage", 0.60, 0.0, 0.10, 2)]
    assert found["tsak_vs_zoo"] == [
        {"model": "cnn", "tsak_method": "sc_logit", "zoo_method": "rkd", "difference": pytest.approx(0.03)},
        {"model": "tiny", "tsak_method": "combi_rep", "zoo_method": "at", "difference": pytest.approx(-0.09)}]
    assert json.loads(json.dumps(found)) == found  # JSON-ready


def test_no_sentence_without_both_tsak_and_zoo():
    _, tiny = tsak_and_zoo()
    tiny["config"]["methods"] = ["none", "smld_stage", "at"]
    tiny["rows"] = [r for r in tiny["rows"] if r["method"] in tiny["config"]["methods"]]
    found = best_per_family(tiny["config"], summarise(tiny["rows"]))
    assert [(b["family"], b["method"]) for b in found["best"]] == [("zoo", "at"), ("smldist", "smld_stage")]
    assert found["tsak_vs_zoo"] == []


def test_sentence_says_above_or_below():
    entry = {"model": "cnn", "tsak_method": "sc_logit", "zoo_method": "rkd"}
    assert tsak_vs_zoo_sentence({**entry, "difference": 0.0027}) == \
        "cnn: the best TSAK strategy sc_logit is 0.27 points above the best zoo method rkd in mean macro-F1."
    assert tsak_vs_zoo_sentence({**entry, "difference": -0.0913}) == \
        "cnn: the best TSAK strategy sc_logit is 9.13 points below the best zoo method rkd in mean macro-F1."
    assert "is level with the best zoo" in tsak_vs_zoo_sentence({**entry, "difference": 0.00001})


def test_report_has_the_section_after_the_summary(tmp_path):
    text = write_report(merge_results(tsak_and_zoo(), "harkd compare tsak sml"), tmp_path).read_text()
    section = text[text.index("## Best method per family"):text.index("## Students vs teacher")]
    assert text.index("## Summary") < text.index("## Best method per family")
    assert "| student | family | method | n | macro-F1 (%) | Δ vs none (pp) | folds won |" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == ["| cnn | tsak | sc_logit | 2 | 63.00 ± 1.41 | +8.00 | 2/2 |",
                    "| cnn | zoo | rkd | 2 | 60.00 ± 7.07 | +5.00 | 2/2 |",
                    "| cnn | self | selfkd | 2 | 56.50 ± 6.36 | +1.50 | 2/2 |",
                    "| cnn | mixed | mix | 2 | 70.00 ± 0.00 | +15.00 | 2/2 |",
                    "| tiny | tsak | combi_rep | 2 | 61.00 ± 1.41 | +11.00 | 2/2 |",
                    "| tiny | zoo | at | 2 | 70.00 ± 0.00 | +20.00 | 2/2 |",
                    "| tiny | smldist | smld_stage | 2 | 60.00 ± 0.00 | +10.00 | 2/2 |"]
    assert ("\n\ncnn: the best TSAK strategy sc_logit is 3.00 points above the best zoo method rkd in mean "
            "macro-F1.\n\ntiny: the best TSAK strategy combi_rep is 9.00 points below the best zoo method at in mean "
            "macro-F1.\n\n") in section
    assert "Not placed in a family (not defined by a parseable config method): cnn/legacy." in section


def test_results_without_configs_get_no_section(tmp_path):
    cnn, tiny = tsak_and_zoo()
    cnn["config"] = tiny["config"] = {}
    merged = merge_results([cnn, tiny], "test")
    assert merged["best_per_family"]["best"] == []
    assert "## Best method per family" not in write_report(merged, tmp_path).read_text()


@pytest.mark.skipif(not (RESULTS / "hapt-zoo" / "results.json").exists(), reason="committed HAPT results absent")
def test_committed_results_without_the_key_still_compare():
    runs = [read_results(RESULTS / name) for name in ("hapt-zoo", "hapt-smldist")]
    assert all("best_per_family" not in run for run in runs)  # written before families existed
    found = merge_results(runs, "test")["best_per_family"]
    assert [(b["model"], b["family"], b["method"]) for b in found["best"]] == [
        ("cnn_student", "tsak", "sc_logit"), ("cnn_student", "zoo", "rkd"),
        ("mobilenet_v3_1d(preset=tiny)", "zoo", "logit"), ("mobilenet_v3_1d(preset=tiny)", "smldist", "smld_stage")]
    assert [(v["tsak_method"], v["zoo_method"], round(100 * v["difference"], 2)) for v in found["tsak_vs_zoo"]] == [
        ("sc_logit", "rkd", 0.27)]
