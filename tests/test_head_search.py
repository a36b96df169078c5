"""SMLDist's head search on a small synthetic dataset: trials, resume, budget, config errors; the new heads' costs."""

import json

import optuna
import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import assert_one_line_error, head_search_config, run_cli
from harkd.cli import app
from harkd.cost import count_flops, count_params
from harkd.errors import HarkdError
from harkd.experiment import teacher as teacher_stage
from harkd.models import build_model
from harkd.models.heads import AttentionPool
from harkd.search import head_search, parse_search_config, run_head_search

CLASSES = 5  # make_recordings' activities (its Null class is never a target)


@pytest.fixture()
def fits(data_root, monkeypatch):
    """(model, distiller) of every fit the search makes, in order (the engine's fit, wrapped)."""
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    trained = []

    def counting_fit(model, *args, **kwargs):
        trained.append((model, kwargs.get("distiller")))
        return real_fit(model, *args, **kwargs)

    real_fit = head_search.fit
    for module in (head_search, teacher_stage):  # the trials' fits, and the teacher stage's
        monkeypatch.setattr(module, "fit", counting_fit)
    return trained


def search(tmp_path, trials, log=None, **changes):
    return run_head_search(parse_search_config(head_search_config(**changes)), tmp_path / "out", "synth", trials,
                           log=(lambda _: None) if log is None else log.append)


def test_search_writes_every_trial_and_a_resumed_run_adds_only_the_missing_ones(fits, tmp_path):
    first = search(tmp_path, 2)
    on_disk = json.loads((tmp_path / "out" / "search.json").read_text())
    assert on_disk["trials"] == first["trials"] and (tmp_path / "out" / "search.png").stat().st_size > 0
    assert [r["state"] for r in first["trials"]] == ["COMPLETE"] * 2 and len(fits) == 2
    for row in first["trials"]:
        assert row["head"] in ("mlp", "attention") and row["params"] > 0 and row["flops"] > 0
        assert 0.0 <= row["val_f1"] <= 1.0 and row["options"]["head"] == row["head"]
    assert first["best"]["val_f1"] == max(r["val_f1"] for r in first["trials"])
    storage = f"sqlite:///{tmp_path / 'out' / 'search.db'}"
    before = [t.params for t in optuna.load_study(study_name="synth", storage=storage).trials]

    # Interrupted at the next training: the trial fails and is not counted as finished.
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(head_search, "fit", interrupt)
        with pytest.raises(KeyboardInterrupt):
            search(tmp_path, 4)
    fits.clear()
    log = []
    resumed = search(tmp_path, 4, log)
    assert "study 'synth': 2 of 4 trials finished; running 2" in log
    states = [r["state"] for r in resumed["trials"]]
    assert states[:3] == ["COMPLETE", "COMPLETE", "FAIL"] and len(states) == 5 and resumed["finished"] == 4
    new = [r for r in resumed["trials"][3:] if "duplicate_of" not in r]
    assert len(fits) == len(new)  # only the missing trials were trained
    trials = optuna.load_study(study_name="synth", storage=storage).trials
    assert [t.params for t in trials[:2]] == before
    assert search(tmp_path, 4)["trials"] == resumed["trials"] and len(fits) == len(new)  # nothing left to run
    with pytest.raises(HarkdError, match="different config"):
        search(tmp_path, 5, heads=["mlp"])


def test_jobs_processes_share_the_study_and_each_writes_its_trials_lines(data_root, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    results = run_head_search(parse_search_config(head_search_config(trials=4)), tmp_path / "out", "synth",
                              log=lambda _: None, jobs=2)
    # A process stops when the finished and running trials fill the budget; two may both start the last one.
    assert 4 <= results["finished"] <= 5 and all(r["state"] == "COMPLETE" for r in results["trials"])
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("trial ")]
    assert sorted(int(line.split(":")[0].split()[1]) for line in lines) == [r["number"] for r in results["trials"]]
    assert results["best"]["val_f1"] == max(r["val_f1"] for r in results["trials"])


def test_over_budget_heads_are_pruned_before_training(fits, tmp_path):
    in_channels = 3
    linear = count_params(build_model("mobilenet_v3_1d", in_channels, CLASSES, preset="tiny"))
    memory = count_params(build_model("mobilenet_v3_1d", in_channels, CLASSES, preset="tiny", head="memory",
                                      memory_dim=32, patterns_per_class=4))
    assert linear < memory
    results = search(tmp_path, 6, heads=["linear", "memory"], budget={"params": linear},
                     sizes={"memory_dim": [32], "patterns_per_class": [4]})
    rows = results["trials"]
    assert {r["head"] for r in rows} == {"linear", "memory"}
    for row in rows:
        if row["head"] == "memory":
            assert row["state"] == "PRUNED" and row["val_f1"] is None and row["params"] == memory
            assert row["reason"] == f"over budget: params {memory:,} > {linear:,}"
        else:
            assert row["state"] == "COMPLETE" and row["params"] == linear
    # The memory head was never trained; linear once (its repeats reuse the first score).
    assert len(fits) == 1 and fits[0][0].memory is None
    assert results["best"]["head"] == "linear" and results["finished"] == 6


