"""dataset.yaml: its pydantic schema (every problem one line naming the file and the key path) and the `Schema` the
session files are read against: channels with their units resolved, the session files a pattern or a list names,
and the data files it leaves out."""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Sequence

import yaml
from pydantic import AfterValidator, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from harkd.data.recording import ChannelSpec, max_gap_samples
from harkd.data.units import to_si
from harkd.errors import HarkdError
from harkd.schema import FORBID_UNKNOWN, ConfigErrors, Float, PositiveFloat, validate

SCHEMA_FILE = "dataset.yaml"
SESSION_SUFFIXES = (".csv", ".parquet")
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
DEFAULT_NULL = "Null"  # the class of sessions without labels when null_label is not given
_FIELD = re.compile(r"\{([^{}]*)\}")  # a {field} of a sessions pattern


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _listed_once(what: str) -> AfterValidator:
    def check(names: tuple[str, ...]) -> tuple[str, ...]:
        twice = [name for i, name in enumerate(names) if name in names[:i]]
        if twice:
            raise ValueError(f"{what} {twice[0]!r} is listed twice")
        return names

    return AfterValidator(check)


def _pattern_or_list(value: Any) -> Any:
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and value):
        return value
    raise ValueError(f"expected a file pattern such as '{{subject}}_{{label}}.csv' or a non-empty list of session "
                     f"entries, got {value!r}")


# A name (column, label, subject, axis ...): YAML may give it as a number, never as true/false.
Text = Annotated[str, Field(coerce_numbers_to_str=True, strict=False), AfterValidator(_not_blank)]
Unit = Annotated[str, Field(coerce_numbers_to_str=True, strict=False)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]


@pydantic_dataclass(frozen=True, config=FORBID_UNKNOWN)
class ChannelEntry:
    column: Text
    position: Text
    modality: Text
    axis: Text
    unit: Unit = ""
    sensor: Text | None = None
    orientation: Text | None = None
    placement: Text | None = None


@pydantic_dataclass(frozen=True, config=FORBID_UNKNOWN)
class SessionEntry:
    file: Text
    subject: Text
    session: Text | None = None
    label: Text | None = None


@pydantic_dataclass(frozen=True, config=FORBID_UNKNOWN)
class DatasetYaml:
    """dataset.yaml as written; channel and session entries are checked one by one (so that `harkd data check`
    reports each bad entry and reads on with the rest)."""

    name: Text
    rate_hz: PositiveFloat
    channels: Annotated[tuple[Any, ...], Field(min_length=1)]
    sessions: Annotated[Any, AfterValidator(_pattern_or_list)]
    label_column: Text | None = None
    time_column: Text | None = None
    time_unit: Literal["s", "ms", "us", "ns"] = "s"
    null_label: Text | None = None
    classes: Annotated[tuple[Text, ...], Field(min_length=1), _listed_once("class")] | None = None
    max_gap_s: NonNegativeFloat = 1.0
    annotations: Annotated[tuple[Text, ...], _listed_once("annotation")] = ()


@dataclass(frozen=True)
class Channel:
    column: str
    spec: ChannelSpec  # with the modality's SI unit where harkd knows the modality
    declared_unit: str  # the unit dataset.yaml gives
    factor: float  # declared unit -> spec.unit
    key: str  # the channel's entry in dataset.yaml (channels[3]), for messages about it


@dataclass(frozen=True)
class Session:
    file: Path
    subject: str
    session: str
    label: str | None  # the fixed label of every sample (no label column is read), else None
    where: str  # where the session is described, for errors about its fixed label


