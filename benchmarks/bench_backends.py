"""The same run under the local backend (`--jobs 2`) and on a two-node Ray cluster on this machine (127.0.0.1, one CPU
per node): wall time side by side, and the rows compared.

    python benchmarks/bench_backends.py [--folds p1,p2,p3,p4] [--config configs/dsads-personalise.yaml]

Each run is `harkd run CONFIG seeds=[0] split.folds=[...]` in a fresh process, timed from start to exit (data loading,
Ray's connection and the costs included; the cluster is started before and timed on its own). Writes
benchmarks/results/backends/backends.json and backends.md; the machine's load (`uptime`) is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harkd.environment import environment
from harkd.files import atomic_output

HERE = Path(__file__).resolve().parent
TIMINGS = ("train_time_s", "latency_ms_cpu")  # the only fields that may differ between two runs


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed_run(args: list[str], out: Path) -> dict:
    """Wall seconds of `harkd run ARGS --out OUT` and its rows without the timing fields."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harkd", "run", *args, "--out", str(out)], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())
    return {"wall_s": round(wall, 1), "recorded_wall_time_s": results["wall_time_s"],
            "rows": [{k: v for k, v in r.items() if k not in TIMINGS} for r in results["rows"]]}


def loopback_cluster():
    """Head and one worker node, one CPU each, bound to 127.0.0.1, and the seconds they took to start."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before importing Ray: see harkd's ray backend
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 600 * 2**20}
    start = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    return cluster, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/dsads-personalise.yaml")
    parser.add_argument("--folds", default="p1,p2,p3,p4")
    opts = parser.parse_args()
    args = [opts.config, "seeds=[0]", f"split.folds=[{opts.folds}]"]
    load_before = uptime()
    with tempfile.TemporaryDirectory(prefix="harkd-bench-backends-") as tmp:
        local = timed_run([*args, "--jobs", "2"], Path(tmp) / "local")
        cluster, cluster_s = loopback_cluster()
        try:
            ray = timed_run([*args, "--backend", "ray", "--address", cluster.address], Path(tmp) / "ray")
        finally:
            cluster.shutdown()
    same = local.pop("rows") == ray.pop("rows")
    ratio = ray["wall_s"] / local["wall_s"]
    report = {
        "command": " ".join(["python benchmarks/bench_backends.py", *sys.argv[1:]]),
        "run": "harkd run " + " ".join(args),
        "local": {"options": "--jobs 2", **local},
        "ray": {"options": "--backend ray --address 127.0.0.1:PORT (two nodes, one CPU each)", **ray,
                "cluster_start_s": round(cluster_s, 1)},
        "ray_over_local": round(ratio, 3), "goal": "<= 1.2", "rows_identical": same,
        "load_before": load_before, "load_after": uptime(), "environment": environment(threads=1),
    }
    folder = HERE / "results" / "backends"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_output(folder / "backends.json") as path:
        path.write_text(json.dumps(report, indent=1) + "\n")
    table = (f"# Local processes vs a two-node Ray cluster on one machine\n\n`{report['command']}` runs\n"
             f"`{report['run']}` twice.\n\n| backend | options | wall (s) | recorded in results.json (s) |\n"
             f"|---|---|---|---|\n"
             f"| local | --jobs 2 | {local['wall_s']} | {local['recorded_wall_time_s']} |\n"
             f"| ray | two loopback nodes, 1 CPU each | {ray['wall_s']} | {ray['recorded_wall_time_s']} |\n\n"
             f"Ray / local: **{ratio:.2f}x** (goal <= 1.2x); rows identical (timings aside): {same}; the cluster "
             f"took {cluster_s:.1f} s to start, before the Ray run's clock.\n\nLoad before: `{load_before}`; after: "
             f"`{report['load_after']}`.\n")
    with atomic_output(folder / "backends.md") as path:
        path.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
