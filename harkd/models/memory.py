"""A modern Hopfield memory head (Ramsauer et al. 2020): class scores read from patterns retrieved out of a store."""

from __future__ import annotations

import math

import torch
from torch import nn

from harkd.errors import HarkdError


class HopfieldMemory(nn.Module):
    """Associative retrieval over `n_patterns` learned stored patterns X (N, P), then a linear readout to classes.

    query xi = W_q feat; each of `steps` updates is the modern Hopfield rule xi <- softmax(beta * xi X^T) X, which
    converges to a stored pattern (or a mixture of similar ones) in one step when beta is large; logits =
    readout(xi). beta defaults to 1 / sqrt(P), the scaled dot-product value. forward returns (logits, xi).
    """

    def __init__(self, in_features: int, n_classes: int, n_patterns: int, pattern_dim: int | None = None,
                 beta: float | None = None, steps: int = 1):
        super().__init__()
        pattern_dim = pattern_dim or in_features
        if n_patterns < 1 or steps < 1:
            raise HarkdError(f"Hopfield memory: n_patterns and steps must be >= 1, got {n_patterns}, {steps}")
        self.query = nn.Linear(in_features, pattern_dim)
        self.patterns = nn.Parameter(torch.randn(n_patterns, pattern_dim))
        self.readout = nn.Linear(pattern_dim, n_classes)
        self.beta = float(beta) if beta is not None else 1.0 / math.sqrt(pattern_dim)
        self.steps = steps

    def retrieve(self, state: torch.Tensor) -> torch.Tensor:
        """`steps` Hopfield updates of the (B, P) state against the stored patterns."""
        for _ in range(self.steps):
            state = torch.softmax(self.beta * state @ self.patterns.t(), dim=-1) @ self.patterns
        return state

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.retrieve(self.query(feat))
        return self.readout(state), state

    def own_macs(self, args, kwargs, output) -> int:
        """harkd.cost's hook for the products with `patterns` (the Linear children are counted by their rule):
        per update, the scores xi X^T and the retrieval softmax(.) X, N * P MACs each per row."""
        rows = args[0].numel() // args[0].shape[-1]
        return rows * self.steps * 2 * self.patterns.numel()
