"""What `harkd search-sensors` writes: every trial and the Pareto front (search.json), the front as a table with a
ready `harkd run` config per member (configs/), a plot of F1 against cost (search.png), and with --confirm each
member's test scores on the config's split (its config run into confirm/) in report.md."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import optuna
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial

from harkd import __version__
from harkd.experiment.compare import read_results
from harkd.experiment.config import parse_config
from harkd.experiment.figures import save
from harkd.experiment.rows import GUARDED, REFERENCE, UNTOUCHED, ResultRow, rows_of
from harkd.experiment.runner import run_experiment
from harkd.experiment.teacher_cache import TeacherStore
from harkd.files import atomic_output
from harkd.search.kit_scores import KitScores, share_beaten
from harkd.search.kit_trials import is_counted
from harkd.search.nested import check_nestable, nested_search, nested_summary
from harkd.search.sensor_search import (SensorSearchConfig, best_by_positions, front, open_kit_study, search_sensors,
                                        setup_search)
from harkd.search.sensor_space import SensorSpace, kit_key, run_config
from harkd.search.studies import storage_urls

if TYPE_CHECKING:
    from harkd.execution.ray_cluster import RayBackend


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    state = "INTERRUPTED" if trial.state.name == "FAIL" and "error" not in attrs else trial.state.name
    row = {"number": trial.number, "state": state, "kit": attrs.get("kit"),
           "positions": len(attrs["kit"].split(",")) if attrs.get("kit") else None,
           **{k: attrs.get(k) for k in ("channels", "flops", "params")},
           "score": round(trial.values[0], 5) if trial.state.name == "COMPLETE" else None}
    if "score_per_fold" in attrs:
        row["standard_error"] = _scores(attrs).standard_error
    return {**row, **{k: attrs[k] for k in ("score_per_fold", "stopped_by", "error", "reason", "duplicate_of")
                      if k in attrs}}


def slug(kit: str) -> str:
    """A kit's file name: `right_arm-acc+gyro_torso-acc`."""
    return kit.replace(":", "-").replace(",", "_")


def write_configs(config: SensorSearchConfig, members: Sequence[dict], space: SensorSpace, out_dir: Path) -> None:
    """configs/<kit>.yaml for each front member: a `harkd run` config, checked by the run's own schema."""
    for member in members:
        kit = next(c.kit for c in space.candidates if member["kit"] == kit_key(c.kit))
        raw = run_config(config.resolved, kit)
        path = out_dir / "configs" / f"{slug(member['kit'])}.yaml"
        parse_config(raw, where=str(path))
        header = (f"# {member['kit']}: macro-F1 {100 * member['score']:.2f} in the sensor search "
                  f"(trial {member['number']}).\n# Run it: harkd run {path} --out runs/{slug(member['kit'])}\n")
        with atomic_output(path) as tmp:
            tmp.write_text(header + yaml.safe_dump(raw, sort_keys=False))
        member["config"] = str(path)


def confirm(members: Sequence[dict], out_dir: Path, jobs: int | None, log: Callable[[str], None],
            ray: RayBackend | None = None, teachers: TeacherStore | None = None) -> None:
    """Each member's config run on the config's split, scored on its test windows (resumable: a finished run is read
    back, an interrupted one resumes); its test scores go into the member's row."""
    for member in members:
        run_dir = out_dir / "confirm" / slug(member["kit"])
        if not (run_dir / "results.json").exists():
            log(f"confirm {member['kit']}: harkd run {member['config']} --out {run_dir}")
            raw = yaml.safe_load(Path(member["config"]).read_text())
            run_experiment(parse_config(raw, where=member["config"]), run_dir,
                           f"harkd run {member['config']} --out {run_dir}", log=log, jobs=jobs, ray=ray,
                           teachers=teachers)
        rows = rows_of(read_results(run_dir)["rows"])
        member["confirm"] = confirmed_scores(rows, member["method"])
        member["confirm"]["run"] = str(run_dir)
        member["confirm"]["test_subjects"] = sorted({str(s) for r in rows for s in r.test_subjects})