@dataclass(frozen=True)
class Schema:
    where: str  # the YAML path, prefixed to every schema error
    name: str
    rate_hz: float
    label_column: str | None
    time_column: str | None
    time_scale: float  # seconds per time-column unit
    null_label: str | None
    classes: tuple[str, ...] | None
    max_gap_s: float
    channels: tuple[Channel, ...]
    sessions: tuple[Session, ...]
    annotations: tuple[str, ...]
    pattern: str | None  # the sessions pattern, None for a list
    ignored: tuple[Path, ...]  # .csv/.parquet files under the folder that are no session
    channels_dropped: int = 0  # entries `harkd data check` recorded as problems: the files cannot be read against them

    @property
    def max_gap(self) -> int:
        return max_gap_samples(self.max_gap_s, self.rate_hz)

    def label_column_of(self, session: Session) -> str | None:
        """The column to read labels from: none for a session with a fixed label or without labels."""
        return None if session.label is not None else self.label_column

    @property
    def effective_null(self) -> str | None:
        """The null class: null_label, or Null when some session has no labels at all (they are Null throughout)."""
        unlabelled = self.label_column is None and any(s.label is None for s in self.sessions)
        return self.null_label if self.null_label is not None else DEFAULT_NULL if unlabelled else None


class Problems:
    """Loading stops at the first problem; `harkd data check` collects each one and reads on where it can."""

    def __init__(self, collect: bool):
        self.collect = collect
        self.lines: list[str] = []

    @contextmanager
    def each(self) -> Iterator[None]:
        """One part (a channel entry, a session file): its problems are recorded and the part skipped."""
        try:
            yield
        except HarkdError as exc:
            if not self.collect:
                raise
            self.lines += exc.lines if isinstance(exc, ConfigErrors) else [str(exc)]


