"""Training steps per second: harkd's engine ("none" and KD methods) against a plain PyTorch loop, side by side.

    python benchmarks/bench_train_overhead.py [--epochs 10] [--rounds 3] [--methods logit,crd,fitnets,dkd]

Same student (cnn_student on 3 channels x 125 samples, 19 classes), same random data shaped like a DSADS fold
(6,840 training and 1,140 validation windows), same batch size, optimiser and schedule. The plain loop does what a
careful user's loop does per epoch: shuffle, train, predict the validation windows and compute their macro-F1 (the
number harkd early-stops on). harkd's runs use `fit` exactly as the runner does (checkpointing included; patience
high enough that nothing stops early). KD methods read teacher targets precomputed from a random teacher, as in a
run. One torch thread; the variants alternate within each round so that machine load hits all alike; the figure is
the median over rounds. Writes benchmarks/results/train_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from harkd.distill.compose import build_method
from harkd.environment import environment
from harkd.experiment.config import MethodSpec
from harkd.metrics import macro_f1
from harkd.models.base import build_model
from harkd.train.engine import TrainConfig, fit, predict

HERE = Path(__file__).resolve().parent
N_TRAIN, N_VAL, CHANNELS, LENGTH, CLASSES = 6840, 1140, 3, 125, 19


def plain_loop(model: torch.nn.Module, train, val, config: TrainConfig) -> int:
    """The reference: a hand-written loop; returns the number of optimiser steps."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    (x, y), (x_val, y_val) = train, val
    steps = 0
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(y))
        for start in range(0, len(y) - config.batch_size + 1, config.batch_size):
            index = order[start:start + config.batch_size]
            loss = F.cross_entropy(model(x[index]).logits, y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
        schedule.step()
        model.eval()
        with torch.inference_mode():
            preds = torch.cat([model(x_val[i:i + 512]).logits.argmax(1) for i in range(0, len(y_val), 512)])
        macro_f1(y_val.numpy(), preds.numpy())
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", default="logit,crd,fitnets,dkd")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN + N_VAL, CHANNELS, LENGTH, generator=generator)
    y = torch.randint(0, CLASSES, (N_TRAIN + N_VAL,), generator=generator)
    train, val = (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:])
    teacher = build_model("tsak_teacher", 45, CLASSES).eval()
    targets = {"train": predict(teacher, torch.randn(N_TRAIN, 45, LENGTH, generator=generator))}
    config = TrainConfig(epochs=args.epochs, batch_size=64, patience=10 * args.epochs, accelerator="cpu")
    steps_per_run = args.epochs * (N_TRAIN // config.batch_size)

    def student() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model("cnn_student", CHANNELS, CLASSES)

    def run_harkd(method: str) -> None:
        model = student()
        distiller = build_method(MethodSpec.parse(method, "bench"), model.rep_dims, teacher.rep_dims, CLASSES,
                                 model.map_dims, teacher.map_dims)
        with tempfile.TemporaryDirectory() as work:
            fit(model, train, val, config, Path(work), seed=0, distiller=distiller,
                teacher=targets if distiller is not None else None)

    variants = {"plain PyTorch loop": lambda: plain_loop(student(), train, val, config),
                "harkd none": lambda: run_harkd("none"),
                **{f"harkd {m}": (lambda m=m: run_harkd(m)) for m in args.methods.split(",") if m}}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    plain = steps_per_run / statistics.median(times["plain PyTorch loop"])
    results = {name: {"steps_per_s": round(steps_per_run / statistics.median(t), 1),
                      "vs_plain": round(steps_per_run / statistics.median(t) / plain, 3)} for name, t in times.items()}
    for name, r in results.items():
        print(f"{name:20s} {r['steps_per_s']:8.1f} steps/s  {r['vs_plain']:.3f}x plain")
    out = {"machine": environment(threads=1), "epochs": args.epochs,
           "rounds": args.rounds, "steps_per_run": steps_per_run, "results": results,
           "command": "python benchmarks/bench_train_overhead.py " + " ".join(
               f"--{k} {v}" for k, v in vars(args).items())}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "train_overhead.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
