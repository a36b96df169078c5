"""TSAK (two-stage semantic-aware KD) teacher and its stage-2 semantic classifier.

Stage 1, TSAKTeacher: one conv encoder per position/sensor token (a grouped convolution, so every token has its own
weights at the cost of one kernel call), downsampling time by 16 (125 samples -> 8 steps). From the token feature
maps it builds
- Attn-Rep: multi-head self-attention across the tokens (time-pooled), i.e. cross-position/-modality interactions;
- Causal-Rep: a stacked LSTM (2 x 128 by default, as in DeepConvLSTM) over the downsampled time sequence of all
  tokens' fused features (last state);
- Combi-Rep: an MLP over both.
Each rep has its own linear head; the teacher's logits are the mean of the three heads' logits, and its training loss
(`TSAKTeacher.loss`) is the sum of the cross-entropies of the three heads and of the mean.

Stage 2, SemanticClassifier: a small MLP over the concatenated (detached) reps of the frozen teacher.
TwoStageTeacher bundles both into the single teacher output the distillers read: the teacher's ModelOutput with the
semantic classifier's logits added as head_logits["semantic"] (what SC-Logit KD distils).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harkd.errors import HarkdError
from harkd.models.base import HarModel, ModelOutput, register_model

REP_NAMES = ("attn", "causal", "combi")


def default_channel_groups(in_channels: int, size: int = 3) -> list[list[int]]:
    """Consecutive groups of `size` channels (one tri-axial sensor each); the last may be smaller."""
    return [list(range(start, min(start + size, in_channels))) for start in range(0, in_channels, size)]


def _check_groups(groups: Sequence[Sequence[int]], in_channels: int) -> list[list[int]]:
    groups = [[int(c) for c in group] for group in groups]
    flat = sorted(c for group in groups for c in group)
    if not groups or any(not group for group in groups) or flat != list(range(in_channels)):
        raise HarkdError(f"channel_groups must split the {in_channels} input channels into non-empty groups, each "
                         f"channel in exactly one group; got {groups}")
    return groups


@register_model("tsak_teacher")
class TSAKTeacher(HarModel):
    """Multi-position TSAK teacher: x (B, C, T) -> logits, reps {attn, causal, combi}, head_logits per rep."""

    def __init__(self, in_channels: int, n_classes: int, channel_groups: Sequence[Sequence[int]] | None = None,
                 width: int = 32, attn_dim: int = 64, heads: int = 4, hidden: int = 128, lstm_layers: int = 2,
                 combi_dim: int = 128, dropout: float = 0.2):
        super().__init__()
        groups = _check_groups(channel_groups or default_channel_groups(in_channels), in_channels)
        n_tokens, group_size = len(groups), max(len(group) for group in groups)
        # Gather map into (token, slot) order; short groups point at an appended all-zero channel.
        index = [group + [in_channels] * (group_size - len(group)) for group in groups]
        self.register_buffer("gather_index", torch.tensor(index).flatten(), persistent=False)
        self.n_tokens, self.width = n_tokens, width

        def block(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv1d(c_in * n_tokens, c_out * n_tokens, kernel, stride, kernel // 2, groups=n_tokens, bias=False),
                nn.BatchNorm1d(c_out * n_tokens), nn.ReLU())

        # Most of a CPU epoch is spent here: the first block (a few raw channels in) is half width and stride 4.
        self.encoder = nn.Sequential(block(group_size, width // 2, 7, 4), block(width // 2, width, 5, 2),
                                     block(width, width, 3, 2))
        self.token_proj = nn.Linear(width, attn_dim)
        self.token_embed = nn.Parameter(torch.zeros(n_tokens, attn_dim))  # which position/sensor a token is
        self.attention = nn.MultiheadAttention(attn_dim, heads, dropout=dropout, batch_first=True)
        self.attn_norm = nn.LayerNorm(attn_dim)
        self.fuse = nn.Linear(n_tokens * width, hidden)
        self.lstm = nn.LSTM(hidden, hidden, lstm_layers, batch_first=True)
        self.combine = nn.Sequential(nn.Linear(attn_dim + hidden, combi_dim), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.rep_dims = {"attn": attn_dim, "causal": hidden, "combi": combi_dim}
        self.map_dims = {"encoder": n_tokens * width, "causal": hidden}
        self.heads = nn.ModuleDict({name: nn.Linear(dim, n_classes) for name, dim in self.rep_dims.items()})

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x = F.pad(x, (0, 0, 0, 1))[:, self.gather_index]  # (B, tokens * slots, T)
        features = self.encoder(x)  # (B, tokens * width, T / 16)
        batch, _, steps = features.shape

        tokens = self.token_proj(features.view(batch, self.n_tokens, self.width, steps).mean(-1)) + self.token_embed
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        attn = self.attn_norm(tokens + attended).mean(1)

        sequence, _ = self.lstm(F.relu(self.fuse(features.transpose(1, 2))))
        causal = sequence[:, -1]

        reps = {"attn": attn, "causal": causal, "combi": self.combine(torch.cat([attn, causal], 1))}
        head_logits = {name: head(self.dropout(reps[name])) for name, head in self.heads.items()}
        logits = torch.stack(list(head_logits.values())).mean(0)
        return ModelOutput(logits=logits, reps=reps, head_logits=head_logits,
                           maps={"encoder": features, "causal": sequence.transpose(1, 2)})

    @staticmethod
    def loss(output: ModelOutput, targets: torch.Tensor) -> torch.Tensor:
        """Stage-1 training loss: CE of the combined logits plus CE of each rep's head."""
        return F.cross_entropy(output.logits, targets) + sum(
            F.cross_entropy(output.head_logits[name], targets) for name in REP_NAMES)


