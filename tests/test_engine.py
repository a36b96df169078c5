"""The training loop: best weights restored, early stopping, determinism, per-epoch loss history, one pass per epoch."""

from __future__ import annotations

import numpy as np
import torch

from conftest import learnable_data
from harkd.distill.compose import build_method
from harkd.experiment.config import MethodSpec
from harkd.metrics import macro_f1
from harkd.models.base import ModelOutput, build_model
from harkd.train.engine import TrainConfig, fit, predict


def _fit(tmp_path, config: TrainConfig, seed: int = 0, **kwargs):
    x, y = learnable_data()
    torch.manual_seed(0)
    model = build_model("cnn_student", 3, 4)
    return fit(model, (x[:150], y[:150]), (x[150:], y[150:]), config, tmp_path, seed=seed, **kwargs), x[150:], y[150:]


def test_the_best_epochs_weights_come_back(tmp_path):
    # Validation labels are the training labels flipped: the more it learns, the worse it validates, so the best
    # epoch is an early one and the last epoch's weights are not the ones to keep.
    x = torch.randn(200, 1, 1)
    y = (x[:, 0, 0] > 0).long()
    result = fit(_Recorder(), (x, y), (x, 1 - y), TrainConfig(epochs=8, patience=8, lr=0.05, accelerator="cpu"),
                 tmp_path, seed=0)
    scores = [epoch["val_f1"] for epoch in result.history]
    assert result.best_val_f1 == max(scores) > scores[-1]
    preds = predict(result.model, x).logits.argmax(1).numpy()
    assert macro_f1((1 - y).numpy(), preds) == result.best_val_f1
    assert not result.model.training


def test_a_seeded_fit_repeats_exactly_and_another_seed_differs(tmp_path):
    config = TrainConfig(epochs=3, patience=3, accelerator="cpu")
    first, _, _ = _fit(tmp_path / "a", config, seed=5)
    again, _, _ = _fit(tmp_path / "b", config, seed=5)
    other, _, _ = _fit(tmp_path / "c", config, seed=6)
    def weights(result):
        return torch.cat([p.flatten() for p in result.model.state_dict().values() if p.is_floating_point()])

    assert torch.equal(weights(first), weights(again))
    assert not torch.equal(weights(first), weights(other))


def test_history_holds_each_kd_term_per_epoch(tmp_path):
    x, y = learnable_data()
    teacher = build_model("tsak_teacher", 3, 4).eval()
    targets = {"train": predict(teacher, x[:150])}
    torch.manual_seed(0)
    student = build_model("cnn_student", 3, 4)
    distiller = build_method(MethodSpec.parse("logit", "test"), student.rep_dims, teacher.rep_dims, 4)
    result = fit(student, (x[:150], y[:150]), (x[150:], y[150:]), TrainConfig(epochs=2, accelerator="cpu"),
                 tmp_path, seed=0, distiller=distiller, teacher=targets)
    assert [sorted(epoch) for epoch in result.history] == [["loss_ce", "loss_logit", "val_f1"]] * 2
    assert all(np.isfinite(epoch["loss_logit"]) and epoch["loss_logit"] > 0 for epoch in result.history)


class _Recorder(torch.nn.Module):
    """A linear classifier that records which windows each training step saw (each window is its own index)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 2)
        self.seen: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> ModelOutput:
        if self.training:
            self.seen.append(x[:, 0, 0].long().tolist())
        return ModelOutput(self.linear(x[:, :, 0]))


def test_an_epoch_visits_each_window_at_most_once_in_full_batches(tmp_path):
    n, batch = 70, 16
    x = torch.arange(n, dtype=torch.float32)[:, None, None]
    y = torch.arange(n) % 2
    model = _Recorder()
    fit(model, (x, y), (x[:10], y[:10]), TrainConfig(epochs=2, batch_size=batch, patience=5, accelerator="cpu"),
        tmp_path, seed=0)
    per_epoch = n // batch
    epochs = [sum(model.seen[e * per_epoch:(e + 1) * per_epoch], []) for e in range(2)]
    assert len(model.seen) == 2 * per_epoch and all(len(step) == batch for step in model.seen)
    assert all(len(set(windows)) == per_epoch * batch for windows in epochs)
    assert epochs[0] != epochs[1]  # reshuffled every epoch


def test_training_stops_after_patience_epochs_without_improvement(tmp_path):
    # lr 0 and no batch norm: the model never changes, so validation F1 never improves after the first epoch.
    x = torch.randn(100, 1, 1)
    y = torch.arange(100) % 2
    result = fit(_Recorder(), (x, y), (x, y), TrainConfig(epochs=20, patience=3, lr=0.0, accelerator="cpu"),
                 tmp_path, seed=0)
    assert result.epochs == len(result.history) == 1 + 3
    assert len({epoch["val_f1"] for epoch in result.history}) == 1
