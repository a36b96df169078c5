"""`harkd export --format tflm`: a kept model as full-integer int8 TensorFlow Lite for TensorFlow Lite Micro, with
what firmware needs beside it: a C array and header (the model, the arena size, the per-channel normalisation and
input grid, the classes), the ops to register with MicroMutableOpResolver, and a JSON description.

Nothing is written unless TFLM's own kernels (the `tflite-micro` package's interpreter) pick PyTorch's fp32 class on
the plan's held-out windows as often as the int8 gate asks, and unless the model fits `--budget` (flash: the
.tflite file; RAM: the tensor arena TFLM needs, found by TFLM's allocator).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from harkd import __version__
from harkd.cost import count_flops
from harkd.deploy.lowering import INPUT
from harkd.deploy.onnx_export import sidecar
from harkd.deploy.quantise import Int8Plan, compare, latency_ms
from harkd.deploy.tflm import RESOLVER_CALLS, Flatbuffer, arena_bytes, interpreter, run_tflm, write_flatbuffer
from harkd.errors import HarkdError
from harkd.files import atomic_output

# Published microcontroller HAR models, for the export's comparison (bytes).
ANCHORS = {
    "ST HAR case study (STM32L4)": {"flash": 12 * 1024, "ram": int(1.8 * 1024)},
    "stm32ai-modelzoo st_gmp": {"weights": int(5.7 * 1024), "flash": int(11.8 * 1024), "ram": int(4.5 * 1024)},
}


def export_tflm(plan: Int8Plan, path: Path, budget: dict[str, int] | None = None) -> dict[str, Any]:
    """Write `path` (.tflite), its .cc and .h beside it and its .json description; return the description."""
    path = Path(path)
    if path.suffix != ".tflite":
        raise HarkdError(f"{path}: the output file must end in .tflite")
    described = sidecar(path)
    bundle, q = plan.bundle, plan.program
    flat = write_flatbuffer(q, bundle.window, len(bundle.channels))
    first = q.qparams[INPUT].quantise(bundle.normalise(plan.data.check[:1]).transpose(0, 2, 1))[:, None]
    arena = arena_bytes(flat.data, first)
    _check_budget(path, len(flat.data), arena, budget or {})
    report = compare(plan, lambda x: bundle.predict(x), lambda x: _tflm_logits(plan, flat, x, arena), "TFLite Micro")
    report["simulation"] = _against_simulation(plan, flat, arena)
    spec = _describe(plan, path, flat, arena, report)
    stem = _c_name(path.stem)
    with atomic_output(path) as tmp, atomic_output(path.with_suffix(".cc")) as tmp_cc, \
            atomic_output(path.with_suffix(".h")) as tmp_h, atomic_output(described) as tmp_json:
        tmp.write_bytes(flat.data)
        tmp_cc.write_text(c_array(flat.data, stem, path.with_suffix(".h").name))
        tmp_h.write_text(c_header(plan, stem, flat, arena))
        tmp_json.write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def _tflm_logits(plan: Int8Plan, flat: Flatbuffer, raw: np.ndarray, arena: int) -> np.ndarray:
    q = plan.program
    return run_tflm(flat.data, plan.bundle.normalise(raw), q.qparams[INPUT], q.qparams[q.program.logits], arena)


def _against_simulation(plan: Int8Plan, flat: Flatbuffer, arena: int) -> dict[str, float]:
    """TFLM's logits on the check windows against the int8 arithmetic simulated in PyTorch: how often they pick the
    same class, and the median and largest difference in steps of the logits' grid (the kernels' fixed-point
    rounding moves a step or two, now and then more downstream of a pooled feature; a wrongly laid-out weight moves
    every window)."""
    x = plan.bundle.normalise(plan.data.check)
    grid = plan.program.qparams[plan.program.program.logits]
    tflm, simulated = run_tflm(flat.data, x, plan.program.qparams[INPUT], grid, arena), plan.program.logits(x)
    steps = np.abs(tflm - simulated).max(1) / grid.scale
    return {"argmax_agreement": round(float((tflm.argmax(1) == simulated.argmax(1)).mean()), 5),
            "median_steps": float(np.round(np.median(steps))), "max_steps": float(np.round(steps.max()))}


def _check_budget(path: Path, flash: int, arena: int, budget: dict[str, int]) -> None:
    need = {"flash": flash, "ram": arena}
    for key, limit in budget.items():
        if need[key] > limit:
            what = "model file" if key == "flash" else "tensor arena (measured by TFLM)"
            raise HarkdError(f"{path}: the {what} needs {need[key]:,} bytes, over the --budget {key} of {limit:,}; "
                             f"nothing written")


def _describe(plan: Int8Plan, path: Path, flat: Flatbuffer, arena: int, report: dict[str, Any]) -> dict[str, Any]:
    bundle, q = plan.bundle, plan.program
    grid = q.qparams[INPUT]
    macs = count_flops(bundle.build(), (1, len(bundle.channels), bundle.window)) // 2
    tflm = interpreter(flat.data, arena)
    window = grid.quantise(np.zeros((1, bundle.window, len(bundle.channels))))[:, None]
    timing = latency_ms(lambda: (tflm.set_input(window, 0), tflm.invoke()), runs=100, warmup=10)
    return {
        "format": "harkd-tflm", "harkd_version": __version__, "tflite": path.name,
        "input": {"shape": [1, 1, bundle.window, len(bundle.channels)], "dtype": "int8",
                  "layout": "one window, samples in time order, each sample's channels together (NHWC, H = 1)",
                  "quantise": "q = clamp(round(((raw - mean) / std) / scale) + zero_point, -128, 127)",
                  "scale": grid.scale, "zero_point": grid.zero_point, "mean": bundle.mean, "std": bundle.std,
                  "channels": [{"name": name, **c} for name, c in zip(bundle.channel_names, bundle.channels)],
                  "rate_hz": bundle.rate_hz, "stride": bundle.hop},
        "outputs": {"logits": {"shape": [1, len(bundle.class_names)], "dtype": "int8",
                               "scale": q.qparams[q.program.logits].scale,
                               "zero_point": q.qparams[q.program.logits].zero_point},
                    "probabilities": {"shape": [1, len(bundle.class_names)], "dtype": "int8", "scale": 1 / 256,
                                      "zero_point": -128}},
        "class_names": bundle.class_names, "model": bundle.model, "params": bundle.params,
        "provenance": bundle.provenance, "quantisation": q.method,
        "ops": flat.ops, "resolver": [f"{RESOLVER_CALLS[op]}()" for op in flat.ops],
        "device": {"file_bytes": len(flat.data), "weight_bytes": _weight_bytes(plan), "arena_bytes": arena,
                   "macs_per_window": int(macs), "macs_per_second": round(macs * bundle.rate_hz / bundle.hop),
                   "latency_ms_per_window_tflm_python": timing, "anchors": ANCHORS},
        "int8": report,
    }


def _weight_bytes(plan: Int8Plan) -> int:
    """int8 weights and int32 biases, as the kernels read them."""
    steps = plan.program.program.steps
    return int(sum(s.weight.numel() + 4 * s.bias.numel() for s in steps if hasattr(s, "weight")))


def _c_name(stem: str) -> str:
    name = re.sub(r"\W", "_", stem)
    return f"harkd_{name}" if not name[:1].isalpha() else name


def c_array(data: bytes, name: str, header: str) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16)]
    body = ",\n  ".join(rows)
    return (f'// Written by harkd {__version__}: the int8 TFLite model for TensorFlow Lite Micro.\n'
            f'#include "{header}"\n\nalignas(16) const unsigned char {name}_model[] = {{\n  {body}\n}};\n'
            f"const unsigned int {name}_model_len = {len(data)};\n")


def c_header(plan: Int8Plan, name: str, flat: Flatbuffer, arena: int) -> str:
    bundle, grid = plan.bundle, plan.program.qparams[INPUT]
    upper = name.upper()
    floats = lambda values: ", ".join(f"{v:.9g}f" for v in values)  # noqa: E731
    classes = ", ".join(json.dumps(c) for c in bundle.class_names)
    register = " ".join(f"resolver.{RESOLVER_CALLS[op]}();" for op in flat.ops)
    return f"""// Written by harkd {__version__}: {bundle.model} for TensorFlow Lite Micro (int8).
