"""Classifier heads for pooled (or pooled-by-attention) features, and the size options each head uses."""

from __future__ import annotations

import math

import torch
from torch import nn

from harkd.errors import HarkdError

# Each head and the model options that size it (what a head search varies); "attention" pools by attention and
# classifies linearly, "linear+memory" mixes a linear and a memory head.
HEAD_OPTIONS: dict[str, tuple[str, ...]] = {
    "linear": (), "memory": ("memory_dim", "patterns_per_class"), "linear+memory": ("memory_dim", "patterns_per_class"),
    "mlp": ("head_hidden",), "attention": ("attention_dim",),
}
HEADS = tuple(HEAD_OPTIONS)


def mlp_head(in_features: int, hidden: int, n_classes: int) -> nn.Sequential:
    """Linear -> hard-swish -> linear: a nonlinear classifier on the pooled features."""
    if hidden < 1:
        raise HarkdError(f"mlp head: head_hidden must be >= 1, got {hidden}")
    return nn.Sequential(nn.Linear(in_features, hidden), nn.Hardswish(), nn.Linear(hidden, n_classes))


class AttentionPool(nn.Module):
    """Attention pooling over time, replacing the global average: one learned query q (D) scores each time step's
    key k_t = W_k x_t (D, no bias), weights a = softmax_t(q . k_t / sqrt(D)), output sum_t a_t x_t (B, C).
    With q = 0 the weights are uniform and the output is the time mean."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        if dim < 1:
            raise HarkdError(f"attention head: attention_dim must be >= 1, got {dim}")
        self.key = nn.Linear(channels, dim, bias=False)
        self.query = nn.Parameter(torch.randn(dim) / math.sqrt(dim))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, T) attention weights, summing to 1 over time."""
        scores = self.key(x.transpose(1, 2)) @ self.query / math.sqrt(self.query.numel())
        return torch.softmax(scores, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bct,bt->bc", x, self.weights(x))

    def own_macs(self, args, kwargs, output) -> int:
        """harkd.cost's hook (the key Linear is counted by its rule): the scores q . k_t, D MACs per time step,
        and the weighted sum over time, C MACs per time step (as MultiheadAttention's weighted sum of V)."""
        batch, channels, steps = args[0].shape
        return batch * steps * (self.query.numel() + channels)
