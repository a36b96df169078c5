"""Logit KD (Hinton et al. 2015): match the teacher's temperature-softened class distribution."""

from __future__ import annotations

from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F

from harkd.distill.base import Distiller, register_distiller
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the batch; T^2 keeps gradients T-independent."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return temperature ** 2 * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


@register_distiller("logit", family="zoo")
class LogitKD(Distiller):
    """Hinton KD towards teacher_out.logits. Defaults are the image-KD ones (CE 0.1, KD 0.9, T 4), untuned here."""

    term: ClassVar[str] = "loss_logit"

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 weight: float = 0.9, temperature: float = 4.0, ce_weight: float = 0.1):
        super().__init__(ce_weight)
        if temperature <= 0:
            raise HarkdError(f"KD temperature must be positive, got {temperature}")
        self.weight, self.temperature = float(weight), float(temperature)

    def target_logits(self, teacher_out: ModelOutput) -> torch.Tensor:
        return teacher_out.logits

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        target = self.target_logits(teacher_out).detach()
        return {self.term: self.weight * soft_kl(student_out.logits, target, self.temperature)}
