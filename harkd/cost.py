"""Model cost: parameters, FLOPs and batch-1 CPU latency, measured the same way for teachers and students.

FLOP convention: one multiply-accumulate (MAC) = 2 FLOPs, counted for the layers that hold the arithmetic:
- Conv1d: B * C_out * L_out * (C_in / groups) * k MACs (stride, padding and dilation enter through L_out).
- Linear: rows * in * out MACs, rows = every leading dimension of the input.
- MultiheadAttention: the q/k/v projections, Q K^T, the attention-weighted sum of V and the output projection
  (B * (Lq*E*E + Lk*kdim*E + Lk*vdim*E + 2*Lq*Lk*E + Lq*E*E) MACs).
- LSTM / GRU: per time step, layer and direction, every gate's input and hidden matrix products
  (4 gates for LSTM, 3 for GRU, plus the LSTM projection when proj_size > 0).
- BatchNorm / LayerNorm / GroupNorm: 1 MAC per output element (the affine scale and shift at inference).
Biases, activations, softmax, pooling, gate nonlinearities and residual additions are not counted: they are
elementwise and small next to the products. Counting uses forward hooks on those module types; a leaf module with
parameters of any other type is an error, so a model can never be under-counted silently. A module whose own
parameters enter products (e.g. a Hopfield memory's stored patterns) counts those itself: an `own_macs(args, kwargs,
output)` method, hooked like a rule, while its children are counted by theirs. (torch's
FlopCounterMode is not used: on CPU it misses recurrent layers, which run through fused aten kernels.)
"""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
from torch import nn

from harkd.errors import HarkdError

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or not (what the deployed model stores)."""
    return sum(p.numel() for p in model.parameters())


# Each rule gets (module, positional args, keyword args, output) of one call and returns its MACs.
def _conv_macs(module: nn.Conv1d, args, kwargs, output: torch.Tensor) -> int:
    return output.numel() * (module.in_channels // module.groups) * module.kernel_size[0]


def _linear_macs(module: nn.Linear, args, kwargs, output: torch.Tensor) -> int:
    return output.numel() * module.in_features


def _attention_macs(module: nn.MultiheadAttention, args, kwargs, output) -> int:
    query = args[0] if args else kwargs["query"]
    key = args[1] if len(args) > 1 else kwargs["key"]
    seq_dim = 1 if module.batch_first and query.dim() == 3 else 0
    batch = query.numel() // (query.shape[seq_dim] * query.shape[-1])
    lq, lk, e = query.shape[seq_dim], key.shape[seq_dim], module.embed_dim
    projections = lq * e * e + lk * module.kdim * e + lk * module.vdim * e + lq * e * e
    return batch * (projections + 2 * lq * lk * e)


def _recurrent_macs(module: nn.LSTM | nn.GRU, args, kwargs, output) -> int:
    sequence = output[0]
    if isinstance(sequence, nn.utils.rnn.PackedSequence):
        raise HarkdError("count_flops: packed sequences are not supported")
    steps_x_batch = sequence.numel() // sequence.shape[-1]
    gates = 4 if isinstance(module, nn.LSTM) else 3
    hidden, proj = module.hidden_size, getattr(module, "proj_size", 0)
    state = proj or hidden  # the recurrent state (and the next layer's input) has the projected size
    directions = 2 if module.bidirectional else 1
    per_step = sum(gates * hidden * ((module.input_size if layer == 0 else state * directions) + state)
                   + hidden * proj for layer in range(module.num_layers))
    return steps_x_batch * directions * per_step


def _norm_macs(module: nn.Module, args, kwargs, output: torch.Tensor) -> int:
    return output.numel()


_RULES = (((nn.Conv1d,), _conv_macs), ((nn.Linear,), _linear_macs), ((nn.MultiheadAttention,), _attention_macs),
          ((nn.LSTM, nn.GRU), _recurrent_macs), (_NORMS, _norm_macs))
_COUNTED = tuple(t for types, _ in _RULES for t in types)


def _counted_modules(module: nn.Module, name: str = "model") -> list[nn.Module]:
    """The modules to hook; a counted module's children are its own rule's business (MHA's out_proj, for one)."""
    if isinstance(module, _COUNTED):
        return [module]
    own = [module] if hasattr(module, "own_macs") else []
    children = list(module.named_children())
    if not children and not own and any(True for _ in module.parameters(recurse=False)):
        raise HarkdError(f"count_flops: no FLOP rule for {type(module).__name__} ({name}); "
                         f"supported: {', '.join(t.__name__ for t in _COUNTED)}")
    return own + [m for child_name, child in children for m in _counted_modules(child, f"{name}.{child_name}")]


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs (2 x MACs, see the module docstring) of one forward pass on a zero input of `input_shape` (B, C, T)."""
    total = 0

    def hook(module, args, kwargs, output):
        nonlocal total
        rule = next((rule for types, rule in _RULES if isinstance(module, types)), None)
        total += rule(module, args, kwargs, output) if rule else module.own_macs(args, kwargs, output)

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in _counted_modules(model)]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters(), torch.empty(0)).device
        with torch.inference_mode():
            model(torch.zeros(*input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return 2 * total


def cpu_latency_ms(model: nn.Module, input_shape: Sequence[int], runs: int = 200, warmup: int = 20,
                   threads: int = 1) -> float:
    """Median wall time in ms of one eval-mode forward under inference_mode on `threads` CPU threads."""
    previous_threads = torch.get_num_threads()
    was_training = model.training
    x = torch.randn(*input_shape)
    times = []
    try:
        torch.set_num_threads(threads)
        model.eval()
        with torch.inference_mode():
            for i in range(warmup + runs):
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    return 1000.0 * statistics.median(times)