def test_kd_search_trains_the_teacher_once(fits, tmp_path, capfd):
    teacher = {"channels": {"position": "right_wrist"}, "model": "cnn_student", "params": {"width": 8},
               "train": {"epochs": 1, "patience": 1}}
    log = []
    config = parse_search_config({**head_search_config(heads=["linear"], widths=[0.5, 1.0], method="logit"),
                                  "teacher": teacher})
    results = run_head_search(config, tmp_path / "out", "synth", 3, log=log.append)
    assert results["finished"] == 3 and any(line.startswith("teacher cnn_student: val F1") for line in log)
    (teacher_model, no_distiller), *students = fits
    assert type(teacher_model).__name__ == "CNNStudent" and no_distiller is None
    assert students and all(type(m).__name__ == "MobileNetV3_1D" and d is not None for m, d in students)
    # A method whose teacher output the search does not make fails with its own one-line message, no traceback.
    config = parse_search_config({**head_search_config(heads=["linear"], method="sc_logit"), "teacher": teacher})
    capfd.readouterr()
    with pytest.raises(HarkdError, match="semantic classifier"):
        run_head_search(config, tmp_path / "sc", "synth", 1, log=log.append)
    assert "Traceback" not in capfd.readouterr().err


def test_budget_rule_names_each_limit_exceeded():
    budget = head_search.Budget(params=100, flops=1_000)
    assert budget.exceeded(100, 1_000) == ""
    assert budget.exceeded(101, 2_000) == "over budget: params 101 > 100, flops 2,000 > 1,000"
    assert head_search.Budget(flops=10).exceeded(10**6, 5) == ""


def test_search_config_is_validated_strictly():
    with pytest.raises(HarkdError, match=r"search: unknown key\(s\) \['budgett'\]; valid keys: \['budget'"):
        parse_search_config(head_search_config(budgett={}))
    with pytest.raises(HarkdError, match=r"heads: expected a list of distinct heads"):
        parse_search_config(head_search_config(heads=["linear", "knn"]))
    with pytest.raises(HarkdError, match=r"sizes: unknown key\(s\) \['hidden'\]"):
        parse_search_config(head_search_config(sizes={"hidden": [8]}))
    with pytest.raises(HarkdError, match="distils from a teacher"):
        parse_search_config(head_search_config(method="smldist"))
    with pytest.raises(HarkdError, match="teacher 'self' is for `harkd run`"):
        parse_search_config(head_search_config(method={"name": "s", "teacher": "self",
                                                       "terms": [{"distiller": "logit"}]}))
    with pytest.raises(HarkdError, match="search.method: mixup is for `harkd run`"):
        parse_search_config(head_search_config(method={"name": "m", "terms": [], "mixup": {"copies": 1}}))
    with pytest.raises(HarkdError, match="exactly one student model"):
        parse_search_config({**head_search_config(), "students": {"models": ["mobilenet_v3_1d", "cnn_student"]}})
    with pytest.raises(HarkdError, match="has no head option"):
        parse_search_config({**head_search_config(), "students": {"models": ["cnn_student"]}})
    with pytest.raises(HarkdError, match="search.budget.params: must be at least 1, got -1"):
        parse_search_config(head_search_config(budget={"params": -1}))


def test_cli_unknown_key_is_one_line_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**head_search_config(), "methods": ["none"]}))
    result = run_cli("search-head", str(path), "--trials", "2", "--out", str(tmp_path / "out"), data_root=tmp_path)
    assert_one_line_error(result, "unknown key(s) ['methods']", "valid keys: ['dataset'")
    assert not (tmp_path / "out").exists()


def test_cli_prints_the_best_head(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(head_search_config(heads=["linear"])))
    # In process (the subprocess path is the error test's): importing torch and Lightning again costs seconds.
    result = CliRunner().invoke(app, ["search-head", str(path), "--trials", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("best head: linear (width=1.0): ") and "val F1" in result.stdout
    assert json.loads((tmp_path / "out" / "search.json").read_text())["study"] == "search"


# ---- the new heads ----

def test_attention_pool_shapes_flops_and_uniform_weights_for_a_zero_query():
    pool = AttentionPool(channels=4, dim=3)
    x = torch.randn(2, 4, 5)
    assert pool(x).shape == (2, 4)
    # key projection 5 steps x 4 x 3, scores 5 x 3, weighted sum 5 x 4 MACs per window
    assert count_flops(pool, (2, 4, 5)) == 2 * 2 * (5 * 4 * 3 + 5 * 3 + 5 * 4)
    assert not torch.allclose(pool(x), x.mean(-1))
    with torch.no_grad():
        pool.query.zero_()
    torch.testing.assert_close(pool(x), x.mean(-1))
    torch.testing.assert_close(pool.weights(x).sum(-1), torch.ones(2))


@pytest.mark.parametrize("head,options,extra_params,extra_macs", [
    # tiny at width 1: 32 features over 4 final steps (125 / 32, rounded up), K = 19 classes
    ("mlp", {"head_hidden": 8}, (32 * 8 + 8 + 8 * 19 + 19) - (32 * 19 + 19), 32 * 8 + 8 * 19 - 32 * 19),
    ("attention", {"attention_dim": 16}, 32 * 16 + 16, 4 * (32 * 16 + 16 + 32)),
])
def test_new_heads_cost_what_a_hand_count_says(head, options, extra_params, extra_macs):
    shape, classes = (2, 3, 125), 19
    linear = build_model("mobilenet_v3_1d", 3, classes, preset="tiny")
    model = build_model("mobilenet_v3_1d", 3, classes, preset="tiny", head=head, **options)
    out = model(torch.randn(*shape))
    assert out.logits.shape == (2, classes) and out.reps["feat"].shape == (2, 32)
    assert torch.isfinite(out.logits).all()
    assert count_params(model) - count_params(linear) == extra_params
    assert count_flops(model, (1, *shape[1:])) - count_flops(linear, (1, *shape[1:])) == 2 * extra_macs
