"""Decoupled KD (Zhao et al. 2022): target-class and non-target-class KD terms with separate weights."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from harkd.distill.base import Distiller, register_distiller
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput

# Subtracted from the target class's logit so the non-target softmax gives it ~0 probability; finite (unlike -inf),
# so KL stays 0 * finite there, as in the reference code.
_MASK = 1000.0


def binary_probabilities(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, K) -> (B, 2): softmax(z / T) of the true class and of all other classes together."""
    p = F.softmax(logits / temperature, dim=1)
    p_target = p.gather(1, targets[:, None])
    return torch.cat([p_target, 1 - p_target], dim=1)


@register_distiller("dkd", family="zoo")
class DKD(Distiller):
    """DKD on the teacher's logits: alpha * TCKD + beta * NCKD, both scaled by T^2, with an optional warm-up.

    TCKD is the KL between the teacher's and the student's binary (target, non-target) probabilities; NCKD the KL
    between their distributions over the non-target classes (target logit masked before the softmax); both are
    summed over classes and averaged over the batch (the reference formula). Reported as loss_tckd and loss_nckd.
    Uses the logits only, so nothing is specific to 1D signals. alpha=1, beta=8, T=4 are the CIFAR defaults. Warm-up:
    the reference ramps the KD weight linearly over 20 of 240 epochs; distillers do not see epochs, so here it ramps
    over `warmup` training steps (forward calls in training mode; call k weighs min(k / warmup, 1)). Default 0 (off),
    because the right number of steps depends on dataset and batch size: set it to ~8% of the training steps.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, warmup: int = 0,
                 ce_weight: float = 1.0):
        super().__init__(ce_weight)
        if temperature <= 0 or warmup < 0:
            raise HarkdError(f"dkd: temperature must be positive and warmup >= 0, got {temperature} and {warmup}")
        self.alpha, self.beta, self.temperature, self.warmup = float(alpha), float(beta), float(temperature), warmup
        self.steps = 0  # training calls so far, for the warm-up

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training:
            self.steps += 1
        ramp = min(self.steps / self.warmup, 1.0) if self.warmup else 1.0
        student, teacher, t = student_out.logits, teacher_out.logits.detach(), self.temperature
        batch = len(targets)

        b_s, b_t = binary_probabilities(student, targets, t), binary_probabilities(teacher, targets, t)
        tckd = F.kl_div(torch.log(b_s), b_t, reduction="sum") * t ** 2 / batch

        mask = F.one_hot(targets, student.shape[1]).to(student.dtype) * _MASK
        log_q_s = F.log_softmax(student / t - mask, dim=1)
        q_t = F.softmax(teacher / t - mask, dim=1)
        nckd = F.kl_div(log_q_s, q_t, reduction="sum") * t ** 2 / batch
        return {"loss_tckd": ramp * self.alpha * tckd, "loss_nckd": ramp * self.beta * nckd}
