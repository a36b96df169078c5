"""Decoupled KD (Zhao et al. 2022): target-class and non-target-class KD terms with separate weights."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from harkd.distill.base import Distiller, register_distiller
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput


def split_logits(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K) -> the true class's logit (B, 1) and the other K - 1 logits in class order (B, K - 1)."""
    is_target = F.one_hot(targets, logits.shape[1]).bool()
    return logits[is_target][:, None], logits[~is_target].view(len(logits), -1)


def binary_log_probabilities(target: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """log of (p_target, 1 - p_target) under softmax over [target, others], both from logsumexps: 1 - p_target
    computed as a difference rounds to 0 in float32 once the target's margin is ~20 and its log is then -inf."""
    log_norm = torch.logsumexp(torch.cat([target, others], 1), dim=1, keepdim=True)
    return torch.cat([target, torch.logsumexp(others, dim=1, keepdim=True)], 1) - log_norm


@register_distiller("dkd", family="zoo")
class DKD(Distiller):
    """DKD on the teacher's logits: alpha * TCKD + beta * NCKD, both scaled by T^2, with an optional warm-up.

    TCKD is the KL between the teacher's and the student's binary (target, non-target) probabilities; NCKD the KL
    between their distributions over the non-target classes; both are summed over classes and averaged over the
    batch (the reference formula). Reported as loss_tckd and loss_nckd. Computed in log space (log-softmax and
    logsumexp over the non-target classes; the reference subtracts 1000 from the target logit and takes the log of
    1 - p_target, which is -inf for a confident sample in float32): the same values on ordinary inputs, finite on
    any. Uses the logits only, so nothing is specific to 1D signals. alpha=1, beta=8, T=4 are the CIFAR defaults.
    Warm-up as in the reference (mdistiller: weight min(epoch / warmup, 1) with 1-based epochs): in 0-based epoch e
    (announced by start_epoch) the KD terms weigh min((e + 1) / warmup, 1), so `warmup` epochs ramp up to full
    weight; before the first start_epoch, as in epoch 0. The reference uses 20 of 240 epochs; default 0 (off).
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, warmup: int = 0,
                 ce_weight: float = 1.0):
        super().__init__(ce_weight)
        if temperature <= 0 or warmup < 0:
            raise HarkdError(f"dkd: temperature must be positive and warmup >= 0, got {temperature} and {warmup}")
        if n_classes < 2:
            raise HarkdError(f"dkd: needs at least 2 classes (a target and a non-target one), got {n_classes}")
        self.alpha, self.beta, self.temperature, self.warmup = float(alpha), float(beta), float(temperature), warmup
        self.epoch = 0  # the current epoch (0-based), for the warm-up

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def ramp(self) -> float:
        """The warm-up weight of the KD terms in the current epoch."""
        return min((self.epoch + 1) / self.warmup, 1.0) if self.warmup else 1.0

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        t, batch = self.temperature, len(targets)
        target_s, others_s = split_logits(student_out.logits / t, targets)
        target_t, others_t = split_logits(teacher_out.logits.detach() / t, targets)

        binary_s, binary_t = binary_log_probabilities(target_s, others_s), binary_log_probabilities(target_t, others_t)
        tckd = F.kl_div(binary_s, binary_t, reduction="sum", log_target=True) * t ** 2 / batch
        nckd = F.kl_div(F.log_softmax(others_s, dim=1), F.log_softmax(others_t, dim=1), reduction="sum",
                        log_target=True) * t ** 2 / batch
        return {"loss_tckd": self.ramp() * self.alpha * tckd, "loss_nckd": self.ramp() * self.beta * nckd}
