"""What the store of trained teachers saves: the main config run with an empty store, then again with one more
student method (a user's loop: the teachers are the same, the students vary), side by side in one invocation.

    python benchmarks/bench_teacher_cache.py [--config configs/dsads-personalise.yaml] [--method at]
        [--jobs 2] [--keep DIR] [--committed benchmarks/results/dsads-personalise] [OVERRIDES ...]

Both runs use a fresh store in a temporary folder and go through `harkd run` as a user runs it. Reports each run's
wall time, how many teachers each trained (from the runs' logs), the second's share of the first's time, and whether
the cells the runs share are identical (benchmarks/rerun_diff.py's comparison). The first run (an empty store) is also
compared with `--committed`, the config's committed run, so one invocation shows both that the store's rows are the
runs' rows and that the code reruns the committed figures; `--keep DIR` keeps both runs' folders. Writes
benchmarks/results/teacher-cache.json.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rerun_diff import compare, read_rows  # noqa: E402

from harkd.environment import environment  # noqa: E402
from harkd.files import atomic_output  # noqa: E402

HERE = Path(__file__).resolve().parent


def _run(config: str, out: Path, overrides: list[str], jobs: int, env: dict) -> dict:
    command = [sys.executable, "-m", "harkd", "run", config, *overrides, "--out", str(out), "--jobs", str(jobs)]
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    units = [line for line in done.stderr.splitlines() if line.startswith("[") and "] seed " in line]  # not heartbeats
    return {"command": " ".join(["harkd", "run", config, *overrides, "--jobs", str(jobs)]),
            "wall_time_s": round(time.perf_counter() - began, 1), "units": len(units),
            "teachers_from_store": sum("(from the teacher store)" in line for line in units)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/dsads-personalise.yaml")
    parser.add_argument("--method", default="at", help="the method the second run adds")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep both runs' folders under this folder")
    parser.add_argument("--committed", type=Path, default=HERE / "results" / "dsads-personalise",
                        help="the committed run the first run is compared with")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for both runs, e.g. seeds=[0]")
    args = parser.parse_args()
    import yaml

    methods = yaml.safe_load(Path(args.config).read_text())["methods"]
    more = [*args.overrides, f"methods={json.dumps([*methods, args.method])}"]
    with tempfile.TemporaryDirectory(prefix="harkd-bench-teachers-") as tmp:
        runs = args.keep or Path(tmp)
        env = {**os.environ, "HARKD_TEACHERS": str(Path(tmp) / "teachers")}
        first = _run(args.config, runs / "first", args.overrides, args.jobs, env)
        second = _run(args.config, runs / "second", more, args.jobs, env)
        same = compare(read_rows(runs / "first"), read_rows(runs / "second"))
        committed = compare(read_rows(args.committed), read_rows(runs / "first"))
    where = args.committed.resolve()
    shown = where.relative_to(Path.cwd()) if where.is_relative_to(Path.cwd()) else where  # repository-relative
    result = {"command": " ".join(["python", "benchmarks/bench_teacher_cache.py", *sys.argv[1:]]),
              "machine": environment(threads=1)["cpu"], "first": first, "second_with_one_more_method": second,
              "second_share_of_first": round(second["wall_time_s"] / first["wall_time_s"], 3),
              "shared_cells": same["cells"], "identical_cells": same["identical_cells"],
              "first_vs_committed": {"committed": str(shown), "shared_cells": committed["cells"],
                                     "identical_cells": committed.get("identical_cells", 0),
                                     "max_abs_delta_macro_f1": committed.get("max_abs_delta_macro_f1")}}
    with atomic_output(HERE / "results" / "teacher-cache.json") as out:
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
