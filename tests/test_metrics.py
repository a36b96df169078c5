import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_f1_score

from harkd.metrics import confusion, macro_f1


def test_macro_f1_by_hand():
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    # class 0: tp 1, support 2, predicted 2 -> 0.5; class 1: tp 2, 2, 3 -> 0.8; class 2: tp 0 -> 0
    assert macro_f1(y_true, y_pred) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_macro_f1_agrees_with_torchmetrics_when_every_class_occurs():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    reference = multiclass_f1_score(torch.tensor(y_pred), torch.tensor(y_true), num_classes=5, average="macro")
    assert macro_f1(y_true, y_pred) == pytest.approx(float(reference), abs=1e-6)


def test_absent_classes_are_ignored_and_confusion_counts():
    assert macro_f1(np.array([3, 3]), np.array([3, 3])) == 1.0
    cm = confusion(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
