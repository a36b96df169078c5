"""Experiment configs: YAML data, validated against a fixed schema; unknown keys are errors listing the valid ones."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from harkd.data.recording import ChannelQuery
from harkd.data.registry import WindowConfig
from harkd.errors import HarkdError
from harkd.train.engine import TrainConfig
from harkd.train.mixup import MixupSpec

SPLIT_KINDS = ("loso", "fixed", "protocol", "groups")


def check_keys(values: Any, valid: set[str], where: str, required: set[str] = frozenset()) -> dict:
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise HarkdError(f"{where}: expected a mapping, got {type(values).__name__}")
    unknown = set(values) - valid
    if unknown:
        raise HarkdError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(valid)}")
    missing = required - set(values)
    if missing:
        raise HarkdError(f"{where}: missing key(s) {sorted(missing)}")
    return dict(values)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model with its options; `label` names it in results (two sizes of one model stay apart)."""

    name: str
    params: dict
    label: str = ""

    @classmethod
    def parse(cls, values: Any, where: str) -> "ModelSpec":
        if isinstance(values, str):
            return cls(values, {}, values)
        values = check_keys(values, {"model", "params", "label"}, where, {"model"})
        name, params = str(values["model"]), dict(values.get("params") or {})
        default = name + ("(" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + ")" if params else "")
        return cls(name, params, str(values.get("label") or default))


@dataclass(frozen=True)
class SplitSpec:
    kind: str = "loso"
    val_subjects: int = 1
    val_fraction: float = 0.15
    test_subjects: tuple[str, ...] = ()
    train_subjects: tuple[str, ...] | None = None
    protocol: str | None = None
    group_by: str | None = None
    n_folds: int = 3
    folds: tuple[str, ...] | None = None  # run only these folds (by name or test subject), e.g. for a quick check
    calibration: float = 0.0  # > 0: this fraction of each test recording is unlabelled calibration data (splits.py)

    @classmethod
    def parse(cls, values: Any, where: str = "split") -> "SplitSpec":
        values = check_keys(values, {f for f in cls.__dataclass_fields__}, where)
        kind = values.get("kind", "loso")
        if kind not in SPLIT_KINDS:
            raise HarkdError(f"{where}.kind: unknown split {kind!r}; valid: {', '.join(SPLIT_KINDS)}")
        as_tuple = lambda v: None if v is None else tuple(str(s) for s in v)  # noqa: E731
        spec = cls(kind=kind, val_subjects=int(values.get("val_subjects", 1)),
                   val_fraction=float(values.get("val_fraction", 0.15)),
                   test_subjects=as_tuple(values.get("test_subjects")) or (),
                   train_subjects=as_tuple(values.get("train_subjects")), protocol=values.get("protocol"),
                   group_by=values.get("group_by"), n_folds=int(values.get("n_folds", 3)),
                   folds=as_tuple(values.get("folds")), calibration=float(values.get("calibration", 0.0)))
        if kind == "fixed" and not spec.test_subjects:
            raise HarkdError(f"{where}: kind 'fixed' needs test_subjects")
        if kind == "protocol" and not spec.protocol:
            raise HarkdError(f"{where}: kind 'protocol' needs protocol (e.g. uci-har)")
        if kind == "groups" and not spec.group_by:
            raise HarkdError(f"{where}: kind 'groups' needs group_by (an annotation, e.g. box)")
        return spec


TEACHER_KINDS = ("teacher", "self")


@dataclass(frozen=True)
class MethodSpec:
    """A named KD method: a list of weighted distiller terms (empty for the student alone). `teacher: self` distils
    from the student trained alone (a method with no terms listed earlier) instead of the teacher. `mixup` adds mixed
    training windows (harkd.train.mixup): labelled by the teacher for KD, by mixed labels for the student alone."""

    name: str
    terms: tuple[dict, ...]
    teacher: str = "teacher"
    mixup: MixupSpec | None = None

    @classmethod
    def parse(cls, values: Any, where: str) -> "MethodSpec":
        if isinstance(values, str):  # a registered distiller with its defaults
            return cls(values, () if values == "none" else ({"distiller": values},))
        values = check_keys(values, {"name", "terms", "teacher", "mixup"}, where, {"name", "terms"})
        name, teacher = str(values["name"]), values.get("teacher", "teacher")
        terms = []
        for i, term in enumerate(values["terms"] or []):
            if not isinstance(term, Mapping) or "distiller" not in term:
                raise HarkdError(f"{where}.terms[{i}]: expected a mapping with 'distiller' and its parameters")
            terms.append(dict(term))
        if teacher not in TEACHER_KINDS:
            raise HarkdError(f"{where}.teacher: method {name}: unknown teacher {teacher!r}; "
                             f"valid: {', '.join(TEACHER_KINDS)}")
        if teacher == "self" and not terms:
            raise HarkdError(f"{where}: method {name}: teacher 'self' needs terms (a method without terms is the "
                             f"student alone, which is the self teacher)")
        mixup = None if values.get("mixup") is None else MixupSpec.parse(values["mixup"], f"{where}.mixup")
        return cls(name, tuple(terms), teacher, mixup)


