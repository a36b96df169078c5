"""MobileNetV3 for 1D sensor windows (SMLDist's backbone): teacher and student from one family by preset and width."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from harkd.errors import HarkdError
from harkd.models.base import HarModel, ModelOutput, register_model
from harkd.models.heads import HEADS, AttentionPool, mlp_head
from harkd.models.memory import HopfieldMemory

# Block rows: (kernel, expanded channels, output channels, squeeze-excitation, activation, stride).
# "small" and "large" are torchvision's MobileNetV3 tables (Howard et al. 2019); "tiny" is ours, sized to the
# cnn_student's budget (5,731 parameters, 0.124 MFLOPs on 3 x 125 inputs with 19 classes): 5,547 and 0.100.
PRESETS: dict[str, dict[str, Any]] = {
    "large": {"stem": 16, "last": 960, "blocks": [
        (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
        (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
        (3, 240, 80, False, "hardswish", 2), (3, 200, 80, False, "hardswish", 1),
        (3, 184, 80, False, "hardswish", 1), (3, 184, 80, False, "hardswish", 1),
        (3, 480, 112, True, "hardswish", 1), (3, 672, 112, True, "hardswish", 1),
        (5, 672, 160, True, "hardswish", 2), (5, 960, 160, True, "hardswish", 1),
        (5, 960, 160, True, "hardswish", 1)]},
    "small": {"stem": 16, "last": 576, "blocks": [
        (3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
        (5, 96, 40, True, "hardswish", 2), (5, 240, 40, True, "hardswish", 1), (5, 240, 40, True, "hardswish", 1),
        (5, 120, 48, True, "hardswish", 1), (5, 144, 48, True, "hardswish", 1),
        (5, 288, 96, True, "hardswish", 2), (5, 576, 96, True, "hardswish", 1), (5, 576, 96, True, "hardswish", 1)]},
    "tiny": {"stem": 8, "last": 32, "blocks": [
        (3, 8, 8, True, "relu", 2), (3, 24, 16, False, "relu", 2), (5, 32, 16, False, "hardswish", 2),
        (5, 32, 24, False, "hardswish", 2)]},
}
_ACTIVATIONS = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor` (at least `divisor`), never more than 10% below `value` (torchvision's
    rule, so width multipliers give hardware-friendly channel counts)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcite(nn.Module):
    """Channel gates from the time-pooled map: 1x1 conv to channels/4, ReLU, 1x1 conv back, hard-sigmoid."""

    def __init__(self, channels: int):
        super().__init__()
        squeeze = make_divisible(channels // 4)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Conv1d(channels, squeeze, 1), nn.ReLU(),
                                  nn.Conv1d(squeeze, channels, 1), nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    """1x1 expansion (skipped when expanded == in), depthwise conv with stride, optional SE, 1x1 linear projection;
    the input is added back only when the shape is kept (stride 1, in == out). Time: ceil(T / stride)."""

    def __init__(self, c_in: int, kernel: int, expanded: int, c_out: int, se: bool, activation: str, stride: int):
        super().__init__()
        if activation not in _ACTIVATIONS or kernel % 2 == 0 or stride < 1:
            raise HarkdError(f"mobilenet block: need an odd kernel, stride >= 1 and activation in "
                             f"{sorted(_ACTIVATIONS)}; got kernel={kernel}, stride={stride}, activation={activation!r}")
        act = _ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        if expanded != c_in:
            layers += [nn.Conv1d(c_in, expanded, 1, bias=False), nn.BatchNorm1d(expanded), act()]
        layers += [nn.Conv1d(expanded, expanded, kernel, stride, kernel // 2, groups=expanded, bias=False),
                   nn.BatchNorm1d(expanded), act()]
        if se:
            layers.append(SqueezeExcite(expanded))
        layers += [nn.Conv1d(expanded, c_out, 1, bias=False), nn.BatchNorm1d(c_out)]
        self.body = nn.Sequential(*layers)
        self.stride = stride
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


def _table(preset: str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise HarkdError(f"mobilenet_v3_1d: unknown preset {preset!r}; presets: {sorted(PRESETS)} or a mapping "
                             f"{{stem, last, blocks: [[kernel, expanded, out, se, activation, stride], ...]}}")
        return PRESETS[preset]
    if (not isinstance(preset, Mapping) or set(preset) != {"stem", "last", "blocks"} or not preset["blocks"]
            or any(len(row) != 6 for row in preset["blocks"])):
        raise HarkdError("mobilenet_v3_1d: a custom preset is a mapping with exactly stem, last and blocks "
                         "(a non-empty list of [kernel, expanded, out, se, activation, stride] rows)")
    return preset


def _stage_groups(strides: Sequence[int]) -> list[list[int]]:
    """Block indices per stage: a new stage starts at every downsampling block after the first one, so the blocks
    before the second anchor form stage 1 and each stage has one time resolution. (ours: anchor = stride > 1)"""
    groups: list[list[int]] = []
    seen_stride = False
    for i, stride in enumerate(strides):
        if not groups or (stride > 1 and seen_stride):
            groups.append([])
        seen_stride = seen_stride or stride > 1
        groups[-1].append(i)
    return groups


@register_model("mobilenet_v3_1d")
class MobileNetV3_1D(HarModel):
    """Stem conv (stride 2) + hard-swish, inverted residual blocks grouped into stages, a final 1x1 conv +
    hard-swish, global average pooling, then a head: "linear", "mlp" (one hidden layer of head_hidden units),
    "memory" (HopfieldMemory with patterns_per_class stored patterns per class, of size memory_dim, default the
    feature size), "linear+memory" (both, mixed by learned softmax-normalised weights) or "attention" (AttentionPool
    with attention_dim-sized keys instead of the average, then linear).

    reps={"feat": pooled features} (+ "memory": the retrieved Hopfield state, with a memory head);
    maps={"stage1".."stageN": each stage's last block output}. `preset` is "tiny", "small", "large" or a mapping
    {stem, last, blocks}; every channel count is scaled by `width` and rounded by make_divisible.
    """

    def __init__(self, in_channels: int, n_classes: int, preset: str | Mapping[str, Any] = "small",
                 width: float = 1.0, head: str = "linear", dropout: float = 0.2, patterns_per_class: int = 4,
                 memory_dim: int | None = None, memory_steps: int = 1, memory_beta: float | None = None,
                 head_hidden: int = 32, attention_dim: int = 16):
        super().__init__()
        if head not in HEADS:
            raise HarkdError(f"mobilenet_v3_1d: unknown head {head!r}; heads: {', '.join(HEADS)}")
        if width <= 0:
            raise HarkdError(f"mobilenet_v3_1d: width must be positive, got {width}")
        table = _table(preset)
        stem = make_divisible(table["stem"] * width)
        self.stem = nn.Sequential(nn.Conv1d(in_channels, stem, 3, 2, 1, bias=False), nn.BatchNorm1d(stem),
                                  nn.Hardswish())
        blocks, c_in = [], stem
        for kernel, expanded, c_out, se, activation, stride in table["blocks"]:
            c_out = make_divisible(c_out * width)
            blocks.append(InvertedResidual(c_in, kernel, make_divisible(expanded * width), c_out, bool(se),
                                           activation, stride))
            c_in = c_out
        groups = _stage_groups([block.stride for block in blocks])
        self.stages = nn.ModuleDict({f"stage{i + 1}": nn.Sequential(*(blocks[j] for j in group))
                                     for i, group in enumerate(groups)})
        last = make_divisible(table["last"] * width)
        self.last_conv = nn.Sequential(nn.Conv1d(c_in, last, 1, bias=False), nn.BatchNorm1d(last), nn.Hardswish())
        self.pool = AttentionPool(last, attention_dim) if head == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(last, n_classes) if head in ("linear", "linear+memory", "attention") else None
        self.mlp = mlp_head(last, head_hidden, n_classes) if head == "mlp" else None
        self.memory = (HopfieldMemory(last, n_classes, patterns_per_class * n_classes, memory_dim,
                                      memory_beta, memory_steps) if "memory" in head else None)
        # Mixed head: logits = w_linear * linear + w_memory * memory, w = softmax(mix); equal at initialisation.
        self.mix = nn.Parameter(torch.zeros(2)) if head == "linear+memory" else None
        self.rep_dims = {"feat": last, **({"memory": memory_dim or last} if self.memory is not None else {})}
        self.map_dims = {name: stage[-1].body[-1].num_features for name, stage in self.stages.items()}

    def forward(self, x: torch.Tensor) -> ModelOutput:
        maps = {}
        out = self.stem(x)
        for name, stage in self.stages.items():
            out = maps[name] = stage(out)
        final = self.last_conv(out)
        feat = final.mean(-1) if self.pool is None else self.pool(final)
        dropped = self.dropout(feat)
        reps = {"feat": feat}
        if self.memory is None:
            return ModelOutput(logits=(self.mlp or self.linear)(dropped), reps=reps, maps=maps)
        memory_logits, reps["memory"] = self.memory(dropped)
        if self.linear is None:
            return ModelOutput(logits=memory_logits, reps=reps, maps=maps)
        weights = torch.softmax(self.mix, dim=0)
        return ModelOutput(logits=weights[0] * self.linear(dropped) + weights[1] * memory_logits, reps=reps,
                           maps=maps)
