"""The streaming predictor (harkd.deploy.stream, `harkd stream`): sample by sample it predicts what batch windowing at
the same stride predicts, with a kept model (PyTorch) and its ONNX export (ONNX Runtime); short gaps are filled as
loading fills them, long ones restart the window and are reported; bad input lines are one-line errors that keep
what was already printed."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_one_line_error
from harkd.data.loaders.generic import write_generic
from harkd.data.recording import ChannelSpec, Recording, fill_short_gaps
from harkd.data.splits import Normaliser
from harkd.models.bundle import ModelBundle
from harkd.deploy.onnx_export import export_onnx
from harkd.deploy.stream import Gap, Prediction, Stream, StreamPredictor, stream_csv
from harkd.deploy.stream_input import choose_reading, own_data_format, plain_format
from harkd.deploy.stream_model import StreamModel, open_model
from harkd.errors import HarkdError
from harkd.models.base import build_model

RATE, WINDOW, STRIDE = 25.0, 20, 10
CHANNELS = [ChannelSpec("right_wrist", "acc", axis, "m/s^2") for axis in "xyz"]
NAMES = [c.name for c in CHANNELS]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A small student as a kept model and as its ONNX export; its weights are random but fixed, with large enough
    logits that the class varies from window to window."""
    import torch

    torch.manual_seed(0)
    model = build_model("cnn_student", 3, 4, width=8, depth=2)
    with torch.no_grad():
        model.head.weight.mul_(20)
    folder = tmp_path_factory.mktemp("models")
    bundle = ModelBundle.of(model, "cnn_student", {"width": 8, "depth": 2}, CHANNELS, ["sit", "walk", "run", "lie"],
                            WINDOW, RATE, Normaliser(np.array([0.0, 1.0, -1.0], np.float32),
                                                     np.array([1.0, 2.0, 0.5], np.float32)))
    bundle.stride = STRIDE
    bundle.save(folder / "student.pt")
    export_onnx(bundle, folder / "student.onnx")
    return {"pt": folder / "student.pt", "onnx": folder / "student.onnx"}


def signals(n: int, seed: int = 0) -> np.ndarray:
    t = np.arange(n) / RATE
    rng = np.random.default_rng(seed)
    slow = np.stack([np.sin(2 * np.pi * f * t) for f in (0.3, 0.7, 1.1)], axis=1)
    return (2 * slow + rng.normal(0, 0.5, (n, 3))).astype(np.float32)


def csv_text(x: np.ndarray, header: bool = True, times: np.ndarray | None = None) -> str:
    times = np.arange(len(x)) / RATE if times is None else times
    lines = ["time," + ",".join(NAMES)] if header else []
    lines += [f"{t:.6f}," + ",".join("" if np.isnan(v) else repr(float(v)) for v in row) for t, row in zip(times, x)]
    return "\n".join(lines) + "\n"


