"""Teacher vs students, side by side in one run: parameters, FLOPs per window and batch-1 CPU latency, in eager
PyTorch and in ONNX Runtime (the model as `harkd export` writes it).

    python benchmarks/bench_cost.py [--config configs/dsads.yaml] [--runs 500]

Models are built at the config's shapes (teacher channels, student channels, window length, classes) without data;
latency is the median of --runs forward passes at batch 1 on one thread after warm-up, measured in alternating
rounds so that a busy machine slows every model alike. Writes benchmarks/results/cost_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
from torch import nn

from harkd.cost import count_flops, count_params, cpu_latency_ms
from harkd.deploy.onnx_export import INPUT, to_onnx
from harkd.experiment.config import load_config
from harkd.files import atomic_output
from harkd.models.base import build_model
from harkd.models.tsak import REP_NAMES, TwoStageTeacher

HERE = Path(__file__).resolve().parent


class Logits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def onnx_session(model: nn.Module, channels: int, length: int, folder: Path) -> onnxruntime.InferenceSession:
    path = folder / f"{id(model)}.onnx"
    to_onnx(Logits(model).eval(), torch.randn(2, channels, length), path, output_names=("logits",))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_latency_ms(session: onnxruntime.InferenceSession, channels: int, length: int, runs: int,
                    warmup: int = 20) -> float:
    x = {INPUT: torch.randn(1, channels, length).numpy()}
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        session.run(None, x)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)

# Channel counts and window length per shipped dataset config, so no data is needed to size the models.
SHAPES = {"dsads": {"teacher": 45, "student": 3, "length": 125, "classes": 19, "groups": 15}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The default relative to the working directory, so that the results record it as a user would type it.
    parser.add_argument("--config", type=Path, default=Path(os.path.relpath(HERE.parent / "configs" / "dsads.yaml")))
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cfg = load_config(args.config)
    shape = SHAPES[cfg.dataset]
    n_teacher, n_student, length, k = shape["teacher"], shape["student"], shape["length"], shape["classes"]
    group = n_teacher // shape["groups"]
    groups = [list(range(i, i + group)) for i in range(0, n_teacher, group)]

    teacher = build_model(cfg.teacher.name, n_teacher, k, groups, **cfg.teacher.params).eval()
    semantic = build_model(cfg.semantic.name, sum(teacher.rep_dims[n] for n in REP_NAMES), k,
                           **cfg.semantic.params)
    models = {"teacher": (teacher, n_teacher), "teacher+semantic": (TwoStageTeacher(teacher, semantic).eval(),
                                                                     n_teacher)}
    for spec in cfg.students:
        models[f"student {spec.name}"] = (build_model(spec.name, n_student, k, **spec.params).eval(), n_student)

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        sessions = {name: onnx_session(model, channels, length, Path(folder))
                    for name, (model, channels) in models.items()}
        latencies: dict[str, list[float]] = {name: [] for name in models}
        onnx_latencies: dict[str, list[float]] = {name: [] for name in models}
        per_round = args.runs // args.rounds
        for _ in range(args.rounds):
            for name, (model, channels) in models.items():
                latencies[name].append(cpu_latency_ms(model, (1, channels, length), runs=per_round))
                onnx_latencies[name].append(onnx_latency_ms(sessions[name], channels, length, per_round))
    rows = {}
    for name, (model, channels) in models.items():
        rows[name] = {"params": count_params(model), "flops": count_flops(model, (1, channels, length)),
                      "latency_ms_cpu": round(statistics.median(latencies[name]), 4),
                      "latency_ms_onnxruntime": round(statistics.median(onnx_latencies[name]), 4),
                      "channels": channels}
    t = rows["teacher"]
    for name, row in rows.items():
        if name.startswith("student"):
            row["params_reduction"] = round(1 - row["params"] / t["params"], 4)
            row["flops_reduction"] = round(1 - row["flops"] / t["flops"], 4)
            row["speedup"] = round(t["latency_ms_cpu"] / row["latency_ms_cpu"], 2)
            row["speedup_onnxruntime"] = round(t["latency_ms_onnxruntime"] / row["latency_ms_onnxruntime"], 2)
    result = {"config": str(args.config), "window": length, "classes": k, "models": rows,
              "machine": f"{platform.machine()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
                         f"1 thread",
              "command": f"python benchmarks/bench_cost.py --config {args.config} --runs {args.runs}"}
    with atomic_output(HERE / "results" / f"cost_{cfg.dataset}.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'model':<24}{'params':>10}{'MFLOPs':>9}{'torch ms':>10}{'ORT ms':>8}{'params -%':>11}{'FLOPs -%':>10}"
          f"{'speed-up torch / ORT':>22}")
    for name, row in rows.items():
        extra = (f"{100 * row['params_reduction']:>10.1f}%{100 * row['flops_reduction']:>9.1f}%"
                 f"{row['speedup']:>13.1f}x / {row['speedup_onnxruntime']:.1f}x" if "speedup" in row else "")
        print(f"{name:<24}{row['params']:>10,}{row['flops'] / 1e6:>9.3f}{row['latency_ms_cpu']:>10.3f}"
              f"{row['latency_ms_onnxruntime']:>8.3f}{extra}")


if __name__ == "__main__":
    main()
