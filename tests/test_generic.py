import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from harkd.data.loaders.generic import load_generic, locate_generic, write_generic
from harkd.data.synthetic import make_recordings
from harkd.errors import HarkdError

SCHEMA = """\
name: factory-line
rate_hz: 10
label_column: label
time_column: time
null_label: none
max_gap_s: 0.3
annotations: [box]
channels:
  - {column: rw_acc_x, position: right_wrist, modality: acc, axis: x, unit: m/s^2}
  - {column: rw_cap_1, position: right_wrist, modality: capacitive, axis: 1, unit: pF}
  - {column: belt_temp, position: belt, modality: thermometer, axis: t}
sessions:
  - {file: s01_morning.csv, subject: S01, session: morning}
  - {file: s02.csv, subject: 2}
"""
HEADER = "time,rw_acc_x,rw_cap_1,belt_temp,label,box"


def _rows(n, labels, start=0.0, box=1):
    return [f"{start + i / 10:.1f},{i * 0.5},{10 + i},{20 + i},{labels[i % len(labels)]},{box}" for i in range(n)]


def _write(folder, schema=SCHEMA, files=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.yaml").write_text(schema)
    files = files if files is not None else {"s01_morning.csv": [HEADER] + _rows(12, ["screw", "pick", "none"]),
                                             "s02.csv": [HEADER] + _rows(8, ["place", "pick"], box=2)}
    for name, lines in files.items():
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def _error(folder):
    with pytest.raises(HarkdError) as info:
        load_generic(folder)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_loads_example(tmp_path):
    recs = load_generic(_write(tmp_path / "ds"))
    assert [(r.subject, r.session) for r in recs] == [("S01", "morning"), ("2", "s02")]
    rec = recs[0]
    # in order of first appearance (screw is the first row's label), the null class last
    assert rec.class_names == ("screw", "pick", "place", "none") and rec.null_class == 3
    assert [rec.class_names[i] for i in rec.labels[:3]] == ["screw", "pick", "none"]
    assert rec.rate_hz == 10 and rec.signals.shape == (12, 3)
    assert [c.name for c in rec.channels] == ["right_wrist/acc/x", "right_wrist/capacitive/1", "belt/thermometer/t"]
    assert rec.channels[1].unit == "pF" and rec.channels[2].unit == ""
    np.testing.assert_allclose(rec.signals[:, 0], np.arange(12) * 0.5)
    np.testing.assert_array_equal(recs[1].annotations["box"], np.full(8, 2))
    assert rec.source.endswith("s01_morning.csv")
    assert load_generic(tmp_path / "ds" / "dataset.yaml")[1].labels.tolist() == recs[1].labels.tolist()


def test_rows_sorted_by_time_and_short_gaps_interpolated(tmp_path):
    rows = _rows(12, ["pick"])
    rows[3], rows[4] = rows[4], rows[3]
    rows[6] = rows[6].replace(",3.0,", ",,")  # one missing acc value (row 8 of the file)
    recs = load_generic(_write(tmp_path, files={"s01_morning.csv": [HEADER] + rows,
                                                "s02.csv": [HEADER] + _rows(8, ["place"])}))
    np.testing.assert_allclose(recs[0].signals[:, 0], np.arange(12) * 0.5)
    assert recs[0].interpolated_samples == 1


def test_integer_labels_sort_by_value_and_classes_fix_order(tmp_path):
    schema = SCHEMA.replace("null_label: none", "null_label: 0")
    files = {"s01_morning.csv": [HEADER] + _rows(12, [10, 2, 0]), "s02.csv": [HEADER] + _rows(8, [2])}
    assert load_generic(_write(tmp_path / "a", schema, files))[0].class_names == ("2", "10", "0")
    fixed = load_generic(_write(tmp_path / "b", schema + "classes: [10, 2, 7]\n", files))[0]
    assert fixed.class_names == ("10", "2", "7", "0") and fixed.null_class == 3


def test_label_text_that_looks_like_missing_stays_a_label(tmp_path):
    files = {"s01_morning.csv": [HEADER] + _rows(12, ["null", "NA", "pick"]), "s02.csv": [HEADER] + _rows(8, ["NA"])}
    rec = load_generic(_write(tmp_path, SCHEMA.replace("null_label: none", "null_label: 'null'"), files))[0]
    assert rec.class_names == ("NA", "pick", "null") and rec.null_class == 2


def test_parquet_with_integer_labels_and_timestamps(tmp_path):
    schema = SCHEMA.replace("s01_morning.csv", "s01.parquet").replace("null_label: none\n", "")
    folder = _write(tmp_path, schema, files={"s02.csv": [HEADER] + _rows(8, [3])})
    pd.DataFrame({"time": pd.date_range("2024-01-01", periods=20, freq="100ms"),
                  "rw_acc_x": np.arange(20.0), "rw_cap_1": 1.0, "belt_temp": 2.0,
                  "label": np.arange(20) % 2, "box": 5}).to_parquet(folder / "s01.parquet")
    recs = load_generic(folder)
    assert recs[0].class_names == ("0", "1", "3") and recs[0].null_class is None
    assert recs[0].labels[:4].tolist() == [0, 1, 0, 1]


def test_locate(tmp_path):
    assert locate_generic(tmp_path) is None
    _write(tmp_path / "unpacked" / "mydata")
    assert locate_generic(tmp_path / "unpacked") == tmp_path / "unpacked" / "mydata"
    assert locate_generic(tmp_path / "unpacked" / "mydata") == tmp_path / "unpacked" / "mydata"
    assert locate_generic(tmp_path) is None  # only one level down
    _write(tmp_path / "unpacked" / "other")
    with pytest.raises(HarkdError, match="several folders"):
        locate_generic(tmp_path / "unpacked")


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("position: right_wrist, modality: capacitive", "positon: right_wrist, modality: capacitive"),
     "dataset.yaml: channels[1]: unknown key(s) ['positon'] (and ['position'] missing); valid keys: ['axis', "
     "'column', 'modality', 'orientation', 'placement', 'position', 'sensor', 'unit']"),
    (lambda s: s.replace("rate_hz: 10", "rate: 10"),
     "dataset.yaml: unknown key(s) ['rate'] (and ['rate_hz'] missing); valid keys: "),
    (lambda s: s.replace("unit: m/s^2", "unit: furlong/s^2"),
     "dataset.yaml: channels[0].unit: unknown unit 'furlong/s^2' for modality 'acc'; use one of m/s^2, m/s2"),
    (lambda s: s.replace(", unit: m/s^2", ""),
     "dataset.yaml: channels[0].unit: modality 'acc' needs a unit; use one of m/s^2"),
    (lambda s: s.replace("sessions:\n", "sessions: '{subject}_{label}.csv'\nx:\n"),
     "dataset.yaml: unknown key(s) ['x']"),
    (lambda s: s.split("sessions:")[0] + "sessions: '{label}_{trial}.csv'\n",
     "dataset.yaml: sessions: pattern '{label}_{trial}.csv' needs a {subject} field"),
    (lambda s: s.split("sessions:")[0] + "sessions: '{subject}_{x-y}.csv'\n",
     "dataset.yaml: sessions: {x-y} in pattern '{subject}_{x-y}.csv' is not a field name"),
    (lambda s: s.split("sessions:")[0] + "sessions: '{subject}_{label}.txt'\n",
     "dataset.yaml: sessions: '{subject}_{label}.txt' is neither .csv nor .parquet"),
    (lambda s: s.split("sessions:")[0] + "sessions: 'z{subject}.csv'\n",
     "dataset.yaml: sessions: no file under "),
    (lambda s: s.replace(", axis: t}", "}"), "dataset.yaml: channels[2].axis: required key missing"),
    (lambda s: s.replace("rate_hz: 10", "rate_hz: fast"), "dataset.yaml: rate_hz: expected a number, got 'fast'"),
    (lambda s: s.replace("max_gap_s: 0.3", "max_gap_s: -1"), "dataset.yaml: max_gap_s: must be at least 0, got -1"),
    (lambda s: s.replace("subject: 2}", "subject: [2]}"),
     "dataset.yaml: sessions[1].subject: expected a string, got [2]"),
    (lambda s: s + "classes: pick\n", "dataset.yaml: classes: expected a list, got 'pick'"),
    (lambda s: s + "classes: [pick, pick]\n", "dataset.yaml: classes: class 'pick' is listed twice"),
    (lambda s: s.replace("column: belt_temp", "column: rw_acc_x"),
     "dataset.yaml: channels[2]: column 'rw_acc_x' is listed twice"),
    (lambda s: s.replace("[box]", "[label]"), "dataset.yaml: annotations[0]: column 'label' is already used by "
                                              "label_column"),
    (lambda s: s.replace("s02.csv", "s02.xlsx"), "dataset.yaml: sessions[1].file: 's02.xlsx' is neither .csv nor"),
    (lambda s: s + "time_unit: hours\n", "dataset.yaml: time_unit: expected 's', 'ms', 'us' or 'ns', got 'hours'"),
    (lambda s: s + "time_unit: [s]\n", "dataset.yaml: time_unit: expected 's', 'ms', 'us' or 'ns', got ['s']"),
    (lambda s: s.replace("channels:", "channels: ["), "dataset.yaml: not valid YAML"),
    (lambda s: "- just a list\n", "dataset.yaml: expected a mapping, got ['just a list']"),
])
def test_schema_errors_name_file_and_key(tmp_path, edit, message):
    assert message in _error(_write(tmp_path, edit(SCHEMA)))


