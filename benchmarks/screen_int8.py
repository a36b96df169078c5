"""Screen of int8 recipes for the kept students of a run: each recipe's int8 arithmetic simulated in PyTorch
(harkd.deploy.int8.FakeQuant, what ONNX Runtime and TFLite Micro compute to rounding; tests/test_tflm.py) on every
fold's test windows, against fp32: the mean and worst macro-F1 difference, the folds more than 1 point below, and
how often int8 picks fp32's class. The losers stay in the table.

    python benchmarks/screen_int8.py runs/kept-s0 --name dsads-cnn_student

Recipes: activation ranges at fixed percentiles of the calibration values (99.999: what the ONNX route used
before; 99.99; 99.9), the shipped search (each tensor's clipping chosen to keep fp32's class distribution), and
quantisation-aware fine-tuning on the training windows (KL divergence to fp32) for 300 and 1,000 steps. Writes
benchmarks/results/int8_screen_<name>.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from pathlib import Path

import numpy as np
import torch

import harkd.deploy.int8 as int8
from harkd.models.bundle import load_bundle
from harkd.deploy.lowering import lower
from harkd.deploy.quantise import quantisation_data
from harkd.files import atomic_output
from harkd.metrics import macro_f1

HERE = Path(__file__).resolve().parent


def fixed_percentile(program, windows: np.ndarray, percentile: float) -> int8.Int8Program:
    recorder = int8._Recorder()
    with torch.no_grad():
        program(torch.from_numpy(windows), recorder)
    grids = {name: int8.QParams.of_range(np.percentile(np.concatenate(v), 100 - percentile),
                                         np.percentile(np.concatenate(v), percentile))
             for name, v in recorder.seen.items()}
    return int8.Int8Program(program, int8._fixed_grids(program, grids), f"percentile {percentile}")


RECIPES = {
    "percentile 99.999": lambda p, cal, pool: fixed_percentile(p, cal, 99.999),
    "percentile 99.99": lambda p, cal, pool: fixed_percentile(p, cal, 99.99),
    "percentile 99.9": lambda p, cal, pool: fixed_percentile(p, cal, 99.9),
    "searched (shipped post-training)": lambda p, cal, pool: int8.post_training(p, cal),
    "quantisation-aware, 300 steps": lambda p, cal, pool: int8.quantisation_aware(p, cal, pool, steps=300),
    "quantisation-aware, 1000 steps (shipped)": lambda p, cal, pool: int8.quantisation_aware(p, cal, pool),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `harkd run --keep-models` output folder")
    parser.add_argument("--student", default="student-cnn_student-none.pt")
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    for unit in sorted((args.run / "models").iterdir()):
        bundle = load_bundle(unit / args.student)
        data = quantisation_data(bundle)
        program = lower(bundle.build(), bundle.model)
        cal, pool, test = (bundle.normalise(a) for a in (data.calibration, data.pool, data.test_x))
        with torch.no_grad():
            fp32 = program(torch.from_numpy(test))[program.logits].squeeze(-1).numpy().argmax(1)
        f1 = macro_f1(data.test_y, fp32)
        for recipe, make in RECIPES.items():
            picked = make(program, cal, pool).logits(test).argmax(1)
            rows.append({"unit": unit.name, "recipe": recipe,
                         "delta_points": round(100 * (macro_f1(data.test_y, picked) - f1), 3),
                         "same_class_as_fp32": round(float((picked == fp32).mean()), 5)})
            print(f"{unit.name} {recipe}: {rows[-1]['delta_points']:+.2f} points, same class "
                  f"{rows[-1]['same_class_as_fp32']:.2%}", flush=True)
    summary = {}
    for recipe in RECIPES:
        mine = [r for r in rows if r["recipe"] == recipe]
        deltas = [r["delta_points"] for r in mine]
        summary[recipe] = {"delta_points_mean": round(statistics.mean(deltas), 3), "delta_points_worst": min(deltas),
                           "folds_more_than_1_point_below": sum(d < -1 for d in deltas),
                           "same_class_as_fp32_mean": round(statistics.mean(r["same_class_as_fp32"] for r in mine),
                                                            5)}
    command = shlex.join(["python", "benchmarks/screen_int8.py", str(args.run), "--student", args.student, "--name",
                          args.name])
    out = HERE / "results" / f"int8_screen_{args.name}.json"
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps({"command": command, "summary": summary, "rows": rows}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
