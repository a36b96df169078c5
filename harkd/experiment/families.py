"""KD method families (tsak, zoo, smldist, ...) and each student's best method per family, so a report answers "does
the best TSAK strategy beat the best zoo method, and by how much?" without reading the table by hand.

A strategy's family is declared where it is registered (harkd.distill.base.FAMILIES). A config method's family is
its terms' family when they all share one, else "mixed"; the student alone (no terms) is "none", and a method with
`teacher: self` is "self" (a no-teacher baseline, whatever its terms). Families come from the configs in results.json
(a run's `config`, or each merged run's config for `harkd compare`), never from method names.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

from harkd.distill import distiller_family
from harkd.errors import HarkdError
from harkd.experiment.config import MethodSpec, ModelSpec
from harkd.experiment.summary import BASELINE, MethodSummary

MIXED, SELF, UNKNOWN = "mixed", "self", "unknown"
# Report order: TSAK against its baselines first; families not listed here follow alphabetically.
FAMILY_ORDER = ("tsak", "zoo", "smldist", SELF, MIXED, "none")


def method_family(spec: MethodSpec) -> str:
    """The family of a parsed config method; an unregistered strategy in its terms is a HarkdError."""
    if spec.teacher == "self":
        return SELF
    if not spec.terms:
        return "none"
    families = {distiller_family(str(term["distiller"])) for term in spec.terms}
    return families.pop() if len(families) == 1 else MIXED


def _run_configs(config: Any) -> Iterator[Mapping[str, Any]]:
    """The run configs inside results' `config`: itself, or each merged run's (recursively, for a compare of
    compares)."""
    if not isinstance(config, Mapping):
        return
    if "runs" in config and "methods" not in config:
        for run in config["runs"] or []:
            yield from _run_configs(run.get("config") if isinstance(run, Mapping) else None)
    else:
        yield config


def method_families(config: Any) -> dict[str, dict[str, str]]:
    """student model label -> method name -> family, from results' `config`.

    Keyed by model as well as name because merged runs may give one name different terms for different students.
    When several runs define the same (model, method), the first wins, as `merge_results` takes those runs from the
    first input. A method whose config no longer parses, or names a strategy no longer registered (older results),
    is "unknown" rather than an error: the report is still written.
    """
    families: dict[str, dict[str, str]] = {}
    for raw in _run_configs(config):
        students = raw.get("students")
        models = students.get("models") if isinstance(students, Mapping) else None
        try:
            labels = [ModelSpec.parse(m, "students.models").label for m in models or []]
        except HarkdError:
            continue
        for i, values in enumerate(raw.get("methods") or []):
            try:
                spec = MethodSpec.parse(values, f"methods[{i}]")
            except HarkdError:
                continue
            try:
                family = method_family(spec)
            except HarkdError:
                family = UNKNOWN
            for label in labels:
                families.setdefault(label, {}).setdefault(spec.name, family)
    return families


def _family_key(family: str) -> tuple:
    return (FAMILY_ORDER.index(family), "") if family in FAMILY_ORDER else (len(FAMILY_ORDER), family)


def best_per_family(config: Any, summary: Sequence[MethodSummary]) -> dict[str, Any]:
    """The JSON-ready `best_per_family` of results.json, from results' `config` and `summarise(rows)`:

    - families: student model -> method -> family, for every student method in the summary ("unknown" when the
      config does not define it);
    - best: per student model (summary order) and family (FAMILY_ORDER), the method with the highest mean macro-F1
      among the model's methods other than the student alone, with its summary statistics (n, macro_f1_mean/std,
      delta_vs_none_mean, folds_won, folds_total, as in `summarise`); ties go to the first in summary order;
    - tsak_vs_zoo: per student model with both a tsak and a zoo method, the two best and `difference`, the tsak
      one's mean macro-F1 minus the zoo one's (a fraction, like the scores).
    """
    defined = method_families(config)
    students = [s for s in summary if s.role == "student"]
    families = {}
    for s in students:
        families.setdefault(s.model, {})[s.name] = defined.get(s.model, {}).get(s.name, UNKNOWN)
    best = []
    for model, methods in families.items():
        candidates = [s for s in students if s.model == model and s.name != BASELINE and methods[s.name] != UNKNOWN]
        for family in sorted({methods[s.name] for s in candidates}, key=_family_key):
            top = max((s for s in candidates if methods[s.name] == family), key=lambda s: s.macro_f1_mean)
            best.append({"model": model, "family": family, "method": top.name, "n": top.n,
                         **{k: getattr(top, k) for k in ("macro_f1_mean", "macro_f1_std", "delta_vs_none_mean",
                                                         "folds_won", "folds_total")}})
    versus = []
    for model in families:
        top = {b["family"]: b for b in best if b["model"] == model}
        if "tsak" in top and "zoo" in top:
            tsak, zoo = top["tsak"], top["zoo"]
            versus.append({"model": model, "tsak_method": tsak["method"], "zoo_method": zoo["method"],
                           "difference": tsak["macro_f1_mean"] - zoo["macro_f1_mean"]})
    return {"families": families, "best": best, "tsak_vs_zoo": versus}


def tsak_vs_zoo_sentence(entry: Mapping[str, Any]) -> str:
    """One plain sentence from a `tsak_vs_zoo` entry, the difference in percentage points."""
    points = round(100 * entry["difference"], 2)
    # Compared after rounding, so the word always agrees with the number shown.
    where = f"{abs(points):.2f} points {'above' if points > 0 else 'below'}" if points else "level with"
    return (f"{entry['model']}: the best TSAK strategy {entry['tsak_method']} is {where} the best zoo method "
            f"{entry['zoo_method']} in mean macro-F1.")


__all__ = ["FAMILY_ORDER", "best_per_family", "method_families", "method_family", "tsak_vs_zoo_sentence"]
