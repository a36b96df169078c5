"""Your own recordings: a folder of one-activity-per-file CSVs described by a short pattern YAML is checked in place,
installed from the folder and run; it gives the windows of today's explicit format; every problem of `data check`
names the user's own file; the install name is dataset.yaml's; an edited installed copy is re-read."""

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import (WALK_ACTIVITIES, WALK_COLUMNS, WALK_SUBJECTS, WALK_TRIALS, assert_one_line_error, run_cli,
                      walk_signals)
from harkd.data.catalog import load_windows
from harkd.data.loaders.generic import load_generic
from harkd.data.registry import WindowConfig
from harkd.data.windowing import make_windows

GUIDE = Path(__file__).parents[1] / "docs" / "own-data.md"
PATTERN_YAML = """\
name: walkdata
rate_hz: 20
sessions: "{subject}_{label}_t{trial}.csv"
channels:
  - {column: ax, position: right_wrist, modality: acc, axis: x, unit: g}
  - {column: ay, position: right_wrist, modality: acc, axis: y, unit: g}
  - {column: az, position: right_wrist, modality: acc, axis: z, unit: g}
  - {column: gx, position: torso, modality: gyro, axis: x, unit: deg/s}
  - {column: gy, position: torso, modality: gyro, axis: y, unit: deg/s}
  - {column: gz, position: torso, modality: gyro, axis: z, unit: deg/s}
"""  # WALK_COLUMNS (conftest), 20 Hz


def write_folder(folder: Path, with_label_column: bool = False) -> Path:
    """One file per subject, activity and trial; no label column unless asked (then the explicit format)."""
    folder.mkdir(parents=True)
    sessions = []
    for subject in WALK_SUBJECTS:
        for activity in WALK_ACTIVITIES:
            for trial in WALK_TRIALS:
                name = f"{subject}_{activity}_t{trial}.csv"
                rows = [",".join(f"{v:.5f}" for v in row) for row in walk_signals(subject, activity, trial)]
                if with_label_column:
                    rows = [f"{row},{activity}" for row in rows]
                header = ",".join(WALK_COLUMNS + (["activity"] if with_label_column else []))
                (folder / name).write_text("\n".join([header, *rows]) + "\n")
                sessions.append(f"  - {{file: {name}, subject: {subject}}}")
    schema = PATTERN_YAML
    if with_label_column:
        schema = schema.replace('sessions: "{subject}_{label}_t{trial}.csv"\n', "label_column: activity\n")
        schema += "sessions:\n" + "\n".join(sorted(sessions)) + "\n"
    (folder / "dataset.yaml").write_text(schema)
    return folder


RUN_CONFIG = """\
dataset: walkdata
windowing: {length: 40, stride: 20}
split: {kind: loso, val_subjects: 1, folds: [s01, s02]}
seeds: [0]
teacher: {model: tsak_teacher, train: {epochs: 1, batch_size: 32, patience: 1}}
semantic: {train: {epochs: 1, batch_size: 32, patience: 1}}
students: {channels: {position: right_wrist}, models: [cnn_student], train: {epochs: 1, batch_size: 32, patience: 1}}
methods: [none, logit]
latency_runs: 2
"""


def test_pattern_folder_is_checked_installed_and_run(tmp_path):
    folder = write_folder(tmp_path / "walkdata")
    assert len((folder / "dataset.yaml").read_text().splitlines()) <= 25
    check = run_cli("data", "check", str(folder), "--windowing", "length=40,stride=20", data_root=tmp_path / "root",
                    check=True)
    assert check.stderr == ""
    assert "12 recordings, 3 subjects" in check.stdout and "subjects: s01, s02, s03" in check.stdout
    assert "units: acc m/s^2; gyro rad/s" in check.stdout
    assert "g -> m/s^2 (3 channels), deg/s -> rad/s (3 channels)" in check.stdout
    assert "84 windows (length 40, stride 20" in check.stdout  # 12 sessions x 7 windows of 160 samples
    assert "no problems" in check.stdout
    install = run_cli("data", "install", "--from", str(folder), data_root=tmp_path / "root", check=True)
    assert f"installed walkdata at {tmp_path / 'root' / 'walkdata'}" in install.stdout
    config = tmp_path / "walkdata.yaml"
    config.write_text(RUN_CONFIG)
    out = tmp_path / "out"
    run = run_cli("run", str(config), "--out", str(out), data_root=tmp_path / "root", check=True)
    assert "warning" not in run.stdout + run.stderr  # its units fit its numbers
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted({r["fold"] for r in rows}) == ["loso-s01", "loso-s02"]
    assert {r["n_channels"] for r in rows if r["role"] == "student"} == {3}


