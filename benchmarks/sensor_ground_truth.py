"""Ground truth for `harkd search-sensors`: every kit of a search's space run as `harkd run` would run its config, on
every fold of the config's split (its one seed), so that what the search says about a kit can be set against the
kit's test macro-F1 on workers it never saw (issue 25).

    python benchmarks/sensor_ground_truth.py configs/dsads-sensors.yaml search.modality_sets=[[acc]] \
        --out runs/dsads-kits --json runs/dsads-kits/acc-only.json [--jobs 2] [--personalise]

For each kit: OUT/configs/<kit>.yaml (the kit's run config, as the search writes a front member's, without its
personalise section unless --personalise) and OUT/runs/<kit>/ (the run). Resumable: a kit whose run finished is read
back, an interrupted one resumes from its unit store, and the trained teachers are shared through the teacher store
(one per fold for every kit); spaces that share kits (acc-only and one-position) share their runs in one OUT.
Writes --json (default OUT/ground-truth.json): per kit, its channels and cost and the test macro-F1 of
the student alone and with the search's KD method (mean, std and per fold), with the command.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import yaml

from harkd.experiment.compare import read_results
from harkd.experiment.config import parse_config
from harkd.experiment.fold_unit import load_data
from harkd.experiment.rows import rows_of
from harkd.experiment.runner import run_experiment
from harkd.experiment.teacher_cache import TeacherStore, teacher_root
from harkd.files import atomic_output
from harkd.search.sensor_report import confirmed_scores, slug
from harkd.search.sensor_search import load_sensor_search, space_of
from harkd.search.sensor_space import kit_key, run_config


def kit_run(resolved: dict, kit, seed: int, personalise: bool) -> dict:
    """The kit's `harkd run` config: the search's data, teacher and student on the kit, alone and with its KD."""
    raw = run_config(resolved, kit)
    raw["seeds"] = [seed]
    if not personalise:
        raw.pop("personalise", None)
    return raw


def run_kit(raw: dict, out: Path, name: str, jobs: int) -> dict:
    """The kit's results (its run read back when finished, else trained or resumed)."""
    config, run_dir = out / "configs" / f"{name}.yaml", out / "runs" / name
    if not (run_dir / "results.json").is_file():
        parse_config(raw, where=str(config))
        config.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(config) as tmp:
            tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
        run_experiment(parse_config(raw, where=str(config)), run_dir, f"harkd run {config} --out {run_dir}",
                       log=lambda line: print(line, file=sys.stderr, flush=True), jobs=jobs,
                       teachers=TeacherStore(teacher_root()))  # as `harkd run`: the kits share each fold's teacher
    return read_results(run_dir)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # as `harkd` does on SIGTERM: the run stops its workers and keeps its finished units


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the search config (its space)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, help="where the kits' scores go (default OUT/ground-truth.json)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--personalise", action="store_true", help="keep the config's personalise section")
    args = parser.parse_args()
    config = load_sensor_search(args.config, args.overrides)
    data = load_data(config)
    space = space_of(config, data.teacher_view, data.n_classes)
    began, kits = time.perf_counter(), []
    for i, candidate in enumerate(space.candidates):
        name = slug(kit_key(candidate.kit))
        print(f"[{i + 1}/{len(space.candidates)}] {kit_key(candidate.kit)}", file=sys.stderr, flush=True)
        results = run_kit(kit_run(config.resolved, candidate.kit, config.seed, args.personalise), args.out, name,
                          args.jobs)
        scores = confirmed_scores(rows_of(results["rows"]), config.method.name)
        kits.append({"kit": kit_key(candidate.kit), "positions": len(candidate.kit), "channels": candidate.channels,
                     "flops": candidate.flops, "params": candidate.params, "run": str(args.out / "runs" / name),
                     **{k: scores[k] for k in ("teacher", "alone", "kd") if k in scores}})
    command = " ".join(["python", "benchmarks/sensor_ground_truth.py", *sys.argv[1:]])
    written = args.json or args.out / "ground-truth.json"
    with atomic_output(written) as tmp:
        tmp.write_text(json.dumps({"command": command, "method": config.method.name, "seed": config.seed,
                                   "this_invocation_s": round(time.perf_counter() - began, 1), "kits": kits}, indent=1)
                       + "\n")
    print(f"wrote {written}: {len(kits)} kits", file=sys.stderr)


if __name__ == "__main__":
    main()