@dataclass(frozen=True)
class ExperimentConfig:
    dataset: str
    dataset_options: dict
    windowing: WindowConfig | None
    split: SplitSpec
    seeds: tuple[int, ...]
    teacher_channels: ChannelQuery
    teacher: ModelSpec
    teacher_train: TrainConfig
    semantic: ModelSpec
    semantic_train: TrainConfig
    student_channels: ChannelQuery
    students: tuple[ModelSpec, ...]
    student_train: TrainConfig
    methods: tuple[MethodSpec, ...]
    latency_runs: int
    raw: dict


def _unique_labels(specs: tuple[ModelSpec, ...], where: str) -> tuple[ModelSpec, ...]:
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise HarkdError(f"{where}: two models share the label {labels}; give each a distinct 'label'")
    return specs


TOP_KEYS = {"dataset", "dataset_options", "windowing", "split", "seeds", "teacher", "semantic", "students",
            "methods", "latency_runs"}


def parse_config(raw: Mapping[str, Any], where: str = "config") -> ExperimentConfig:
    raw = check_keys(raw, TOP_KEYS, where, {"dataset", "teacher", "students", "methods"})
    teacher = check_keys(raw["teacher"], {"channels", "model", "params", "train"}, f"{where}.teacher", {"model"})
    semantic = check_keys(raw.get("semantic"), {"model", "params", "train"}, f"{where}.semantic")
    students = check_keys(raw["students"], {"channels", "models", "train"}, f"{where}.students", {"models"})
    methods = raw["methods"]
    if not isinstance(methods, list) or not methods:
        raise HarkdError(f"{where}.methods: expected a non-empty list of method names or {{name, terms}}")
    parsed_methods = tuple(MethodSpec.parse(m, f"{where}.methods[{i}]") for i, m in enumerate(methods))
    names = [m.name for m in parsed_methods]
    if len(set(names)) != len(names):
        raise HarkdError(f"{where}.methods: duplicate method names {names}")
    for i, method in enumerate(parsed_methods):
        if method.teacher == "self" and all(m.terms for m in parsed_methods[:i]):
            raise HarkdError(f"{where}.methods[{i}]: method {method.name} has teacher 'self', which distils from the "
                             f"student trained alone: list a method with no terms (none) before it")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise HarkdError(f"{where}.seeds: expected a list of integers, got {seeds!r}")
    windowing = raw.get("windowing")
    return ExperimentConfig(
        dataset=str(raw["dataset"]),
        dataset_options=dict(raw.get("dataset_options") or {}),
        windowing=None if windowing is None else WindowConfig.from_mapping(windowing, f"{where}.windowing"),
        split=SplitSpec.parse(raw.get("split"), f"{where}.split"),
        seeds=tuple(seeds),
        teacher_channels=ChannelQuery.parse(teacher.get("channels")),
        teacher=ModelSpec.parse({"model": teacher["model"], "params": teacher.get("params")}, f"{where}.teacher"),
        teacher_train=TrainConfig.from_mapping(teacher.get("train"), f"{where}.teacher.train"),
        semantic=ModelSpec.parse({"model": semantic.get("model", "tsak_semantic"), "params": semantic.get("params")},
                                 f"{where}.semantic"),
        semantic_train=TrainConfig.from_mapping(semantic.get("train"), f"{where}.semantic.train"),
        student_channels=ChannelQuery.parse(students.get("channels")),
        students=_unique_labels(tuple(ModelSpec.parse(m, f"{where}.students.models[{i}]")
                                      for i, m in enumerate(students["models"] or [])), f"{where}.students.models"),
        student_train=TrainConfig.from_mapping(students.get("train"), f"{where}.students.train"),
        methods=parsed_methods,
        latency_runs=int(raw.get("latency_runs", 200)),
        raw=copy.deepcopy(dict(raw)),
    )


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
    return apply_overrides(raw or {}, overrides or [])


def load_config(path: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    return parse_config(read_config(path, overrides), where=str(path))
