"""int8 against fp32 for every kept student of a run, post-training and quantisation-aware, on ONNX Runtime and on
TensorFlow Lite Micro's own kernels: macro-F1 on each fold's test windows, how often the two runtimes pick the same
class, file and arena bytes, and latency per window. One row per (fold, method), written as each finishes (a rerun
keeps the finished rows).

    harkd run configs/dsads.yaml seeds=[0] "methods=[none]" --keep-models --jobs 2 --out runs/kept-s0
    harkd run configs/dsads-smldist.yaml seeds=[0] "methods=[none]" --keep-models --jobs 2 --out runs/kept-smld-s0
    python benchmarks/bench_int8.py runs/kept-s0 --name dsads-cnn_student
    python benchmarks/bench_int8.py runs/kept-smld-s0 --student 'student-mobilenet_v3_1d(preset=tiny)-none.pt' \\
        --name dsads-mobilenet_tiny

Writes benchmarks/results/int8_<name>.json: the rows and, per method and runtime, the mean and worst fold of
int8 - fp32 and the folds more than 1 point below fp32; "auto" is what `harkd export` picks by default (its rule
applied to each fold's two rows).
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

import torch

from harkd.models.bundle import load_bundle
from harkd.deploy.onnx_export import export_onnx, ort_probabilities, ort_session
from harkd.deploy.quantise import QAT_BELOW, QAT_MARGIN, plan_int8, quantisation_data
from harkd.deploy.tflm import run_tflm
from harkd.deploy.tflm_export import export_tflm
from harkd.files import atomic_output

HERE = Path(__file__).resolve().parent
METHODS = ("post-training", "quantisation-aware")


def fold_row(bundle, data, method: str, tmp: Path) -> dict:
    start = time.perf_counter()
    plan = plan_int8(bundle, data, method)
    onnx_spec = export_onnx(bundle, tmp / "m.onnx", int8=plan)
    tflm_spec = export_tflm(plan, tmp / "m.tflite")
    x = data.test_x
    onnx_classes = ort_probabilities(ort_session(tmp / "m.onnx"), x).argmax(1)
    q = plan.program
    tflm_classes = run_tflm((tmp / "m.tflite").read_bytes(), bundle.normalise(x), q.qparams["input"],
                            q.qparams[q.program.logits], tflm_spec["device"]["arena_bytes"]).argmax(1)
    o, t = onnx_spec["int8"], tflm_spec["int8"]
    return {"method": method, "windows": len(x), "macro_f1_fp32": o["test"]["macro_f1_fp32"],
            "onnx": {"macro_f1": o["test"]["macro_f1_int8"], "delta_points": o["test"]["delta_points"],
                     "check_agreement": o["check"]["agreement"], "file_bytes": o["file_bytes"]["int8"],
                     "latency_ms": {"p50": o["latency_ms_per_window"]["int8"], "p99": o["latency_ms_p99"]["int8"]},
                     "fp32_file_bytes": o["file_bytes"]["fp32"],
                     "fp32_latency_ms": o["latency_ms_per_window"]["fp32"]},
            "tflm": {"macro_f1": t["test"]["macro_f1_int8"], "delta_points": t["test"]["delta_points"],
                     "check_agreement": t["check"]["agreement"], "simulation": t["simulation"],
                     **{k: tflm_spec["device"][k] for k in ("file_bytes", "weight_bytes", "arena_bytes")},
                     "latency_ms": tflm_spec["device"]["latency_ms_per_window_tflm_python"]},
            "tflm_vs_onnx_same_class": round(float((onnx_classes == tflm_classes).mean()), 5),
            "agreement_by_method": o["calibration"]["agreement_by_method"],
            "macs_per_window": tflm_spec["device"]["macs_per_window"],
            "seconds": round(time.perf_counter() - start, 1)}


def auto_rows(rows: list[dict]) -> list[dict]:
    """For each fold, the row `harkd export`'s default (auto) keeps."""
    picked = []
    for unit in dict.fromkeys(r["unit"] for r in rows):
        mine = {r["method"]: r for r in rows if r["unit"] == unit}
        if len(mine) < len(METHODS):
            continue
        ptq, qat = (mine[m]["onnx"]["check_agreement"] for m in METHODS)
        picked.append(mine["quantisation-aware"] if ptq < QAT_BELOW and qat > ptq + QAT_MARGIN else
                      mine["post-training"])
    return picked


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for method, chosen in [(m, [r for r in rows if r["method"] == m]) for m in METHODS] + [("auto", auto_rows(rows))]:
        if not chosen:
            continue
        mean = lambda key: round(statistics.mean(r[key] for r in chosen), 5)  # noqa: E731
        entry = {"folds": len(chosen), "macro_f1_fp32_mean": mean("macro_f1_fp32"),
                 "tflm_vs_onnx_same_class_mean": mean("tflm_vs_onnx_same_class"),
                 "tflm_vs_onnx_same_class_worst": min(r["tflm_vs_onnx_same_class"] for r in chosen)}
        if method == "auto":
            entry["picked"] = [r["method"] for r in chosen]
        for runtime in ("onnx", "tflm"):
            deltas = [r[runtime]["delta_points"] for r in chosen]
            entry[runtime] = {"delta_points_mean": round(statistics.mean(deltas), 3), "delta_points_worst": min(deltas),
                              "folds_more_than_1_point_below": sum(d < -1 for d in deltas)}
        summary[method] = entry
    last = rows[-1]
    summary["device"] = {"tflm_file_bytes": last["tflm"]["file_bytes"],
                         "tflm_weight_bytes": last["tflm"]["weight_bytes"],
                         "tflm_arena_bytes_max": max(r["tflm"]["arena_bytes"] for r in rows),
                         "onnx_int8_file_bytes": last["onnx"]["file_bytes"],
                         "onnx_fp32_file_bytes": last["onnx"]["fp32_file_bytes"],
                         "macs_per_window": last["macs_per_window"],
                         "latency_ms_p50_median": {
                             "onnx_fp32": statistics.median(r["onnx"]["fp32_latency_ms"] for r in rows),
                             "onnx_int8": statistics.median(r["onnx"]["latency_ms"]["p50"] for r in rows),
                             "tflm_int8_python": statistics.median(r["tflm"]["latency_ms"]["p50"] for r in rows)}}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `harkd run --keep-models` output folder")
    parser.add_argument("--student", default="student-cnn_student-none.pt", help="the kept student's file name")
    parser.add_argument("--name", required=True, help="results file: benchmarks/results/int8_<name>.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread per process, as harkd measures; also what makes the fine-tuning repeat

    out = HERE / "results" / f"int8_{args.name}.json"
    command = shlex.join(["python", "benchmarks/bench_int8.py", str(args.run), "--student", args.student, "--name",
                          args.name])
    rows = json.loads(out.read_text())["rows"] if out.is_file() and "rows" in json.loads(out.read_text()) else []
    done = {(r["unit"], r["method"]) for r in rows}
    for unit in sorted((args.run / "models").iterdir()):
        bundle = load_bundle(unit / args.student)
        data = replace(quantisation_data(bundle), min_agreement=0.0)  # measured, whatever the agreement
        for method in METHODS:
            if (unit.name, method) in done:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                row = {"unit": unit.name, **fold_row(bundle, data, method, Path(tmp))}
            rows.append(row)
            print(f"{unit.name} {method}: macro-F1 fp32 {row['macro_f1_fp32']:.4f}; int8 ONNX "
                  f"{row['onnx']['delta_points']:+.2f}, TFLM {row['tflm']['delta_points']:+.2f} points; same class "
                  f"{row['tflm_vs_onnx_same_class']:.2%}; TFLM file {row['tflm']['file_bytes']:,} B, arena "
                  f"{row['tflm']['arena_bytes']:,} B ({row['seconds']} s)", flush=True)
            with atomic_output(out) as tmp_out:
                tmp_out.write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    result = {"command": command, "model": bundle.model, "params": bundle.params,
              "calibration": "512 windows of each fold's training subjects (seeded); 1,024 more held out to check",
              "summary": summarise(rows), "rows": rows}
    with atomic_output(out) as tmp_out:
        tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
