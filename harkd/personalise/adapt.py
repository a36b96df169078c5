"""How a kept student adapts to a new worker's calibration session: each option is named in `AdaptSpec` and has
its own rows in docs/results.md, the ones that lost included.

- `steps`: a fixed number of gradient steps, whatever the session's size. The default (None) is the run's epochs
  with early stopping on a held-back slice of the session, which gives a 15 s session a few dozen steps.
- `student_bn`: the student's batch-norm statistics during adaptation: updated by every batch (`train`), or
  re-estimated on the session before it and then frozen (`session`), or frozen as trained (`frozen`).
- `teacher_bn`: the teacher's statistics re-estimated on the session before it labels it (`session`), or the kept
  and the re-estimated teacher averaged (`ensemble`).
- `weighting`: which session windows the steps draw more often: the teacher's confident ones, or each class the
  teacher sees equally often, or both.
- `augment`: each drawn window jittered, scaled and rotated (per sensor's three axes) before the student reads it;
  its target stays the teacher's output on the clean window (consistency).
- `replay`: this share of every batch is the training workers' windows with their own labels, so that activities
  the session does not show are not forgotten. The worker's labels are never read.
- `layers`: all the student's weights, or only its classifier (`head`) for very small sessions.
- `ce_on_teacher`: the method's CE term reads the teacher's most probable class as each session window's label
  (hard labels beside the KD terms' soft ones); otherwise the session is unlabelled and only the KD terms train.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated, Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harkd.errors import HarkdError
from harkd.models.base import ModelOutput
from harkd.schema import Bool, Float, PositiveInt, config_dataclass
from harkd.train.engine import TrainConfig

ROTATED = ("acc", "gyro", "mag")  # vectors in the sensor's frame (a quaternion's x, y, z are not)
WEIGHTINGS = ("none", "confidence", "balanced", "confidence_balanced")


@config_dataclass("personalise.adapt")
class AdaptSpec:
    """The adaptation's options (module docstring); the defaults are the fine-tuning harkd shipped first."""

    steps: PositiveInt | None = None
    student_bn: Literal["train", "session", "frozen"] = "train"
    teacher_bn: Literal["kept", "session", "ensemble"] = "kept"
    weighting: Literal[WEIGHTINGS] = "none"
    augment: Bool = False
    replay: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    layers: Literal["all", "head"] = "all"
    ce_on_teacher: Bool = False

    @property
    def epochs_with_early_stopping(self) -> bool:
        return self.steps is None