def _broken(tmp_path, edit):
    lines = [HEADER] + _rows(12, ["pick"])
    edit(lines)
    return _error(_write(tmp_path, files={"s01_morning.csv": lines, "s02.csv": [HEADER] + _rows(8, ["pick"])}))


@pytest.mark.parametrize("wrong", [[0, 1, 2], [1]])
def test_a_check_names_each_wrong_channel_without_a_traceback(tmp_path, wrong):
    """Every channel in an unknown unit once ended the check in a traceback ("need at least one array to stack")."""
    from harkd.data.loaders.generic import check_generic

    lines = [f"  - {{column: a{i}, position: wrist, modality: acc, axis: {'xyz'[i]}, "
             f"unit: {'furlongs' if i in wrong else 'm/s^2'}}}" for i in range(3)]
    schema = "name: w\nrate_hz: 10\nlabel_column: label\nchannels:\n" + "\n".join(lines) + \
        "\nsessions:\n  - {file: s.csv, subject: S01}\n"
    folder = _write(tmp_path / "d", schema, {"s.csv": ["a0,a1,a2,label"] + ["1,2,3,walk"] * 20})
    report = check_generic(folder)
    assert [re.sub(r".*channels\[(\d)\]\.unit: unknown unit 'furlongs'.*", r"\1", line)
            for line in report.problems] == [str(i) for i in wrong]
    assert len(report.recordings) == (0 if len(wrong) == 3 else 1)  # the right channels are still read


