"""int8 vs fp32 for every kept student of a run: `harkd export --int8` on each (fold, seed) unit's student, macro-F1
fp32 vs int8 on the fold's test windows, int8 weight bytes and peak activations (harkd.deploy.budget).

    harkd run configs/dsads.yaml seeds=[0] "methods=[none]" --keep-models --jobs 2 --out /tmp/keep-s0
    harkd run configs/dsads-smldist.yaml seeds=[0] "methods=[none]" --keep-models --jobs 2 --out /tmp/keep-smld-s0
    python benchmarks/bench_int8.py /tmp/keep-s0 --name dsads-cnn_student
    python benchmarks/bench_int8.py /tmp/keep-smld-s0 --student student-mobilenet_v3_1d-none.pt \
        --name dsads-mobilenet_tiny

Writes benchmarks/results/int8_<name>.json (per fold and the mean and worst fold of the int8 - fp32 difference).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from harkd.deploy.bundle import load_bundle
from harkd.deploy.onnx_export import export_onnx
from harkd.deploy.quantise import quantisation_data
from harkd.files import atomic_output

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `harkd run --keep-models` output folder")
    parser.add_argument("--student", default="student-cnn_student-none.pt", help="the kept student's file name")
    parser.add_argument("--name", required=True, help="results file: benchmarks/results/int8_<name>.json")
    args = parser.parse_args()

    folds = []
    with tempfile.TemporaryDirectory() as tmp:
        for unit in sorted((args.run / "models").iterdir()):
            bundle = load_bundle(unit / args.student)
            start = time.perf_counter()
            data = replace(quantisation_data(bundle), min_agreement=0.0)  # measured, whatever the agreement
            spec = export_onnx(bundle, Path(tmp) / f"{unit.name}.onnx", int8=data)
            q, device = spec["int8"], spec["device"]
            folds.append({"unit": unit.name, **q["test"], "agreement_held_out": q["check"]["agreement"],
                          "weights": device["weights"], "peak_activations": device["peak_activations"],
                          "macs_per_window": device["macs_per_window"], "file_bytes": q["file_bytes"],
                          "latency_ms_per_window": q["latency_ms_per_window"],
                          "export_s": round(time.perf_counter() - start, 1)})
            print(f"{unit.name}: macro-F1 fp32 {q['test']['macro_f1_fp32']:.4f} int8 {q['test']['macro_f1_int8']:.4f} "
                  f"({q['test']['delta_points']:+.2f}); int8 weights {device['weights']['int8_bytes']:,} B, peak "
                  f"activations int8 {device['peak_activations']['int8_bytes']:,} B", flush=True)
    deltas = [f["delta_points"] for f in folds]
    summary = {
        "student": args.student, "model": bundle.model, "params": bundle.params, "units": len(folds),
        "macro_f1_fp32_mean": round(statistics.mean(f["macro_f1_fp32"] for f in folds), 5),
        "macro_f1_int8_mean": round(statistics.mean(f["macro_f1_int8"] for f in folds), 5),
        "delta_points_mean": round(statistics.mean(deltas), 3),
        "delta_points_worst": min(deltas), "abs_delta_points_max": max(abs(d) for d in deltas),
        "int8_weight_bytes_max": max(f["weights"]["int8_bytes"] for f in folds),
        "fp32_weight_bytes_max": max(f["weights"]["fp32_bytes"] for f in folds),
        "peak_activation_bytes_int8_max": max(f["peak_activations"]["int8_bytes"] for f in folds),
        "peak_activation_bytes_fp32_max": max(f["peak_activations"]["fp32_bytes"] for f in folds),
        "calibration": "512 windows of the fold's training subjects (seeded), QDQ per-channel int8, percentile ranges",
    }
    command = shlex.join(["python", "benchmarks/bench_int8.py", str(args.run), "--student", args.student, "--name",
                          args.name])  # the run folder as given
    result = {"command": command, "summary": summary, "folds": folds}
    out = HERE / "results" / f"int8_{args.name}.json"
    with atomic_output(out) as tmp_out:
        tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