@dataclass(frozen=True)
class Replay:
    """The training workers' windows (normalised as the student reads them) and their own labels."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class AxisGroups:
    """Which input channels are the three axes of one sensor, and the normalisation to undo before rotating them."""

    triples: tuple[tuple[int, int, int], ...]
    mean: torch.Tensor  # (C,)
    std: torch.Tensor


@torch.no_grad()
def reestimate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """`model` with every batch-norm layer's running statistics replaced by their average over `x` (AdaBN); weights
    untouched, the model left in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.eval()
    for m in norms:
        m.train()
    for first in range(0, len(x), batch_size):
        model(x[first:first + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def draw_weights(targets: torch.Tensor, weighting: str) -> torch.Tensor:
    """How often each session window is drawn, from the teacher's logits on it (never the worker's labels)."""
    probs = targets.softmax(1)
    weight = torch.ones(len(targets))
    if weighting in ("confidence", "confidence_balanced"):
        weight = probs.max(1).values
    if weighting in ("balanced", "confidence_balanced"):
        said = probs.argmax(1)
        counts = torch.bincount(said, minlength=targets.shape[1]).float()
        weight = weight / counts[said]
    return weight / weight.sum()


def _rotations(n: int, max_degrees: float, generator: torch.Generator) -> torch.Tensor:
    """n rotation matrices about random axes by angles up to `max_degrees` (Rodrigues)."""
    axis = F.normalize(torch.randn(n, 3, generator=generator), dim=1)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    k = torch.zeros(n, 3, 3)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    eye = torch.eye(3).expand(n, 3, 3)
    return eye + torch.sin(angle)[:, None, None] * k + (1 - torch.cos(angle))[:, None, None] * (k @ k)


def augment(x: torch.Tensor, axes: AxisGroups | None, generator: torch.Generator, jitter: float = 0.05,
            scale: float = 0.1, max_degrees: float = 15.0) -> torch.Tensor:
    """Windows (normalised) with each sensor rotated a little in its own frame, then scaled and jittered."""
    out = x.clone()
    if axes is not None and axes.triples:
        raw = out * axes.std[None, :, None] + axes.mean[None, :, None]
        for triple in axes.triples:
            idx = list(triple)
            raw[:, idx] = _rotations(len(x), max_degrees, generator) @ raw[:, idx]
        out = (raw - axes.mean[None, :, None]) / axes.std[None, :, None]
    factor = 1 + scale * torch.randn(len(x), 1, 1, generator=generator)
    return out * factor + jitter * torch.randn(out.shape, generator=generator)


def _trainable(model: nn.Module, layers: str) -> list[nn.Parameter]:
    if layers == "all":
        return list(model.parameters())
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise HarkdError(f"personalise.adapt.layers: head: {type(model).__name__} has no `head` layer to adapt alone")
    return list(head.parameters())


def _batch_norm_mode(model: nn.Module, student_bn: str) -> None:
    model.train()
    if student_bn != "train":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _slice(out: ModelOutput, rows: slice) -> ModelOutput:
    pick = lambda named: {k: v[rows] for k, v in named.items()}  # noqa: E731
    return ModelOutput(out.logits[rows], pick(out.reps), pick(out.head_logits), pick(out.maps))


SessionLoss = Callable[[ModelOutput, torch.Tensor], torch.Tensor]  # (outputs on drawn windows, their indices)


def adapt_steps(student: nn.Module, x: torch.Tensor, session_loss: SessionLoss, weights: torch.Tensor,
                spec: AdaptSpec, train: TrainConfig, seed: int, extra_params: Sequence[nn.Parameter] = (),
                replay: Replay | None = None, axes: AxisGroups | None = None) -> nn.Module:
    """A copy of `student` trained for `spec.steps` steps on batches drawn (by `weights`) from the session windows
    `x` and, with `spec.replay`, from the training workers' windows; one forward pass per step over both, so batch
    statistics see the mix the batch holds. `extra_params` train too (a distiller's connectors)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = copy.deepcopy(student)
    if spec.student_bn == "session":
        reestimate_bn(model, x)
    params = _trainable(model, spec.layers)
    chosen = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    optimiser = torch.optim.AdamW(params + list(extra_params), lr=train.lr, weight_decay=train.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=spec.steps)
    n_replay = int(round(spec.replay * train.batch_size)) if replay is not None else 0
    n_session = train.batch_size - n_replay
    for _ in range(spec.steps):
        _batch_norm_mode(model, spec.student_bn)
        index = torch.multinomial(weights, n_session, replacement=True, generator=generator)
        batch = augment(x[index], axes, generator) if spec.augment else x[index]
        if n_replay:
            pick = torch.randint(len(replay.x), (n_replay,), generator=generator)
            batch = torch.cat([batch, replay.x[pick]])
        out = model(batch)
        loss = session_loss(_slice(out, slice(0, n_session)), index)
        if n_replay:
            loss = (1 - spec.replay) * loss + spec.replay * F.cross_entropy(out.logits[n_session:], replay.y[pick])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def axis_groups(names: list[str], mean: np.ndarray, std: np.ndarray) -> AxisGroups:
    """The x, y, z channels of each sensor among channel names "position/modality/axis[@sensor]"."""
    where: dict[tuple[str, str], dict[str, int]] = {}
    for i, name in enumerate(names):
        position, modality, rest = name.split("/", 2)
        axis, _, sensor = rest.partition("@")
        where.setdefault((position + "@" + sensor, modality), {})[axis] = i
    triples = tuple((g["x"], g["y"], g["z"]) for (_, modality), g in where.items()
                    if modality in ROTATED and {"x", "y", "z"} <= set(g))
    return AxisGroups(triples, torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32))


__all__ = ["AdaptSpec", "AxisGroups", "Replay", "WEIGHTINGS", "adapt_steps", "augment", "axis_groups",
           "draw_weights", "reestimate_bn"]
