"""SMLDist logits distillation: Hinton KD whose target, where the teacher is wrong, is the smoothed label instead."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from harkd.distill.base import Distiller, register_distiller
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput


def conditional_targets(teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                        smoothing: float) -> torch.Tensor:
    """(B, K) target distributions: softmax(z_t / T) where argmax z_t is the label; elsewhere the smoothed one-hot
    label (1 - smoothing on the label, smoothing / (K - 1) on every other class). Softmax is applied here once."""
    n_classes = teacher_logits.shape[1]
    soft = torch.softmax(teacher_logits / temperature, dim=1)
    smoothed = torch.full_like(soft, smoothing / (n_classes - 1)).scatter_(1, labels[:, None], 1.0 - smoothing)
    correct = teacher_logits.argmax(1) == labels
    return torch.where(correct[:, None], soft, smoothed)


@register_distiller("smld_logit", family="smldist")
class ConditionalLogitKD(Distiller):
    """SMLDist logits KD: T^2 * KL(conditional target || softmax(z_s / T)), the target from conditional_targets.

    Defaults are the logit strategy's (CE 0.1, KD 0.9, T 4) and smoothing 0.1 (ours; the paper's values are unknown).
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 weight: float = 0.9, temperature: float = 4.0, smoothing: float = 0.1, ce_weight: float = 0.1):
        super().__init__(ce_weight)
        if temperature <= 0:
            raise HarkdError(f"KD temperature must be positive, got {temperature}")
        if not 0 <= smoothing < 1 or n_classes < 2:
            raise HarkdError(f"smld_logit: smoothing must be in [0, 1) with >= 2 classes, got {smoothing}, "
                             f"{n_classes} classes")
        self.weight, self.temperature, self.smoothing = float(weight), float(temperature), float(smoothing)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        target = conditional_targets(teacher_out.logits.detach(), targets, self.temperature, self.smoothing)
        log_p_s = F.log_softmax(student_out.logits / self.temperature, dim=1)
        # kl_div takes probabilities as the target (log_target=False); zero entries contribute 0.
        kl = F.kl_div(log_p_s, target, reduction="batchmean")
        return {"loss_smld_logit": self.weight * self.temperature ** 2 * kl}
