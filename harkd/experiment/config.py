"""Experiment configs: YAML data checked against one schema (harkd.schema, pydantic); every bad key, type or value is
one line naming where, the key, the value and what is allowed."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Self

import yaml
from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer, PlainValidator

from harkd.data.recording import ChannelKit, ChannelQuery
from harkd.data.registry import WindowConfig
from harkd.errors import HarkdError
from harkd.schema import (FORBID_UNKNOWN, Bool, Float, Int, Name, NonNegativeInt, PositiveFloat, PositiveInt, Str,
                          config_dataclass, resolved_yaml, validate)
from harkd.train.engine import TrainConfig
from harkd.personalise.adapt import AdaptSpec
from harkd.personalise.session import PROTOCOLS, SessionCut
from harkd.personalise.tune import check_personalise_method
from harkd.train.methods import MethodEntry, MethodSpec, method_shorthand

SPLIT_KINDS = ("loso", "fixed", "protocol", "groups")


@config_dataclass("model")
class ModelSpec:
    """A registered model with its options; `label` names it in results (two sizes of one model stay apart)."""

    name: Str = Field(validation_alias="model", serialization_alias="model")
    params: dict[Str, Any] = Field(default_factory=dict)
    label: Str = ""

    def __post_init__(self) -> None:
        if not self.label:
            options = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
            object.__setattr__(self, "label", self.name + (f"({options})" if options else ""))

    @classmethod
    def parse(cls, values: Any, where: str) -> "ModelSpec":
        """A model name, or {model, params, label}."""
        return validate(ModelEntry, values, where)


@config_dataclass("split")
class SplitSpec:
    kind: Literal[SPLIT_KINDS] = "loso"
    val_subjects: NonNegativeInt = 1
    val_fraction: Annotated[Float, Field(gt=0, lt=1)] = 0.15
    test_subjects: tuple[Name, ...] = ()
    train_subjects: tuple[Name, ...] | None = None
    protocol: Str | None = None
    group_by: Str | None = None
    n_folds: Annotated[Int, Field(ge=2)] = 3
    folds: tuple[Name, ...] | None = None  # run only these folds (by name or test subject), e.g. for a quick check
    # > 0: this fraction of each test recording is unlabelled calibration data (splits.py)
    calibration: Annotated[Float, Field(ge=0, lt=1)] = 0.0

    def __post_init__(self) -> None:
        needs = {"fixed": ("test_subjects", "test_subjects"), "protocol": ("protocol", "protocol (e.g. uci-har)"),
                 "groups": ("group_by", "group_by (an annotation, e.g. box)")}
        if self.kind in needs and not getattr(self, needs[self.kind][0]):
            raise ValueError(f"kind {self.kind!r} needs {needs[self.kind][1]}")


PERSONALISE_LABELS = ("teacher", "self", "true")


def _yaml_true(value: Any) -> Any:
    return "true" if value is True else value  # YAML 1.1 reads a bare `true` as a boolean


@config_dataclass("personalise")
class PersonaliseSpec:
    """After each unit, every student of the unit adapted to each left-out worker on a calibration session, the
    first `calibration` (or `minutes`) of their recordings (harkd.personalise.session; `protocol` and `activities`
    for the later-session and partial-session protocols): labelled by the teacher through `method` (ours), by itself
    (self-training, the lower bound) and by the worker's true labels (the upper bound), as `labels` lists, each
    adapted as `adapt` says (harkd.personalise.adapt), the teacher's guarded (`guard`); scored on the rest of the
    worker's recordings beside the untouched student and the teacher."""

    calibration: Annotated[Float, Field(gt=0, lt=1)] = 0.5
    # or the first `minutes` of each recording (per activity where a recording holds one, as on DSADS), scored from
    # `scored_from` of each recording on (default: `calibration`), so that sessions of several sizes share windows
    minutes: PositiveFloat | None = None
    scored_from: Annotated[Float, Field(gt=0, lt=1)] | None = None
    stride: PositiveInt | None = None  # the session windows' stride in samples (default: the run's)
    protocol: Literal[PROTOCOLS] = "same_recordings"  # or later_recordings (harkd.personalise.session)
    activities: Annotated[Float, Field(gt=0, lt=1)] | None = None  # a partial session's share of the activities
    adapt: AdaptSpec = AdaptSpec()
    method: Annotated[MethodSpec, BeforeValidator(method_shorthand)] = MethodSpec(
        "logit", ({"distiller": "logit"},))
    labels: tuple[Annotated[Literal[PERSONALISE_LABELS], BeforeValidator(_yaml_true)], ...] = PERSONALISE_LABELS
    students: tuple[Str, ...] | None = None  # the run's methods whose students are personalised (default: all)
    train: TrainConfig = TrainConfig(epochs=30, lr=1e-3, patience=8)
    guard: Bool = True  # beside the teacher's labels, rows "+guarded": the guard's choice (harkd.personalise.guard)

    @property
    def cut(self) -> SessionCut:
        return SessionCut(self.calibration, self.minutes, self.stride, self.protocol, self.activities)

    @property
    def scored(self) -> float:
        return self.calibration if self.scored_from is None else self.scored_from


