"""The device and precision options of the training loop: bf16 autocast in the training steps only, fp32 untouched,
every KD strategy under bf16, the error when CUDA is asked for and absent; on a machine with CUDA, the same seeded fit
and the same teacher outputs as on the CPU."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import (KD_STRATEGIES, KD_STRATEGY_IDS, assert_one_line_error, build_strategy, learnable_data,
                      pair_outputs, run_cli, run_config, strategy_labels)
from harkd.errors import HarkdError
from harkd.experiment.config import parse_config
from harkd.models.base import build_model
from harkd.train.engine import TrainConfig, evaluate, fit, predict, training_device

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _fit_recording_dtypes(tmp_path, **options):
    """A tiny seeded fit of a CNN student, with the logits' dtype of every forward pass, in training or not."""
    x, y = learnable_data()
    torch.manual_seed(0)
    model = build_model("cnn_student", 3, 4)
    seen: list[tuple[bool, torch.dtype]] = []
    model.register_forward_hook(lambda module, _, out: seen.append((module.training, out.logits.dtype)))
    config = TrainConfig(epochs=2, batch_size=32, patience=2, **options)
    result = fit(model, (x[:150], y[:150]), (x[150:], y[150:]), config, tmp_path, seed=0)
    return result, seen


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.flatten() for p in model.state_dict().values() if p.is_floating_point()])


def test_bf16_runs_the_training_steps_under_autocast_and_fp32_does_not(tmp_path):
    fp32, fp32_seen = _fit_recording_dtypes(tmp_path / "fp32", accelerator="cpu")
    bf16, bf16_seen = _fit_recording_dtypes(tmp_path / "bf16", accelerator="cpu", precision="bf16")
    assert {dtype for _, dtype in fp32_seen} == {torch.float32}
    assert {dtype for training, dtype in bf16_seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in bf16_seen if not training} == {torch.float32}  # validation stays fp32
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # master weights stay fp32
    assert not torch.equal(_weights(fp32.model), _weights(bf16.model))


def test_the_default_precision_is_fp32_and_an_unknown_one_names_the_key():
    assert TrainConfig().precision == "fp32"
    raw = run_config()
    raw["students"]["train"] = {**raw["students"]["train"], "precision": "fp16"}
    with pytest.raises(HarkdError, match=r"students\.train\.precision: expected 'fp32' or 'bf16', got 'fp16'"):
        parse_config(raw)


@pytest.mark.parametrize("name,config", KD_STRATEGIES, ids=KD_STRATEGY_IDS)
def test_every_kd_strategy_trains_a_bf16_student_against_fp32_targets(name, config):
    """Under autocast the student's outputs are bf16 while the teacher's precomputed targets are fp32: every term
    must take the mix, stay finite and reach the connectors with finite fp32 gradients."""
    distiller = build_strategy(name, config)
    student, teacher = pair_outputs(8)
    student.logits.data = student.logits.data.bfloat16()
    for named in (student.reps, student.maps):
        for tensor in named.values():
            tensor.data = tensor.data.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = distiller(student, teacher, strategy_labels(8))
    loss = sum(terms.values())
    assert torch.isfinite(loss), {k: float(v) for k, v in terms.items()}
    loss.backward()
    assert all(p.grad is None or (p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all())
               for p in distiller.parameters())


def test_cuda_asked_for_without_one_is_an_error_naming_the_option(tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(HarkdError, match=r"accelerator: 'cuda' asked for, but torch .* sees no CUDA device"):
        TrainConfig(accelerator="cuda")
    # A config read where there was CUDA (a pickled one, say) is checked again where it trains.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = TrainConfig(accelerator="cuda")
    monkeypatch.undo()
    with pytest.raises(HarkdError, match=r"train\.accelerator: 'cuda' asked for"):
        training_device(config)


def test_a_run_asking_for_cuda_without_one_stops_with_one_line(data_root, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(methods=["none"])))
    result = run_cli("run", str(path), "teacher.train.accelerator=cuda", "--out", str(tmp_path / "out"),
                     data_root=data_root)
    assert_one_line_error(result, "train.accelerator: 'cuda'", "accelerator: auto or cpu")


@CUDA
def test_a_seeded_fit_on_cuda_scores_as_on_the_cpu(tmp_path):
    cpu, _ = _fit_recording_dtypes(tmp_path / "cpu", accelerator="cpu")
    cuda, _ = _fit_recording_dtypes(tmp_path / "cuda", accelerator="cuda")
    x, y = learnable_data()
    assert next(cuda.model.parameters()).device.type == "cpu"  # fit hands models back on the CPU, as it did
    f1 = [evaluate(result.model, x[150:], y[150:].numpy())[1] for result in (cpu, cuda)]
    assert f1[1] == pytest.approx(f1[0], abs=0.05)


@CUDA
def test_teacher_outputs_on_cuda_equal_the_cpus(tmp_path):
    x, _ = learnable_data()
    torch.manual_seed(0)
    teacher = build_model("tsak_teacher", 3, 4).eval()
    on_cpu, on_cuda = predict(teacher, x), predict(teacher, x, device=torch.device("cuda"))
    assert next(teacher.parameters()).device.type == "cpu"  # back where it was
    torch.testing.assert_close(on_cuda.logits, on_cpu.logits, atol=1e-5, rtol=1e-5)
    for name, rep in on_cpu.reps.items():
        torch.testing.assert_close(on_cuda.reps[name], rep, atol=1e-5, rtol=1e-5)
