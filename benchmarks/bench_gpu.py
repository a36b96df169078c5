"""The DSADS main job (configs/dsads-personalise.yaml, 8 folds x 3 seeds) on a CUDA machine, in fp32 and in bf16,
several units at once on the one GPU: wall time and macro-F1 beside the committed CPU run
(benchmarks/results/dsads-personalise: 10 min 57 s on 2 CPU cores), and whether bf16 moves macro-F1 beyond seed noise.

The device machine gets the repository and at most 64 MiB per call, and reaches nothing else: DSADS's windows
(9120 x 45 x 125 float32, 205 MB) travel as a window cache compressed without loss (151 MB, 4 parts of 40 MiB),
one part per call, gathered in /tmp/harkd-gpu (kept while the machine stays warm: 30 s between calls), with the
wheels of harkd's dependencies its image lacks (pydantic, platformdirs, ...). Steps:

1. Here, once (a few minutes; needs DSADS installed):
       python benchmarks/bench_gpu.py pack
   writes benchmarks/cache/ (ignored by git): part-00 ... part-NN and meta/ (the manifest, the windows' labels and
   subjects, the wheels), and prints the calls.
2. On the device machine, the calls BACK TO BACK (a machine idle for 30 s is given back with what it held):
       run(carry=["benchmarks/cache/part-00"], command="python3 benchmarks/bench_gpu.py receive", timeout_s=120)
       ... one such call per part but the last ...
       run(carry=["benchmarks/cache/part-NN", "benchmarks/cache/meta"],
           command="PYTHONUNBUFFERED=1 python3 benchmarks/bench_gpu.py bench --out $OUT", timeout_s=590)
   `bench` installs the windows as a harkd data root, runs fp32 then bf16 (`harkd run ... --jobs 8`, every train
   section on accelerator cuda) and stops a run at --deadline-s: its finished units stay in the unit store, and the
   same `bench` call again (no carry needed while the machine is warm) resumes where it stopped. $OUT gets
   summary.md, summary.json, each precision's results.json and the log.
3. Tested here end to end on the CPU with a tiny setting:
       python benchmarks/bench_gpu.py bench --accelerator cpu --folds p1 --seeds 0 --epochs 1 --jobs 1 --out /tmp/b

Batch sizes stay the config's (64, 128 for the semantic classifier), so macro-F1 is comparable with the CPU run;
--set passes overrides to every run (e.g. --set students.train.batch_size=256), which change results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / "cache"
META = CACHE / "meta"
STAGE = Path("/tmp/harkd-gpu")
CONFIG = "configs/dsads-personalise.yaml"
CPU_RUN = REPO / "benchmarks" / "results" / "dsads-personalise"
TRAIN_SECTIONS = ("teacher", "semantic", "students", "personalise")
# What the device image lacks of harkd's run path (the rest is there): pinned as constraints.txt pins them.
WHEELS = ("pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions", "platformdirs")
DEVICE_PYTHON = "3.12"
PART_MIB = 40  # + the ~16 MB of tracked files: under the 64 MiB a call carries

sys.path.insert(0, str(REPO / "benchmarks"))


def pack(args: argparse.Namespace) -> None:
    from harkd.data.catalog import _cache_file, load_windows
    from harkd.data.install import INSTALL_MARKER, installed_path
    from harkd.experiment.config import load_config

    cfg = load_config(REPO / CONFIG, [])
    windows = load_windows(cfg.dataset, cfg.windowing, cfg.dataset_options)
    path = installed_path(cfg.dataset)
    cache = _cache_file("windows", cfg.dataset, path, cfg.dataset_options, cfg.windowing.__dict__)
    with np.load(cache, allow_pickle=False) as npz:  # the cache file load_windows just read or wrote
        arrays = {k: npz[k] for k in npz.files}
    assert np.array_equal(arrays["x"], windows.x)
    # Byte planes of the float32s (sign/exponent bytes compress, mantissa bytes hardly): 0.69 of the size with lzma.
    x = arrays.pop("x")
    blob = lzma.compress(np.ascontiguousarray(x.view(np.uint8).reshape(-1, 4).T).tobytes(), preset=6)
    shutil.rmtree(CACHE, ignore_errors=True)
    META.mkdir(parents=True)
    size = args.part_mib << 20
    parts = [blob[i:i + size] for i in range(0, len(blob), size)]
    for i, part in enumerate(parts):
        (CACHE / f"part-{i:02d}").write_bytes(part)
    with open(META / "rest.npz", "wb") as stream:  # labels, subjects, sessions, channel names
        np.savez_compressed(stream, **arrays)
    manifest = {"dataset": cfg.dataset, "marker": (path / INSTALL_MARKER).read_text(), "cache_name": cache.name,
                "x_shape": list(x.shape), "x_sha256": hashlib.sha256(x.tobytes()).hexdigest(),
                "parts": [hashlib.sha256(p).hexdigest() for p in parts]}
    (META / "manifest.json").write_text(json.dumps(manifest))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", DEVICE_PYTHON, "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                    "-c", str(REPO / "constraints.txt"), "-d", str(META / "wheels"), *WHEELS], check=True)
    sizes = {p.name: p.stat().st_size for p in sorted(CACHE.rglob("*")) if p.is_file()}
    print(json.dumps(sizes, indent=1))
    last = f"part-{len(parts) - 1:02d}"
    print(f"{len(parts)} parts of at most {args.part_mib} MiB; on the device, back to back:")
    for i in range(len(parts) - 1):
        print(f'  run(carry=["benchmarks/cache/part-{i:02d}"], command="python3 benchmarks/bench_gpu.py receive")')
    print(f'  run(carry=["benchmarks/cache/{last}", "benchmarks/cache/meta"], '
          f'command="PYTHONUNBUFFERED=1 python3 benchmarks/bench_gpu.py bench --out $OUT", timeout_s=590)')


def receive() -> list[str]:
    """The parts carried by this call, kept in STAGE; the names of all parts STAGE holds."""
    (STAGE / "parts").mkdir(parents=True, exist_ok=True)
    for part in CACHE.glob("part-*"):
        shutil.copyfile(part, STAGE / "parts" / part.name)
    held = sorted(p.name for p in (STAGE / "parts").iterdir())
    print(f"{STAGE / 'parts'} holds {', '.join(held)}")
    return held


def install_windows(root: Path) -> None:
    """A harkd data root whose DSADS install is only its caches: load_windows and load_recordings read them, never
    the raw data."""
    manifest = json.loads((META / "manifest.json").read_text())
    dataset = root / manifest["dataset"]
    staged = STAGE / "windows.npz"
    if (dataset / ".harkd-install.json").is_file():
        return
    parts = [(STAGE / "parts" / f"part-{i:02d}").read_bytes() if (STAGE / "parts" / f"part-{i:02d}").is_file()
             else b"" for i in range(len(manifest["parts"]))]
    bad = [f"part-{i:02d}" for i, p in enumerate(parts) if hashlib.sha256(p).hexdigest() != manifest["parts"][i]]
    if bad:
        sys.exit(f"bench_gpu: missing or damaged {', '.join(bad)} in {STAGE / 'parts'} (the machine went back "
                 f"between calls?): carry them again, back to back")
    planes = np.frombuffer(lzma.decompress(b"".join(parts)), np.uint8).reshape(4, -1)
    x = np.ascontiguousarray(planes.T).view(np.float32).reshape(manifest["x_shape"])
    assert hashlib.sha256(x.tobytes()).hexdigest() == manifest["x_sha256"]
    with np.load(META / "rest.npz", allow_pickle=False) as npz:
        arrays = {"x": x, **{k: npz[k] for k in npz.files}}
    with open(staged, "wb") as stream:
        np.savez(stream, **arrays)
    env = {**os.environ, "HARKD_DATA": str(root), "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", CACHES_FROM_WINDOWS, str(REPO / CONFIG), manifest["marker"], str(staged)],
                   cwd=REPO, env=env, check=True)


# Run with harkd importable: the install marker without the content fingerprint (no raw files here to fingerprint),
# the window cache under the name harkd computes from it, and the recordings rebuilt from the windows: DSADS's windows
# are its 5 s segments, one window each, so each window is a segment's recording exactly (personalisation cuts
# calibration sessions from recordings).
CACHES_FROM_WINDOWS = """
import json, shutil, sys
import numpy as np
from harkd.data.catalog import _cache_file, _pack_recordings, _write_atomic, load_windows
from harkd.data.install import INSTALL_MARKER, data_root
from harkd.data.recording import Recording
from harkd.experiment.config import load_config
cfg = load_config(sys.argv[1], [])
marker = {k: v for k, v in json.loads(sys.argv[2]).items() if k != "content"}
path = data_root() / cfg.dataset
path.mkdir(parents=True, exist_ok=True)
(path / INSTALL_MARKER).write_text(json.dumps(marker))
target = _cache_file("windows", cfg.dataset, path, cfg.dataset_options, cfg.windowing.__dict__)
target.parent.mkdir(parents=True, exist_ok=True)
shutil.copyfile(sys.argv[3], target)
w = load_windows(cfg.dataset, cfg.windowing, cfg.dataset_options)
recordings = [Recording(w.x[i].T, w.channels, np.full(w.x.shape[2], w.y[i]), w.class_names, str(w.subjects[i]),
                        str(w.sessions[i]), w.rate_hz, w.null_class) for i in range(len(w))]