def confirmed_scores(rows: Sequence[ResultRow], method: str) -> dict[str, Any]:
    """Mean ± std test macro-F1 over the run's (fold, seed) units: teacher, student alone, with the search's KD
    method, and personalised on the teacher's labels (guarded, where the run has the guard's rows) beside the
    untouched student and the teacher on the same windows, when the run has them."""
    shipped = GUARDED if any(r.method == method and r.labels == GUARDED for r in rows) else "teacher"
    picks = {"teacher": ("teacher", REFERENCE, None), "alone": ("student", "none", None),
             "kd": ("student", method, None), "personalised_teacher": ("personalised", REFERENCE, None),
             "personalised_untouched": ("personalised", method, UNTOUCHED),
             "personalised": ("personalised", method, shipped)}
    scores: dict[str, Any] = {}
    for name, pick in picks.items():
        values = {(r.fold, r.seed): r.macro_f1 for r in rows if (r.role, r.method, r.labels) == pick}
        if values:
            scores[name] = {"mean": float(np.mean(list(values.values()))),
                            "std": float(np.std(list(values.values()), ddof=1)) if len(values) > 1 else 0.0,
                            "n": len(values), "per_fold": {f"{f}/seed{s}": v for (f, s), v in values.items()}}
    return scores


def plot(rows: Sequence[dict], members: Sequence[dict], measure: str, title: str, path: Path) -> Figure:
    """The search's macro-F1 against one cost, every trained kit coloured by its number of positions, the front ringed
    and joined, the other members (best at their number of positions) squared; members numbered as in the report."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    trained = [r for r in rows if r["score"] is not None]
    for n in sorted({r["positions"] for r in trained}):
        points = [r for r in trained if r["positions"] == n]
        ax.scatter([r[measure] for r in points], [100 * r["score"] for r in points], alpha=0.7,
                   label=f"{n} position{'s' if n > 1 else ''}")
    ordered = sorted((m for m in members if m["on_front"]), key=lambda m: m[measure])
    ax.step([m[measure] for m in ordered], [100 * m["score"] for m in ordered], where="post", color="black",
            linewidth=1)
    ax.scatter([m[measure] for m in ordered], [100 * m["score"] for m in ordered], s=160, facecolors="none",
               edgecolors="black", label="Pareto front")
    dominated = [m for m in members if not m["on_front"]]
    if dominated:
        ax.scatter([m[measure] for m in dominated], [100 * m["score"] for m in dominated], s=160, marker="s",
                   facecolors="none", edgecolors="grey", label="best at its positions, off the front")
    for i, m in enumerate(members, 1):  # numbered on the plot, named in the legend: kit names overlap
        ax.annotate(str(i), (m[measure], 100 * m["score"]), fontsize=8, fontweight="bold", xytext=(7, 4),
                    textcoords="offset points")
        ax.plot([], [], " ", label=f"{i}: {m['kit']}")
    ax.set(xlabel=measure, ylabel="search macro-F1 (%)", title=title)
    if measure == "flops":
        ax.set_xscale("log")
    else:  # positions and channels are counts: no tick at 3.5
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="lower right")
    save(fig, path)
    return fig


def plot_validation_against_test(members: Sequence[dict], path: Path) -> bool:
    """Each confirmed member's search score (what chose it) against its test macro-F1 with KD on the split's
    workers, numbered as in the report, with the diagonal: how far the search's ranking holds on new workers. False
    when no member is confirmed."""
    confirmed = [(i, m) for i, m in enumerate(members, 1) if "kd" in m.get("confirm", {})]
    if not confirmed:
        return False
    fig = Figure(figsize=(6, 5.5), layout="constrained")
    ax = fig.add_subplot()
    val = [100 * m["score"] for _, m in confirmed]
    test = [100 * m["confirm"]["kd"]["mean"] for _, m in confirmed]
    spread = [100 * m["confirm"]["kd"]["std"] for _, m in confirmed]
    ax.errorbar(val, test, yerr=spread, fmt="o", capsize=3)
    for (i, m), x, y in zip(confirmed, val, test):
        ax.annotate(str(i), (x, y), fontsize=8, fontweight="bold", xytext=(6, 4), textcoords="offset points")
    low = min(val + [t - e for t, e in zip(test, spread)]) - 3
    high = max(val + [t + e for t, e in zip(test, spread)]) + 3
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="test = search score")
    ax.set(xlim=(low, high), ylim=(low, high), xlabel="search macro-F1 (%), the search's score",
           ylabel="test macro-F1 (%) with KD, mean ± std over the split's folds",
           title="Does the search's ranking hold on new workers?")
    ax.legend(fontsize=8, loc="lower right")
    save(fig, path)
    return True


def plot_measure(cost: Sequence[str]) -> str:
    """The x axis: the finest cost the search minimises (positions only when it is the only one)."""
    return next((m for m in reversed(cost) if m != "positions"), "positions")


def search_members(study: optuna.Study, method: str) -> list[dict]:
    """The Pareto front and the best kit at each number of positions, cheapest first: each gets a ready config and,
    with --confirm, a confirmation run; front members get the share of folds on which they beat their neighbours."""
    on_front, best = front(study), best_by_positions(study)
    trials = sorted({t.number: t for t in [*on_front, *best]}.values(), key=lambda t: (*t.values[1:], -t.values[0]))
    members = [{**trial_row(t), "method": method, "on_front": t in on_front, "best_at_its_positions": t in best}
               for t in trials]
    ordered = [m for m in members if m["on_front"]]
    for cheaper, dearer in zip(ordered, ordered[1:]):
        cheaper["beats_dearer"] = share_beaten(_scores(cheaper), _scores(dearer))
        dearer["beats_cheaper"] = share_beaten(_scores(dearer), _scores(cheaper))
    return members


def _scores(row: Mapping[str, Any]) -> KitScores:
    return KitScores(row["kit"], (), row.get("score_per_fold") or {})


def results_of(config: SensorSearchConfig, study: optuna.Study, space: SensorSpace, name: str,
               command: str, storage: str) -> dict[str, Any]:
    """search.json's content (the wall time is added once the invocation ends)."""
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    members = search_members(study, config.method.name)
    return {"harkd_version": __version__, "command": command, "study": name, "storage": storage,
            "dataset": config.dataset, "method": config.method.name, "student": config.student.label,
            "cost": list(config.search.cost), "scoring": config.search.scoring.model_dump(mode="json"),
            "held_out": f"{config.split.group_by} groups" if config.split.kind == "groups" else "workers",
            "space_size": len(space.candidates),
            "trials_counted": sum(map(is_counted, study.get_trials(deepcopy=False))),
            "draws": len(rows), "search_folds": study.user_attrs.get("folds"),
            "guiding_subjects": study.user_attrs.get("guiding_subjects"), "members": members,
            "front": [m["kit"] for m in members if m["on_front"]], "trials": rows, "config": config.raw}


