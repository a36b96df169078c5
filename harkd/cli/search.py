"""`harkd search-head` and `harkd search-sensors`: Optuna studies over heads and sensor kits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from harkd.cli.app import NO_TEACHER_CACHE, _teachers, app

if TYPE_CHECKING:
    from harkd.execution.ray_cluster import RayBackend


SEARCH_STORAGE = typer.Option(None, "--storage", help="Optuna storage URL shared by every process and machine "
                              "(default: sqlite:///OUT/search.db)")
SEARCH_PRINT_CONFIG = typer.Option(False, "--print-config", help="print the config with every default filled in, as "
                                   "YAML, and exit without searching")
TRIALS_BACKEND = typer.Option("local", "--backend", help="local (this machine) or ray: each trial a task on a Ray "
                              "cluster, sharing the study's storage (pip install 'harkd\\[ray]')")
TRIALS_ADDRESS = typer.Option(None, "--address", help="with --backend ray: HOST:PORT of the cluster's head (default: "
                              "a Ray instance on this machine, 127.0.0.1 only); on several machines, give --storage a "
                              "database every node reaches")
CPUS_PER_TRIAL = typer.Option(None, "--cpus-per-trial", help="with --backend ray: CPUs each trial holds (default 1; "
                              "fractions allowed)")
GPUS_PER_TRIAL = typer.Option(None, "--gpus-per-trial", help="with --backend ray: GPUs each trial holds (default 0; "
                              "fractions allowed)")


SEARCH_JOBS = typer.Option(1, "--jobs", min=1, help="processes sharing the study on this machine (one torch thread "
                          "each)")


@dataclass(frozen=True)
class _Start:
    """What both searches take from their command line: the output folder, the command as results record it, and
    the Ray backend (None: this machine)."""

    out: Path
    command: str
    ray: Optional["RayBackend"]


def _start(name: str, config: Path, overrides: Optional[list[str]], out: Optional[Path], trials: Optional[int],
           storage: Optional[str], options: list[str], ray_options: tuple) -> _Start:
    from harkd.execution.ray_cluster import RayBackend

    ray = RayBackend.from_options(*ray_options, per="trial")
    out = out or Path("runs") / config.stem
    command = " ".join(["harkd", name, str(config), *(overrides or []), "--out", str(out)]
                       + (["--trials", str(trials)] if trials is not None else [])
                       + (["--storage", storage] if storage else []) + options + (ray.cli_options() if ray else []))
    return _Start(out, command, ray)


@app.command("search-head", rich_help_panel="Search", context_settings={"allow_extra_args": False})
def search_head(
    config: Path = typer.Argument(..., help="search YAML: a run config's data and student sections plus `search` "
                                            "(see configs/dsads-head-search.yaml)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. students.train.epochs=2"),
    trials: Optional[int] = typer.Option(None, "--trials", help="finished trials in total, resumed ones included "
                                                                "(default: search.trials)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for search.json, search.png and search.db "
                                                           "(default: runs/<config name>)"),
    storage: Optional[str] = SEARCH_STORAGE,
    print_config: bool = SEARCH_PRINT_CONFIG,
    backend: str = TRIALS_BACKEND,
    address: Optional[str] = TRIALS_ADDRESS,
    cpus_per_trial: Optional[float] = CPUS_PER_TRIAL,
    gpus_per_trial: Optional[float] = GPUS_PER_TRIAL,
    no_teacher_cache: bool = NO_TEACHER_CACHE,
    jobs: int = SEARCH_JOBS,
) -> None:
    """SMLDist's classifier-head search: the best head for the student under the config's cost budget."""
    from harkd.experiment.config import read_config
    from harkd.search import load_search_config, run_head_search
    from harkd.search.head_search import search_yaml

    if print_config:
        typer.echo(search_yaml(read_config(config, overrides or []), str(config)), nl=False)
        return
    start = _start("search-head", config, overrides, out, trials, storage, ["--jobs", str(jobs)] if jobs != 1 else [],
                   (backend, address, cpus_per_trial, gpus_per_trial))
    cfg, out = load_search_config(config, overrides or []), start.out
    results = run_head_search(cfg, out, config.stem, trials, storage, start.command,
                              log=lambda line: typer.echo(line, err=True), ray=start.ray,
                              teachers=_teachers(no_teacher_cache), jobs=jobs)
    best = results["best"]
    if best is None:
        typer.echo(f"no head within the budget among {results['finished']} trials; wrote {out / 'search.json'}")
        return
    options = " ".join(f"{k}={v}" for k, v in best["options"].items() if k != "head")
    typer.echo(f"best head: {best['head']} ({options}): {best['params']:,} params, {best['flops'] / 1e6:.3f} "
               f"MFLOPs, val F1 {best['val_f1']:.3f} (trial {best['number']} of {results['finished']})")
    typer.echo(f"wrote {out / 'search.json'} and {out / 'search.png'}")


# Over 40 lines with its signature only: a typer command declares each of its options as a parameter.
@app.command("search-sensors", rich_help_panel="Search", context_settings={"allow_extra_args": False})
def search_sensors_cmd(
    config: Path = typer.Argument(..., help="search YAML: a run config (teacher, one student model, optional "
                                            "personalise) with `search` in place of `methods` (see "
                                            "configs/dsads-sensors.yaml)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. search.budget.positions=2"),
    trials: Optional[int] = typer.Option(None, "--trials", help="distinct kits to train in total, resumed ones "
                                                                "included (default: search.trials)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for report.md, search.json, search.png, configs/ "
                                                           "and search.db (default: runs/<config name>)"),
    storage: Optional[str] = SEARCH_STORAGE,
    confirm: bool = typer.Option(False, "--confirm", help="run each member's config on the config's split and add "
                                 "its test macro-F1 to the report"),
    nested: bool = typer.Option(False, "--nested", help="search again without each outer fold's test workers and "
                                "score its choices on them: the whole procedure's figure on workers it never saw"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="processes (one torch thread each) training the missing "
                             "teachers, then sharing the study, and for --confirm the runs' worker processes"),
    print_config: bool = SEARCH_PRINT_CONFIG,
    backend: str = TRIALS_BACKEND,
    address: Optional[str] = TRIALS_ADDRESS,
    cpus_per_trial: Optional[float] = CPUS_PER_TRIAL,
    gpus_per_trial: Optional[float] = GPUS_PER_TRIAL,
    no_teacher_cache: bool = NO_TEACHER_CACHE,
) -> None:
    """Which sensors to wear: the Pareto front of macro-F1 on held-out workers against cost over kits of sensor groups,
    each student distilled from the full teacher."""
    from harkd.experiment.config import read_config
    from harkd.search.sensor_report import run_sensor_search
    from harkd.search.sensor_search import load_sensor_search, sensor_search_yaml

    if print_config:
        typer.echo(sensor_search_yaml(read_config(config, overrides or []), str(config)), nl=False)
        return
    start = _start("search-sensors", config, overrides, out, trials, storage,
                   (["--confirm"] if confirm else []) + (["--nested"] if nested else [])
                   + (["--jobs", str(jobs)] if jobs != 1 else []),
                   (backend, address, cpus_per_trial, gpus_per_trial))
    cfg, out = load_sensor_search(config, overrides or []), start.out
    results = run_sensor_search(cfg, out, config.stem, trials, storage, jobs, confirm, nested, start.command,
                                log=lambda line: typer.echo(line, err=True), ray=start.ray,
                                teachers=_teachers(no_teacher_cache))
    _echo_sensor_results(results, out)


def _echo_sensor_results(results: dict, out: Path) -> None:
    """The members, the nested figure and what was written: one line each."""
    for member in results["members"]:
        typer.echo(f"{'front' if member['on_front'] else 'best at its positions'}: {member['kit']}: "
                   f"{member['positions']} position(s), {member['channels']} channels, F1 "
                   f"{member['score']:.3f} -> {member['config']}")
    for row in results.get("nested", []):
        spread = f" ± {row['test_std']:.3f}" if row["outer_folds"] > 1 else ""
        typer.echo(f"nested, {row['positions']} position(s): {row['test_mean']:.3f}{spread} on workers the search "
                   f"never saw; {row['most_chosen']} chosen by {row['agree']} of {row['outer_folds']} outer folds")
    typer.echo(f"wrote {out / 'report.md'}, {out / 'search.json'} and {out / 'search.png'}")
