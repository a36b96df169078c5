"""`harkd search-sensors` on synthetic data: the planted informative sensor group is found at the front's lowest
cost, the search resumes after a kill, the kit space and its errors, and the front's ready configs."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml

from conftest import PLANTED_GROUP, PLANTED_POSITIONS, assert_one_line_error, run_cli, sensor_search_config
from harkd.data.recording import ChannelKit, ChannelQuery, sensor_channels
from harkd.errors import HarkdError
from harkd.experiment.config import ModelSpec, parse_config
from harkd.experiment.teacher_cache import TeacherStore, teacher_root
from harkd.search import sensor_search
from harkd.search.search_folds import FoldTeachers
from harkd.search.kit_trials import PARAMETRISATIONS, first_kits
from harkd.search.sensor_report import _independence, plot, run_sensor_search
from harkd.search.sensor_search import load_data, load_sensor_search, parse_sensor_search, space_of
from harkd.search.sensor_space import SensorSearchSection, SensorSpace, kit_key, run_config

CONFIGS = Path(__file__).parent.parent / "configs"
# The planted data (planted_root), its positions and group, and the search config on it: conftest.


@pytest.fixture()
def planted_env(planted_root, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(planted_root))
    return planted_root


def search(tmp_path, trials=None, log=None, **changes):
    return run_sensor_search(parse_sensor_search(sensor_search_config(**changes)), tmp_path / "out", "planted", trials,
                             log=(lambda _: None) if log is None else log.append)


def test_the_planted_group_is_the_fronts_cheapest_member_within_a_small_budget(planted_env, tmp_path):
    # 3 positions x {acc, gyro, acc+gyro}, up to 2 positions: 36 kits, 6 of them one group (3 channels), screened
    # first; 12 trials.
    log = []
    results = search(tmp_path, trials=12, log=log)
    assert results["space_size"] == 36 and results["trials_counted"] == 12
    assert ("planted: 36 kits within budget over 3 positions; 0 of 12 trials done; each of the 6 sensor groups alone "
            "first") in log
    front = [m for m in results["members"] if m["on_front"]]
    cheapest = front[0]
    assert cheapest["kit"] == "left_wrist:gyro" and cheapest["channels"] == 3
    trained = [r for r in results["trials"] if r["score"] is not None]
    without = [r["score"] for r in trained if not _wears_planted(r["kit"])]
    assert without and cheapest["score"] > max(without) + 0.2  # the planted group carries the activity
    # the front is non-dominated: no trained kit is at least as good and at most as costly with one strict
    assert [m["kit"] for m in front] == results["front"]
    best = {m["positions"]: m for m in results["members"] if m["best_at_its_positions"]}
    assert sorted(best) == [1, 2]  # a member at each number of positions, on the front or not
    for size, member in best.items():
        assert member["score"] == max(r["score"] for r in trained if r["positions"] == size)
    for member in front:
        for row in trained:
            assert not (row["score"] >= member["score"] and row["positions"] <= member["positions"]
                        and row["channels"] <= member["channels"]
                        and (row["score"], row["positions"], row["channels"])
                        != (member["score"], member["positions"], member["channels"]))


def _wears_planted(kit):
    return any(part.split(":")[0] == PLANTED_GROUP[0] and PLANTED_GROUP[1] in part.split(":")[1].split("+")
               for part in kit.split(","))


def test_confirm_runs_each_member_on_the_split_and_reports_its_test_scores(planted_env, tmp_path):
    raw = sensor_search_config(trials=3, budget={"positions": 1}, modalities=["gyro"])
    raw["split"]["folds"] = ["S01", "S02"]
    config = parse_sensor_search(raw)
    log = []
    results = run_sensor_search(config, tmp_path / "out", "planted", confirm_front=True, log=log.append)
    member = results["members"][0]
    assert member["kit"] == "left_wrist:gyro" and len(results["members"]) == 1
    run = json.loads((Path(member["confirm"]["run"]) / "results.json").read_text())
    assert sorted({r["fold"] for r in run["rows"]}) == ["loso-S01", "loso-S02"]
    for name, (role, method) in {"teacher": ("teacher", "-"), "alone": ("student", "none"),
                                 "kd": ("student", "logit")}.items():
        scores = [r["macro_f1"] for r in run["rows"] if r["role"] == role and r["method"] == method]
        assert member["confirm"][name]["n"] == 2 and member["confirm"][name]["mean"] == pytest.approx(np.mean(scores))
    assert member["confirm"]["test_subjects"] == ["S01", "S02"]
    # the search scored the kit on the same held-out workers as `harkd run` trains and scores it: the same numbers
    kd = {fold.split("/")[0]: f1 for fold, f1 in member["confirm"]["kd"]["per_fold"].items()}
    assert member["score_per_fold"] == pytest.approx(kd, abs=1e-5)
    report = (tmp_path / "out" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| 1 | left_wrist:gyro |"))
    assert f"{100 * member['confirm']['alone']['mean']:.2f} ± " in row
    assert "![search score against test macro-F1 of the confirmed kits](validation_vs_test.png)" in report
    assert (tmp_path / "out" / "validation_vs_test.png").read_bytes().startswith(b"\x89PNG")
    every = report[report.index("## Every kit trained"):].splitlines()[4:]
    trained = [t for t in results["trials"] if t["score"] is not None]
    assert len([line for line in every if line.startswith("| ")]) == len(trained)
    assert every[0].startswith(f"| {max(trained, key=lambda t: t['score'])['number']} | ")  # best first
    both = sorted(set(results["guiding_subjects"]) & {"S01", "S02"})
    assert (f"({', '.join(both)}) is not fully independent" if both else "No confirmation run tests") in report
    # a rerun reads the finished confirmation back instead of training it again
    stamp = (Path(member["confirm"]["run"]) / "results.json").stat().st_mtime_ns
    again = run_sensor_search(config, tmp_path / "out", "planted", confirm_front=True, log=log.append)
    assert (Path(member["confirm"]["run"]) / "results.json").stat().st_mtime_ns == stamp
    assert again["members"][0]["confirm"]["alone"] == member["confirm"]["alone"]


def test_the_validation_protocol_scores_on_validation_subjects_only(planted_env, tmp_path):
    results = search(tmp_path, trials=3, scoring={"protocol": "validation"}, folds=1, budget={"positions": 1})
    (subject,) = results["guiding_subjects"]
    assert results["search_folds"] == ["loso-S01"] and subject != "S01"  # the fold's validation subject
    trained = [t for t in results["trials"] if t["score"] is not None]
    assert trained and all(list(t["score_per_fold"]) == ["loso-S01"] for t in trained)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Every kit is scored on the validation windows of folds loso-S01" in report


@pytest.mark.parametrize("measure", ["channels", "positions"])
def test_count_axes_have_whole_number_ticks(measure, tmp_path):
    rows = [{"number": i, "positions": p, "channels": c, "score": 0.5 + 0.01 * i, "kit": f"k{i}"}
            for i, (p, c) in enumerate([(1, 3), (1, 6), (2, 6), (2, 9), (3, 12)])]
    members = [{**rows[0], "on_front": True}, {**rows[4], "on_front": True}]
    ticks = plot(rows, members, measure, "t", tmp_path / "p.png").axes[0].get_xticks()
    assert len(ticks) > 1 and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("tested, sentence", [
    (["S03", "S04"], "No confirmation run tests a subject whose windows guided the search."),
    (["S01", "S02"], "(S02) is not fully independent of the choice."),
])
def test_the_report_says_whether_a_guiding_subject_is_also_tested(tested, sentence):
    results = {"guiding_subjects": ["S02"], "members": [{"confirm": {"test_subjects": tested}}, {}]}
    assert _independence(results).endswith(sentence)


def test_the_fronts_configs_are_run_configs_of_their_kits(planted_env, tmp_path):
    results = search(tmp_path, trials=3)
    assert results["members"]
    for member in results["members"]:
        raw = yaml.safe_load(open(member["config"]))
        config = parse_config(raw)
        assert config.student_channels.describe().count("position=") == member["positions"]
        assert [m.name for m in config.methods] == ["none", "logit"] and config.seeds == (0,)
        assert "search" not in raw
    assert (tmp_path / "out" / "search.png").stat().st_size > 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert all(m["kit"] in report for m in results["members"])


def test_an_exhaustive_space_tries_every_kit_once(planted_env, tmp_path):
    results = search(tmp_path, trials=20, budget={"positions": 1}, modalities=["gyro"])
    assert results["space_size"] == 3 and results["trials_counted"] == 3
    assert sorted(r["kit"] for r in results["trials"]) == ["hip:gyro", "left_wrist:gyro", "right_wrist:gyro"]


def test_a_kit_drawn_again_is_answered_from_the_study_and_not_counted(planted_env, tmp_path):
    results = search(tmp_path, trials=6, positions=["left_wrist", "hip"], modalities=["gyro"])
    # 2 one-position kits and 1 two-position kit: the budget of 6 stops at the 3 there are
    assert results["space_size"] == 3 and results["trials_counted"] == 3
    assert len({r["kit"] for r in results["trials"] if r["state"] == "COMPLETE"}) == 3
    assert all("duplicate_of" in r for r in results["trials"] if r["state"] == "PRUNED")


def _counted(storage):
    study = optuna.load_study(study_name="planted", storage=storage)
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_killing_the_search_and_rerunning_the_command_resumes_it(planted_env, tmp_path):
    TRIALS = 12  # a trial takes well under a second: with 5, a loaded machine once saw all done before the kill
    path = tmp_path / "planted.yaml"
    path.write_text(yaml.safe_dump(sensor_search_config(trials=TRIALS)))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "harkd", "search-sensors", str(path), "--out", str(out)]
    env = {**os.environ, "HARKD_DATA": str(planted_env)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    storage = f"sqlite:///{out / 'search.db'}"
    deadline = time.monotonic() + 120
    while not _safe_counted(storage):
        assert process.poll() is None, f"the search ended before its first trial:\n{process.communicate()[1]}"
        assert time.monotonic() < deadline, "no trial finished in 120 s"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # no clean-up at all
    process.wait(timeout=30)
    before = {t.user_attrs["kit"]: t.values for t in _counted(storage)}
    assert 1 <= len(before) < TRIALS
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(before)} of {TRIALS} trials done" in rerun.stderr
    after = {t.user_attrs["kit"]: t.values for t in _counted(storage)}
    assert len(after) == TRIALS and all(after[kit] == values for kit, values in before.items())
    assert len(_counted(storage)) == TRIALS  # each kit counted once: the one the kill interrupted is drawn again
    assert json.loads((out / "search.json").read_text())["trials_counted"] == TRIALS


def _safe_counted(storage):
    try:
        return _counted(storage)
    except Exception:  # the study is not created yet
        return []


@pytest.mark.parametrize("change, message", [
    ({"positions": ["elbow"]}, "search.positions: unknown position(s) ['elbow']"),
    ({"require": ["hip"], "positions": ["left_wrist"]}, "search.require: ['hip'] are not among search.positions"),
    ({"budget": {"positions": 1, "channels": 2}}, "admits no kit of 9; the cheapest has 3 channels"),
    ({"modality_sets": [["acc"], ["capacitive"]]}, "search.modality_sets: [['capacitive']] select no channel"),
    ({"modalities": ["mag"]}, "search.modalities: unknown modality(ies) ['mag']"),
    ({"require": ["hip", "left_wrist", "right_wrist"]}, "search.budget.positions 2 admits no kit"),
])
def test_bad_search_input_is_one_line_with_exit_2_and_writes_nothing(planted_env, tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(sensor_search_config(**change)))
    result = run_cli("search-sensors", str(path), "--out", str(tmp_path / "out"), data_root=planted_env)
    assert_one_line_error(result, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("raw, message", [
    ({**sensor_search_config(), "students": {"channels": {"position": "hip"}, "models": ["cnn_student"]}},
     "students.channels: the search chooses the student's channels"),
    ({**sensor_search_config(), "seeds": [0, 1]}, "seeds: a sensor search uses one seed"),
    ({**sensor_search_config(), "students": {"models": ["cnn_student", "tiny_cnn"]}},
     "students.models: a sensor search trains one student"),
    (sensor_search_config(cost=["weight"]), "search.cost"),
    (sensor_search_config(folds=2), "search.folds: only with search.scoring.protocol validation"),
    (sensor_search_config(scoring={"confidence": 1.2}), "search.scoring.confidence"),
])
def test_bad_search_configs_fail_before_any_data_loads(raw, message):
    with pytest.raises(HarkdError, match="^config: " + re.escape(message)):
        parse_sensor_search(raw)


def test_the_space_counts_kits_within_the_budget_and_requires_what_it_is_told():
    channels = [c for p in PLANTED_POSITIONS for m in ("acc", "gyro") for c in sensor_channels(p, m, "m/s^2")]
    student = ModelSpec("cnn_student")
    space = SensorSpace.build(channels, SensorSearchSection(), student, 4, 50)
    assert len(space.candidates) == 3 * 3 + 3 * 9 + 27  # 1, 2 and 3 positions, each with 3 modality sets
    space = SensorSpace.build(channels, SensorSearchSection(budget={"positions": 2}, require=("hip",)), student, 4,
                              50)
    assert all("hip" in kit_key(c.kit) for c in space.candidates) and len(space.candidates) == 3 + 2 * 9
    space = SensorSpace.build(channels, SensorSearchSection(budget={"positions": 1, "channels": 3}), student, 4, 50)
    assert sorted(kit_key(c.kit) for c in space.candidates) == sorted(f"{p}:{m}" for p in PLANTED_POSITIONS
                                                                       for m in ("acc", "gyro"))


@pytest.mark.parametrize("trials, first", [(36, "every kit"), (18, "every one-position kit"),
                                           (12, "every sensor group alone"), (11, "none")])
def test_the_kits_tried_before_tpe_are_the_cheap_end_that_fits_half_the_budget(trials, first):
    # 36 kits of up to 2 positions: 9 of one position (3 modality sets each), 6 of them one sensor group
    channels = [c for p in PLANTED_POSITIONS for m in ("acc", "gyro") for c in sensor_channels(p, m, "m/s^2")]
    space = SensorSpace.build(channels, SensorSearchSection(budget={"positions": 2}), ModelSpec("cnn_student"), 4, 50)
    expected = {"every kit": space.candidates,
                "every one-position kit": [c for c in space.candidates if c.positions == 1],
                "every sensor group alone": [c for c in space.candidates if c.channels == 3], "none": []}[first]
    assert sorted(map(kit_key, first_kits(space, trials))) == sorted(kit_key(c.kit) for c in expected)


@pytest.mark.parametrize("name", sorted(PARAMETRISATIONS))
def test_every_kit_of_the_space_is_drawn_back_from_its_parameters(name):
    channels = [c for p in PLANTED_POSITIONS for m in ("acc", "gyro") for c in sensor_channels(p, m, "m/s^2")]
    space = SensorSpace.build(channels, SensorSearchSection(budget={"positions": 2}), ModelSpec("cnn_student"), 4, 50)
    parametrisation = PARAMETRISATIONS[name]
    for candidate in space.candidates:
        trial = optuna.trial.FixedTrial(parametrisation.params(candidate.kit, space))
        assert parametrisation.suggest(trial, space) == candidate.kit


@pytest.mark.parametrize("budget, share", [(2, 36 / 64), (1, 9 / 64)])
def test_the_share_of_per_position_draws_that_are_kits(budget, share):
    channels = [c for p in PLANTED_POSITIONS for m in ("acc", "gyro") for c in sensor_channels(p, m, "m/s^2")]
    space = SensorSpace.build(channels, SensorSearchSection(budget={"positions": budget}), ModelSpec("cnn_student"),
                              4, 50)
    assert PARAMETRISATIONS["per_position"].share_of_kits(space) == pytest.approx(share)
    assert PARAMETRISATIONS["size_first"].share_of_kits(space) == 1.0


def test_a_per_position_search_answers_draws_outside_the_space_without_training(planted_env, tmp_path):
    results = search(tmp_path, trials=12, parametrisation="per_position")
    assert results["trials_counted"] == 12
    outside = [t for t in results["trials"] if t.get("reason") == "over budget"]
    assert outside and all(t["state"] == "PRUNED" and len(t["kit"].split(",")) == 3 or not t["kit"] for t in outside)
    assert all(1 <= t["positions"] <= 2 for t in results["trials"] if t["state"] == "COMPLETE")
    assert results["members"][0]["kit"] == "left_wrist:gyro"


def test_a_kit_selects_its_channels_in_column_order():
    channels = [c for p in PLANTED_POSITIONS for m in ("acc", "gyro") for c in sensor_channels(p, m, "m/s^2")]
    kit = ChannelQuery.parse([{"position": "hip", "modality": "acc"}, {"position": "right_wrist",
                                                                       "modality": ["acc", "gyro"]}])
    assert isinstance(kit, ChannelKit)
    assert kit.indices(channels) == [0, 1, 2, 3, 4, 5, 12, 13, 14]
    assert kit.describe() == "position=hip;modality=acc + position=right_wrist;modality=acc,gyro"
    config = parse_config(run_config(parse_sensor_search(sensor_search_config()).resolved, (("hip", ("acc",)),)))
    assert config.student_channels.indices(channels) == [12, 13, 14]


SHIPPED = {"dsads-sensors": 375, "hapt-sensors": 3, "openpack-sensors": 322}


@pytest.mark.realdata
@pytest.mark.parametrize("name, kits", SHIPPED.items())
def test_every_shipped_sensor_config_builds_its_space_on_the_real_data(installed_root, monkeypatch, name, kits):
    monkeypatch.setenv("HARKD_DATA", str(installed_root))
    config = load_sensor_search(CONFIGS / f"{name}.yaml")
    data = load_data(config)
    space = space_of(config, data.teacher_view, data.n_classes)
    assert len(space.candidates) == kits
    assert set(space.positions) == {c.position for c in data.teacher_view.channels}


@pytest.mark.realdata
def test_on_hapt_only_training_subjects_guide_the_search_and_the_front_wears_the_waist(installed_root, tmp_path,
                                                                                     monkeypatch):
    result = run_cli("search-sensors", str(CONFIGS / "hapt-sensors.yaml"), "teacher.train.epochs=1",
                     "semantic.train.epochs=1", "students.train.epochs=1", "search.scoring.workers=3", "--out",
                     str(tmp_path / "out"), "--nested",
                     data_root=installed_root, check=True)
    results = json.loads((tmp_path / "out" / "search.json").read_text())
    monkeypatch.setenv("HARKD_DATA", str(installed_root))
    test_subjects = set(load_data(load_sensor_search(CONFIGS / "hapt-sensors.yaml")).protocol_subjects[1])
    assert results["guiding_subjects"] and not set(results["guiding_subjects"]) & test_subjects
    assert results["trials_counted"] == 3 and sorted(r["kit"] for r in results["trials"]) == [
        "waist:acc", "waist:acc+gyro", "waist:gyro"]
    assert "front: waist:" in result.stdout
    # its one outer fold searched the protocol's training subjects: the search itself, not run twice
    assert [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'out' / 'search.db'}")] == [
        "hapt-sensors"]
    (nested,) = results["nested"]
    assert nested["choices"][0]["test_subjects"] == sorted(test_subjects) and nested["outer_folds"] == 1


def test_a_trial_that_fails_is_recorded_with_its_error_and_the_search_goes_on(planted_env, tmp_path, monkeypatch):
    real = sensor_search.train_student

    def fail_on_the_hip(spec, method, sources, *args, **kwargs):
        if sources.student_inputs.train.shape[1] == 6:  # every 6-channel kit
            raise RuntimeError("the hip sensor's driver crashed")
        return real(spec, method, sources, *args, **kwargs)

    monkeypatch.setattr(sensor_search, "train_student", fail_on_the_hip)
    results = search(tmp_path, trials=9, budget={"positions": 1})
    failed = [r for r in results["trials"] if r["state"] == "FAIL"]
    assert results["trials_counted"] == 9 and len(failed) == 3  # the three acc+gyro kits
    assert all(r["error"] == "RuntimeError: the hip sensor's driver crashed" for r in failed)
    assert all(m["channels"] == 3 for m in results["members"])


def test_an_interrupted_invocations_time_is_kept_and_the_resumed_one_adds_to_it(planted_env, tmp_path, monkeypatch):
    real, calls = sensor_search.train_student, []

    def interrupt_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            time.sleep(1.0)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sensor_search, "train_student", interrupt_the_third)
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path, trials=3, budget={"positions": 1})
    study = optuna.load_study(study_name="planted", storage=f"sqlite:///{tmp_path / 'out' / 'search.db'}")
    first = study.user_attrs["wall_time_s"]
    assert first > 1.0
    monkeypatch.setattr(sensor_search, "train_student", real)
    assert search(tmp_path, trials=3, budget={"positions": 1})["wall_time_s"] > first


def test_two_processes_share_the_study_and_train_exactly_the_budget_of_distinct_kits(planted_env, tmp_path,
                                                                                      short_tmp_path, monkeypatch):
    temporary = short_tmp_path
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))  # where the search trains,
    monkeypatch.setenv("TMPDIR", str(temporary))  # and its spawned processes would make their own folders
    log, store = [], TeacherStore(teacher_root())
    results = run_sensor_search(parse_sensor_search(sensor_search_config()), tmp_path / "out", "planted", 6, jobs=2,
                                log=log.append, teachers=store)
    trained = [t["kit"] for t in results["trials"] if t["state"] == "COMPLETE"]
    assert results["trials_counted"] == 6 and len(trained) == len(set(trained)) == 6
    # the processes' checkpoints went with the search's temporary folder (torch may leave a cache of its own)
    assert not list(temporary.glob("harkd-*"))
    # the empty store's two teachers trained two at a time in the processes, each the teacher this process trains
    assert "teachers of 2 folds, 2 at a time" in log
    config = parse_sensor_search(sensor_search_config())
    data = load_data(config)
    with sensor_search.one_thread():
        for fold in data.folds(config.split, config.seed)[:2]:
            kept, fresh = (FoldTeachers(config, data, tmp_path / "again", lambda _: None, s).train(fold)[2]
                           for s in (store, None))
            assert kept.from_store and not fresh.from_store
            assert all(torch.equal(a, b) for a, b in zip(kept.model.state_dict().values(),
                                                         fresh.model.state_dict().values()))
