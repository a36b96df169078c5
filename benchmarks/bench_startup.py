"""Process start-up: `import torch`, `harkd --help` and a worker process's imports, before and after dropping
Lightning, side by side.

    python benchmarks/bench_startup.py [--runs 7] [--before 49cc9cf]

"Before" is harkd's package at the commit `--before` (default: the last one that imported Lightning), unpacked into
a temporary folder; "after" is this working tree. Both run in this Python environment (which must still have
Lightning installed for "before") with their package first on PYTHONPATH. A worker process spawned by `harkd run
--jobs N` imports harkd.experiment.runner to unpickle its initializer: that import stands for the worker's start.
Every figure is the wall time of a fresh interpreter; the variants alternate within each round so that machine load
hits both alike; one untimed warm-up round fills the file cache. Goal (harkd issue 12): `harkd --help` within 1 s of
`python -c "import torch"`. Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from harkd.environment import environment

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAST_WITH_LIGHTNING = "49cc9cf"
COMMANDS = {
    "import torch": ["-c", "import torch"],
    "harkd --help": ["-m", "harkd", "--help"],
    "worker start": ["-c", "import harkd.experiment.runner"],
}


def unpack_package(commit: str, into: Path) -> None:
    """harkd's package as it was at `commit`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "harkd"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def run_python(args: list[str], root: Path) -> float:
    """Seconds a fresh interpreter takes to run `args` with the harkd package under `root`."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def check_imports_from(root: Path) -> None:
    """The editable install must not shadow the package under test."""
    code = "import harkd, pathlib; print(pathlib.Path(harkd.__file__).resolve())"
    env = {**os.environ, "PYTHONPATH": str(root)}
    found = Path(subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True, capture_output=True,
                                text=True).stdout.strip())
    assert found.is_relative_to(root.resolve()), f"harkd imported from {found}, not from {root}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--before", default=LAST_WITH_LIGHTNING, help="the commit to compare against")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        unpack_package(args.before, Path(tmp))
        roots = {"before": Path(tmp), "after": ROOT}
        for root in roots.values():
            check_imports_from(root)
        times: dict[str, dict[str, list[float]]] = {name: {v: [] for v in roots} for name in COMMANDS}
        for round_ in range(args.runs + 1):
            for name, command in COMMANDS.items():
                for variant, root in roots.items():
                    seconds = run_python(command, root)
                    if round_ > 0:
                        times[name][variant].append(seconds)
    results = {name: {variant: {"median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3)}
                      for variant, t in by_variant.items()} for name, by_variant in times.items()}
    print(f"{'':14s} {'before median':>14s} {'min':>7s} {'after median':>13s} {'min':>7s}")
    for name, r in results.items():
        print(f"{name:14s} {r['before']['median_s']:14.3f} {r['before']['min_s']:7.3f} "
              f"{r['after']['median_s']:13.3f} {r['after']['min_s']:7.3f}")
    over_torch = {v: round(results["harkd --help"][v]["median_s"] - results["import torch"][v]["median_s"], 3)
                  for v in roots}
    print(f"harkd --help minus import torch (median): before {over_torch['before']:+.3f} s, "
          f"after {over_torch['after']:+.3f} s (goal: at most +1 s)")
    out = {"command": "python benchmarks/bench_startup.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
           "before": f"harkd at {args.before}", "after": "the working tree (machine.git_commit, git_dirty)",
           "machine": environment(), "runs": args.runs, "seconds": results,
           "help_minus_import_torch_s": over_torch}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "startup.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
