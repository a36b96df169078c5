"""What an exported model costs a device: weight bytes (flash), the peak activation memory of one inference at batch 1
(RAM), and multiply-accumulates per window and per second of stream, compared with a budget such as
`flash=64KB,ram=16KB` (KB = 1024 bytes).

Weights are the graph's initializers and constants at their stored types (the int8 graph's int8 weights, int32
biases and float scales). Activations come from ONNX shape inference with the batch fixed at 1: walking the nodes in
the graph's (topological) order, a tensor is live from the node that makes it to its last reader (graph outputs to
the end), and the peak is the largest total of live tensors while a node runs, inputs and outputs both. An int8
runtime holds every activation in one byte, so its peak is the same schedule counted in elements.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from harkd.errors import HarkdError

_UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2}
BUDGET_KEYS = ("flash", "ram")


def parse_budget(text: str | None) -> dict[str, int]:
    """'flash=64KB,ram=16KB' -> {'flash': 65536, 'ram': 16384}; None or '' -> {}."""
    budget: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, _, amount = part.partition("=")
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB)?\s*", amount, re.IGNORECASE)
        if key.strip() not in BUDGET_KEYS or not match:
            raise HarkdError(f"--budget {text!r}: expected parts like flash=64KB,ram=16KB (keys "
                             f"{', '.join(BUDGET_KEYS)}; units B, KB, MB)")
        budget[key.strip()] = int(float(match[1]) * _UNITS[(match[2] or "B").upper()])
    return budget


def _weights(model: onnx.ModelProto) -> list[np.ndarray]:
    """Every initializer and Constant node's tensor: what the device stores besides the code."""
    graph = model.graph
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                                         if a.name == "value"]
    return [numpy_helper.to_array(t) for t in tensors]


def weight_bytes(model: onnx.ModelProto) -> int:
    return int(sum(w.nbytes for w in _weights(model)))


def _batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in list(fixed.graph.input) + list(fixed.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1
    del fixed.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(fixed, strict_mode=True)


def activation_sizes(model: onnx.ModelProto) -> tuple[list[onnx.NodeProto], dict[str, tuple[int, int]]]:
    """The nodes in order and, for every tensor that is not a weight, its (elements, bytes) at batch 1. Shapes come
    from shape inference; a tensor it leaves open (e.g. after a Reshape to computed dims) is measured by running the
    graph once in ONNX Runtime on a zero window."""
    inferred = _batch_one(model)
    graph = inferred.graph
    skip = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    shapes, types = {}, {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = value.type.tensor_type
        types[value.name] = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        shapes[value.name] = None if None in dims or not tensor.HasField("shape") else dims
    produced = [o for n in graph.node for o in n.output if o and o not in skip]
    open_shapes = [name for name in produced if shapes.get(name) is None]
    for name, array in _measured(inferred, open_shapes).items():
        shapes[name], types[name] = list(array.shape), array.dtype.itemsize
    names = [i.name for i in graph.input if i.name not in skip] + produced
    return list(graph.node), {n: (int(np.prod(shapes[n], dtype=np.int64)),
                                  int(np.prod(shapes[n], dtype=np.int64)) * types[n]) for n in names}


def _measured(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    if not names:
        return {}
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {}
    for value in model.graph.input:
        tensor = value.type.tensor_type
        feed[value.name] = np.zeros([d.dim_value for d in tensor.shape.dim],
                                    onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    return dict(zip(names, session.run(names, feed)))


def peak_activations(model: onnx.ModelProto) -> dict[str, int]:
    """Peak live activation bytes of one inference as stored (`bytes`) and in elements (= bytes at int8)."""
    nodes, sizes = activation_sizes(model)
    outputs = {o.name for o in model.graph.output}
    last_use = {name: len(nodes) if name in outputs else -1 for name in sizes}
    born = {i.name: 0 for i in model.graph.input if i.name in sizes}
    for step, node in enumerate(nodes):
        for name in node.input:
            if name in last_use:
                last_use[name] = max(last_use[name], step)
        for name in node.output:
            born.setdefault(name, step)
    peak = {"bytes": 0, "elements": 0}
    for step in range(len(nodes)):
        live = [sizes[n] for n in sizes if n in born and born[n] <= step <= max(last_use[n], born[n])]
        peak["elements"] = max(peak["elements"], sum(e for e, _ in live))
        peak["bytes"] = max(peak["bytes"], sum(b for _, b in live))
    return peak


def device_budget(fp32: onnx.ModelProto, macs_per_window: int, windows_per_second: float,
                  int8: onnx.ModelProto | None = None, budget: dict[str, int] | None = None) -> dict[str, Any]:
    """The numbers `harkd export` prints and writes to its .json; with a budget, whether each fits.

    Without an int8 graph the int8 weight bytes are an estimate: one byte per weight element."""
    activations = peak_activations(fp32)
    weights = {"fp32_bytes": weight_bytes(fp32),
               "int8_bytes": weight_bytes(int8) if int8 is not None else int(sum(w.size for w in _weights(fp32))),
               "int8_measured": int8 is not None}
    report: dict[str, Any] = {
        "weights": weights,
        "peak_activations": {"fp32_bytes": activations["bytes"], "int8_bytes": activations["elements"]},
        "macs_per_window": int(macs_per_window),
        "macs_per_second": round(macs_per_window * windows_per_second),
        "windows_per_second": windows_per_second,
    }
    if budget:
        precision = "int8" if int8 is not None else "fp32"
        need = {"flash": weights[f"{precision}_bytes"], "ram": report["peak_activations"][f"{precision}_bytes"]}
        report["budget"] = {key: {"limit_bytes": limit, "needed_bytes": need[key], "fits": need[key] <= limit,
                                  "precision": precision} for key, limit in budget.items()}
    return report


def describe(report: dict[str, Any]) -> str:
    """One line for the terminal."""
    w, a = report["weights"], report["peak_activations"]
    line = (f"weights {w['fp32_bytes'] / 1024:.1f} KB fp32, {w['int8_bytes'] / 1024:.1f} KB int8"
            f"{'' if w['int8_measured'] else ' (estimate)'}; peak activations {a['fp32_bytes'] / 1024:.1f} KB fp32, "
            f"{a['int8_bytes'] / 1024:.1f} KB int8; {report['macs_per_window']:,} MACs per window, "
            f"{report['macs_per_second']:,} per second of stream")
    for key, check in report.get("budget", {}).items():
        line += (f"; {key} {check['needed_bytes'] / 1024:.1f} of {check['limit_bytes'] / 1024:g} KB "
                 f"({check['precision']}): {'fits' if check['fits'] else 'DOES NOT FIT'}")
    return line
