"""int8 export and the device budget (harkd.deploy.quantise, harkd.deploy.budget, `harkd export --int8 --budget`):
budget figures against hand counts on tiny graphs, and the int8 graph of a small trained student calibrated on its
own training subjects, checked against fp32 and scored on its test subject."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_cli
from harkd.data.recording import ChannelSpec
from harkd.data.splits import Normaliser
from harkd.deploy.budget import device_budget, parse_budget, peak_activations, weight_bytes
from harkd.models.bundle import ModelBundle
from harkd.deploy.onnx_export import export_onnx
from harkd.deploy.quantise import plan_int8, quantisation_data
from harkd.errors import HarkdError
from harkd.models.base import build_model


def tiny_graph() -> onnx.ModelProto:
    """(1, 3, 20) -> Conv 4x3x5 (+bias) -> Relu -> GlobalAveragePool -> Flatten -> Gemm 4->2 (+bias) -> Softmax."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
               for name, shape in (("W", (4, 3, 5)), ("B", (4,)), ("G", (2, 4)), ("C", (2,)))]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["conv"]), helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pool"]), helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "G", "C"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probabilities"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 20])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_budget_figures_match_hand_counts():
    graph = tiny_graph()
    assert weight_bytes(graph) == (4 * 3 * 5 + 4 + 2 * 4 + 2) * 4
    # Conv reads x (3x20) and writes 4x16; then Relu reads 4x16 and writes 4x16 while x is gone: 128 elements.
    assert peak_activations(graph) == {"elements": 128, "bytes": 512}
    report = device_budget(graph, macs_per_window=1000, windows_per_second=2.5,
                           budget=parse_budget("flash=0.25KB,ram=1KB"))
    assert report["weights"] == {"fp32_bytes": 296, "int8_bytes": 74, "int8_measured": False}
    assert report["peak_activations"] == {"fp32_bytes": 512, "int8_bytes": 128}
    assert report["macs_per_second"] == 2500
    assert report["budget"]["flash"] == {"limit_bytes": 256, "needed_bytes": 296, "fits": False, "precision": "fp32"}
    assert report["budget"]["ram"]["fits"] is True


@pytest.mark.parametrize("text, expected", [("flash=64KB,ram=16KB", {"flash": 65536, "ram": 16384}),
                                            ("ram=2048", {"ram": 2048}), ("flash=1MB", {"flash": 1 << 20}),
                                            (None, {})])
def test_parse_budget(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["flash=64KiB", "rom=1KB", "flash"])
def test_a_bad_budget_is_a_one_line_error(text):
    with pytest.raises(HarkdError, match=r"--budget .*expected parts like flash=64KB,ram=16KB"):
        parse_budget(text)


def test_export_records_the_models_macs_per_window_and_second(tmp_path):
    model = build_model("cnn_student", 3, 5, width=4, depth=1)
    channels = [ChannelSpec("w", "acc", a, "m/s^2") for a in "xyz"]
    bundle = ModelBundle.of(model, "cnn_student", {"width": 4, "depth": 1}, channels, list("abcde"), 20, 25.0,
                            Normaliser(np.zeros(3, np.float32), np.ones(3, np.float32)))
    bundle.stride = 10
    spec = export_onnx(bundle, tmp_path / "m.onnx", budget={"ram": 1024})
    # conv 3->4, kernel 7, stride 4, 20 samples -> 5 outputs: 4*5*3*7; its BatchNorm 4*5; the head 4*5
    assert spec["device"]["macs_per_window"] == 4 * 5 * 3 * 7 + 4 * 5 + 4 * 5
    assert spec["device"]["macs_per_second"] == round(460 * 25 / 10)
    assert spec["input"]["stride"] == 10 and spec["precision"] == "fp32"
    assert json.loads((tmp_path / "m.json").read_text())["device"] == spec["device"]


def test_int8_export_is_calibrated_on_the_training_subjects_and_scored_on_the_test_subject(trained, tmp_path):
    import onnxruntime

    bundle, windows, y = trained
    data = quantisation_data(bundle)
    training = windows.x[windows.subjects != "S01"]
    assert len(data.pool) + len(data.check) == len(training) and len(data.calibration) <= len(data.pool)
    assert all((training == w).all(axis=(1, 2)).any() for w in data.calibration[:5])
    test = (windows.subjects == "S01") & (y >= 0)
    np.testing.assert_array_equal(data.test_y, y[test])
    spec = export_onnx(bundle, tmp_path / "student.onnx", int8=plan_int8(bundle, data, "post-training"))
    q = spec["int8"]
    assert spec["precision"] == "int8" and q["check"]["agreement"] >= 0.9
    assert q["test"]["windows"] == test.sum() and abs(q["test"]["delta_points"]) <= 8  # 39 windows: one is ~3 points
    weights = spec["device"]["weights"]
    assert weights["int8_measured"] and weights["int8_bytes"] < weights["fp32_bytes"] / 2.5
    graph = onnx.load(tmp_path / "student.onnx")
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.graph.node}
    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    int8 = session.run(["probabilities"], {"windows": windows.x[test]})[0]
    scored = bundle.predict(windows.x[test])
    assert (int8.argmax(1) == scored.argmax(1)).mean() >= 0.9 and not np.allclose(int8, scored, atol=1e-6)


def test_int8_without_provenance_needs_calibration_data(trained):
    from dataclasses import replace

    bundle, _, _ = trained
    with pytest.raises(HarkdError, match="names no dataset and test subjects to calibrate on; give --calibration"):
        quantisation_data(replace(bundle, provenance={}))
    data = quantisation_data(replace(bundle, provenance={}), calibration="synth")
    assert data.test_x is None and len(data.calibration) and len(data.check)


def test_cli_export_int8_with_a_budget(trained, data_root, tmp_path):
    bundle, _, _ = trained
    bundle.save(tmp_path / "student.pt")
    done = run_cli("export", str(tmp_path / "student.pt"), "--out", str(tmp_path / "int8.onnx"), "--int8",
                   "--budget", "flash=1KB,ram=16KB", data_root=data_root, check=True)
    assert "int8 (" in done.stdout and "held-out windows get fp32's class on ONNX Runtime; macro-F1 fp32" in done.stdout
    assert "flash" in done.stdout and "of 1 KB (int8): DOES NOT FIT" in done.stdout
    assert "ram" in done.stdout and "of 16 KB (int8): fits" in done.stdout
    described = json.loads((tmp_path / "int8.json").read_text())
    assert described["device"]["budget"]["flash"]["fits"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.json", "int8.onnx", "student.pt"]
