"""`harkd run`, `harkd methods` and `harkd compare`: experiments and their results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from harkd.cli.app import NO_TEACHER_CACHE, _teachers, app


# Over 40 lines with its signature only: a typer command declares each of its options as a parameter.
@app.command("run", rich_help_panel="Experiments", context_settings={"allow_extra_args": False})
def run(
    config: Path = typer.Argument(..., help="experiment YAML (see configs/)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. seeds=[0] "
                                                               "teacher.train.epochs=5 split.folds=[p1]"),
    out: Path = typer.Option(Path("runs/latest"), "--out", help="folder for results.json and report.md; finished "
                             "units wait in OUT/.units/, so rerunning an interrupted command resumes it"),
    jobs: Optional[int] = typer.Option(None, "--jobs", help="train this many (seed, fold) units at once, each in its "
                                       "own process (default: one per CPU core, at most one per unit)"),
    keep_models: bool = typer.Option(False, "--keep-models", help="keep every trained teacher and student in "
                                     "OUT/models/<fold>-seed<seed>/ (for `harkd export`)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads per process (default 1: more "
                                          "collapse when the machine is shared); recorded in results.json"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a finished run in OUT (without it, a "
                                   "results.json there is an error)"),
    print_config: bool = typer.Option(False, "--print-config", help="print the config with every default filled "
                                      "in, as YAML, and exit without training"),
    backend: str = typer.Option("local", "--backend", help="local (worker processes, see --jobs) or ray: each "
                                "(seed, fold) unit a task on a Ray cluster (pip install 'harkd\\[ray]')"),
    address: Optional[str] = typer.Option(None, "--address", help="with --backend ray: HOST:PORT of the cluster's "
                                          "head (default: a Ray instance on this machine, 127.0.0.1 only)"),
    cpus_per_unit: Optional[float] = typer.Option(None, "--cpus-per-unit", help="with --backend ray: CPUs each unit "
                                                  "holds (default 1; fractions allowed)"),
    gpus_per_unit: Optional[float] = typer.Option(None, "--gpus-per-unit", help="with --backend ray: GPUs each unit "
                                                  "holds (default 0; fractions allowed)"),
    no_teacher_cache: bool = NO_TEACHER_CACHE,
) -> None:
    """Train teacher, semantic classifier and students with each KD method over folds and seeds."""
    from harkd.experiment.config import experiment_yaml, load_config, read_config
    from harkd.execution.ray_cluster import RayBackend
    from harkd.experiment.runner import run_experiment

    if print_config:
        typer.echo(experiment_yaml(read_config(config, overrides or []), str(config)), nl=False)
        return
    ray = RayBackend.from_options(backend, address, cpus_per_unit, gpus_per_unit)
    cfg = load_config(config, overrides or [])
    command = " ".join(["harkd", "run", str(config), *(overrides or []), "--out", str(out)]
                       + (["--jobs", str(jobs)] if jobs is not None else [])
                       + (["--keep-models"] if keep_models else [])
                       + (["--threads", str(threads)] if threads is not None else [])
                       + (ray.cli_options() if ray else []))
    run_experiment(cfg, out, command, log=lambda line: typer.echo(line, err=True), jobs=jobs, keep_models=keep_models,
                   threads=threads, overwrite=overwrite, ray=ray, teachers=_teachers(no_teacher_cache))
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'}")


@app.command("methods", rich_help_panel="Experiments")
def methods(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Every KD strategy a method's terms may name, with its family (tsak, zoo, smldist or none), its one-line
    summary and its options' defaults."""
    from harkd.distill import distiller_defaults, distiller_family, distiller_names, distiller_summary

    listing = {name: {"family": distiller_family(name), "summary": distiller_summary(name),
                      "options": distiller_defaults(name)} for name in distiller_names()}
    if as_json:
        typer.echo(json.dumps(listing, indent=2))
        return
    for name, entry in listing.items():
        typer.echo(f"{name:<12} {entry['family']:<8} {entry['summary']}")
        typer.echo(f"{'':<21} " + " ".join(f"{k}={v}" for k, v in entry["options"].items()))


# Options of both searches (search-head, search-sensors); with Ray, each trial is a task sharing the study's storage.


@app.command("compare", rich_help_panel="Experiments")
def compare(
    runs: list[Path] = typer.Argument(..., help="two or more run folders (or their results.json), same folds and "
                                                "seeds"),
    out: Path = typer.Option(..., "--out", help="folder for the merged results.json and report.md"),
) -> None:
    """Merge runs (e.g. the KD zoo, TSAK and SMLDist, each with its own teacher) into one comparison table."""
    from harkd.experiment.compare import merge_results, read_results
    from harkd.experiment.report import format_summary_table, write_results
    from harkd.experiment.summary import summarise

    command = " ".join(["harkd", "compare", *map(str, runs), "--out", str(out)])
    merged = merge_results([read_results(run) for run in runs], command)
    write_results(merged, out)
    typer.echo(format_summary_table(summarise(merged["rows"])))
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'}")
