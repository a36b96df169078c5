"""A generic dataset read into Recordings: `load_generic` stops at the first problem, `check_generic` collects every
one and what a user may not have meant (files left out, copies of a session)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from harkd.data.loaders.generic.files import file_findings
from harkd.data.loaders.generic.schema import SCHEMA_FILE, Problems, Schema, read_schema
from harkd.data.loaders.generic.tables import Table, read_session
from harkd.data.recording import Recording
from harkd.errors import HarkdError
from harkd.schema import ConfigErrors


@dataclass(frozen=True)
class ClassList:
    names: tuple[str, ...]
    null_class: int | None
    order: str  # where the order comes from, said by `harkd data check`


def _first_appearance(tables: Sequence[Table], null: str | None) -> tuple[list[str], str]:
    seen = [name for name in pd.unique(np.concatenate([t.labels for t in tables])) if name != null] if tables else []
    if seen and all(re.fullmatch(r"-?\d+", s) for s in seen):  # integer codes sort by value (2 before 10)
        return sorted(seen, key=int), "integer codes in increasing order"
    first = next((t.session.file.name for t in tables if len(t.labels)), "")
    return seen, f"as the labels first appear in the sessions ({first} first); a classes: line in dataset.yaml sets it"


def _class_list(schema: Schema, tables: Sequence[Table]) -> ClassList:
    """`classes` as given, else the labels in order of first appearance; the null class last if not listed."""
    null = schema.effective_null
    if schema.classes is not None:
        names, order = list(schema.classes), f"as listed in classes: of {Path(schema.where).name}"
    else:
        names, order = _first_appearance(tables, null)
    if null is not None and null not in names:
        names.append(null)
    return ClassList(tuple(names), names.index(null) if null is not None else None, order)


def _codes(table: Table, names: tuple[str, ...], schema: Schema) -> np.ndarray:
    """The table's labels as indices into the class list; a label outside `classes` is an error."""
    codes = pd.Index(names).get_indexer(table.labels).astype(np.int64)
    unknown = np.flatnonzero(codes < 0)  # only when `classes` is given
    if unknown.size:
        i, session = unknown[0], table.session
        at = session.where if session.label is not None else f"{session.file}: row {table.rows[i]}"
        raise HarkdError(f"{at}: label {table.labels[i]!r} is not in classes of {Path(schema.where).name} "
                         f"({', '.join(schema.classes)})")
    return codes


def _schema_path(path: Path) -> Path:
    yaml_path = path / SCHEMA_FILE if path.is_dir() else path
    if path.is_dir() and not yaml_path.is_file():
        raise HarkdError(f"{path}: no {SCHEMA_FILE} in this folder (see docs/generic-format.md)")
    return yaml_path


@dataclass
class _Read:
    schema: Schema
    tables: list[Table]
    classes: ClassList | None = None
    recordings: list[Recording] = field(default_factory=list)


def _read(path: Path, problems: Problems) -> _Read:
    schema = read_schema(_schema_path(Path(path)), problems)
    if schema.channels_dropped and not schema.channels:  # no channel left to read the files against
        return _Read(schema, [])
    read = _Read(schema, [])
    for session in schema.sessions:
        with problems.each():
            read.tables.append(read_session(session, schema))
    read.classes = classes = _class_list(schema, read.tables)
    channels = tuple(c.spec for c in schema.channels)
    for table in read.tables:
        with problems.each():
            read.recordings.append(Recording(
                signals=table.signals, channels=channels, labels=_codes(table, classes.names, schema),
                class_names=classes.names, subject=table.session.subject, session=table.session.session,
                rate_hz=schema.rate_hz, null_class=classes.null_class, annotations=table.annotations,
                interpolated_samples=table.interpolated, source=str(table.session.file)))
    return read


def load_generic(path: Path) -> list[Recording]:
    """Read a generic dataset: `path` is its folder or its dataset.yaml. Returns one Recording per session."""
    return _read(Path(path), Problems(collect=False)).recordings


@dataclass
class GenericCheck:
    """What `check_generic` found: the recordings that loaded, every problem (one line each), what the user may not
    have meant (one line each), the schema and where the class order comes from."""

    recordings: list[Recording] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    schema: Schema | None = None
    class_order: str | None = None


def check_generic(path: Path) -> GenericCheck:
    """Read a generic dataset as `load_generic` does, collecting every problem instead of stopping at the first.
    A problem that leaves nothing to read on (no dataset.yaml, not YAML, a bad top-level key) ends the reading."""
    problems = Problems(collect=True)
    try:
        read = _read(Path(path), problems)
    except HarkdError as exc:
        return GenericCheck(problems=[*problems.lines, *(exc.lines if isinstance(exc, ConfigErrors) else [str(exc)])])
    return GenericCheck(read.recordings, problems.lines, file_findings(read.schema, read.tables), read.schema,
                        read.classes.order if read.classes else None)


def locate_generic(tree: Path) -> Path | None:
    """The folder holding dataset.yaml: `tree` itself or one of its direct subfolders; None when there is none."""
    tree = Path(tree)
    if (tree / SCHEMA_FILE).is_file():
        return tree
    found = sorted(p.parent for p in tree.glob(f"*/{SCHEMA_FILE}") if p.is_file())
    if len(found) > 1:
        raise HarkdError(f"{tree}: several folders hold a {SCHEMA_FILE} ({', '.join(p.name for p in found)}); "
                         f"point at one of them")
    return found[0] if found else None
