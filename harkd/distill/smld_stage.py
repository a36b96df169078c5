"""SMLDist stage distillation: each student stage's map, connected to the teacher's shape, regresses the teacher's."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harkd.distill.base import Distiller, map_dim, match_length, register_distiller
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput

SCHEDULES = ("joint", "stagewise")


def check_schedule(schedule: str, strategy: str) -> str:
    """`schedule` if it is one of SCHEDULES, else a one-line error naming the option and the valid values."""
    if schedule not in SCHEDULES:
        raise HarkdError(f"{strategy}: unknown schedule {schedule!r}; schedules: {', '.join(SCHEDULES)}")
    return schedule


def stagewise_pair(epoch: int, epochs: int, n_pairs: int) -> int:
    """The stage pair trained in epoch `epoch` (0-based) of `epochs` under the stagewise schedule: the epochs split
    into n_pairs consecutive phases of epochs // n_pairs epochs, the last phase also taking the remainder. With fewer
    epochs than pairs each phase is one epoch and the pairs after the last epoch are never trained."""
    return min(epoch // max(epochs // n_pairs, 1), n_pairs - 1)


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

    def forward(self, student_out: ModelOutput, teacher_out: ModelOutput,
                only: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(connected student map, detached teacher map) per pair, both (B, C_teacher, T_teacher); with `only`,
        that pair alone (the other maps are neither read nor connected)."""
        aligned = []
        for i, ((student, teacher), connector) in enumerate(zip(self.pairs, self.connectors)):
            if only is not None and i != only:
                continue
            target = teacher_out.maps[teacher].detach()
            aligned.append((match_length(connector(student_out.maps[student]), target.shape[-1]), target))
        return aligned


@register_distiller("smld_stage", family="smldist")
class StageKD(Distiller):
    """SMLDist stage distillation: MSE between connected student stage maps and the teacher's, averaged over stages.

    schedule "joint" (default) matches every stage pair in every epoch. "stagewise" (ours: the paper trains stage by
    stage but publishes no schedule) splits the fit's epochs into one consecutive phase per pair (stagewise_pair)
    and matches only pair k during phase k, earlier pairs switched off; the engine announces each epoch through
    start_epoch, and before the first call pair 0 is active. `active_pair` is the pair matched now (None: all).
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 student_maps: Mapping[str, int], teacher_maps: Mapping[str, int],
                 student_stages: Sequence[str] | None = None, teacher_stages: Sequence[str] | None = None,
                 weight: float = 1.0, schedule: str = "joint", ce_weight: float = 1.0):
        super().__init__(ce_weight)
        self.schedule = check_schedule(schedule, "smld_stage")
        self.align = StageAligner(student_maps, teacher_maps, student_stages, teacher_stages, "smld_stage")
        self.weight = float(weight)
        self.active_pair: int | None = 0 if self.schedule == "stagewise" else None

    def start_epoch(self, epoch: int, epochs: int) -> None:
        if self.schedule == "stagewise":
            self.active_pair = stagewise_pair(epoch, epochs, len(self.align.pairs))

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        pairs = self.align(student_out, teacher_out, self.active_pair)
        return {"loss_stage": self.weight * sum(F.mse_loss(s, t) for s, t in pairs) / len(pairs)}