_write_atomic(_cache_file("recordings", cfg.dataset, path, cfg.dataset_options, {}), _pack_recordings(recordings))
print(f"{len(w)} windows and {len(recordings)} recordings installed from the carried windows")
"""


def install_wheels() -> None:
    """harkd's dependencies that this Python lacks, from the carried wheels, for the runs' processes."""
    if all(_importable(name) for name in ("pydantic", "platformdirs")):
        return
    site = STAGE / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--upgrade", "--target", str(site), *map(str, sorted((META / "wheels").glob("*.whl")))],
                   check=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))


def _importable(name: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True).returncode == 0


def overrides(args: argparse.Namespace, precision: str) -> list[str]:
    sets = [f"seeds=[{args.seeds}]"] + ([f"split.folds=[{args.folds}]"] if args.folds else [])
    for section in TRAIN_SECTIONS:
        sets += [f"{section}.train.precision={precision}", f"{section}.train.accelerator={args.accelerator}"]
        sets += [f"{section}.train.epochs={args.epochs}"] if args.epochs else []
    return sets + args.set


def run(args: argparse.Namespace, precision: str, root: Path, deadline: float) -> dict:
    """One `harkd run`, stopped (SIGINT: finished units stay in its unit store) when the deadline comes."""
    out = STAGE / "runs" / precision
    if (out / "results.json").is_file():  # finished in an earlier call on this machine
        return {"precision": precision, "finished": True, "this_call_s": 0.0}
    command = [sys.executable, "-m", "harkd", "run", CONFIG, *overrides(args, precision), "--out", str(out),
               "--jobs", str(args.jobs)]
    print(f"$ {' '.join(command)}", flush=True)
    env = {**os.environ, "HARKD_DATA": str(root), "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    clock = time.perf_counter()
    with open(STAGE / "runs" / f"{precision}.log", "a") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.send_signal(2)
            process.wait(timeout=60)
            return {"precision": precision, "finished": False, "this_call_s": round(time.perf_counter() - clock, 1)}
    if process.returncode != 0:
        sys.exit(f"bench_gpu: the {precision} run failed (exit {process.returncode}); see {log.name}")
    return {"precision": precision, "finished": True, "this_call_s": round(time.perf_counter() - clock, 1)}


def paired(a: pd.DataFrame, b: pd.DataFrame) -> list[dict]:
    from rerun_diff import compare
    return compare(a, b)["per_method"] if len(a) and len(b) else []


def seed_noise(rows: pd.DataFrame) -> dict:
    """Per role/model/method: the std of macro-F1 over seeds within a fold, averaged over folds."""
    spread = rows.groupby(["role", "model", "method", "fold"])["macro_f1"].std().groupby(["role", "model", "method"])
    return {"/".join(k): round(float(v), 5) for k, v in spread.mean().items()}


def _beyond_noise(m: dict) -> str:
    if m["cells"] < 2:
        return f"not judged ({100 * m['mean_delta']:+.2f} points, one pair)"
    error = m["std_delta"] / np.sqrt(m["cells"])
    verdict = "yes" if abs(m["mean_delta"]) > 2 * error else "no"
    return f"{verdict} ({100 * m['mean_delta']:+.2f} ± {100 * error:.2f} points, {m['cells']} pairs)"


def summarise(args: argparse.Namespace, runs: list[dict], out: Path) -> None:
    from rerun_diff import read_rows

    results = {r["precision"]: STAGE / "runs" / r["precision"] / "results.json" for r in runs if r["finished"]}
    rows = {p: read_rows(path) for p, path in results.items()}
    summary = {"command": " ".join(sys.argv), "runs": runs,
               "wall_time_s": {p: json.loads(path.read_text())["wall_time_s"] for p, path in results.items()},
               "cpu_wall_time_s": json.loads((CPU_RUN / "results.json").read_text())["wall_time_s"],
               "machine": {p: json.loads(path.read_text())["machine"] for p, path in results.items()},
               "seed_noise": {p: seed_noise(r) for p, r in rows.items() if args.seeds.count(",") > 0},
               "vs_cpu": {p: paired(read_rows(CPU_RUN), r) for p, r in rows.items()},
               "bf16_vs_fp32": paired(rows["fp32"], rows["bf16"]) if {"fp32", "bf16"} <= rows.keys() else []}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    lines = [f"# DSADS main job on {args.accelerator}", "", f"- command: `{summary['command']}`",
             f"- CPU run (committed): {summary['cpu_wall_time_s']:.0f} s"]
    lines += [f"- {p}: {s:.0f} s on {summary['machine'][p]} (goal 600 s: {'met' if s <= 600 else 'missed'})"
              for p, s in summary["wall_time_s"].items()]
    lines += ["", "bf16 beyond seed noise (|mean paired delta| > 2 standard errors), per role/model/method:"]
    lines += [f"- {m['role']}/{m['model']}/{m['method']}: {_beyond_noise(m)}" for m in summary["bf16_vs_fp32"]]
    for title, table in [*((f"{p} - CPU", t) for p, t in summary["vs_cpu"].items()),
                         ("bf16 - fp32", summary["bf16_vs_fp32"])]:
        lines += ["", f"## macro-F1, {title} (paired per fold and seed, points)", "",
                  "| role/model/method | cells | mean A | mean B | B - A ± std |", "|---|---|---|---|---|"]
        lines += [f"| {m['role']}/{m['model']}/{m['method']} | {m['cells']} | {100 * m['mean_a']:.2f} | "
                  f"{100 * m['mean_b']:.2f} | {100 * m['mean_delta']:+.2f} ± "
                  f"{100 * np.nan_to_num(m['std_delta']):.2f} |" for m in table]
    for p, noise in summary["seed_noise"].items():
        lines += ["", f"## seed noise ({p}): std of macro-F1 over seeds within a fold, mean over folds (points)", ""]
        lines += [f"- {k}: {100 * v:.2f}" for k, v in noise.items()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for p, path in results.items():
        shutil.copyfile(path, out / f"results-{p}.json")


def bench(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.deadline_s
    receive()
    install_wheels()
    root = STAGE / "data"
    install_windows(root)
    (STAGE / "runs").mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for precision in args.precisions.split(","):
        runs.append(run(args, precision, root, deadline))
        if not runs[-1]["finished"]:
            print(f"stopped the {precision} run at the deadline: the same command again resumes it")
            break
    for log in (STAGE / "runs").glob("*.log"):
        shutil.copyfile(log, args.out / log.name)
    summarise(args, runs, args.out)


def run_configs(args: argparse.Namespace) -> None:
    """Device: `harkd run` of each config at once on the machine's CPUs, each with --jobs; results.json of each to
    --out (named after its config), the logs into one file."""
    receive()
    install_wheels()
    root = STAGE / "data"
    install_windows(root)
    env = {**os.environ, "HARKD_DATA": str(root), "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {Path(c).stem: STAGE / "configs" / Path(c).stem for c in args.configs}
    deadline = time.monotonic() + args.deadline_s
    with open(STAGE / "run-configs.log", "a") as log:
        processes = [subprocess.Popen([sys.executable, "-m", "harkd", "run", config, *args.set, "--out", str(out),
                                       "--jobs", str(args.jobs)], cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT) for config, out in zip(args.configs, runs.values())]
        codes = []
        for process in processes:  # past the deadline a run stops (SIGINT): its finished units stay for a rerun
            try:
                codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                process.send_signal(2)
                codes.append(process.wait(timeout=60))
    shutil.copyfile(STAGE / "run-configs.log", args.out / "run-configs.log")
    for (name, out), code in zip(runs.items(), codes):
        if code == 0:
            shutil.copyfile(out / "results.json", args.out / f"{name}.json")
    print(f"exit codes {codes}; results in {args.out}; a run stopped at the deadline resumes with the same command")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    packing = steps.add_parser("pack", help="here: the window cache's parts and the wheels under benchmarks/cache")
    packing.add_argument("--part-mib", type=int, default=PART_MIB)
    steps.add_parser("receive", help="device: keep this call's part in /tmp/harkd-gpu")
    running = steps.add_parser("bench", help="device: install the windows, run fp32 and bf16, summarise into --out")
    running.add_argument("--out", type=Path, required=True)
    running.add_argument("--accelerator", default="cuda", choices=["cuda", "cpu"])
    running.add_argument("--precisions", default="fp32,bf16")
    running.add_argument("--seeds", default="0,1,2")
    running.add_argument("--folds", default="", help="e.g. p1,p2 (default: all 8)")
    running.add_argument("--epochs", type=int, default=0, help="every train section's epochs (default: the config's)")
    running.add_argument("--jobs", type=int, default=8, help="units at once (processes sharing the GPU)")
    running.add_argument("--deadline-s", type=float, default=540)
    running.add_argument("--set", action="append", default=[], help="another override for every run")
    configs = steps.add_parser("run-configs", help="device: install the windows, `harkd run` each config on the CPUs")
    configs.add_argument("configs", nargs="+")
    configs.add_argument("--out", type=Path, required=True)
    configs.add_argument("--jobs", type=int, default=3, help="processes per run (all runs start at once)")
    configs.add_argument("--set", action="append", default=[], help="an override for every run")
    configs.add_argument("--deadline-s", type=float, default=540)
    args = parser.parse_args()
    {"pack": pack, "receive": lambda _: receive(), "bench": bench, "run-configs": run_configs}[args.step](args)


if __name__ == "__main__":
    main()
