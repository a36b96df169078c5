"""Classification metrics on label arrays (numpy): the numbers every results row reports."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows are true classes, columns predictions."""
    return np.bincount(np.asarray(y_true) * n_classes + np.asarray(y_pred),
                       minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that occur in the labels or the predictions (as scikit-learn's default):
    a class absent from a test subject and never predicted neither helps nor hurts."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.union1d(y_true, y_pred)
    if classes.size == 0:
        return 0.0
    true_pos = np.array([np.sum((y_true == c) & (y_pred == c)) for c in classes], dtype=float)
    support = np.array([np.sum(y_true == c) for c in classes], dtype=float)
    predicted = np.array([np.sum(y_pred == c) for c in classes], dtype=float)
    return float(np.mean(2 * true_pos / (support + predicted)))
