"""SMLDist in one name: stage, conditional-smoothing logits, and optional frequency and memory terms."""

from __future__ import annotations

from typing import Mapping, Sequence

from harkd.distill.base import register_distiller
from harkd.distill.compose import CompositeKD
from harkd.distill.smld_freq import FrequencyKD
from harkd.distill.smld_logit import ConditionalLogitKD
from harkd.distill.smld_memory import MemoryKD
from harkd.distill.smld_stage import StageKD, check_schedule


@register_distiller("smldist", family="smldist")
class SMLDistKD(CompositeKD):
    """SMLDist in one name: smld_stage + smld_logit, plus smld_freq and smld_memory when their weights are > 0.

    Each term has its own weight and a weight of 0 leaves the term out (freq and memory are off by default; memory
    needs memory heads on both models; stage_weight 0 allows a student without stage maps). schedule is the stage
    term's (smld_stage): "joint" or "stagewise"; the other terms are on in every epoch either way.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 student_maps: Mapping[str, int], teacher_maps: Mapping[str, int],
                 student_stages: Sequence[str] | None = None, teacher_stages: Sequence[str] | None = None,
                 stage_weight: float = 1.0, logit_weight: float = 0.9, temperature: float = 4.0,
                 smoothing: float = 0.1, freq_weight: float = 0.0, memory_weight: float = 0.0,
                 schedule: str = "joint", ce_weight: float = 0.1):
        check_schedule(schedule, "smldist")  # also when stage_weight 0 leaves the stage term out
        dims = (student_dims, teacher_dims, n_classes)
        maps = dict(student_maps=student_maps, teacher_maps=teacher_maps, student_stages=student_stages,
                    teacher_stages=teacher_stages)
        terms = [(stage_weight, lambda: StageKD(*dims, **maps, weight=stage_weight, schedule=schedule)),
                 (logit_weight, lambda: ConditionalLogitKD(*dims, weight=logit_weight, temperature=temperature,
                                                           smoothing=smoothing)),
                 (freq_weight, lambda: FrequencyKD(*dims, **maps, weight=freq_weight)),
                 (memory_weight, lambda: MemoryKD(*dims, weight=memory_weight))]
        super().__init__([build() for weight, build in terms if weight > 0], ce_weight)