def load_yaml(yaml_path: Path) -> Any:
    where = str(yaml_path)
    try:
        return yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarkdError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HarkdError(f"{where}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise HarkdError(f"{where}: not valid YAML ({at}{getattr(exc, 'problem', None) or exc})") from None


def schema_name(yaml_path: Path) -> str:
    """The `name:` of a dataset.yaml (what `harkd data install` checks the install name against)."""
    raw = load_yaml(yaml_path)
    if not isinstance(raw, dict) or "name" not in raw:
        raise HarkdError(f"{yaml_path}: name: required key missing")
    return validate(Text, raw["name"], str(yaml_path), at=("name",))


def _channel(value: Any, where: str, i: int) -> Channel:
    entry = validate(ChannelEntry, value, where, at=("channels", i))
    at = f"{where}: channels[{i}]"
    unit, factor = to_si(entry.unit, entry.modality, f"{at}.unit")
    notes = {k: getattr(entry, k) for k in ("sensor", "orientation", "placement") if getattr(entry, k) is not None}
    return Channel(entry.column, ChannelSpec(entry.position, entry.modality, entry.axis, unit, **notes),
                   entry.unit, factor, f"channels[{i}]")


def _session_file(folder: Path, name: str, at: str) -> Path:
    if not name.lower().endswith(SESSION_SUFFIXES):
        raise HarkdError(f"{at}: {Path(name).name!r} is neither .csv nor .parquet")
    return folder / name


def _listed_session(value: Any, folder: Path, where: str, i: int) -> Session:
    entry = validate(SessionEntry, value, where, at=("sessions", i))
    at = f"{where}: sessions[{i}]"
    file = _session_file(folder, entry.file, f"{at}.file")
    return Session(file, entry.subject, entry.session or file.stem, entry.label, f"{at}.label")


def _pattern_regex(pattern: str, at: str) -> re.Pattern:
    """`{subject}_{label}_t{trial}.csv` as a regex: each field matches the shortest text without '/'."""
    parts, fields, pos = [], [], 0
    for match in _FIELD.finditer(pattern):
        name = match.group(1)
        if not name.isidentifier():
            raise HarkdError(f"{at}: {{{name}}} in pattern {pattern!r} is not a field name (letters, digits, _)")
        if name in fields:
            raise HarkdError(f"{at}: field {{{name}}} appears twice in pattern {pattern!r}")
        parts += [re.escape(pattern[pos:match.start()]), f"(?P<{name}>[^/]+?)"]
        fields.append(name)
        pos = match.end()
    parts.append(re.escape(pattern[pos:]))
    if "subject" not in fields:
        raise HarkdError(f"{at}: pattern {pattern!r} needs a {{subject}} field")
    return re.compile("".join(parts))


def data_files(folder: Path) -> list[Path]:
    """The files under `folder` a session could be (.csv, .parquet), hidden ones left out, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(SESSION_SUFFIXES)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _pattern_sessions(pattern: str, folder: Path, at: str) -> list[Session]:
    """Every file under `folder` whose path (relative, with '/') the pattern matches, in sorted order; fields
    subject, session and label give the session's, any other field (e.g. {trial}) only has to match."""
    _session_file(folder, pattern, at)
    regex = _pattern_regex(pattern, at)
    sessions = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        if match := regex.fullmatch(file.relative_to(folder).as_posix()):
            fields = match.groupdict()
            sessions.append(Session(file, fields["subject"], fields.get("session") or file.stem, fields.get("label"),
                                    f"{file} (label from the file name)"))
    if not sessions:
        raise HarkdError(f"{at}: no file under {folder} matches the pattern {pattern!r}")
    return sessions


def _unique(names: Sequence[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise HarkdError(f"{where}[{i}]: {what} {name!r} is listed twice")
        seen.add(name)


def _sessions(value: Any, folder: Path, where: str, problems: Problems) -> list[Session]:
    """A pattern (one string) or a list of entries."""
    if isinstance(value, str):
        return _pattern_sessions(value, folder, f"{where}: sessions")
    sessions = []
    for i, entry in enumerate(value):
        with problems.each():
            sessions.append(_listed_session(entry, folder, where, i))
    with problems.each():
        _unique([str(s.file) for s in sessions], f"{where}: sessions", "file")
    with problems.each():
        _unique([f"{s.subject}/{s.session}" for s in sessions], f"{where}: sessions", "subject/session")
    return sessions


def _channels(raw: DatasetYaml, where: str, problems: Problems) -> list[Channel]:
    channels = []
    for i, entry in enumerate(raw.channels):
        with problems.each():
            channels.append(_channel(entry, where, i))
    with problems.each():
        _unique([c.column for c in channels], f"{where}: channels", "column")
    with problems.each():
        _unique([c.spec.name for c in channels], f"{where}: channels", "channel (position/modality/axis@sensor)")
    return channels


def read_schema(yaml_path: Path, problems: Problems | None = None) -> Schema:
    """dataset.yaml checked and resolved; with `problems` collecting, a bad channel or session entry is recorded
    and left out, and reading goes on."""
    where, folder = str(yaml_path), Path(yaml_path).parent
    problems = problems or Problems(collect=False)
    raw = validate(DatasetYaml, load_yaml(Path(yaml_path)), where)
    channels = _channels(raw, where, problems)
    sessions = _sessions(raw.sessions, folder, where, problems)
    used = {s.file.resolve() for s in sessions}
    schema = Schema(
        where=where, name=raw.name, rate_hz=raw.rate_hz, label_column=raw.label_column, time_column=raw.time_column,
        time_scale=TIME_UNITS[raw.time_unit], null_label=raw.null_label, classes=raw.classes,
        max_gap_s=raw.max_gap_s, channels=tuple(channels), sessions=tuple(sessions), annotations=raw.annotations,
        pattern=raw.sessions if isinstance(raw.sessions, str) else None,
        ignored=tuple(p for p in data_files(folder) if p.resolve() not in used),
        channels_dropped=len(raw.channels) - len(channels))
    _check_roles(schema)
    return schema


def _check_roles(schema: Schema) -> None:
    """A column may play only one role, else e.g. the label column would also be read as a signal."""
    roles = [(f"channels[{i}].column", c.column) for i, c in enumerate(schema.channels)]
    roles += [("label_column", schema.label_column)] if schema.label_column else []
    roles += [("time_column", schema.time_column)] if schema.time_column else []
    roles += [(f"annotations[{i}]", a) for i, a in enumerate(schema.annotations)]
    owner: dict[str, str] = {}
    for key, column in roles:
        if column in owner:
            raise HarkdError(f"{schema.where}: {key}: column {column!r} is already used by {owner[column]}")
        owner[column] = key
