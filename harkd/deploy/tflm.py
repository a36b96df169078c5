"""An int8 program (harkd.deploy.int8) as a TensorFlow Lite flatbuffer for TensorFlow Lite Micro, written with the
`tflite-micro` package's own model editor and run on TFLM's own kernels through its Python interpreter.

Layout: one window is NHWC (1, 1, T, C), samples in time order with each sample's channels together, as a sensor
delivers them; a 1-D conv is a CONV_2D or DEPTHWISE_CONV_2D of height 1, so no reshapes or transposes sit in the
graph. The input is the normalised window in int8 (the firmware quantises each sample with the header's per-channel
mean, 1/std, scale and zero point); the outputs are the int8 logits and SOFTMAX's probabilities (scale 1/256, zero
point -128, as TFLM's int8 softmax requires).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import numpy as np

from harkd.deploy.int8 import Int8Program, QParams, integer_weights
from harkd.deploy.lowering import INPUT, Add, Conv, Dense, HardSwish, Mul, Step, TimeMean
from harkd.errors import HarkdError

SOFTMAX_GRID = QParams(1 / 256, -128)
# The MicroMutableOpResolver call that registers each TFLite builtin the writer emits.
RESOLVER_CALLS = {"CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "PAD": "AddPad",
                  "AVERAGE_POOL_2D": "AddAveragePool2D", "FULLY_CONNECTED": "AddFullyConnected",
                  "HARD_SWISH": "AddHardSwish", "ADD": "AddAdd", "MUL": "AddMul", "SOFTMAX": "AddSoftmax"}


def _schema():
    try:
        from tflite_micro.tensorflow.lite.micro.compression import model_editor
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    except ImportError:
        raise HarkdError("TFLite Micro export needs the tflm extra: pip install -c constraints.txt -e '.[tflm]'") \
            from None
    return model_editor, schema


@dataclass
class _Tensor:
    handle: object  # model_editor.Tensor
    shape: tuple[int, ...]  # NHWC, or (1, K) after a dense layer


class _Writer:
    """Emits one subgraph: tensors with their int8 grids and the ops between them."""

    def __init__(self, q: Int8Program, window: int, channels: int):
        self.editor, self.schema = _schema()
        self.q = q
        self.graph = self.editor.Subgraph(name="harkd")
        self.tensors = {INPUT: self._activation(INPUT, (1, 1, window, channels), q.qparams[INPUT])}
        self.ops: list[str] = []

    def _activation(self, name: str, shape: tuple[int, ...], grid: QParams) -> _Tensor:
        quant = self.editor.Quantization(scales=grid.scale, zero_points=grid.zero_point)
        handle = self.graph.add_tensor(shape=shape, dtype=self.schema.TensorType.INT8, quantization=quant, name=name)
        return _Tensor(handle, shape)

    def _constant(self, name: str, array: np.ndarray, dtype: int, scales=None, axis: int | None = None):
        quant = None
        if scales is not None:
            quant = self.editor.Quantization(scales=[float(s) for s in scales], zero_points=[0] * len(scales),
                                             axis=axis)
        return self.graph.add_tensor(shape=array.shape, dtype=dtype, data=array, quantization=quant, name=name)

    def _op(self, code: str, inputs: list, output: _Tensor, options_type: str | None = None, **options) -> None:
        op = self.graph.add_operator(opcode=getattr(self.schema.BuiltinOperator, code), inputs=inputs,
                                     outputs=[output.handle])
        if options_type is not None:
            fb = getattr(self.schema, f"{options_type}T")()
            for key, value in options.items():
                setattr(fb, key, value)
            op._fb.builtinOptionsType = getattr(self.schema.BuiltinOptions, options_type)
            op._fb.builtinOptions = fb
        self.ops.append(code)

    def step(self, step: Step) -> None:
        emit = {Conv: self._conv, Dense: self._dense, TimeMean: self._mean, HardSwish: self._hard_swish,
                Add: self._binary, Mul: self._binary}[type(step)]
        emit(step, [self.tensors[name] for name in step.inputs])

    def _conv(self, step: Conv, inputs: list[_Tensor]) -> None:
        x = inputs[0]
        length = x.shape[2]
        k = step.weight.shape[-1]
        out_length = (length + sum(step.pads) - k) // step.stride + 1
        padding = self._padding(step, length, out_length, k)
        if padding is None:
            x = self._pad(step, x)
            padding = self.schema.Padding.VALID
        ints = integer_weights(step, self.q.qparams[step.inputs[0]].scale)  # weight (O, I/g, K)
        depthwise = step.groups > 1
        filt = ints.weight.transpose(1, 2, 0)[None] if depthwise else ints.weight.transpose(0, 2, 1)[:, None]
        out = self._activation(step.output, (1, 1, out_length, len(ints.scales)), self.q.qparams[step.output])
        # filter [1,1,K,C] (depthwise) or [O,1,K,I]
        inputs_ = [x.handle, self._constant(f"{step.output}/filter", np.ascontiguousarray(filt),
                                            self.schema.TensorType.INT8, ints.scales, 3 if depthwise else 0),
                   self._constant(f"{step.output}/bias", ints.bias, self.schema.TensorType.INT32, ints.bias_scales, 0)]
        fused = (self.schema.ActivationFunctionType.RELU if step.activation == "relu"
                 else self.schema.ActivationFunctionType.NONE)  # clamp01: the [0, 1] grid saturates
        common = dict(padding=padding, strideW=step.stride, strideH=1, dilationWFactor=1, dilationHFactor=1,
                      fusedActivationFunction=fused)
        if depthwise:
            self._op("DEPTHWISE_CONV_2D", inputs_, out, "DepthwiseConv2DOptions", depthMultiplier=1, **common)
        else:
            self._op("CONV_2D", inputs_, out, "Conv2DOptions", **common)
        self.tensors[step.output] = out

    def _padding(self, step: Conv, length: int, out_length: int, k: int):
        """SAME or VALID where TFLite's padding equals PyTorch's; None where an explicit PAD must come first."""
        if step.pads == (0, 0):
            return self.schema.Padding.VALID
        same_out = -(-length // step.stride)
        same_before = max((same_out - 1) * step.stride + k - length, 0) // 2
        return self.schema.Padding.SAME if (same_out, same_before) == (out_length, step.pads[0]) else None

    def _pad(self, step: Conv, x: _Tensor) -> _Tensor:
        left, right = step.pads
        shape = (1, 1, x.shape[2] + left + right, x.shape[3])
        out = self._activation(f"{step.output}/padded", shape, self.q.qparams[step.inputs[0]])
        paddings = np.array([[0, 0], [0, 0], [left, right], [0, 0]], np.int32)
        self._op("PAD", [x.handle, self._constant(f"{step.output}/paddings", paddings,
                                                  self.schema.TensorType.INT32)], out, "PadOptions")
        return out

    def _dense(self, step: Dense, inputs: list[_Tensor]) -> None:
        ints = integer_weights(step, self.q.qparams[step.inputs[0]].scale)  # one scale for the whole matrix
        out = self._activation(step.output, (1, len(ints.scales)), self.q.qparams[step.output])
        self._op("FULLY_CONNECTED", [inputs[0].handle,
                                     self._constant(f"{step.output}/weights", ints.weight, self.schema.TensorType.INT8,
                                                    ints.scales[:1]),
                                     self._constant(f"{step.output}/bias", ints.bias, self.schema.TensorType.INT32,
                                                    ints.bias_scales[:1])],
                 out, "FullyConnectedOptions", fusedActivationFunction=self.schema.ActivationFunctionType.NONE,
                 keepNumDims=False)
        self.tensors[step.output] = out

    def _mean(self, step: TimeMean, inputs: list[_Tensor]) -> None:
        x = inputs[0]
        out = self._activation(step.output, (1, 1, 1, x.shape[3]), self.q.qparams[step.output])
        self._op("AVERAGE_POOL_2D", [x.handle], out, "Pool2DOptions", padding=self.schema.Padding.VALID, strideW=1,
                 strideH=1, filterWidth=x.shape[2], filterHeight=1,
                 fusedActivationFunction=self.schema.ActivationFunctionType.NONE)
        self.tensors[step.output] = out

    def _hard_swish(self, step: HardSwish, inputs: list[_Tensor]) -> None:
        out = self._activation(step.output, inputs[0].shape, self.q.qparams[step.output])
        self._op("HARD_SWISH", [inputs[0].handle], out)
        self.tensors[step.output] = out

    def _binary(self, step: Step, inputs: list[_Tensor]) -> None:
        out = self._activation(step.output, inputs[0].shape, self.q.qparams[step.output])
        code = "ADD" if isinstance(step, Add) else "MUL"
        self._op(code, [t.handle for t in inputs], out, f"{code.title()}Options",
                 fusedActivationFunction=self.schema.ActivationFunctionType.NONE)
        self.tensors[step.output] = out

    def finish(self) -> bytes:
        logits = self.tensors[self.q.program.logits]
        probabilities = self._activation("probabilities", logits.shape, SOFTMAX_GRID)
        self._op("SOFTMAX", [logits.handle], probabilities, "SoftmaxOptions", beta=1.0)
        self.graph.inputs = [self.tensors[INPUT].handle]
        self.graph.outputs = [logits.handle, probabilities.handle]
        model = self.editor.Model(subgraphs=[self.graph], description="harkd int8 student for TFLite Micro")
        return bytes(model.build())


@dataclass
class Flatbuffer:
    data: bytes
    ops: list[str]  # each builtin once, in first-use order


def write_flatbuffer(q: Int8Program, window: int, channels: int) -> Flatbuffer:
    writer = _Writer(q, window, channels)
    for step in q.program.steps:
        writer.step(step)
    data = _aligned(writer.finish())
    return Flatbuffer(data, list(dict.fromkeys(writer.ops)))


def _aligned(data: bytes) -> bytes:
    """The flatbuffer rewritten by TFLM's own aligner (buffers on 16-byte boundaries, as firmware kernels read
    them)."""
    import tempfile
    from pathlib import Path

    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    with tempfile.TemporaryDirectory() as tmp:
        raw, aligned = Path(tmp) / "raw.tflite", Path(tmp) / "aligned.tflite"
        raw.write_bytes(data)
        tflite_flatbuffer_align_wrapper.align_tflite_model(str(raw), str(aligned))
        return aligned.read_bytes()


def interpreter(data: bytes, arena: int):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(data, arena_size=arena)


class TflmRunner:
    """One TFLM interpreter for a model: normalised windows (N, C, T) in, dequantised logits (N, K) out, one window
    per invoke as on the device."""

    def __init__(self, data: bytes, grid: QParams, logits_grid: QParams, arena: int = 64 * 1024):
        self.tflm, self.grid, self.logits_grid = interpreter(data, arena), grid, logits_grid

    def logits(self, windows: np.ndarray) -> np.ndarray:
        quantised = self.grid.quantise(windows.transpose(0, 2, 1))[:, None]  # (N, 1, T, C)
        out = []
        for window in quantised:
            self.tflm.set_input(window[None], 0)
            self.tflm.invoke()
            out.append(self.tflm.get_output(0)[0])
        return self.logits_grid.dequantise(np.stack(out)) if out else np.zeros((0, 0), np.float32)


def run_tflm(data: bytes, windows: np.ndarray, grid: QParams, logits_grid: QParams, arena: int = 64 * 1024
             ) -> np.ndarray:
    """Dequantised logits (N, K) from TFLM's kernels for normalised windows (N, C, T)."""
    return TflmRunner(data, grid, logits_grid, arena).logits(windows)


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null: TFLM's C++ writes there, past Python's sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def arena_bytes(data: bytes, window: np.ndarray, upper: int = 1 << 20) -> int:
    """The smallest tensor arena (to 16 bytes) with which TFLM allocates the model and invokes it on `window`
    (1, 1, T, C) int8: measured by TFLM's allocator, found by bisection."""
    def fits(size: int) -> bool:
        with _quiet_stderr():  # TFLM prints each failed allocation
            try:
                tflm = interpreter(data, size)
                tflm.set_input(window, 0)
                tflm.invoke()
            except (RuntimeError, ValueError):
                return False
        return True

    if not fits(upper):
        raise HarkdError(f"TFLite Micro cannot run the model within a {upper:,}-byte arena")
    low, high = 0, upper  # low does not fit, high does
    while high - low > 16:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high
