"""What `harkd search-sensors` searches over: kits of sensor groups (a body position worn with a set of its
modalities), their cost, and the search config that restricts them.

A kit is a tuple of (position, modalities) pairs in the data's position order, e.g. (("torso", ("acc",)),
("right_arm", ("acc", "gyro"))); the space is every kit the config's budget admits, enumerated up front, so a budget
that admits none is an error before any training, and a space no larger than the trial budget is searched
exhaustively.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Mapping, Sequence

from pydantic import AfterValidator, Field

from harkd.cost import count_flops, count_params
from harkd.data.recording import ChannelKit, ChannelSpec
from harkd.errors import HarkdError
from harkd.experiment.config import (DataSections, MethodEntry, MethodSpec, ModelEntry, ModelSpec,
                                    PersonaliseSpec, RequiredTeacherSection, Section, SemanticSection)
from harkd.train.engine import TrainConfig
from harkd.models.base import build_model
from harkd.schema import PositiveInt, Str, validate

Kit = tuple[tuple[str, tuple[str, ...]], ...]
COSTS = ("positions", "channels", "flops", "params")
VALIDATION_FOLDS = 2  # search.folds unset under scoring.protocol validation


def _distinct_names(values: tuple) -> tuple:
    if len(set(values)) != len(values):
        raise ValueError(f"values must be distinct, got {list(values)}")
    return values


Names = Annotated[tuple[Str, ...], AfterValidator(_distinct_names)]


class SensorBudget(Section):
    """The most a kit may cost; None is no limit. Kits over budget are never trained."""

    positions: PositiveInt = 3
    channels: PositiveInt | None = None
    flops: PositiveInt | None = None


class KitScoring(Section):
    """How a kit is scored (harkd.search.kit_scores): `workers`, its test macro-F1 on one held-out worker per fold
    (harkd.search.search_folds), at most `workers` folds, a kit stopping at a rung when a rival clearly beats it; or
    `validation`, its validation macro-F1 on the validation subjects of the split's first `search.folds` folds (the
    protocol before issue 25)."""

    protocol: Literal["workers", "validation"] = "workers"
    workers: PositiveInt | None = None  # the most folds a kit is scored on (default: every one)
    rungs: tuple[PositiveInt, ...] = (2, 4)  # folds after which a kit may stop
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95  # that a rival stopping a kit is better


class SensorSearchSection(Section):
    method: MethodEntry = MethodSpec("logit", ({"distiller": "logit"},))  # each trial's KD from the full teacher
    trials: PositiveInt = 40
    scoring: KitScoring = KitScoring()
    # How TPE sees a kit (harkd.search.kit_trials): size_first (how many positions, which, then their modalities) or
    # per_position (each position absent or one of its modality sets).
    parametrisation: Literal["size_first", "per_position"] = "size_first"
    folds: PositiveInt | None = None  # scoring.protocol validation: the validation subjects of the first `folds`
    positions: Names | None = None  # candidate positions (default: every position the teacher wears)
    modalities: Names | None = None  # candidate modalities (default: all)
    # What a worn position may carry; default: every non-empty subset of its modalities.
    modality_sets: Annotated[tuple[Annotated[Names, Field(min_length=1)], ...], Field(min_length=1)] | None = None
    require: Names = ()  # positions every kit wears
    budget: SensorBudget = SensorBudget()
    cost: Annotated[tuple[Literal[COSTS], ...], Field(min_length=1), AfterValidator(_distinct_names)] = (
        "positions", "channels")  # minimised, after maximising the kit's score


class SearchStudents(Section):
    """The student's model and training; its channels are what the search chooses."""

    models: Annotated[list[ModelEntry], Field(min_length=1)]
    train: TrainConfig = TrainConfig()
    channels: ClassVar[None] = None  # not a key: what the search chooses


class SensorSearchSchema(DataSections):
    """A run config (teacher, semantic, one student model, optional personalise) with `search` in place of `methods`;
    the search chooses the student's channels."""

    teacher: RequiredTeacherSection
    semantic: SemanticSection = SemanticSection()
    students: SearchStudents
    personalise: PersonaliseSpec | None = None  # carried into the front's configs, used by --confirm
    search: SensorSearchSection
    latency_runs: PositiveInt = 200