def batch(model: StreamModel, x: np.ndarray, stride: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Start times and probabilities of windowing (T, C) samples at `stride` and scoring them in one batch."""
    starts = np.arange(0, len(x) - WINDOW + 1, stride)
    windows = np.lib.stride_tricks.sliding_window_view(x, WINDOW, axis=0)[starts]
    return (starts + offset) / RATE, model.score(windows.astype(np.float32))


def streamed(model: StreamModel, x: np.ndarray, **options) -> list:
    stream = Stream(model, **options)
    events = [e for i, row in enumerate(x) for e in stream.push(i / RATE, row)]
    return events + stream.finish()


def assert_matches(events: list, starts: np.ndarray, probabilities: np.ndarray) -> None:
    predictions = [e for e in events if isinstance(e, Prediction)]
    assert len(predictions) == len(starts) > 3
    np.testing.assert_allclose([p.start for p in predictions], starts, atol=1e-9)
    got = np.stack([p.probabilities for p in predictions])
    np.testing.assert_allclose(got, probabilities, atol=1e-6)
    assert [p.raw_label for p in predictions] == [["sit", "walk", "run", "lie"][k] for k in probabilities.argmax(1)]


@pytest.mark.parametrize("kind", ["pt", "onnx"])
@pytest.mark.parametrize("hop", [None, 3, WINDOW])
def test_streaming_sample_by_sample_equals_batch_windowing(models, kind, hop):
    model = open_model(models[kind])
    x = signals(200)
    events = streamed(model, x, hop=hop)
    assert_matches(events, *batch(model, x, hop or STRIDE))
    assert len({p.raw_label for p in events}) > 1  # the check means something only if the class changes


def test_pytorch_and_onnx_runtime_stream_the_same(models):
    x = signals(300, seed=1)
    pt, onnx = (streamed(open_model(models[k]), x) for k in ("pt", "onnx"))
    assert [p.label for p in pt] == [p.label for p in onnx]
    np.testing.assert_allclose([p.probabilities for p in pt], [p.probabilities for p in onnx], atol=1e-5)


def test_a_short_nan_gap_is_interpolated_as_loading_does(models):
    model = open_model(models["pt"])
    x = signals(150).astype(np.float64)
    x[40:45, 1] = np.nan  # 5 samples, under the 1 s (25-sample) limit
    x[90, :] = np.nan
    filled, count = fill_short_gaps(x, RATE, "test")
    assert count == 8
    events = streamed(model, x)
    assert not [e for e in events if isinstance(e, Gap)]
    assert_matches(events, *batch(model, filled.astype(np.float32), STRIDE))


def test_missing_rows_are_filled_like_nan_rows(models):
    model = open_model(models["pt"])
    x = signals(150).astype(np.float64)
    keep = np.setdiff1d(np.arange(150), [60, 61, 62])
    stream = Stream(model)
    events = [e for i in keep for e in stream.push(i / RATE, x[i])] + stream.finish()
    with_nan = x.copy()
    with_nan[60:63] = np.nan
    assert_matches(events, *batch(model, fill_short_gaps(with_nan, RATE, "test")[0].astype(np.float32), STRIDE))


@pytest.mark.parametrize("how", ["nan", "missing rows"])
def test_a_long_gap_restarts_the_window_and_is_reported(models, how):
    model = open_model(models["pt"])
    x = signals(200).astype(np.float64)
    gap = np.arange(70, 100)  # 30 samples: over the 25 that may be interpolated
    stream = Stream(model)
    if how == "nan":
        x[gap, 2] = np.nan
        events = [e for i, row in enumerate(x) for e in stream.push(i / RATE, row)]
    else:
        events = [e for i in np.setdiff1d(np.arange(200), gap) for e in stream.push(i / RATE, x[i])]
    events += stream.finish()
    gaps = [e for e in events if isinstance(e, Gap)]
    assert len(gaps) == 1 and gaps[0].missing == 30
    assert gaps[0].start == pytest.approx(69 / RATE) and gaps[0].end == pytest.approx(100 / RATE)
    cut = events.index(gaps[0])
    assert_matches(events[:cut], *batch(model, x[:70].astype(np.float32), STRIDE))
    assert_matches(events[cut + 1:], *batch(model, x[100:].astype(np.float32), STRIDE, offset=100))
    assert stream.segments.gaps == 1


def fixed(probabilities: list[list[float]]) -> StreamModel:
    """A model whose windows score `probabilities` in turn (window 1, hop 1): smoothing alone decides the class."""
    scores = iter(np.array(probabilities, np.float32))
    return StreamModel(CHANNELS[:1], ["a", "b"], 1, RATE, 1, lambda w: next(scores)[None], "fixed")


@pytest.mark.parametrize("smoothing, expected", [("majority", ["a", "a", "a", "a", "a"]),
                                                 ("mean", ["a", "a", "b", "b", "b"])])
def test_smoothing_over_the_last_k_predictions(smoothing, expected):
    probabilities = [[0.6, 0.4], [0.6, 0.4], [0.0, 1.0], [0.6, 0.4], [0.6, 0.4]]
    predictor = StreamPredictor(fixed(probabilities), smooth=3, smoothing=smoothing)
    predictions = [predictor.push(i, np.zeros(1)) for i in range(5)]
    assert [p.label for p in predictions] == expected
    assert [p.raw_label for p in predictions] == ["a", "a", "b", "a", "a"]


def test_wrong_predictor_settings_are_errors(models):
    model = open_model(models["pt"])
    with pytest.raises(HarkdError, match="hop must be at least 1"):
        StreamPredictor(model, hop=0)
    with pytest.raises(HarkdError, match="smoothing 'median': expected one of majority, mean"):
        StreamPredictor(model, smoothing="median")
    with pytest.raises(HarkdError, match="sampled at 50 Hz, the model expects 25 Hz"):
        Stream(model, input_rate_hz=50.0)


def stream_text(model: StreamModel, text: str, spec=None, **options) -> tuple[list[dict], HarkdError | None]:
    """What `harkd stream` prints for `text`, up to the error that stops it (if any)."""
    printed = []
    try:
        for event in stream_csv(model, text.splitlines(keepends=True), "stdin", spec or plain_format(model),
                                **options):
            printed.append(event)
    except HarkdError as exc:
        return printed, exc
    return printed, None


def test_csv_stream_prints_predictions_and_a_segment_summary(models):
    model = open_model(models["onnx"])
    x = signals(200)
    for text in (csv_text(x), csv_text(x, header=False)):
        printed, error = stream_text(model, text)
        assert error is None and printed[0]["event"] == "start" and printed[0]["hop"] == STRIDE
        assert printed[0]["input_rate_hz"] == pytest.approx(RATE)
        predictions = [p for p in printed if p["event"] == "prediction"]
        starts, probabilities = batch(model, x, STRIDE)
        assert [p["start"] for p in predictions] == pytest.approx(starts.tolist())
        assert [p["raw_class"] for p in predictions] == [model.class_names[k] for k in probabilities.argmax(1)]
        summary = printed[-1]
        assert summary["event"] == "summary" and summary["predictions"] == len(predictions) and summary["gaps"] == 0
        changes = [p["class"] for i, p in enumerate(predictions) if i == 0 or p["class"] != predictions[i - 1]["class"]]
        assert [s["class"] for s in summary["segments"]] == changes
        assert summary["segments"][0]["start"] == 0 and summary["segments"][-1]["end"] == predictions[-1]["end"]


BAD_LINES = {"a row with too few fields": ("1.2,1.0,2.0", "line 32 has 3 fields, expected 4"),
             "a non-number": ("1.2,1.0,abc,2.0", "line 32: column 'right_wrist/acc/y' holds 'abc', not a number"),
             "no time": (",1.0,1.0,1.0", "line 32: no value in the time column 'time'"),
             "time going backwards": ("0.1,1.0,1.0,1.0", "line 32: time 0.1 s is not after the previous sample's")}


def with_line(line: str, after: int = 30) -> str:
    rows = csv_text(signals(40)).splitlines()
    return "\n".join(rows[:after + 1] + [line] + rows[after + 1:]) + "\n"  # after the header and `after` samples


@pytest.mark.parametrize("case", BAD_LINES)
def test_a_bad_line_is_a_one_line_error_after_what_was_printed(models, case):
    line, message = BAD_LINES[case]
    printed, error = stream_text(open_model(models["pt"]), with_line(line), hop=1)
    assert str(error).startswith(f"stdin: {message}") and "\n" not in str(error)
    assert [p["event"] for p in printed] == ["start"] + ["prediction"] * (30 - WINDOW + 1)


def test_cli_bad_line_exits_2_and_keeps_the_printed_lines(models, tmp_path):
    env = {**os.environ, "HARKD_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "harkd", "stream", str(models["onnx"]), "--input", "-", "--hop", "1"],
                          input=with_line(BAD_LINES["a non-number"][0]), capture_output=True, text=True, env=env,
                          timeout=120)
    assert_one_line_error(after_reading_line(done), "stdin: line 32: column 'right_wrist/acc/y' holds 'abc', "
                          "not a number")
    assert [json.loads(line)["event"] for line in done.stdout.splitlines()] == ["start"] + ["prediction"] * 11


def after_reading_line(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """The run with its first stderr line, the one saying how the input is read, checked and taken off."""
    first, _, rest = done.stderr.partition("\n")
    assert first.startswith("reading "), done.stderr
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, rest)


def test_cli_reads_a_pipe_given_by_path_as_a_shell_process_substitution_does(models, tmp_path):
    """`--input <(...)` hands the stream /dev/fd/N, a pipe, which is no regular file."""
    env = {**os.environ, "HARKD_DATA": str(tmp_path)}
    text = csv_text(signals(60))
    done = subprocess.run(["bash", "-c", '"$0" -m harkd stream "$1" --input <(cat "$2")', sys.executable,
                           str(models["onnx"]), str(_written(tmp_path / "in.csv", text))],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line)["event"] for line in done.stdout.splitlines()]
    assert events[0] == "start" and events.count("prediction") == (60 - WINDOW) // STRIDE + 1
    folder = subprocess.run([sys.executable, "-m", "harkd", "stream", str(models["onnx"]), "--input", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(folder, "a folder; --input takes a CSV file, a pipe or - (standard input)")


def _written(path, text: str):
    path.write_text(text)
    return path


def test_a_rate_mismatch_is_an_error_unless_resampled(models):
    model = open_model(models["pt"])
    x = signals(400)
    text = csv_text(x[::2], times=np.arange(200) * 2 / RATE)  # 12.5 Hz
    printed, error = stream_text(model, text)
    assert printed == [] and str(error) == ("the input is sampled at 12.5 Hz, the model expects 25 Hz "
                                            "(--resample converts it)")
    printed, error = stream_text(model, text, resample=True)
    predictions = [p for p in printed if p["event"] == "prediction"]
    assert error is None and len(predictions) == (400 - WINDOW) // STRIDE + 1
    assert predictions[1]["start"] == pytest.approx(STRIDE / RATE)


def own_session(folder, x: np.ndarray, unit: str):
    channels = tuple(ChannelSpec(c.position, c.modality, c.axis, unit) for c in CHANNELS)
    write_generic([Recording(x, channels, np.zeros(len(x), int), ("sit",), "S01", "a", RATE)], folder)
    return next(folder.glob("*.csv"))


@pytest.mark.parametrize("unit, factor", [("m/s^2", 1.0), ("g", 9.80665)])
def test_an_own_data_session_streams_in_the_models_units(models, tmp_path, unit, factor):
    model = open_model(models["pt"])
    x = signals(120)
    session = own_session(tmp_path / "mine", x, unit)
    printed, error = stream_text(model, session.read_text(), own_data_format(session, model))
    assert error is None
    starts, probabilities = batch(model, (x.astype(np.float64) * factor).astype(np.float32), STRIDE)
    got = np.array([list(p["probabilities"].values()) for p in printed if p["event"] == "prediction"])
    np.testing.assert_allclose(got, probabilities, atol=1e-5)


def test_an_own_data_session_in_units_that_cannot_convert_is_refused(models, tmp_path):
    model = open_model(models["pt"])
    session = own_session(tmp_path / "au", signals(50), "a.u.")
    with pytest.raises(HarkdError, match=r"channel right_wrist/acc/x: acc data in 'a.u.' cannot be converted"):
        own_data_format(session, model)


def test_stream_input_and_model_errors(models, tmp_path):
    model = open_model(models["pt"])
    (tmp_path / "lonely.onnx").write_bytes(models["onnx"].read_bytes())
    with pytest.raises(HarkdError, match="its description lonely.json is missing"):
        open_model(tmp_path / "lonely.onnx")
    _, error = stream_text(model, "t,a,b\n0,1,2\n")
    assert str(error) == ("stdin: no column time, right_wrist/acc/x, right_wrist/acc/y, right_wrist/acc/z in the "
                          "header (t, a, b)")


# --- which reading: a session of the user's own dataset (its dataset.yaml in the folder or above) or a plain CSV ---

G = 9.80665
MINE = "{subject}/{session}/{label}_t{trial}.csv"


def own_columns_csv(x: np.ndarray) -> str:
    """Samples as the user's own files hold them: time in ms, columns named their own way, an extra column."""
    lines = ["t_ms,ax,ay,az,note"]
    lines += [f"{1000 * i / RATE:.3f}," + ",".join(repr(float(v)) for v in row) + ",ok" for i, row in enumerate(x)]
    return "\n".join(lines) + "\n"


def pattern_dataset(root, x: np.ndarray):
    """root/mydata/dataset.yaml finding sessions by the pattern MINE, its channels (the model's) in g; one session,
    s01/day1/walking_t1.csv, two folders below the YAML."""
    import yaml

    session = root / "mydata" / "s01" / "day1" / "walking_t1.csv"
    session.parent.mkdir(parents=True)
    session.write_text(own_columns_csv(x))
    channels = [{"column": f"a{c.axis}", "position": c.position, "modality": c.modality, "axis": c.axis, "unit": "g"}
                for c in CHANNELS]
    (root / "mydata" / "dataset.yaml").write_text(yaml.safe_dump(
        {"name": "mydata", "rate_hz": RATE, "time_column": "t_ms", "time_unit": "ms", "channels": channels,
         "sessions": MINE}, sort_keys=False))
    return session


def cli_stream(models, cwd, *args: str, text: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARKD_DATA": str(cwd), "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    return subprocess.run([sys.executable, "-m", "harkd", "stream", str(models["onnx"]), *args], cwd=cwd, input=text,
                          capture_output=True, text=True, env=env, timeout=120)


def probabilities_of(events: list[dict]) -> np.ndarray:
    return np.array([list(e["probabilities"].values()) for e in events if e["event"] == "prediction"])


def in_g(x: np.ndarray) -> np.ndarray:
    """A watch's accelerometer in g, as a real one reads (gravity along z): the stream warns about numbers that do
    not fit their declared unit."""
    return (0.1 * x + np.array([0, 0, 1], np.float32)).astype(np.float32)


def test_cli_reads_a_session_file_through_a_pattern_dataset_yaml_two_folders_up(models, tmp_path):
    x = in_g(signals(120))
    pattern_dataset(tmp_path, x)
    done = cli_stream(models, tmp_path, "--input", "mydata/s01/day1/walking_t1.csv")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == ("reading mydata/s01/day1/walking_t1.csv as a session of mydata/dataset.yaml "
                                           "(columns, units and rate from it; values converted to the model's units)")
    assert len(done.stderr.splitlines()) == 2 and "predictions" in done.stderr.splitlines()[1]
    got = [json.loads(line) for line in done.stdout.splitlines()]  # stdout: JSON lines only
    plain, error = stream_text(open_model(models["onnx"]), csv_text(x.astype(np.float64) * G))  # the model's units
    assert error is None and len(probabilities_of(got)) == (120 - WINDOW) // STRIDE + 1
    np.testing.assert_allclose(probabilities_of(got), probabilities_of(plain), atol=1e-6)
    assert got[0]["input_rate_hz"] == pytest.approx(RATE)


def test_a_plain_csv_beside_or_under_a_dataset_yaml_is_read_as_plain(models, tmp_path):
    model = open_model(models["pt"])
    x = signals(60)
    g_session = own_session(tmp_path / "generic", x, "g")  # header: time and the channels' names, in g
    plain = _written(tmp_path / "generic" / "today.csv", csv_text(x))  # as `harkd data csv` writes one
    pattern_dataset(tmp_path / "own", x)
    matching = _written(tmp_path / "own" / "mydata" / "s01" / "day1" / "running_t1.csv", csv_text(x))
    for path in (plain, matching, _written(tmp_path / "own" / "mydata" / "s01" / "stream.csv", csv_text(x))):
        reading = choose_reading(path, model, plain_format(model))
        assert reading.spec.columns == NAMES and reading.spec.factors is None
        assert reading.note.startswith(f"reading {path} as a plain CSV (time column 'time', channels by name: "
                                       f"{', '.join(NAMES)}; values in the model's units)"), reading.note
    assert "lists it, but its header fits a plain CSV" in choose_reading(matching, model, plain_format(model)).note
    listed = choose_reading(g_session, model, plain_format(model))  # its header fits both: its dataset.yaml decides
    assert " as a session of " in listed.note and listed.spec.factors.tolist() == [G] * 3
    headerless = choose_reading(_written(tmp_path / "generic" / "raw.csv", csv_text(x, header=False)), model,
                                plain_format(model))
    assert "as a plain CSV (no header: time, then right_wrist/acc/x" in headerless.note


def test_cli_dataset_yaml_option_reads_any_file_or_stdin_as_that_dataset_describes(models, tmp_path):
    x = signals(80)
    pattern_dataset(tmp_path, x)
    (tmp_path / "elsewhere").mkdir()
    _written(tmp_path / "elsewhere" / "mine.csv", own_columns_csv(x))
    reference = probabilities_of(stream_text(open_model(models["onnx"]), csv_text(x.astype(np.float64) * G))[0])
    for args, text in ((["--input", "elsewhere/mine.csv"], None), (["--input", "-"], own_columns_csv(x))):
        done = cli_stream(models, tmp_path, *args, "--dataset-yaml", "mydata/dataset.yaml", text=text)
        assert done.returncode == 0, done.stderr
        shown = "stdin" if text else "elsewhere/mine.csv"
        assert done.stderr.startswith(f"reading {shown} as a session file as described by mydata/dataset.yaml "
                                      f"(columns, units and rate from it; values converted to the model's units)\n")
        got = probabilities_of([json.loads(line) for line in done.stdout.splitlines()])
        np.testing.assert_allclose(got, reference, atol=1e-6)
    missing = cli_stream(models, tmp_path, "--input", "elsewhere/mine.csv", "--dataset-yaml", "nowhere.yaml")
    assert_one_line_error(missing, "nowhere.yaml: --dataset-yaml file not found")


def test_cli_a_file_neither_plain_nor_a_session_above_is_a_one_line_error(models, tmp_path):
    pattern_dataset(tmp_path, signals(60))
    _written(tmp_path / "mydata" / "s01" / "day1" / "walking.csv", own_columns_csv(signals(60)))  # not MINE's
    done = cli_stream(models, tmp_path, "--input", "mydata/s01/day1/walking.csv")
    assert_one_line_error(done, "mydata/s01/day1/walking.csv: neither a plain CSV (no time, right_wrist/acc/x",
                          "in its header: t_ms, ax, ay, az, note) nor a session of a dataset.yaml in its folder or "
                          "above (mydata/dataset.yaml does not list it among its sessions)", "--dataset-yaml PATH")
    assert done.stdout == ""


@pytest.mark.parametrize("numbers, yaml", [("m/s^2", True), ("g", False)])
def test_cli_warns_when_the_numbers_do_not_fit_their_units(models, tmp_path, numbers, yaml):
    """A dataset.yaml declaring g over numbers in m/s^2, or a plain CSV of g numbers for a model in m/s^2: the
    stream still runs, and says once which channels, what they read and the fix (a warning event and a stderr line)."""
    x = in_g(signals(100))
    if yaml:
        pattern_dataset(tmp_path, x * G)
        done = cli_stream(models, tmp_path, "--input", "mydata/s01/day1/walking_t1.csv")
        where = "mydata/dataset.yaml: channels[0], channels[1], channels[2]"
        fix = "write unit: m/s^2 for these channels"
    else:
        _written(tmp_path / "today.csv", csv_text(x))
        done = cli_stream(models, tmp_path, "--input", "today.csv")
        where, fix = "today.csv: column right_wrist/acc/x, column right_wrist/acc/y, column right_wrist/acc/z", \
            "convert them to m/s^2, or read the file through a dataset.yaml (--dataset-yaml) saying unit: g"
    assert done.returncode == 0, done.stderr
    warnings = [json.loads(line)["message"] for line in done.stdout.splitlines() if '"warning"' in line]
    assert len(warnings) == 1 and f"{where}: right_wrist/acc reads" in warnings[0], warnings
    assert warnings[0].endswith(fix), warnings
    assert f"harkd: warning: {warnings[0]}" in done.stderr.splitlines()
    assert len(probabilities_of([json.loads(line) for line in done.stdout.splitlines()])) > 0