def test_unknown_label_with_fixed_classes(tmp_path):
    message = _error(_write(tmp_path, SCHEMA + "classes: [pick, place]\n"))
    assert re.search(r"s01_morning\.csv: row 2: label 'screw' is not in classes of dataset\.yaml \(pick, place\)",
                     message)


def test_missing_column_names_file_and_column(tmp_path):
    message = _error(_write(tmp_path, files={"s01_morning.csv": ["time,rw_acc_x,label,box"], "s02.csv": []}))
    assert "s01_morning.csv: column 'rw_cap_1' named in dataset.yaml is missing" in message
    assert "'time', 'rw_acc_x', 'label', 'box'" in message


def test_missing_session_file(tmp_path):
    assert "s02.csv: file not found (listed in dataset.yaml)" in _error(
        _write(tmp_path, files={"s01_morning.csv": [HEADER] + _rows(12, ["pick"])}))


def test_truncated_csv_names_row(tmp_path):
    message = _broken(tmp_path, lambda lines: lines.__setitem__(-1, lines[-1][:9]))
    assert "s01_morning.csv: row 13 has 3 fields, expected 6 (truncated or malformed file)" in message


def test_blank_line_inside_data(tmp_path):
    assert "row 5 is empty" in _broken(tmp_path, lambda lines: lines.insert(4, ""))


def test_non_numeric_value_names_row_and_column(tmp_path):
    message = _broken(tmp_path, lambda lines: lines.__setitem__(5, lines[5].replace(",14,", ",n/a,")))
    assert "s01_morning.csv: row 6: column 'rw_cap_1' holds 'n/a', not a number" in message


def test_long_nan_run_names_rows_and_column(tmp_path):
    def blank(lines):
        for i in range(4, 9):  # file rows 5-9 miss their acc value: 5 samples > max_gap of 3
            lines[i] = lines[i].replace(f",{(i - 1) * 0.5},", ",nan,")
    message = _broken(tmp_path, blank)
    assert "s01_morning.csv: rows 5-9: column 'rw_acc_x' is missing (NaN) for 5 samples, more than the 3" in message


def test_empty_label(tmp_path):
    assert "row 4: empty label in column 'label'" in _broken(
        tmp_path, lambda lines: lines.__setitem__(3, lines[3].replace(",pick,", ",,")))


def test_bad_annotation(tmp_path):
    assert "row 3: annotation column 'box' needs an integer" in _broken(
        tmp_path, lambda lines: lines.__setitem__(2, lines[2][:-1] + "1.5"))