def check_sensor_search(raw: Mapping[str, Any], where: str = "config") -> SensorSearchSchema:
    """The config with every key and value checked (that its members' run config is a valid one is checked by
    parse_sensor_search, which builds that config)."""
    if "channels" in (raw.get("students") or {}):
        raise HarkdError(f"{where}: students.channels: the search chooses the student's channels; restrict it with "
                         f"search.positions, search.modalities or search.modality_sets")
    schema = validate(SensorSearchSchema, raw, where)
    models = schema.students.models
    if len(models) != 1:
        raise HarkdError(f"{where}: students.models: a sensor search trains one student model, got "
                         f"{[m.label for m in models]}")
    if len(schema.seeds) != 1:
        raise HarkdError(f"{where}: seeds: a sensor search uses one seed (e.g. [0]), got {schema.seeds}")
    if schema.search.method.teacher != "teacher":
        raise HarkdError(f"{where}: search.method: teacher {schema.search.method.teacher!r}: a sensor search distils "
                         f"from its config's teacher")
    missing = set(schema.search.require) - set(schema.search.positions or schema.search.require)
    if missing:
        raise HarkdError(f"{where}: search.require: {sorted(missing)} are not among search.positions "
                         f"{list(schema.search.positions)}")
    if schema.search.folds is not None and schema.search.scoring.protocol != "validation":
        raise HarkdError(f"{where}: search.folds: only with search.scoring.protocol validation; kits are scored on "
                         f"held-out workers, one per fold (search.scoring.workers: how many)")
    if len(schema.search.require) > schema.search.budget.positions:
        raise HarkdError(f"{where}: search.budget.positions {schema.search.budget.positions} admits no kit: "
                         f"search.require wears {len(schema.search.require)} positions")
    return schema


def kit_key(kit: Kit) -> str:
    """A kit's name: `right_arm:acc+gyro,torso:acc`."""
    return ",".join(f"{position}:{'+'.join(modalities)}" for position, modalities in kit)


def kit_channels(kit: Kit) -> ChannelKit:
    return ChannelKit.of([{"position": position, "modality": list(modalities)} for position, modalities in kit])


def run_config(resolved: Mapping[str, Any], kit: Kit) -> dict:
    """The `harkd run` config of one kit, from the resolved search config (SensorSearchConfig.resolved): its data,
    teacher, semantic, student and personalise sections, the student on the kit's channels (the empty kit: on every
    channel), the student alone beside the search's KD method."""
    config = {k: copy.deepcopy(v) for k, v in resolved.items() if k != "search"}
    if kit:
        config["students"] = {**config["students"],
                              "channels": [{"position": p, "modality": list(m)} for p, m in kit]}
    method = resolved["search"]["method"]
    config["methods"] = ["none"] if _alone(method) else ["none", copy.deepcopy(method)]
    return config


def _alone(method: Mapping[str, Any]) -> bool:
    """Whether a resolved method is `none`, the student alone that every run config lists first."""
    return MethodSpec.parse(dict(method), "search.method") == MethodSpec.parse("none", "search.method")


@dataclass(frozen=True)
class Candidate:
    kit: Kit
    channels: int
    flops: int
    params: int

    @property
    def positions(self) -> int:
        return len(self.kit)

    def cost(self, measure: str) -> int:
        return getattr(self, measure)


@dataclass(frozen=True)
class SensorSpace:
    """Every kit the search config admits, with each position's modality choices."""

    positions: tuple[str, ...]  # candidate positions, in the data's order
    choices: dict[str, tuple[tuple[str, ...], ...]]  # per position: the modality sets it may carry
    candidates: tuple[Candidate, ...]

    @classmethod
    def build(cls, channels: Sequence[ChannelSpec], search: SensorSearchSection, student: ModelSpec,
              n_classes: int, window: int, where: str = "search") -> "SensorSpace":
        present = _modalities_by_position(channels)
        positions = _candidate_positions(present, search, where)
        choices = {p: _modality_choices(p, present[p], search, where) for p in positions}
        if search.modality_sets is not None:
            _check_sets_used(search.modality_sets, choices, where)
        costs = _Costs(student, n_classes, window)
        kits = [kit for k in range(max(1, len(search.require)), search.budget.positions + 1)
                for combo in itertools.combinations(positions, k) if set(search.require) <= set(combo)
                for kit in itertools.product(*[[(p, m) for m in choices[p]] for p in combo])]
        candidates = tuple(c for c in map(costs.candidate, kits, [channels] * len(kits))
                           if _within(c, search.budget))
        if not candidates:
            raise HarkdError(f"{where}.budget {search.budget.model_dump(exclude_none=True)} admits no kit of "
                             f"{len(kits)}; the cheapest has {min(costs.candidate(k, channels).channels for k in kits)}"
                             f" channels")
        return cls(tuple(positions), choices, candidates)

    def find(self, kit: Kit) -> Candidate | None:
        return next((c for c in self.candidates if c.kit == kit), None)

    def find_key(self, key: str) -> Candidate:
        """The candidate named `key` (kit_key), which the space holds."""
        return next(c for c in self.candidates if kit_key(c.kit) == key)

    def sizes(self) -> list[int]:
        return sorted({c.positions for c in self.candidates})

    def position_sets(self, size: int) -> list[str]:
        return list(dict.fromkeys("+".join(p for p, _ in c.kit) for c in self.candidates if c.positions == size))


