"""int8 programs and TensorFlow Lite Micro (harkd.deploy.lowering, int8, onnx_int8, tflm, tflm_export): every model
with an int8 route lowers to a program that computes what it computes; ONNX Runtime and TFLM's own kernels compute
the int8 program as simulated in PyTorch; `harkd export --format tflm` writes the model, a C array and header, and
the arena TFLM measured, or one line and nothing."""

import json
import re

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from harkd.deploy.int8 import FakeQuant, post_training, quantisation_aware
from harkd.deploy.lowering import INPUT, LOWERINGS, lower
from harkd.errors import HarkdError
from harkd.models.base import build_model


VARIANTS = {"cnn_student": [{}, {"width": 8, "depth": 2}],
            "mobilenet_v3_1d": [{"preset": "tiny"}, {"preset": "tiny", "head": "mlp", "head_hidden": 8}]}


def needs_tflm():
    return pytest.importorskip("tflite_micro", reason="the tflm extra (tflite-micro) is not installed")


def random_model(name: str, params: dict) -> torch.nn.Module:
    """`name` with random weights and BatchNorm statistics far from the identity, in eval mode."""
    torch.manual_seed(0)
    model = build_model(name, 3, 6, None, **params)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


CASES = [(name, params) for name in LOWERINGS for params in VARIANTS[name]]


def test_every_lowering_has_variants_here():
    assert set(VARIANTS) == set(LOWERINGS)


@pytest.mark.parametrize("name, params", CASES)
def test_the_lowered_program_computes_what_the_model_computes(name, params):
    model = random_model(name, params)
    program = lower(model, name)
    x = torch.randn(16, 3, 50)
    with torch.no_grad():
        expected, got = model(x).logits, program(x)[program.logits].squeeze(-1)
    assert torch.allclose(expected, got, atol=1e-4), (expected - got).abs().max()
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in program.modules())