def test_rate_off_by_more_than_tolerance(tmp_path):
    lines = [HEADER] + [row.replace(f"{i / 10:.1f},", f"{i * 0.111:.3f},", 1) for i, row in
                        enumerate(_rows(12, ["pick"]))]
    message = _error(_write(tmp_path, files={"s01_morning.csv": lines, "s02.csv": [HEADER] + _rows(8, ["pick"])}))
    assert "s01_morning.csv: column 'time' gives 9.009 Hz, but rate_hz is 10 (off by more than 5%" in message


def test_time_jump_and_duplicate_time(tmp_path):
    rows = _rows(6, ["pick"]) + _rows(6, ["pick"], start=5.0)
    message = _error(_write(tmp_path / "jump", files={"s01_morning.csv": [HEADER] + rows,
                                                      "s02.csv": [HEADER] + _rows(8, ["pick"])}))
    assert "s01_morning.csv: rows 7-8: 'time' jumps by 4.5 s" in message
    rows = _rows(12, ["pick"])
    rows[5] = rows[4]
    message = _error(_write(tmp_path / "dup", files={"s01_morning.csv": [HEADER] + rows,
                                                     "s02.csv": [HEADER] + _rows(8, ["pick"])}))
    assert "rows 6 and 7 have the same 'time' value" in message


def test_corrupt_parquet(tmp_path):
    folder = _write(tmp_path, SCHEMA.replace("s02.csv", "s02.parquet"))
    (folder / "s02.parquet").write_bytes(b"PAR1 not really parquet")
    assert "s02.parquet: cannot read Parquet file" in _error(folder)


def test_folder_without_schema(tmp_path):
    assert "no dataset.yaml in this folder" in _error(tmp_path)


def test_write_refuses_to_overwrite_and_mixed_channels(tmp_path):
    recs = make_recordings(n_subjects=2, duration_s=10, n_classes=2)
    write_generic(recs, tmp_path, fmt="parquet", name="synthetic")
    assert "name: synthetic" in (tmp_path / "dataset.yaml").read_text()
    with pytest.raises(HarkdError, match="already exists"):
        write_generic(recs, tmp_path)
    write_generic(recs, tmp_path, overwrite=True)
    with pytest.raises(HarkdError, match="channels differs"):
        write_generic([recs[0], recs[1].select("modality=acc")], tmp_path / "mixed")


def test_written_schema_is_readable_yaml(tmp_path):
    write_generic(make_recordings(n_subjects=1, duration_s=10, n_classes=2), tmp_path)
    text = (tmp_path / "dataset.yaml").read_text()
    assert textwrap.dedent("""\
        label_column: label
        time_column: time
        classes:
        - class_0
        - class_1
        - 'null'
        null_label: 'null'
        """) in text
    assert "- column: right_wrist/acc/x\n  position: right_wrist\n  modality: acc\n  axis: x\n  unit: m/s^2\n" in text


def test_documented_example_loads(tmp_path):
    doc = (Path(__file__).parents[1] / "docs" / "generic-format.md").read_text()
    schema_text = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "dataset.yaml").write_text(schema_text)
    schema = yaml.safe_load(schema_text)
    rng = np.random.default_rng(0)
    for entry in schema["sessions"]:
        n = 500
        frame = pd.DataFrame({c["column"]: rng.normal(size=n) for c in schema["channels"]})
        frame["timestamp_ms"] = 1_700_000_000_000 + 20 * np.arange(n)
        frame["activity"] = np.array(schema["classes"] + ["idle"])[np.arange(n) // 50 % 5]
        frame["box"] = np.arange(n) // 100
        if entry["file"].endswith(".csv"):
            frame.to_csv(tmp_path / entry["file"], index=False)
        else:
            frame.to_parquet(tmp_path / entry["file"])
    recs = load_generic(tmp_path)
    assert [r.session for r in recs] == ["morning", "afternoon", "morning"]
    assert recs[0].class_names == ("pick", "place", "screw", "pack", "idle") and recs[0].null_class == 4
    assert recs[0].select("position=right_wrist").signals.shape == (500, 6)
    assert recs[0].channels[-1].name == "left_hand/capacitive/palm@glove"


def test_column_without_values(tmp_path):
    lines = [HEADER, "0.0,1,nan,3,pick,1", "0.1,1,,3,pick,1"]
    assert "s01_morning.csv: column 'rw_cap_1' has no value at all" in _error(
        _write(tmp_path, files={"s01_morning.csv": lines, "s02.csv": [HEADER] + _rows(8, ["pick"])}))