def test_runs_and_searches_warn_before_training_when_numbers_do_not_fit_their_units(tmp_path, monkeypatch):
    from harkd.experiment.config import load_config
    from harkd.experiment.fold_unit import load_data

    folder = write_folder(tmp_path / "walkdata")
    (folder / "dataset.yaml").write_text((folder / "dataset.yaml").read_text().replace("unit: g}", "unit: m/s^2}"))
    run_cli("data", "install", "--from", str(folder), data_root=tmp_path / "root", check=True)
    monkeypatch.setenv("HARKD_DATA", str(tmp_path / "root"))
    (tmp_path / "walkdata.yaml").write_text(RUN_CONFIG)
    warnings = load_data(load_config(tmp_path / "walkdata.yaml", [])).unit_warnings()
    acc = ", ".join(f"right_wrist/acc/{axis}" for axis in "xyz")
    assert len(warnings) == 1 and warnings[0].startswith(f"walkdata: channels: {acc}: right_wrist/acc reads 1"), \
        warnings
    assert "the numbers look like g" in warnings[0]


def test_pattern_and_explicit_forms_give_identical_windows(tmp_path):
    compact = load_generic(write_folder(tmp_path / "compact"))
    explicit = load_generic(write_folder(tmp_path / "explicit", with_label_column=True))
    assert len((tmp_path / "explicit" / "dataset.yaml").read_text().splitlines()) > 12 + 10
    windowing = WindowConfig(length=40, stride=20)
    a, b = make_windows(compact, windowing), make_windows(explicit, windowing)
    for field in ("x", "y", "subjects", "sessions"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.class_names == b.class_names == ("sit", "walk") and a.channels == b.channels
    assert [r.session for r in compact] == [f"{s}_{a}_t{t}" for s in WALK_SUBJECTS for a in sorted(WALK_ACTIVITIES)
                                           for t in WALK_TRIALS]
    np.testing.assert_array_equal(compact[0].signals[:, 0],
                                  (np.round(walk_signals("s01", "sit", 1)[:, 0], 5) * 9.80665).astype(np.float32))


def test_windows_never_span_sessions(tmp_path):
    """Each session is windowed on its own: a window never joins the end of one file to the start of another,
    whatever the lengths (160 samples is not a multiple of the stride 30 here)."""
    folder = write_folder(tmp_path / "walkdata")
    recordings = load_generic(folder)
    for i, rec in enumerate(recordings):  # mark every sample with its session
        rec.signals[:] = i
    windows = make_windows(recordings, WindowConfig(length=50, stride=30))
    per_window = windows.x.reshape(len(windows), -1)
    assert (per_window.min(axis=1) == per_window.max(axis=1)).all()
    assert len(windows) == len(recordings) * 4  # starts 0, 30, 60, 90 fit in 160 samples; 120 does not


def test_sessions_without_labels_load_as_null(tmp_path):
    folder = write_folder(tmp_path / "walkdata")
    schema = (folder / "dataset.yaml").read_text()
    (folder / "dataset.yaml").write_text(schema.replace('"{subject}_{label}_t{trial}.csv"',
                                                        '"{subject}_walk_t{trial}.csv"') + "classes: [sit, walk]\n")
    recordings = load_generic(folder)
    assert len(recordings) == 6 and recordings[0].class_names == ("sit", "walk", "Null")
    assert all((r.labels == 2).all() and r.null_class == 2 for r in recordings)
    kept = make_windows(recordings, WindowConfig(length=40, stride=20, drop_null=False))
    assert len(kept) == 6 * 7 and (kept.y == 2).all()


def _bad_inputs():
    """(edit of a good folder, fragment the one line about it must hold); {f} is the folder as given."""
    def replace_in(name, old, new):
        def edit(folder):
            path = folder / name
            path.write_text(path.read_text().replace(old, new, 1))
        return edit

    def append(name, text):
        return lambda folder: (folder / name).write_text((folder / name).read_text() + text)

    return [
        (replace_in("dataset.yaml", "unit: deg/s}", "unit: degrees}"),
         "{f}/dataset.yaml: channels[3].unit: unknown unit 'degrees' for modality 'gyro'"),
        (replace_in("dataset.yaml", "axis: y, unit: g", "axs: y, unit: g"),
         "{f}/dataset.yaml: channels[1]: unknown key(s) ['axs'] (and ['axis'] missing)"),
        (append("s02_sit_t1.csv", "1,2,3\n"), "{f}/s02_sit_t1.csv: row 162 has 3 fields, expected 6"),
        (replace_in("s01_walk_t2.csv", "ax,", "acc_x,"), "{f}/s01_walk_t2.csv: column 'ax' named in dataset.yaml is "
                                                         "missing"),
        (replace_in("s03_sit_t1.csv", "\n", "\n" + ",,,,,\n" * 30),
         "{f}/s03_sit_t1.csv: rows 2-31: column 'ax' is missing (NaN) for 30 samples, more than the 20"),
        (replace_in("s03_walk_t2.csv", "\n", "\nabc,1,1,1,1,1\n"),
         "{f}/s03_walk_t2.csv: row 2: column 'ax' holds 'abc', not a number"),
        (lambda folder: [(folder / "s01_walk_t1.csv").rename(folder / "s01_run_t1.csv"),
                         append("dataset.yaml", "classes: [sit, walk]\n")(folder)],
         "{f}/s01_run_t1.csv (label from the file name): label 'run' is not in classes of dataset.yaml (sit, walk)"),
        (lambda folder: (folder / "s02_walk_t1.csv").write_bytes(b"\xff\xfe\x00garbage"),
         "{f}/s02_walk_t1.csv: cannot read"),
        (replace_in("dataset.yaml", "name: walkdata", "name: Walk Data"),
         "{f}/dataset.yaml: name 'Walk Data' cannot be an install name"),
    ]


@pytest.mark.parametrize("edit, fragment", _bad_inputs())
def test_every_problem_of_check_names_the_users_file(tmp_path, monkeypatch, edit, fragment):
    monkeypatch.chdir(tmp_path)  # the folder as a user types it: relative
    folder = write_folder(Path("walkdata"))
    edit(folder)
    result = run_cli("data", "check", "walkdata", data_root=tmp_path / "root")
    assert_one_line_error(result, fragment.format(f="walkdata"))


def _copy_as(source, target):
    return lambda folder: (folder / target).write_bytes((folder / source).read_bytes())


def _likely_mistakes():
    """Edits that read without error but are likely not meant, and the warning each gives (walkdata's numbers are in
    g and deg/s, its pattern "{subject}_{label}_t{trial}.csv")."""
    def yaml_units(old, new):
        return lambda folder: (folder / "dataset.yaml").write_text((folder / "dataset.yaml").read_text()
                                                                   .replace(f"unit: {old}", f"unit: {new}"))

    def short_session(folder):
        (folder / "s01_jump_t1.csv").write_text("\n".join((folder / "s01_walk_t1.csv").read_text().splitlines()[:61]))

    return [
        (yaml_units("g", "m/s^2"), ["{f}/dataset.yaml: channels[0], channels[1], channels[2]: right_wrist/acc reads ",
                                    "the numbers look like g: write unit: g for these channels"]),
        (yaml_units("deg/s", "rad/s"), ["{f}/dataset.yaml: channels[3], channels[4], channels[5]: torso/gyro reads ",
                                        "the numbers look like deg/s: write unit: deg/s for these channels"]),
        (lambda folder: (folder / "s01_walk_t2.csv").rename(folder / "s01_wlk_t2.csv"),
         ["{f}/s01_wlk_t2.csv: class 'wlk' (160 samples) is a typo away from 'walk' (800); fix the name, or list "
          "both in classes: of dataset.yaml"]),
        (_copy_as("s02_sit_t1.csv", "s02_sit_t1 (copy).csv"),
         ["{f}/s02_sit_t1.csv: the same samples and labels as {f}/s02_sit_t1 (copy).csv, so one recording would "
          "count as two sessions; delete the copy"]),
        (lambda folder: (folder / "notes.csv").write_text("who,what\nme,notes\n"),
         ["{f}/notes.csv: not read: the sessions pattern '{{subject}}_{{label}}_t{{trial}}.csv' does not match its "
          "path; rename it to match, or move it out of the dataset's folder"]),
        (short_session, ["{f}: class 'jump' has 2 windows, fewer than 20% of the median class's (42): too few to "
                         "learn or score it"]),
    ]


@pytest.mark.parametrize("edit, fragments", _likely_mistakes())
def test_check_warns_about_what_reads_but_is_likely_not_meant(tmp_path, monkeypatch, edit, fragments):
    monkeypatch.chdir(tmp_path)
    edit(write_folder(Path("walkdata")))
    result = run_cli("data", "check", "walkdata", "--windowing", "length=40,stride=20", data_root=tmp_path / "root")
    assert result.returncode == 0 and result.stdout.rstrip().endswith("walkdata: no problems, 1 warnings"), result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harkd: warning: "), result.stderr
    assert all(f.format(f="walkdata") in lines[0] for f in fragments), lines[0]
    assert lines[0] in GUIDE.read_text(), "docs/own-data.md shows each warning as the check prints it"
    strict = run_cli("data", "check", "walkdata", "--strict", "--windowing", "length=40,stride=20",
                     data_root=tmp_path / "root")
    assert strict.returncode == 2 and strict.stderr.strip() == lines[0].replace("harkd: warning: ", "harkd: error: ")


def test_check_says_where_the_class_order_comes_from(tmp_path):
    folder = write_folder(tmp_path / "walkdata")
    first = run_cli("data", "check", str(folder), "--json", data_root=tmp_path / "root", check=True)
    report = json.loads(first.stdout)
    assert [c["name"] for c in report["info"]["classes"]] == ["sit", "walk"]  # s01_sit_t1.csv is the first file
    assert report["class_order"].startswith("as the labels first appear in the sessions (s01_sit_t1.csv first)")
    (folder / "dataset.yaml").write_text((folder / "dataset.yaml").read_text() + "classes: [walk, sit]\n")
    listed = run_cli("data", "check", str(folder), data_root=tmp_path / "root", check=True)
    assert "  class order: as listed in classes: of dataset.yaml" in listed.stdout
    assert "    walk " in listed.stdout.split("class order")[0]  # the class table lists walk first


def test_a_pattern_folder_whose_every_unit_is_wrong_names_each_channel_and_nothing_else(tmp_path):
    """Once every session file also gave a false "no data rows" after the right lines."""
    folder = write_folder(tmp_path / "walkdata")
    text = (folder / "dataset.yaml").read_text()
    (folder / "dataset.yaml").write_text(text.replace("unit: g", "unit: furlongs").replace("unit: deg/s",
                                                                                           "unit: furlongs"))
    result = run_cli("data", "check", str(folder), data_root=tmp_path / "root")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 6, result.stderr
    assert all(f"channels[{i}].unit: unknown unit 'furlongs'" in line for i, line in enumerate(lines)), lines


def test_check_reports_every_problem_and_names_archive_members(tmp_path):
    folder = write_folder(tmp_path / "walkdata")
    for edit, _ in _bad_inputs()[:4]:
        edit(folder)
    archive = tmp_path / "walkdata.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="walkdata")
    for source, shown in ((str(folder), str(folder)), (str(archive), f"{archive}/walkdata")):
        result = run_cli("data", "check", source, data_root=tmp_path / "root")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 4, result.stderr
        assert all(line.startswith(f"harkd: error: {shown}/") for line in lines), lines
        assert "Traceback" not in result.stderr and "harkd-check-" not in result.stderr
        assert "10 recordings, 3 subjects" in result.stdout  # what did load is still reported
    assert not list(tmp_path.glob("root/*"))  # checking installs nothing


def test_install_name_is_the_yaml_name(tmp_path):
    folder = write_folder(tmp_path / "walkdata")
    root = tmp_path / "root"
    assert_one_line_error(run_cli("data", "install", "other", "--from", str(folder), data_root=root),
                          f"{folder}/dataset.yaml: name 'walkdata' differs from the install name 'other'")
    archive = tmp_path / "w.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="walkdata")
    import hashlib
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert_one_line_error(run_cli("data", "install", "other", "--from", str(archive), "--sha256", digest,
                                  data_root=root), f"{archive}/walkdata/dataset.yaml: name 'walkdata' differs")
    installed = run_cli("data", "install", "--from", str(archive), "--sha256", digest, data_root=root, check=True)
    assert f"installed walkdata at {root / 'walkdata'}" in installed.stdout
    assert sorted(p.name for p in root.iterdir()) == ["walkdata"]


def test_an_edited_installed_copy_is_read_again(tmp_path, monkeypatch):
    root = tmp_path / "root"
    run_cli("data", "install", "--from", str(write_folder(tmp_path / "walkdata")), data_root=root, check=True)
    monkeypatch.setenv("HARKD_DATA", str(root))
    windowing = WindowConfig(length=40, stride=20)
    before = load_windows("walkdata", windowing)
    assert load_windows("walkdata", windowing).x.tolist() == before.x.tolist()  # from the cache
    edited = root / "walkdata" / "s01_sit_t1.csv"
    lines = edited.read_text().splitlines()
    edited.write_text("\n".join([lines[0], "1,1,1,1,1,1", *lines[2:]]) + "\n")
    after = load_windows("walkdata", windowing)
    changed = np.flatnonzero((after.x != before.x).any(axis=(1, 2)))
    assert changed.tolist() == [0] and after.x[0, 0, 0] == np.float32(9.80665)


def _sigint_as_at_a_terminal() -> None:
    # A shell's background job (pytest started with `&`) inherits SIGINT ignored, and Python then keeps it ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("jobs, stop", [(1, signal.SIGINT), (2, signal.SIGINT), (1, signal.SIGTERM)],
                         ids=["ctrl-c", "ctrl-c-jobs-2", "kill"])
