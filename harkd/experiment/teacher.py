"""The teacher stage of a fold: train the teacher, freeze it, run TSAK's stage 2 when the teacher has TSAK's reps,
and hand students what they distil from (the teacher's outputs on every split, computed once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harkd.experiment.config import ModelSpec
from harkd.experiment.folds import FoldLabels, Views
from harkd.experiment.teacher_cache import TeacherStore, teacher_key
from harkd.models.base import build_model
from harkd.models.tsak import OnStackedReps, TwoStageTeacher, semantic_input_dims, stack_reps
from harkd.train.engine import FitResult, TeacherTargets, TrainConfig, fit, predict, training_device


@dataclass(frozen=True)
class TeacherSettings:
    """What to train: the teacher, and TSAK's semantic classifier (None: no stage 2, e.g. in the head search)."""

    model: ModelSpec
    train: TrainConfig
    semantic: ModelSpec | None = None
    semantic_train: TrainConfig | None = None


@dataclass
class TrainedTeacher:
    """A fold's frozen teacher (eval mode, no gradients) and its outputs on the fold's splits, with the semantic
    classifier's logits as head_logits["semantic"] when there is one (the SC-Logit target)."""

    model: nn.Module
    fit: FitResult
    outputs: dict[str, TeacherTargets]  # train, val, test and, when the fold has them, calibration
    semantic: nn.Module | None = None  # on stacked reps (OnStackedReps)
    semantic_fit: FitResult | None = None
    device: torch.device = torch.device("cpu")  # where its outputs are computed: where it trained
    from_store: bool = False  # read from the teacher store (trained before on the same inputs), not trained now

    def label(self, x: torch.Tensor) -> TeacherTargets:
        """The teacher's targets on other windows of its channels (e.g. mixes)."""
        return self._with_semantic(predict(self.model, x, device=self.device))

    def frozen(self) -> nn.Module:
        """The teacher as one model, its semantic classifier's logits as head_logits["semantic"] (as kept)."""
        return self.model if self.semantic is None else TwoStageTeacher(self.model, self.semantic.semantic)

    def _with_semantic(self, targets: TeacherTargets) -> TeacherTargets:
        if self.semantic is not None:
            targets.head_logits["semantic"] = predict(self.semantic, stack_reps(targets.reps),
                                                      device=self.device).logits
        return targets


def train_teacher(settings: TeacherSettings, inputs: Views, y: FoldLabels, groups: list[list[int]], n_classes: int,
                  workdir: Path, seed: int, store: TeacherStore | None = None) -> TrainedTeacher:
    """Train and freeze the teacher, then its semantic classifier on its reps when both exist; with `store`, a
    teacher trained before on the same inputs, settings, seed and code is read from it instead (and a new one kept
    there)."""
    key = None if store is None else teacher_key(settings, [inputs.train, inputs.val, y.train, y.val], groups,
                                                 n_classes, seed)
    kept = None if store is None else store.load(key)
    torch.manual_seed(seed)
    teacher = build_model(settings.model.name, inputs.train.shape[1], n_classes, groups, **settings.model.params)
    if kept is None:
        result = fit(teacher, (inputs.train, y.train), (inputs.val, y.val), settings.train, workdir / "teacher",
                     seed=seed)
    else:
        teacher.load_state_dict(kept["teacher"])
        result = kept["fit"].with_model(teacher)
    teacher.eval().requires_grad_(False)
    splits = ("train", "val", "test") + (("calibration",) if len(inputs.calibration) else ())
    device = training_device(settings.train)
    trained = TrainedTeacher(teacher, result, {s: predict(teacher, getattr(inputs, s), device=device) for s in splits},
                             device=device, from_store=kept is not None)
    if settings.semantic is not None and semantic_input_dims(teacher.rep_dims) is not None:
        trained.semantic, trained.semantic_fit = _train_semantic(settings, trained.outputs, y, n_classes,
                                                                 workdir / "semantic", seed, kept)
        for targets in trained.outputs.values():
            trained._with_semantic(targets)
    if store is not None and kept is None:
        store.save(key, teacher, result, trained.semantic, trained.semantic_fit)
    return trained


def _train_semantic(settings: TeacherSettings, outputs: dict[str, TeacherTargets], y: FoldLabels, n_classes: int,
                    workdir: Path, seed: int, kept: dict | None) -> tuple[nn.Module, FitResult]:
    """TSAK stage 2 on the frozen teacher's reps (or its weights as `kept`); returned frozen like the teacher."""
    stacked = {s: stack_reps(outputs[s].reps) for s in ("train", "val")}
    dims = semantic_input_dims({name: rep.shape[1] for name, rep in outputs["train"].reps.items()})
    torch.manual_seed(seed)
    semantic = build_model(settings.semantic.name, sum(dims), n_classes, **settings.semantic.params)
    adapter = OnStackedReps(semantic, dims)
    if kept is None or kept["semantic"] is None:
        result = fit(adapter, (stacked["train"], y.train), (stacked["val"], y.val), settings.semantic_train, workdir,
                     seed=seed)
    else:
        adapter.load_state_dict(kept["semantic"])
        result = kept["semantic_fit"].with_model(adapter)
    return adapter.eval().requires_grad_(False), result


def semantic_inputs(trained: TrainedTeacher, split: str) -> torch.Tensor:
    """What the semantic classifier reads for one split (to score it on the test windows)."""
    return stack_reps(trained.outputs[split].reps)


__all__ = ["TeacherSettings", "TrainedTeacher", "train_teacher", "semantic_inputs"]