@pytest.mark.parametrize("name, params", CASES)
def test_a_program_resumed_at_any_step_from_the_tensors_before_it_gives_the_same_tensors(name, params):
    """What calibration relies on to try a tensor's grids without rerunning the steps before it."""
    program = lower(random_model(name, params), name)
    quant = FakeQuant(post_training(program, np.random.default_rng(0).normal(size=(32, 3, 50)).astype(np.float32))
                      .qparams)
    x = torch.randn(8, 3, 50)
    with torch.no_grad():
        whole = program(x, quant)
        for first in (1, len(program.steps) // 2, len(program.steps) - 1):
            before = {tensor: value for tensor, value in whole.items()
                      if tensor == INPUT or tensor in {step.output for step in program.steps[:first]}}
            resumed = program.resume(before, first, quant)
            assert resumed.keys() == whole.keys()
            assert all(torch.equal(resumed[k], whole[k]) for k in whole)


@pytest.mark.parametrize("name, params, fragment", [
    ("causal_student", {}, "causal_student has no int8 route"),
    ("mobilenet_v3_1d", {"preset": "tiny", "head": "memory"}, "mobilenet_v3_1d's memory head has no int8 kernel"),
])
def test_a_model_without_an_int8_route_is_named(name, params, fragment):
    with pytest.raises(HarkdError, match=re.escape(fragment)):
        lower(build_model(name, 3, 6, None, **params).eval(), name)


def calibrated(name: str, params: dict):
    program = lower(random_model(name, params), name)
    x = np.random.default_rng(0).normal(size=(96, 3, 50)).astype(np.float32)
    return post_training(program, x[:64]), x[64:]


@pytest.mark.parametrize("name, params", CASES)
def test_onnx_runtime_computes_the_simulated_int8_program(name, params):
    import onnxruntime

    from harkd.deploy.onnx_int8 import int8_onnx

    q, x = calibrated(name, params)
    mean, std = [0.5, -1.0, 2.0], [2.0, 3.0, 0.5]
    session = onnxruntime.InferenceSession(int8_onnx(q, mean, std, 50).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    raw = x * np.float32(std)[:, None] + np.float32(mean)[:, None]
    got = session.run(["logits"], {"windows": raw})[0]
    step = q.qparams[q.program.logits].scale
    assert np.abs(got - q.logits(x)).max() <= 3 * step + 1e-6
    assert (got.argmax(1) == q.logits(x).argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("name, params", CASES)
def test_tflm_kernels_compute_the_simulated_int8_program(name, params):
    needs_tflm()
    from harkd.deploy.tflm import arena_bytes, run_tflm, write_flatbuffer

    q, x = calibrated(name, params)
    flat = write_flatbuffer(q, 50, 3)
    grid, logits_grid = q.qparams["input"], q.qparams[q.program.logits]
    got = run_tflm(flat.data, x, grid, logits_grid)
    assert np.abs(got - q.logits(x)).max() <= 3 * logits_grid.scale + 1e-6
    assert "RESHAPE" not in flat.ops and "TRANSPOSE" not in flat.ops and flat.ops[-1] == "SOFTMAX"
    arena = arena_bytes(flat.data, grid.quantise(x[:1].transpose(0, 2, 1))[:, None])
    assert 0 < arena < 64 * 1024
    with pytest.raises(HarkdError):  # the arena TFLM measured is the least that runs, to 16 bytes
        arena_bytes(flat.data, grid.quantise(x[:1].transpose(0, 2, 1))[:, None], upper=arena - 32)


def test_quantisation_aware_fine_tuning_keeps_fp32s_classes():
    q, x = calibrated("cnn_student", {})
    aware = quantisation_aware(q.program, x, x, steps=20)
    with torch.no_grad():
        fp32 = q.program(torch.from_numpy(x))[q.program.logits].squeeze(-1).argmax(1).numpy()
    assert aware.method == "quantisation-aware" and aware.program is not q.program
    assert (aware.logits(x).argmax(1) == fp32).mean() >= 0.8


def test_cli_export_tflm_writes_the_model_its_c_array_header_and_description(trained, data_root, tmp_path):
    needs_tflm()
    from tflite_micro.python.tflite_micro import runtime

    bundle, windows, y = trained
    bundle.save(tmp_path / "student.pt")
    done = run_cli("export", str(tmp_path / "student.pt"), "--out", str(tmp_path / "student.tflite"),
                   "--quantisation", "post-training", data_root=data_root, check=True)
    assert "held-out windows get fp32's class on TFLite Micro" in done.stdout
    assert "tensor arena" in done.stdout and "measured by TFLM" in done.stdout
    spec = json.loads((tmp_path / "student.json").read_text())
    model = (tmp_path / "student.tflite").read_bytes()
    assert spec["format"] == "harkd-tflm" and spec["device"]["file_bytes"] == len(model)
    assert spec["int8"]["check"]["agreement"] >= 0.9 and spec["quantisation"] == "post-training"
    assert "CONV_2D" in spec["ops"] and "AddConv2D()" in spec["resolver"]
    array = (tmp_path / "student.cc").read_text()
    assert bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", array)) == model
    header = (tmp_path / "student.h").read_text()
    assert f"#define STUDENT_ARENA_BYTES {spec['device']['arena_bytes']}" in header
    assert f"MicroMutableOpResolver<{len(spec['ops'])}>" in header
    _compiles_as_firmware_would(tmp_path, len(model), spec["input"]["zero_point"])
    # The firmware's path: quantise raw samples with the header's constants, run TFLM, argmax the int8 logits.
    test = (windows.subjects == "S01") & (y >= 0)
    raw = windows.x[test][:20]
    grid = spec["input"]
    q = np.clip(np.round((raw - np.float32(grid["mean"])[:, None]) / np.float32(grid["std"])[:, None]
                         / grid["scale"]) + grid["zero_point"], -128, 127).astype(np.int8)
    tflm = runtime.Interpreter.from_bytes(model, arena_size=spec["device"]["arena_bytes"])
    picked = []
    for window in q.transpose(0, 2, 1)[:, None]:
        tflm.set_input(window[None], 0)
        tflm.invoke()
        picked.append(int(tflm.get_output(0).argmax()))
    assert np.mean(np.array(picked) == bundle.predict(raw).argmax(1)) >= 0.85


def _compiles_as_firmware_would(folder, length: int, zero_point: int) -> None:
    """The .cc and .h build with a C++ compiler, warnings as errors; the array holds the file, the quantiser maps
    the training mean to the input's zero point."""
    import shutil
    import subprocess

    if shutil.which("g++") is None:
        return
    (folder / "main.cc").write_text('#include "student.h"\n#include <cstdio>\nint main() { std::printf("%u %d", '
                                    'student_model_len, (int)student_quantise(student_mean[0], 0)); return 0; }\n')
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "main.cc", "student.cc", "-o", "firmware"],
                   cwd=folder, check=True, timeout=120)
    printed = subprocess.run([str(folder / "firmware")], capture_output=True, text=True, check=True).stdout
    assert printed == f"{length} {zero_point}"


@pytest.mark.parametrize("budget, fragment", [("ram=1KB", "tensor arena (measured by TFLM) needs"),
                                              ("flash=2KB", "the model file needs")])
def test_a_model_over_the_budget_is_one_line_and_nothing_is_written(trained, data_root, tmp_path, budget, fragment):
    needs_tflm()
    bundle, _, _ = trained
    bundle.save(tmp_path / "student.pt")
    done = run_cli("export", str(tmp_path / "student.pt"), "--out", str(tmp_path / "student.tflite"),
                   "--budget", budget, "--quantisation", "post-training", data_root=data_root)
    assert_one_line_error(done, fragment, "bytes, over the --budget", "nothing written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.pt"]


def test_an_onnx_export_never_overwrites_the_description_of_a_tflite_one(trained, data_root, tmp_path):
    needs_tflm()
    bundle, _, _ = trained
    bundle.save(tmp_path / "student.pt")
    run_cli("export", str(tmp_path / "student.pt"), "--out", str(tmp_path / "m.tflite"), "--quantisation",
            "post-training", data_root=data_root, check=True)
    described = (tmp_path / "m.json").read_text()
    done = run_cli("export", str(tmp_path / "student.pt"), "--out", str(tmp_path / "m.onnx"), data_root=data_root)
    assert_one_line_error(done, "m.json describes m.tflite; export m.onnx under another name")
    assert (tmp_path / "m.json").read_text() == described and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("out", ["student.tflite", "student.onnx"])
def test_a_model_without_an_int8_kernel_route_is_one_line_naming_it(trained, data_root, tmp_path, out):
    from dataclasses import replace

    bundle, _, _ = trained
    causal = build_model("causal_student", 3, len(bundle.class_names))
    replace(bundle, model="causal_student", params={},
            state_dict={k: v.clone() for k, v in causal.state_dict().items()}).save(tmp_path / "causal.pt")
    done = run_cli("export", str(tmp_path / "causal.pt"), "--out", str(tmp_path / out),
                   *(["--int8"] if out.endswith(".onnx") else []), data_root=data_root)
    assert_one_line_error(done, "causal_student has no int8 route", "GRU")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["causal.pt"]


@pytest.mark.realdata
def test_tflm_on_real_dsads_windows_picks_pytorchs_classes(installed_root, tmp_path, monkeypatch):
    """A cnn_student fitted briefly on DSADS's right-arm accelerometer (subjects p2-p8), exported to TFLM and
    compared with PyTorch on p1's windows."""
    needs_tflm()
    from harkd.data.catalog import load_windows
    from harkd.data.registry import WindowConfig
    from harkd.data.splits import Normaliser
    from harkd.models.bundle import ModelBundle
    from harkd.deploy.quantise import plan_int8, quantisation_data
    from harkd.deploy.tflm_export import export_tflm

    monkeypatch.setenv("HARKD_DATA", str(installed_root))
    windows = load_windows("dsads", WindowConfig(length=125, stride=125)).select(
        {"position": "right_arm", "modality": "acc"})
    y, class_names = windows.activity_targets()
    train = windows.subjects != "p1"
    mean, std = windows.x[train].mean((0, 2)), windows.x[train].std((0, 2))
    x = torch.from_numpy((windows.x[train] - mean[:, None]) / std[:, None])
    torch.manual_seed(0)
    model = build_model("cnn_student", 3, len(class_names))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        pick = torch.randint(len(x), (64,))
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x[pick]).logits, torch.from_numpy(y[train])[pick]).backward()
        optimiser.step()
    bundle = ModelBundle.of(model.eval(), "cnn_student", {}, windows.channels, class_names, 125, windows.rate_hz,
                            Normaliser(mean, std), dataset="dsads", fold="loso-p1", test_subjects=["p1"], seed=0,
                            role="student", method="none")
    bundle.stride = 125
    spec = export_tflm(plan_int8(bundle, quantisation_data(bundle), "post-training"), tmp_path / "m.tflite")
    test = spec["int8"]["test"]
    assert test["windows"] == int((windows.subjects == "p1").sum()) and test["macro_f1_fp32"] > 0.3
    assert spec["int8"]["check"]["agreement"] >= 0.95 and abs(test["delta_points"]) <= 3
    simulation = spec["int8"]["simulation"]
    assert simulation["argmax_agreement"] >= 0.98 and simulation["median_steps"] <= 1
    assert spec["device"]["file_bytes"] <= 12 * 1024 and spec["device"]["arena_bytes"] <= 6 * 1024
