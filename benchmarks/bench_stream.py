"""Per-hop latency of the streaming predictor over a 10-minute DSADS recording: the kept student in ONNX Runtime
(fp32 and int8, one thread) and on TFLite Micro's kernels (int8), beside the kept teacher (fp32, one thread) and the
student in PyTorch, and the samples per second the whole stream (gap handling, ring buffer, scoring) sustains.

    harkd run configs/dsads.yaml seeds=[0] "methods=[none]" --keep-models --jobs 2 --out runs/kept-s0
    python benchmarks/bench_stream.py runs/kept-s0/models/loso-p1-seed0 [--hop 25]

The recording is the fold's test subject (p1): the first segments of every activity in turn, 120 five-second segments
at 25 Hz (15,000 samples). Writes benchmarks/results/stream_dsads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from harkd.data.catalog import load_recordings
from harkd.models.bundle import load_bundle
from harkd.deploy.onnx_export import export_onnx
from harkd.deploy.quantise import plan_int8, quantisation_data
from harkd.deploy.stream import Prediction, Stream
from harkd.deploy.stream_model import open_model
from harkd.deploy.tflm_export import export_tflm
from harkd.files import atomic_output

HERE = Path(__file__).resolve().parent
SEGMENTS = 120  # x 5 s = 10 minutes


def ten_minutes(subject: str, channel_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """(samples, channels) of `subject`: each activity's next segment in turn until 10 minutes are filled."""
    recordings = [r for r in load_recordings("dsads") if r.subject == subject]
    by_activity: dict[int, list] = {}
    for rec in sorted(recordings, key=lambda r: r.session):
        by_activity.setdefault(int(rec.labels[0]), []).append(rec)
    rounds = -(-SEGMENTS // len(by_activity))
    order = [by_activity[a][i] for i in range(rounds) for a in sorted(by_activity)][:SEGMENTS]
    names = [c.name for c in order[0].channels]
    index = [names.index(n) for n in channel_names]
    return np.concatenate([r.signals[:, index] for r in order]), [order[0].class_names[int(r.labels[0])] for r in order]


def run_stream(path: Path, samples: np.ndarray, rate: float, hop: int) -> dict:
    model = open_model(path, threads=1)
    stream = Stream(model, hop=hop)
    hop_ms, start = [], time.perf_counter()
    for i, row in enumerate(samples):
        before = time.perf_counter()
        events = stream.push(i / rate, row)
        if any(isinstance(e, Prediction) for e in events):
            hop_ms.append(1000 * (time.perf_counter() - before))
    total = time.perf_counter() - start
    stream.finish()
    return {"per_hop_ms_p50": round(float(np.percentile(hop_ms, 50)), 4),
            "per_hop_ms_p99": round(float(np.percentile(hop_ms, 99)), 4), "hops": len(hop_ms),
            "samples_per_s": round(len(samples) / total), "segments": len(stream.segments.done)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("unit", type=Path, help="a kept unit folder: models/<fold>-seed<seed>")
    parser.add_argument("--student", default="student-cnn_student-none.pt")
    parser.add_argument("--hop", type=int, default=25, help="samples between predictions (25 = one per second)")
    args = parser.parse_args()

    load = [round(x, 2) for x in os.getloadavg()]  # 1, 5, 15 min: how busy the machine was
    student, teacher = load_bundle(args.unit / args.student), load_bundle(args.unit / "teacher.pt")
    subject = student.provenance["test_subjects"][0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"student onnx fp32": Path(tmp) / "student.onnx", "student onnx int8": Path(tmp) / "int8.onnx",
                  "student tflm int8": Path(tmp) / "student-tflm.tflite",
                  "teacher onnx fp32": Path(tmp) / "teacher.onnx",
                  "student pytorch": args.unit / args.student}
        plan = plan_int8(student, quantisation_data(student))
        export_onnx(student, models["student onnx fp32"])
        export_onnx(student, models["student onnx int8"], int8=plan)
        export_tflm(plan, models["student tflm int8"])
        export_onnx(teacher, models["teacher onnx fp32"])
        for name, path in models.items():
            bundle = teacher if name.startswith("teacher") else student
            samples, _ = ten_minutes(subject, bundle.channel_names)
            results[name] = run_stream(path, samples, bundle.rate_hz, args.hop)
            print(f"{name}: {results[name]}", flush=True)
    out = HERE / "results" / "stream_dsads.json"
    with atomic_output(out) as tmp_out:
        tmp_out.write_text(json.dumps({
            "command": f"python benchmarks/bench_stream.py {args.unit} --student {args.student} --hop {args.hop}",
            "recording": f"dsads {subject}, {SEGMENTS} segments of 5 s (10 min, {len(samples)} samples at 25 Hz)",
            "hop": args.hop, "threads": 1, "cpu": platform.processor() or platform.machine(),
            "load_average_before": load, "results": results},
            indent=2) + "\n")
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