// Input: one window of {bundle.window} samples x {len(bundle.channels)} channels ({', '.join(bundle.channel_names)})
// at {bundle.rate_hz:g} Hz, samples in time order; quantise each value with {name}_quantise().
// Outputs: 0 = int8 logits, 1 = int8 probabilities (scale 1/256, zero point -128).
// Ops: tflite::MicroMutableOpResolver<{len(flat.ops)}> resolver; {register}
#ifndef {upper}_H_
#define {upper}_H_

#include <stdint.h>

#define {upper}_ARENA_BYTES {arena}
#define {upper}_WINDOW {bundle.window}
#define {upper}_CHANNELS {len(bundle.channels)}
#define {upper}_CLASSES {len(bundle.class_names)}
#define {upper}_OPS {len(flat.ops)}

extern const unsigned char {name}_model[];
extern const unsigned int {name}_model_len;

static const float {name}_mean[{len(bundle.channels)}] = {{{floats(bundle.mean)}}};
static const float {name}_inv_std[{len(bundle.channels)}] = {{{floats(1 / np.asarray(bundle.std, np.float64))}}};
static const float {name}_input_scale = {grid.scale:.9g}f;
static const int {name}_input_zero_point = {grid.zero_point};
static const char* const {name}_classes[{len(bundle.class_names)}] = {{{classes}}};

// A raw sample value of `channel` as the model's int8 input.
static inline int8_t {name}_quantise(float raw, int channel) {{
  float q = (raw - {name}_mean[channel]) * {name}_inv_std[channel] / {name}_input_scale;
  int v = (int)(q < 0 ? q - 0.5f : q + 0.5f) + {name}_input_zero_point;
  return (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
}}

#endif  // {upper}_H_
"""