def _modalities_by_position(channels: Sequence[ChannelSpec]) -> dict[str, list[str]]:
    present: dict[str, list[str]] = {}
    for c in channels:
        if c.modality not in present.setdefault(c.position, []):
            present[c.position].append(c.modality)
    return present


def _candidate_positions(present: dict[str, list[str]], search: SensorSearchSection, where: str) -> list[str]:
    wanted = search.positions or tuple(present)
    unknown = [p for p in (*wanted, *search.require) if p not in present]
    if unknown:
        raise HarkdError(f"{where}.positions: unknown position(s) {sorted(set(unknown))}; the teacher's channels "
                         f"have: {list(present)}")
    if search.modalities is not None:
        known = {m for ms in present.values() for m in ms}
        bad = [m for m in search.modalities if m not in known]
        if bad:
            raise HarkdError(f"{where}.modalities: unknown modality(ies) {bad}; the teacher's channels have: "
                             f"{sorted(known)}")
    return [p for p in present if p in wanted]


def _modality_choices(position: str, present: list[str], search: SensorSearchSection,
                      where: str) -> tuple[tuple[str, ...], ...]:
    """The modality sets `position` may carry, each in the data's modality order."""
    allowed = [m for m in present if search.modalities is None or m in search.modalities]
    if search.modality_sets is None:
        return tuple(combo for k in range(1, len(allowed) + 1) for combo in itertools.combinations(allowed, k))
    order = {m: i for i, m in enumerate(present)}
    sets = [tuple(sorted(s, key=lambda m: order.get(m, len(order)))) for s in search.modality_sets]
    choices = tuple(s for s in sets if set(s) <= set(allowed))
    if not choices and position in search.require:
        raise HarkdError(f"{where}.modality_sets: none fits the required position {position!r}, which carries "
                         f"{allowed}")
    return choices


def _check_sets_used(sets: tuple[tuple[str, ...], ...], choices: dict[str, tuple], where: str) -> None:
    used = {frozenset(s) for per_position in choices.values() for s in per_position}
    unused = [list(s) for s in sets if frozenset(s) not in used]
    if unused:
        raise HarkdError(f"{where}.modality_sets: {unused} select no channel at any candidate position (an empty "
                         f"channel set)")


class _Costs:
    """A kit's channels, and the student's FLOPs and params on that many channels (built once per count)."""

    def __init__(self, student: ModelSpec, n_classes: int, window: int):
        self.student, self.n_classes, self.window, self._by_count = student, n_classes, window, {}

    def candidate(self, kit: Kit, channels: Sequence[ChannelSpec]) -> Candidate:
        n = len(kit_channels(kit).indices(channels))
        if n not in self._by_count:
            model = build_model(self.student.name, n, self.n_classes, **self.student.params).eval()
            self._by_count[n] = (count_flops(model, (1, n, self.window)), count_params(model))
        return Candidate(kit, n, *self._by_count[n])


def _within(candidate: Candidate, budget: SensorBudget) -> bool:
    return all(limit is None or candidate.cost(name) <= limit
               for name, limit in (("channels", budget.channels), ("flops", budget.flops)))


__all__ = ["COSTS", "VALIDATION_FOLDS", "Candidate", "Kit", "KitScoring", "SensorSearchSchema", "SensorSearchSection",
           "SensorSpace", "check_sensor_search", "kit_channels", "kit_key", "run_config"]
