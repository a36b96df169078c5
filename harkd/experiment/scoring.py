"""Results rows: one per (fold, seed, role, model, method), with the scores on the unit's scored windows and the
confusion matrix beside it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from harkd.data.splits import Fold
from harkd.experiment.rows import ResultRow
from harkd.metrics import confusion, macro_f1
from harkd.train.engine import FitResult, evaluate

View = tuple[str, int]  # the channel query as text, and the channel count


@dataclass
class Scorer:
    """Scores one unit's models: a results row each, and its confusion matrix under `role/model/method`."""

    dataset: str
    fold: Fold
    seed: int
    y_test: np.ndarray
    n_classes: int
    confusions: dict[str, np.ndarray] = field(default_factory=dict)

    def row(self, role: str, model_label: str, method: str, view: View, model: nn.Module, x_test: torch.Tensor,
            result: FitResult) -> ResultRow:
        """The model scored on the fold's test windows."""
        preds, _, _ = evaluate(model, x_test, self.y_test)
        return self.record(role, model_label, method, view, self.y_test, preds, result.epochs, result.train_time_s)

    def record(self, role: str, model_label: str, method: str, view: View, y: np.ndarray, preds: np.ndarray,
               epochs: int, train_time_s: float, labels: str | None = None) -> ResultRow:
        """A row for predictions made elsewhere (e.g. personalised models, on other windows than the fold's test;
        `labels`: those a personalised student was fine-tuned on)."""
        row = ResultRow(self.dataset, self.fold.name, tuple(self.fold.test_subjects), self.seed, role, model_label,
                        method, view[0], view[1], round(macro_f1(y, preds), 5), round(float((preds == y).mean()), 5),
                        epochs, round(train_time_s, 2), labels)
        self.confusions["/".join(row.key)] = confusion(y, preds, self.n_classes)
        return row


__all__ = ["Scorer", "View"]