def test_an_interrupted_run_leaves_no_temporary_folder(tmp_path, short_tmp_path, jobs, stop):
    """Ctrl-C (SIGINT to the process group, workers too) or `kill` (SIGTERM to the process group) once a unit has
    finished and the next is training: exit 130, no harkd-run-* folder left in the temp directory, the finished unit
    kept in OUT/.units for a resume."""
    from harkd.data.install import install_dataset

    root, temp, out = tmp_path / "root", short_tmp_path, tmp_path / "out"
    install_dataset(None, str(write_folder(tmp_path / "walkdata")), root=root)
    config = tmp_path / "walkdata.yaml"
    config.write_text(RUN_CONFIG.replace("folds: [s01, s02]", "folds: [s01, s02, s03]").replace("[0]", "[0, 1]"))
    env = {**os.environ, "HARKD_DATA": str(root), "TMPDIR": str(temp)}
    command = [sys.executable, "-m", "harkd", "run", str(config), "--out", str(out), "--jobs", str(jobs)]
    run = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True,
                           preexec_fn=_sigint_as_at_a_terminal)
    deadline = time.monotonic() + 300
    while not (list(out.glob(".units/seed*.json")) and list(temp.glob("harkd-run-*"))):
        assert run.poll() is None, f"the run ended before it could be interrupted:\n{run.communicate()[1]}"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(run.pid, stop)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert list(temp.glob("harkd-run-*")) == []
    assert list(out.glob(".units/seed*.json"))
