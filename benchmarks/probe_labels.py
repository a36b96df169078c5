"""Probe: which of the teacher's labels a personalised student should learn from. For every unit of a kept run and a
calibration budget, the kept student adapted for 300 steps (lr 0.001, batch 64, session windows every 25 samples)
with CE on one kind of hard label, scored on the second half of the left-out worker's recordings:

- hard: the kept teacher's most probable class;
- hard_bn: that of the teacher with batch-norm statistics re-estimated on the session;
- hard_ens: of the two together (mean probabilities);
- hard_ens_agree: the same, on the windows where the two agree only;
- hard_ens_top80: the same, on the 80% of windows where it is most confident;
- hard_knn: the mean probabilities of each window's 10 nearest session windows in the teacher's representations;
- true_where_teacher_right: the worker's labels on the windows where the kept teacher is right (what removing the
  teacher's mistakes would give; reads true labels, a bound, never a method).

    python benchmarks/probe_labels.py runs/kept-s0 --minutes 1 --out benchmarks/results/dsads-probe-labels.json
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from harkd.data.catalog import load_recordings, load_windows
from harkd.data.registry import WindowConfig
from harkd.models.bundle import load_bundle
from harkd.files import atomic_output
from harkd.metrics import macro_f1
from harkd.personalise.adapt import AdaptSpec, adapt_steps, reestimate_bn
from harkd.personalise.session import SessionCut, contiguous_segments
from harkd.personalise.tune import DEFAULT_TRAIN, labels_of
from harkd.personalise.worker import Worker
from harkd.train.engine import predict

STUDENT = "student-cnn_student-none.pt"


def probe(task: tuple) -> dict:
    unit, minutes = task
    torch.set_num_threads(1)
    teacher_b, student_b = load_bundle(unit / "teacher.pt"), load_bundle(unit / STUDENT)
    dataset, subject = student_b.provenance["dataset"], student_b.provenance["test_subjects"][0]
    windowing = WindowConfig(length=student_b.window, stride=student_b.hop, drop_null=False)
    windows = load_windows(dataset, windowing)
    worker = Worker.of(load_recordings(dataset), (windows, windows), windowing, subject,
                       SessionCut(minutes=minutes, stride=25), 0.5, contiguous_segments(dataset),
                       (partial(teacher_b.normalised_inputs, where=dataset),
                        partial(student_b.normalised_inputs, where=dataset)), student_b.class_names, 0)
    session, student, teacher = worker.session, student_b.build(), teacher_b.build_teacher()
    kept = predict(teacher, session.x_teacher)
    adapted = predict(reestimate_bn(copy.deepcopy(teacher), session.x_teacher), session.x_teacher)
    p_kept, p_bn = kept.logits.softmax(1), adapted.logits.softmax(1)
    both = (p_kept + p_bn) / 2
    reps = torch.cat([F.normalize(v, dim=1) for v in adapted.reps.values()], 1)
    neighbours = (reps @ reps.T).topk(10, dim=1).indices
    y = session.y_true
    everyone = torch.ones(len(y), dtype=torch.bool)
    confident = both.max(1).values
    labels = {"hard": (p_kept.argmax(1), everyone), "hard_bn": (p_bn.argmax(1), everyone),
              "hard_ens": (both.argmax(1), everyone),
              "hard_ens_agree": (both.argmax(1), p_kept.argmax(1) == p_bn.argmax(1)),
              "hard_ens_top80": (both.argmax(1), confident >= confident.quantile(0.2)),
              "hard_knn": (both[neighbours].mean(1).argmax(1), everyone),
              "true_where_teacher_right": (y, p_kept.argmax(1) == y)}
    row = {"unit": unit.name, "minutes": minutes,
           "label_accuracy": {k: round(float((v == y).float().mean()), 4) for k, (v, _) in labels.items()}}
    for name, (target, use) in labels.items():
        weights = use.float() / use.float().sum()
        model = adapt_steps(student, session.x_student, lambda out, i, t=target: F.cross_entropy(out.logits, t[i]),
                            weights, AdaptSpec(steps=300), DEFAULT_TRAIN, 0)
        row[name] = round(macro_f1(worker.y_scored, labels_of(model, worker.scored_student)), 5)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    units = sorted((args.run / "models").iterdir())
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(probe, [(u, args.minutes) for u in units]))
    means = {k: round(100 * statistics.mean(r[k] for r in rows), 2) for k in rows[0]
             if k not in ("unit", "minutes", "label_accuracy")}
    result = {"command": shlex.join(["python", "benchmarks/probe_labels.py", *sys.argv[1:]]), "mean_macro_f1": means,
              "rows": rows}
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(means, indent=1))


if __name__ == "__main__":
    main()