def _model_shorthand(values: Any) -> Any:
    return {"model": values} if isinstance(values, str) else values


def _stride_defaults_to_length(values: Any) -> Any:
    if isinstance(values, Mapping) and "length" in values and "stride" not in values:
        return {**values, "stride": values["length"]}
    return values


def _channel_query(values: Any) -> ChannelQuery | ChannelKit:
    try:
        return ChannelQuery.parse(values)
    except HarkdError as exc:
        raise ValueError(str(exc)) from None


def _channel_mapping(query: ChannelQuery | ChannelKit) -> dict | list[dict]:
    if isinstance(query, ChannelKit):
        return [_channel_mapping(part) for part in query.parts]
    return {key: list(value) for key, value in (("position", query.positions), ("modality", query.modalities))
            if value is not None}


ModelEntry = Annotated[ModelSpec, BeforeValidator(_model_shorthand)]
WindowEntry = Annotated[WindowConfig, BeforeValidator(_stride_defaults_to_length)]
Channels = Annotated[ChannelQuery | ChannelKit, PlainValidator(_channel_query), PlainSerializer(_channel_mapping)]
Seeds = Annotated[list[NonNegativeInt], Field(min_length=1)]


class Section(BaseModel):
    model_config = FORBID_UNKNOWN


class TeacherSection(Section):
    """The teacher's keys where a teacher is optional (head search without KD)."""

    channels: Channels = ChannelQuery()
    model: Str | None = None
    params: dict[Str, Any] = {}
    train: TrainConfig = TrainConfig()

    def spec(self) -> ModelSpec:
        return ModelSpec(self.model, self.params)


class RequiredTeacherSection(TeacherSection):
    model: Str


class SemanticSection(Section):
    model: Str = "tsak_semantic"
    params: dict[Str, Any] = {}
    train: TrainConfig = TrainConfig()


class StudentsSection(Section):
    channels: Channels = ChannelQuery()
    models: Annotated[list[ModelEntry], Field(min_length=1)]
    train: TrainConfig = TrainConfig()


class DataSections(Section):
    """The data, split and seed sections every command shares."""

    dataset: Str
    dataset_options: dict[Str, Any] = {}
    windowing: WindowEntry | None = None
    split: SplitSpec = SplitSpec()
    seeds: Seeds = [0]


class ExperimentSchema(DataSections):
    teacher: RequiredTeacherSection
    semantic: SemanticSection = SemanticSection()
    students: StudentsSection
    methods: Annotated[list[MethodEntry], Field(min_length=1)]
    personalise: PersonaliseSpec | None = None
    latency_runs: PositiveInt = 200
    # Keep every trained model (and each personalised student) in OUT/models/, as --keep-models does.
    keep_models: bool = False


@dataclass(frozen=True, kw_only=True)
class SharedConfig:
    """What a run config and both search configs share, resolved: the data, split and seeds, the teacher (None: a head
    search without one), its semantic classifier (None: the head search trains none) and the students (channels None:
    the sensor search chooses them). Built from a validated schema by `resolve` alone.

    `resolved` is that schema's JSON data, every default filled in (what --print-config prints): what a worker process
    is sent and parses once. `raw` is the config as given to the parse (the user's, as written), kept only to record
    it (results.json) and to identify a run or study that resumes (UnitStore, config_identity); never parsed again."""

    dataset: str
    dataset_options: dict
    windowing: WindowConfig | None
    split: SplitSpec
    seeds: tuple[int, ...]
    teacher_channels: ChannelQuery | ChannelKit
    teacher: ModelSpec | None
    teacher_train: TrainConfig
    semantic: ModelSpec | None
    semantic_train: TrainConfig | None
    student_channels: ChannelQuery | ChannelKit | None
    students: tuple[ModelSpec, ...]
    student_train: TrainConfig
    resolved: dict = field(repr=False)
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def resolve(cls, schema: DataSections, raw: Mapping[str, Any], **own: Any) -> Self:
        """`cls` from a validated schema (DataSections with teacher, semantic and students sections, as each command
        declares them) and the command's `own` fields."""
        teacher, semantic, students = schema.teacher, schema.semantic, schema.students
        return cls(dataset=schema.dataset, dataset_options=schema.dataset_options, windowing=schema.windowing,
                   split=schema.split, seeds=tuple(schema.seeds), teacher_channels=teacher.channels,
                   teacher=None if teacher.model is None else teacher.spec(), teacher_train=teacher.train,
                   semantic=None if semantic is None else ModelSpec(semantic.model, semantic.params),
                   semantic_train=None if semantic is None else semantic.train,
                   student_channels=students.channels, students=tuple(students.models), student_train=students.train,
                   resolved=resolved_data(schema), raw=copy.deepcopy(dict(raw)), **own)