@register_model("tsak_semantic")
class SemanticClassifier(HarModel):
    """Stage 2: an MLP over the concatenated, detached teacher reps (in_channels = their total width).

    forward takes the teacher's ModelOutput, not a signal window; build it with `for_teacher`.
    """

    def __init__(self, in_channels: int, n_classes: int, hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, n_classes)
        self.rep_dims = {"semantic": hidden}

    @classmethod
    def for_teacher(cls, teacher: TSAKTeacher, n_classes: int, **kwargs) -> "SemanticClassifier":
        return cls(sum(teacher.rep_dims[name] for name in REP_NAMES), n_classes, **kwargs)

    def forward(self, teacher_out: ModelOutput) -> ModelOutput:
        # Detached: stage 2 never changes the teacher.
        hidden = self.mlp(torch.cat([teacher_out.reps[name].detach() for name in REP_NAMES], 1))
        return ModelOutput(logits=self.head(hidden), reps={"semantic": hidden})


class TwoStageTeacher(nn.Module):
    """The frozen TSAK teacher as distillers see it: the teacher's output plus head_logits["semantic"]."""

    def __init__(self, teacher: TSAKTeacher, semantic: SemanticClassifier):
        super().__init__()
        self.teacher, self.semantic = teacher, semantic
        self.rep_dims, self.map_dims = teacher.rep_dims, teacher.map_dims

    def forward(self, x: torch.Tensor) -> ModelOutput:
        out = self.teacher(x)
        return ModelOutput(logits=out.logits, reps=out.reps, maps=out.maps,
                           head_logits={**out.head_logits, "semantic": self.semantic(out).logits})


def semantic_input_dims(rep_dims: Mapping[str, int]) -> list[int] | None:
    """The widths of the reps stage 2 reads, in order; None for a teacher without TSAK's reps (it has no stage 2)."""
    return [rep_dims[name] for name in REP_NAMES] if all(name in rep_dims for name in REP_NAMES) else None


def stack_reps(reps: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The teacher's TSAK reps side by side: what OnStackedReps reads."""
    return torch.cat([reps[name] for name in REP_NAMES], 1)


class OnStackedReps(nn.Module):
    """A semantic classifier on the teacher's reps stacked in one tensor (stack_reps), so stage 2 trains and predicts
    with the ordinary loop on reps computed once."""

    def __init__(self, semantic: SemanticClassifier, dims: Sequence[int]):
        super().__init__()
        self.semantic, self.dims = semantic, list(dims)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.semantic(ModelOutput(logits=x[:, :0], reps=dict(zip(REP_NAMES, x.split(self.dims, 1)))))
