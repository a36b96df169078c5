"""SMLDist stage distillation: each student stage's map, connected to the teacher's shape, regresses the teacher's."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harkd.distill.base import Distiller, map_dim, match_length, register_distiller
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput

SCHEDULES = ("joint",)


class StageAligner(nn.Module):
    """Pairs student and teacher feature maps by name and brings each student map to its teacher's shape: a 1x1
    Conv1d connector where the channel counts differ, linear time resampling where the lengths differ.

    Pairs: student_stages[i] -> teacher_stages[i]; one list alone names the same maps in both; neither means every
    map name both models have (stage1..stageN for two MobileNets), in the student's order.
    """

    def __init__(self, student_maps: Mapping[str, int], teacher_maps: Mapping[str, int],
                 student_stages: Sequence[str] | None, teacher_stages: Sequence[str] | None, strategy: str):
        super().__init__()
        if student_stages is None and teacher_stages is None:
            student_stages = teacher_stages = [name for name in student_maps if name in teacher_maps]
            if not student_stages:
                raise HarkdError(f"{strategy}: the student and the teacher share no feature map name (student: "
                                 f"{sorted(student_maps)}, teacher: {sorted(teacher_maps)}); pair maps with "
                                 f"student_stages and teacher_stages")
        student_stages = list(student_stages if student_stages is not None else teacher_stages)
        teacher_stages = list(teacher_stages if teacher_stages is not None else student_stages)
        if not student_stages or len(student_stages) != len(teacher_stages):
            raise HarkdError(f"{strategy}: student_stages and teacher_stages must pair up one to one, got "
                             f"{student_stages} and {teacher_stages}")
        self.pairs = list(zip(student_stages, teacher_stages))
        channels = [(map_dim(student_maps, s, "student"), map_dim(teacher_maps, t, "teacher")) for s, t in self.pairs]
        self.connectors = nn.ModuleList(nn.Identity() if c_s == c_t else nn.Conv1d(c_s, c_t, 1)
                                        for c_s, c_t in channels)

    def forward(self, student_out: ModelOutput, teacher_out: ModelOutput) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(connected student map, detached teacher map) per pair, both (B, C_teacher, T_teacher)."""
        aligned = []
        for (student, teacher), connector in zip(self.pairs, self.connectors):
            target = teacher_out.maps[teacher].detach()
            aligned.append((match_length(connector(student_out.maps[student]), target.shape[-1]), target))
        return aligned


@register_distiller("smld_stage")
class StageKD(Distiller):
    """SMLDist stage distillation: MSE between connected student stage maps and the teacher's, averaged over stages.

    schedule "joint" trains all stages at once, the only schedule offered: the paper's stage-by-stage training is a
    training-loop concern (harkd's engine has no per-epoch hook for distillers) and its timing is not published.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 student_maps: Mapping[str, int], teacher_maps: Mapping[str, int],
                 student_stages: Sequence[str] | None = None, teacher_stages: Sequence[str] | None = None,
                 weight: float = 1.0, schedule: str = "joint", ce_weight: float = 1.0):
        super().__init__(ce_weight)
        if schedule not in SCHEDULES:
            raise HarkdError(f"smld_stage: unknown schedule {schedule!r}; schedules: {', '.join(SCHEDULES)}")
        self.align = StageAligner(student_maps, teacher_maps, student_stages, teacher_stages, "smld_stage")
        self.weight = float(weight)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        pairs = self.align(student_out, teacher_out)
        return {"loss_stage": self.weight * sum(F.mse_loss(s, t) for s, t in pairs) / len(pairs)}
