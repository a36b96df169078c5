"""An int8 program (harkd.deploy.int8) as an ONNX QDQ graph: raw windows in (the bundle's normalisation as Sub and
Div), each weight stored in int8 (biases int32) behind a DequantizeLinear, each tensor through QuantizeLinear and
DequantizeLinear at its grid; ONNX Runtime fuses the groups into its integer kernels (QLinearConv, ...). The grids
are the ones the TFLite Micro file carries, so both runtimes compute the same int8 model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harkd.deploy.int8 import Int8Program, integer_weights
from harkd.deploy.lowering import INPUT, Add, Conv, Dense, HardSwish, Mul, Step, TimeMean

OPSET = 17


class _Graph:
    def __init__(self, q: Int8Program):
        self.q = q
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: dict[str, str] = {}  # program tensor -> its dequantised ONNX tensor

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def requantised(self, value: str, name: str) -> str:
        """`value` rounded to the grid of program tensor `name` (QuantizeLinear then DequantizeLinear)."""
        grid = self.q.qparams[name]
        scale = self.constant(f"{name}/scale", np.float32(grid.scale))
        zero = self.constant(f"{name}/zero_point", np.int8(grid.zero_point))
        quantised = self.node("QuantizeLinear", [value, scale, zero], f"{name}/q")
        self.names[name] = self.node("DequantizeLinear", [quantised, scale, zero], f"{name}/dq")
        return self.names[name]

    def weights(self, step: Step, per_channel: bool) -> tuple[str, str]:
        """The step's int8 weights and int32 bias behind DequantizeLinear."""
        ints = integer_weights(step, self.q.qparams[step.inputs[0]].scale)
        w_q, bias, bias_scales = ints.weight, ints.bias, ints.bias_scales.astype(np.float32)
        w_scale = ints.scales.astype(np.float32) if per_channel else np.float32(ints.scales[0])
        w_zero = np.zeros(len(ints.scales), np.int8) if per_channel else np.int8(0)
        axis = {"axis": 0} if per_channel else {}
        name = step.output
        weight = self.node("DequantizeLinear", [self.constant(f"{name}/w", w_q), self.constant(f"{name}/w_scale",
                           w_scale), self.constant(f"{name}/w_zero", w_zero)], f"{name}/w_dq", **axis)
        bias_dq = self.node("DequantizeLinear", [self.constant(f"{name}/b", bias), self.constant(
            f"{name}/b_scale", bias_scales), self.constant(f"{name}/b_zero", np.zeros(len(bias), np.int32))],
            f"{name}/b_dq", axis=0)
        return weight, bias_dq

    def step(self, step: Step) -> None:
        x = [self.names[name] for name in step.inputs]
        out = step.output
        if isinstance(step, Conv):
            weight, bias = self.weights(step, per_channel=True)
            value = self.node("Conv", [x[0], weight, bias], f"{out}/conv", strides=[step.stride],
                              pads=list(step.pads), group=step.groups, kernel_shape=[step.weight.shape[-1]])
            if step.activation == "relu":
                value = self.node("Relu", [value], f"{out}/relu")
        elif isinstance(step, Dense):
            weight, bias = self.weights(step, per_channel=False)
            flat = self.node("Flatten", [x[0]], f"{out}/flat")
            value = self.node("Gemm", [flat, weight, bias], f"{out}/gemm", transB=1)
            value = self.node("Unsqueeze", [value, self.constant(f"{out}/axes", np.array([2], np.int64))],
                              f"{out}/unsqueeze")
        elif isinstance(step, TimeMean):
            value = self.node("GlobalAveragePool", x, f"{out}/mean")
        else:
            op = {HardSwish: "HardSwish", Add: "Add", Mul: "Mul"}[type(step)]
            value = self.node(op, x, f"{out}/{op.lower()}")
        self.requantised(value, out)


def int8_onnx(q: Int8Program, mean: list[float], std: list[float], window: int) -> onnx.ModelProto:
    """The QDQ graph: input "windows" (N, C, T) raw; outputs "logits" and "probabilities" (N, K)."""
    g = _Graph(q)
    shape = (1, len(mean), 1)
    centred = g.node("Sub", ["windows", g.constant("mean", np.asarray(mean, np.float32).reshape(shape))], "centred")
    normalised = g.node("Div", [centred, g.constant("std", np.asarray(std, np.float32).reshape(shape))], "normalised")
    g.requantised(normalised, INPUT)
    for step in q.program.steps:
        g.step(step)
    logits = g.node("Squeeze", [g.names[q.program.logits], g.constant("time_axis", np.array([2], np.int64))],
                    "logits")
    g.node("Softmax", [logits], "probabilities", axis=1)
    classes = q.program.steps[-1].weight.shape[0]
    graph = helper.make_graph(
        g.nodes, "harkd-int8", [helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["N", len(mean), window])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", classes])
         for name in ("logits", "probabilities")],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="harkd")
    onnx.checker.check_model(model)
    return model

