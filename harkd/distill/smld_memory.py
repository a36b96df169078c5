"""SMLDist memory distillation (our form): the student's retrieved Hopfield state matches the teacher's."""

from __future__ import annotations

from typing import Mapping

from harkd.distill.base import register_distiller
from harkd.distill.rep import RepKD


@register_distiller("smld_memory", family="smldist")
class MemoryKD(RepKD):
    """SMLDist memory KD (our form): the student's retrieved Hopfield state matches the teacher's (reps["memory"]).

    Both models need memory heads. As in the *_rep strategies: a linear connector, then the squared distance of the
    L2-normalised states. The paper's memory-distillation loss is not public.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 weight: float = 1.0, ce_weight: float = 1.0):
        super().__init__(student_dims, teacher_dims, n_classes, teacher_rep="memory", student_rep="memory",
                         weight=weight, ce_weight=ce_weight)