def resolved_data(schema: BaseModel) -> dict:
    """A validated config as JSON data, every default filled in: what --print-config prints (resolved_yaml)."""
    return schema.model_dump(mode="json", by_alias=True)


@dataclass(frozen=True, kw_only=True)
class OneStudentSearch(SharedConfig):
    """A search's shared sections: its checks allow one seed and one student model."""

    @property
    def seed(self) -> int:
        return self.seeds[0]

    @property
    def student(self) -> ModelSpec:
        return self.students[0]


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig(SharedConfig):
    # a run always has a teacher, its semantic classifier and the students' channels
    teacher: ModelSpec
    semantic: ModelSpec
    semantic_train: TrainConfig
    student_channels: ChannelQuery | ChannelKit
    methods: tuple[MethodSpec, ...]
    latency_runs: int
    personalise: PersonaliseSpec | None = None
    keep_models: bool = False


def _check_students(students: list[ModelSpec], where: str) -> None:
    labels = [s.label for s in students]
    if len(set(labels)) != len(labels):
        raise HarkdError(f"{where}: students.models: two models share the label {labels}; give each a distinct "
                         f"'label'")


def _check_methods(methods: list[MethodSpec], where: str) -> None:
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise HarkdError(f"{where}: methods: duplicate method names {names}")
    for i, method in enumerate(methods):
        if method.teacher == "self" and all(m.terms for m in methods[:i]):
            raise HarkdError(f"{where}: methods[{i}]: method {method.name} has teacher 'self', which distils from the "
                             f"student trained alone: list a method with no terms (none) before it")


def check_experiment(raw: Mapping[str, Any], where: str = "config") -> ExperimentSchema:
    """The config with every key and value checked and every default filled in."""
    schema = validate(ExperimentSchema, raw, where)
    _check_students(schema.students.models, where)
    _check_methods(schema.methods, where)
    if schema.personalise is not None:
        _check_personalise(schema, where)
    return schema


def _check_personalise(schema: ExperimentSchema, where: str) -> None:
    spec, method = schema.personalise, schema.personalise.method
    if schema.split.calibration:
        raise HarkdError(f"{where}: personalise and split.calibration both use the left-out workers' data; "
                         f"choose one")
    unknown = set(spec.students or ()) - {m.name for m in schema.methods}
    if unknown:
        raise HarkdError(f"{where}: personalise.students: {sorted(unknown)} are not methods of this run; methods: "
                         f"{[m.name for m in schema.methods]}")
    check_personalise_method(method, f"{where}: personalise.method")


def _labels_by_name(raw: Mapping[str, Any], personalise: PersonaliseSpec | None) -> dict:
    """A copy of `raw` whose personalise.labels are the names the user meant (YAML 1.1 reads a bare `true` as a
    boolean; results.json records this copy)."""
    copied = copy.deepcopy(dict(raw))
    if personalise is not None and isinstance(copied.get("personalise"), dict) and "labels" in copied["personalise"]:
        copied["personalise"]["labels"] = list(personalise.labels)
    return copied


def parse_config(raw: Mapping[str, Any], where: str = "config") -> ExperimentConfig:
    schema = check_experiment(raw, where)
    return ExperimentConfig.resolve(schema, _labels_by_name(raw, schema.personalise), methods=tuple(schema.methods),
                                    latency_runs=schema.latency_runs, personalise=schema.personalise,
                                    keep_models=schema.keep_models)


def experiment_yaml(raw: Mapping[str, Any], where: str = "config") -> str:
    """`harkd run --print-config`: the resolved config as YAML."""
    return resolved_yaml(ExperimentSchema, check_experiment(raw, where))


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """key.sub=value overrides (values parsed as YAML): `seeds=[0]`, `teacher.train.epochs=2`."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HarkdError(f"override {item!r}: expected key=value, e.g. teacher.train.epochs=5")
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise HarkdError(f"override {item!r}: {part!r} is not a section")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise HarkdError(f"override {item!r}: value is not valid YAML ({exc.problem})") from None
    return raw


def read_config(path: Path, overrides: list[str] | None = None) -> dict:
    """A config file's data with the overrides applied, not yet validated (each command has its schema)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise HarkdError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise HarkdError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(raw or {}, dict):
        raise HarkdError(f"{path}: expected a mapping of sections (dataset, split, ...), got {type(raw).__name__}")
    return apply_overrides(raw or {}, overrides or [])


def load_config(path: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    return parse_config(read_config(path, overrides), where=str(path))