def _pct(score: Mapping[str, Any] | None) -> str:
    if not score:
        return "–"
    return f"{100 * score['mean']:.2f}" + (f" ± {100 * score['std']:.2f}" if score["n"] > 1 else "")


def report_md(results: Mapping[str, Any]) -> str:
    members = results["members"]
    lines = [f"# Sensor search: {results['study']}", "",
             f"`{results['command']}`", "",
             f"{results['dataset']}, student {results['student']} with KD method `{results['method']}` from the full "
             f"teacher. {results['trials_counted']} kits trained of {results['space_size']} within budget "
             f"({results['draws']} draws; a kit drawn again is not retrained). {_scoring(results)} Objectives: "
             f"that macro-F1 up, then {', '.join(results['cost'])} down. Wall time "
             f"{results['wall_time_s'] / 60:.1f} min.", "", "![F1 against cost](search.png)", "",
             "## Pareto front and the best kit at each number of positions", "",
             "Front: no other kit scores higher at no greater cost. A kit off the front is the best at its number of "
             "positions, beaten by a kit wearing fewer.", ""]
    confirmed = any("confirm" in m for m in members)
    head = ("| # | kit | front | positions | channels | MFLOPs | params | search macro-F1 (%) ± SE | folds won "
            "against the front's cheaper / dearer neighbour |")
    if confirmed:
        head += (" test: teacher | student alone | with KD | personalisation's windows: untouched | personalised "
                 "(teacher labels) | teacher |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for i, m in enumerate(members, 1):
        line = (f"| {i} | {m['kit']} | {'yes' if m['on_front'] else 'no'} | {m['positions']} | {m['channels']} | "
                f"{m['flops'] / 1e6:.3f} | {m['params']:,} | {_score(m)} | {_won(m)} |")
        if confirmed:
            c = m.get("confirm", {})
            line += " " + " | ".join(_pct(c.get(k)) for k in ("teacher", "alone", "kd", "personalised_untouched",
                                                               "personalised", "personalised_teacher")) + " |"
        lines.append(line)
    lines += ["", "Each member's ready config is in `configs/`"
              + ("; the confirmation runs (the config's split, scored on its test windows) are in `confirm/`. "
                 + _independence(results) if confirmed else "."), ""]
    if any("kd" in m.get("confirm", {}) for m in members):  # as plot_validation_against_test draws
        lines += ["![search score against test macro-F1 of the confirmed kits](validation_vs_test.png)", ""]
    return "\n".join(lines + _nested(results.get("nested")) + _every_kit(results["trials"]))


def _nested(summary: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The nested searches' figure per number of positions, and each outer fold's choice."""
    if not summary:
        return []
    lines = ["## On workers the search never saw (--nested)", "",
             f"For each of the {summary[0]['outer_folds']} outer folds the search ran again without that fold's test "
             f"workers; the kit it chose at each number of positions was trained on the outer fold and scored on its "
             f"held-out workers. The test column is the figure to quote for the whole procedure, search included.", "",
             "| positions | test macro-F1 (%) on unseen workers | the search's own score of its choices | most chosen "
             "kit | outer folds choosing it |", "|---|---|---|---|---|"]
    for row in summary:
        spread = f" ± {100 * row['test_std']:.2f}" if row["outer_folds"] > 1 else ""
        lines.append(f"| {row['positions']} | {100 * row['test_mean']:.2f}{spread} | "
                     f"{100 * row['search_mean']:.2f} | {row['most_chosen']} | {row['agree']}/{row['outer_folds']} |")
    lines += ["", "| outer fold | test workers | positions | chosen kit | search score (%) | test score (%) |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {c['outer_fold']} | {', '.join(c['test_subjects'])} | {c['positions']} | {c['kit']} | "
              f"{100 * c['search_score']:.2f} | {100 * c['test_score']:.2f} |"
              for row in summary for c in row["choices"]]
    return lines + [""]


def _scoring(results: Mapping[str, Any]) -> str:
    """How the kits were scored, on which subjects, and what that means for a figure on them."""
    folds, subjects = ", ".join(results["search_folds"] or ["?"]), ", ".join(results["guiding_subjects"] or ["?"])
    scoring = results["scoring"]
    if scoring["protocol"] == "validation":
        return (f"Every kit is scored on the validation windows of folds {folds} (subjects {subjects}); no test "
                f"window guided the search.")
    stopped = sum(1 for t in results["trials"] if t.get("stopped_by"))
    held_out = results["held_out"]
    return (f"Every kit is scored by its test macro-F1 on held-out {held_out}, one set per fold (folds {folds}; "
            f"subjects {subjects}), its student trained on the fold as `harkd run` trains it. A kit stops after "
            f"{' or '.join(map(str, scoring['rungs']))} folds when a kit wearing as many positions at no greater "
            f"cost beats it on the same folds with {100 * scoring['confidence']:g}% confidence (one-sided paired t "
            f"test); it is then scored by its subject-adjusted mean and is neither on the front nor a member "
            f"({stopped} kit(s) stopped). These {held_out} guided the choice, so a figure on them is optimistic"
            + ("; `--nested` gives the figure on workers the search never saw." if held_out == "workers" else
               ": the split tests every worker in every fold, so no figure on unseen workers is possible."))


def _score(member: Mapping[str, Any]) -> str:
    se = member.get("standard_error")
    return f"{100 * member['score']:.2f}" + (f" ± {100 * se:.2f}" if se is not None else "")


def _won(member: Mapping[str, Any]) -> str:
    return " / ".join(f"{member[side][0]}/{member[side][1]}" if side in member else "–"
                      for side in ("beats_cheaper", "beats_dearer"))


def _every_kit(trials: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every kit the search trained, best search score first (the plot shows most of them as unlabelled dots)."""
    trained = sorted((t for t in trials if t["score"] is not None), key=lambda t: (-t["score"], t["number"]))
    if not trained:
        return []
    lines = ["## Every kit trained", "",
             "| trial | kit | positions | channels | MFLOPs | search macro-F1 (%) | per fold |",
             "|---|---|---|---|---|---|---|"]
    for t in trained:
        folds = ", ".join(f"{fold} {100 * f1:.1f}" for fold, f1 in (t.get("score_per_fold") or {}).items())
        if t.get("stopped_by"):
            folds += f"; stopped, beaten by {t['stopped_by']}"
        lines.append(f"| {t['number']} | {t['kit']} | {t['positions']} | {t['channels']} | {t['flops'] / 1e6:.3f} | "
                     f"{100 * t['score']:.2f} | {folds} |")
    return lines + [""]


def _independence(results: Mapping[str, Any]) -> str:
    """Whether a subject whose windows guided the search is also tested in a confirmation run."""
    tested = {s for m in results["members"] for s in m.get("confirm", {}).get("test_subjects", [])}
    both = sorted(tested & set(results["guiding_subjects"] or []))
    if not both:
        return "No confirmation run tests a subject whose windows guided the search."
    return (f"A confirmation fold whose test windows come from a subject whose windows guided the search "
            f"({', '.join(both)}) is not fully independent of the choice.")


def write_outputs(results: Mapping[str, Any], out_dir: Path) -> None:
    with atomic_output(out_dir / "search.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
    plot(results["trials"], results["members"], plot_measure(results["cost"]), f"{results['study']}: sensor search",
         out_dir / "search.png")
    plot_validation_against_test(results["members"], out_dir / "validation_vs_test.png")
    with atomic_output(out_dir / "report.md") as tmp:
        tmp.write_text(report_md(results))


def _wall_time(study: optuna.Study, clock: float) -> float:
    """Seconds of every invocation: the earlier ones' (kept in the study) and this one's since `clock`."""
    return study.user_attrs.get("wall_time_s", 0.0) + time.perf_counter() - clock


def run_sensor_search(config: SensorSearchConfig, out_dir: Path, name: str, trials: int | None = None,
                      storage: str | None = None, jobs: int = 1, confirm_front: bool = False, nested: bool = False,
                      command: str = "", log: Callable[[str], None] = print, ray: RayBackend | None = None,
                      teachers: TeacherStore | None = None) -> dict[str, Any]:
    """The search (resumed where a study exists), the front's configs and, with `confirm_front`, their confirmation
    runs and, with `nested`, the nested searches' figure (harkd.search.nested); OUT/search.json, search.png and
    report.md. The wall time sums every invocation. `teachers`: the store of trained teachers the searches and the
    confirmations read and fill (None: train every one)."""
    out_dir, clock = Path(out_dir), time.perf_counter()
    if nested:
        check_nestable(config)  # before the search trains
    setup = setup_search(config, out_dir, trials, storage, log)
    study = open_kit_study(setup, name, log)
    try:
        search_sensors(setup, study, out_dir, jobs, log, ray, teachers)
        results = results_of(config, study, setup.space, name, command, storage_urls(out_dir, storage)[1])
        write_configs(config, results["members"], setup.space, out_dir)
        write_outputs({**results, "wall_time_s": round(_wall_time(study, clock), 1)}, out_dir)  # kept if a stage fails
        if confirm_front:
            confirm(results["members"], out_dir, jobs, log, ray, teachers)
        if nested:
            results["nested"] = nested_summary(nested_search(setup, name, jobs, log, ray, teachers))
        results["wall_time_s"] = round(_wall_time(study, clock), 1)
        write_outputs(results, out_dir)
    finally:  # an interrupted invocation's time counts too: the resumed one adds to it
        study.set_user_attr("wall_time_s", _wall_time(study, clock))
    return results


__all__ = ["confirm", "confirmed_scores", "results_of", "run_sensor_search", "slug", "trial_row", "write_configs",
           "write_outputs"]
