"""Mixed training windows for a method's `mixup` option: extra windows, each a convex mix of two training windows.

With a KD method the frozen teacher labels each mix (its outputs are computed once per fold, seed and mixup setting,
like its outputs on the training windows); the student alone (`none`) gets the labels mixed with the same weights
(Zhang et al.'s mixup), the control that tells the teacher's labels apart from the extra inputs. The draws use their
own generator, so a method with mixup leaves every other method's random numbers, and results, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from harkd.schema import PositiveFloat, PositiveInt, config_dataclass


LABELS = ("teacher", "mixed")


@config_dataclass("mixup")
class MixupSpec:
    """`copies` mixes per training window; weights drawn from Beta(alpha, alpha). `labels` says what a KD method's
    cross-entropy sees on the mixes: nothing ("teacher": the mixes carry the teacher's outputs only) or mixup's mixed
    labels ("mixed", beside the teacher's outputs). The student alone always trains on mixed labels."""

    copies: PositiveInt = 1
    alpha: PositiveFloat = 1.0
    labels: Literal[LABELS] = "teacher"


@dataclass(frozen=True)
class Mixes:
    """Which two training windows each mix takes, and the weight of the first."""

    first: torch.Tensor
    second: torch.Tensor
    weight: torch.Tensor

    @classmethod
    def draw(cls, n_windows: int, spec: MixupSpec, seed: int) -> "Mixes":
        rng = np.random.default_rng(seed)
        first = torch.arange(n_windows).repeat(spec.copies)
        second = torch.from_numpy(rng.integers(n_windows, size=len(first)))
        weight = torch.from_numpy(rng.beta(spec.alpha, spec.alpha, size=len(first))).float()
        return cls(first, second, weight)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The mixed windows of (N, C, T) windows `x` (any channel view of the same N windows)."""
        w = self.weight.to(x.dtype)[:, None, None]
        return w * x[self.first] + (1 - w) * x[self.second]

    def labels(self, y: torch.Tensor, n_classes: int) -> torch.Tensor:
        """Mixup's soft labels: the two windows' one-hot labels mixed with the windows' weights."""
        w = self.weight[:, None]
        return w * F.one_hot(y[self.first], n_classes) + (1 - w) * F.one_hot(y[self.second], n_classes)
