"""The README's main path as a user types it, on a tiny config: `harkd run` keeps its models (the config says so),
`harkd personalise` works on them, each worker's personalised student exports as ONNX fp32, ONNX int8 and TFLM, `harkd
data csv` writes the worker's unseen part and `harkd stream` predicts on it with every export, ending with latency
and throughput; and every shipped config's student exports in all three forms."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import run_cli, run_config
from harkd.models.bundle import load_bundle

UNIT = "loso-S01-seed0"
QUICK = {"epochs": 2, "batch_size": 32, "patience": 2}


def has_tflm() -> bool:
    import importlib.util

    return importlib.util.find_spec("tflite_micro") is not None


@pytest.fixture(scope="module")
def main_job(data_root, tmp_path_factory):
    """The tiny main job through the CLI: a personalise section and keep_models in the config, no flag."""
    folder = tmp_path_factory.mktemp("chain")
    raw = run_config(methods=["none"], keep_models=True,
                     personalise={"calibration": 0.5, "adapt": {"steps": 20}, "labels": ["teacher"], "train": QUICK})
    (folder / "main.yaml").write_text(yaml.safe_dump(raw))
    done = run_cli("run", str(folder / "main.yaml"), "--out", str(folder / "run"), data_root=data_root, check=True)
    return folder, done


def test_the_main_job_keeps_teacher_students_and_each_workers_personalised_student(main_job):
    folder, done = main_job
    unit = folder / "run" / "models" / UNIT
    assert sorted(p.name for p in unit.iterdir()) == ["personalised-cnn_student-none-S01.pt",
                                                      "student-cnn_student-none.pt", "teacher.pt"]
    assert "kept 3 models in" in done.stderr and "MB; layout: docs/deploy.md" in done.stderr
    personalised = load_bundle(unit / "personalised-cnn_student-none-S01.pt")
    report = personalised.provenance["personalised"]
    assert report["subject"] == "S01" and report["scored"] == {"from": 0.5, "protocol": "same_recordings",
                                                               "windows": report["scored"]["windows"]}
    assert report["guard"]["kept"] in ("adapted", "untouched") and report["after"]["student_macro_f1"] is not None
    student = load_bundle(unit / "student-cnn_student-none.pt")
    differs = any(not torch.equal(student.state_dict[k], personalised.state_dict[k]) for k in student.state_dict)
    assert differs == (report["guard"]["kept"] == "adapted")
    results = json.loads((folder / "run" / "results.json").read_text())
    guarded = next(r for r in results["rows"] if r["method"] == "none+guarded")
    assert abs(guarded["macro_f1"] - report["after"]["student_macro_f1"]) < 1e-4  # one worker: the row's score


def test_personalise_works_verbatim_on_the_main_jobs_models(main_job, data_root):
    folder, _ = main_job
    unit = folder / "run" / "models" / UNIT
    done = run_cli("personalise", str(unit / "student-cnn_student-none.pt"), "--teacher", str(unit / "teacher.pt"),
                   "--dataset", "synth", "--subject", "S01", "--adapt", "{steps: 10}", "--out",
                   str(folder / "again.pt"), data_root=data_root, check=True)
    assert "calibration windows of S01" in done.stdout and load_bundle(folder / "again.pt").provenance["personalised"]


@pytest.mark.parametrize("suffix, extra", [("-fp32.onnx", []), ("-int8.onnx", ["--int8"]), (".tflite", [])])
def test_each_export_of_the_personalised_student_streams_the_workers_unseen_windows(main_job, data_root, suffix,
                                                                                   extra):
    if suffix == ".tflite" and not has_tflm():
        pytest.skip("the tflm extra (tflite-micro) is not installed")
    folder, _ = main_job
    model = folder / "run" / "models" / UNIT / "personalised-cnn_student-none-S01.pt"
    out = folder / "export" / f"S01{suffix}"
    done = run_cli("export", str(model), "--out", str(out), *extra, data_root=data_root, check=True)
    assert "personalised to S01" in done.stdout
    if extra or suffix == ".tflite":  # scored on the worker's windows after the session, never the session's
        assert "windows: worker S01's windows after the calibration session" in done.stdout
        scored = json.loads(out.with_suffix(".json").read_text())["int8"]["test"]
        kept = load_bundle(model).provenance["personalised"]["scored"]["windows"]
        assert scored["windows"] == kept
    csv = folder / "S01-rest.csv"
    run_cli("data", "csv", "synth", "--subject", "S01", "--from", "0.5", "--channels",
            "position=right_wrist;modality=acc", "--out", str(csv), data_root=data_root, check=True)
    streamed = run_cli("stream", str(out), "--input", str(csv), data_root=data_root, check=True)
    events = [json.loads(line) for line in streamed.stdout.splitlines()]
    predictions = [e for e in events if "class" in e and "probabilities" in e]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["predictions"] == len(predictions) > 0
    assert summary["latency_ms_per_hop"]["p50"] > 0 and summary["samples_per_second"] > 0
    assert "latency per hop p50" in streamed.stderr and "samples/s" in streamed.stderr
    expected = load_bundle(model).predict(_windows(csv, load_bundle(model)))
    agree = np.mean([p["raw_class"] == load_bundle(model).class_names[int(k)]
                     for p, k in zip(predictions, expected.argmax(1))])
    assert agree >= (0.99 if suffix == "-fp32.onnx" else 0.85)


def _windows(csv: Path, bundle) -> np.ndarray:
    """The CSV cut as the stream cuts it: consecutive windows at the model's stride from the first sample."""
    import pandas as pd

    table = pd.read_csv(csv)
    x = table[bundle.channel_names].to_numpy(np.float32).T
    starts = range(0, x.shape[1] - bundle.window + 1, bundle.hop)
    return np.stack([x[:, s:s + bundle.window] for s in starts])
