"""Neuron selectivity transfer (Huang & Wang 2017): match the distributions of channels' activation patterns."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from harkd.distill.base import Distiller, map_dim, match_length, register_distiller
from harkd.models.base import ModelOutput


def polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, N, T), (B, M, T) -> (B, N, M): (a_n . b_m)^2, the d=2, c=0 kernel."""
    return (a @ b.transpose(1, 2)).pow(2)


@register_distiller("nst", family="zoo")
class NSTKD(Distiller):
    """NST: squared MMD, polynomial kernel (d=2, c=0), between the L2-normalised channel time courses of two maps.

    Reads maps[student_map] and maps[teacher_map]. Ours for 1D signals: each channel's activation over time is one
    sample of the distribution (the paper uses a channel's spatial map); the channel counts may differ, and when the
    time lengths differ the student map is resampled linearly to the teacher's. The kernel means are over batch and
    channel pairs, as in the reference code; weight 50 is theirs.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 student_maps: Mapping[str, int], teacher_maps: Mapping[str, int], student_map: str = "feat",
                 teacher_map: str = "encoder", weight: float = 50.0, ce_weight: float = 1.0):
        super().__init__(ce_weight)
        map_dim(student_maps, student_map, "student")  # checks the names now, not at the first batch
        map_dim(teacher_maps, teacher_map, "teacher")
        self.student_map, self.teacher_map, self.weight = student_map, teacher_map, float(weight)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        teacher = teacher_out.maps[self.teacher_map].detach()
        student = F.normalize(match_length(student_out.maps[self.student_map], teacher.shape[-1]), dim=2)
        teacher = F.normalize(teacher, dim=2)
        mmd = (polynomial_kernel(teacher, teacher).mean() + polynomial_kernel(student, student).mean()
               - 2 * polynomial_kernel(student, teacher).mean())
        return {"loss_nst": self.weight * mmd}
