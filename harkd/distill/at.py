"""Attention transfer (Zagoruyko & Komodakis 2017): match where over time the feature maps are active."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from harkd.distill.base import Distiller, map_dim, match_length, register_distiller
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput


def attention_over_time(feature_map: torch.Tensor, p: float) -> torch.Tensor:
    """(B, C, T) -> (B, T): mean over channels of |F|^p, L2-normalised over time."""
    return F.normalize(feature_map.abs().pow(p).mean(1), dim=1)


@register_distiller("at", family="zoo")
class AttentionTransferKD(Distiller):
    """Attention transfer over time: squared distance of L2-normalised, channel-pooled |F|^p of two maps.

    Reads maps[student_map] and maps[teacher_map]. Ours for 1D signals: the attention map is a profile over time
    (B, T) instead of a spatial (B, H*W) one; channel pooling needs no connector, so channel counts may differ;
    when the time lengths differ the student map is resampled linearly to the teacher's. Loss as in the reference
    code, (at_s - at_t)^2 averaged over batch and time; p=2 and weight 1000 are the paper's.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 student_maps: Mapping[str, int], teacher_maps: Mapping[str, int], student_map: str = "feat",
                 teacher_map: str = "encoder", p: float = 2.0, weight: float = 1000.0, ce_weight: float = 1.0):
        super().__init__(ce_weight)
        map_dim(student_maps, student_map, "student")  # checks the names now, not at the first batch
        map_dim(teacher_maps, teacher_map, "teacher")
        if p <= 0:
            raise HarkdError(f"at: p must be positive, got {p}")
        self.student_map, self.teacher_map, self.p, self.weight = student_map, teacher_map, float(p), float(weight)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        target = teacher_out.maps[self.teacher_map].detach()
        student = match_length(student_out.maps[self.student_map], target.shape[-1])
        loss = (attention_over_time(student, self.p) - attention_over_time(target, self.p)).pow(2).mean()
        return {"loss_at": self.weight * loss}
