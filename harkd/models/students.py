"""Compact students for few-channel inputs (e.g. one wrist accelerometer): a strided CNN and a causal conv+GRU."""

from __future__ import annotations

import torch
from torch import nn

from harkd.errors import HarkdError
from harkd.models.base import HarModel, ModelOutput, register_model


def _conv_stack(in_channels: int, width: int, depth: int, kernel: int, causal: bool) -> nn.Sequential:
    """`depth` conv-BN-ReLU blocks: the first (kernel 7, stride 4; half width if depth > 1) shrinks time early,
    the others (kernel `kernel`, stride 2) halve it again; time shrinks 4 * 2**(depth - 1) times in all."""
    if depth < 1 or width < 2:
        raise HarkdError(f"student: depth must be >= 1 and width >= 2, got depth={depth}, width={width}")
    widths = [in_channels] + [width // 2] * (depth > 1) + [width] * max(depth - 1, 1)
    blocks = []
    for i, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
        k, stride = (7, 4) if i == 0 else (kernel, 2)
        # Causal: all padding on the left, so no output depends on a later sample (streaming-friendly).
        pad = [nn.ConstantPad1d((k - 1, 0), 0.0)] if causal else []
        blocks += [*pad, nn.Conv1d(c_in, c_out, k, stride, 0 if causal else k // 2, bias=False),
                   nn.BatchNorm1d(c_out), nn.ReLU()]
    return nn.Sequential(*blocks)


@register_model("cnn_student")
class CNNStudent(HarModel):
    """Strided conv blocks, global average pooling, a linear head; reps={"feat": pooled features},
    maps={"feat": the last conv block's output}."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 32, depth: int = 3, kernel: int = 3,
                 dropout: float = 0.1):
        super().__init__()
        self.features = _conv_stack(in_channels, width, depth, kernel, causal=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, n_classes)
        self.rep_dims = {"feat": width}
        self.map_dims = {"feat": width}

    def forward(self, x: torch.Tensor) -> ModelOutput:
        feature_map = self.features(x)
        feat = feature_map.mean(-1)
        return ModelOutput(logits=self.head(self.dropout(feat)), reps={"feat": feat}, maps={"feat": feature_map})


@register_model("causal_student")
class CausalStudent(HarModel):
    """Causal strided conv blocks, then a GRU over the downsampled sequence; reps={"feat": last GRU state},
    maps={"feat": the GRU's output sequence}."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 16, depth: int = 3, kernel: int = 3,
                 hidden: int = 32, dropout: float = 0.1):
        super().__init__()
        self.features = _conv_stack(in_channels, width, depth, kernel, causal=True)
        self.gru = nn.GRU(width, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)
        self.rep_dims = {"feat": hidden}
        self.map_dims = {"feat": hidden}

    def forward(self, x: torch.Tensor) -> ModelOutput:
        sequence, _ = self.gru(self.features(x).transpose(1, 2))
        feat = sequence[:, -1]
        return ModelOutput(logits=self.head(self.dropout(feat)), reps={"feat": feat},
                           maps={"feat": sequence.transpose(1, 2)})
