"""FitNets (Romero et al. 2015): a hint loss between a student feature map and a teacher feature map."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from harkd.distill.base import Distiller, map_dim, match_length, register_distiller
from harkd.models.base import ModelOutput


@register_distiller("fitnets", family="zoo")
class FitNetsKD(Distiller):
    """FitNets hint: MSE between a 1x1-conv projection of a student map and a teacher map, on time series.

    Reads maps[student_map] (B, C_s, T_s) and maps[teacher_map] (B, C_t, T_t). Ours for 1D signals: the connector
    is a Conv1d(C_s, C_t, 1) (the image codebases use a conv + BN + ReLU regressor); when T_s != T_t the projected
    student map is resampled linearly to T_t. The loss is the mean squared error per element, trained in one stage
    together with CE (as in the reference codebases, not the paper's separate hint stage); weight 100 is theirs.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 student_maps: Mapping[str, int], teacher_maps: Mapping[str, int], student_map: str = "feat",
                 teacher_map: str = "encoder", weight: float = 100.0, ce_weight: float = 1.0):
        super().__init__(ce_weight)
        self.student_map, self.teacher_map, self.weight = student_map, teacher_map, float(weight)
        self.connector = nn.Conv1d(map_dim(student_maps, student_map, "student"),
                                   map_dim(teacher_maps, teacher_map, "teacher"), kernel_size=1)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        target = teacher_out.maps[self.teacher_map].detach()
        hint = match_length(self.connector(student_out.maps[self.student_map]), target.shape[-1])
        return {"loss_fitnets": self.weight * F.mse_loss(hint, target)}
