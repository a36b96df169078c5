"""What a user of the generic format may not have meant, found by `harkd data check` (warnings, not errors: each
could be on purpose): data files no session reads, sessions holding the same samples, and class names one or two
edits from another class (a misspelt file name makes a class of its own)."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from harkd.data.loaders.generic.schema import Schema
from harkd.data.loaders.generic.tables import Table

MAX_LISTED = 10  # left-out files named one by one; the rest counted in one line


def file_findings(schema: Schema, tables: Sequence[Table]) -> list[str]:
    return [*_left_out(schema), *_copies(tables), *([] if schema.classes else _near_names(tables))]


def _left_out(schema: Schema) -> list[str]:
    why = (f"the sessions pattern {schema.pattern!r} does not match its path" if schema.pattern
           else f"no entry of sessions: in {Path(schema.where).name} names it")
    lines = [f"{path}: not read: {why}; rename it to match, or move it out of the dataset's folder"
             for path in schema.ignored[:MAX_LISTED]]
    rest = len(schema.ignored) - MAX_LISTED
    return lines + ([f"{Path(schema.where).parent}: {rest} more data files not read ({why})"] if rest > 0 else [])


def _copies(tables: Sequence[Table]) -> list[str]:
    first: dict[str, Path] = {}
    lines = []
    for table in tables:
        digest = hashlib.sha256(table.signals.tobytes() + "\0".join(table.labels).encode()).hexdigest()
        if digest in first:
            lines.append(f"{table.session.file}: the same samples and labels as {first[digest]}, so one recording "
                         f"would count as two sessions; delete the copy")
        else:
            first[digest] = table.session.file
    return lines


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions that turn `a` into `b`."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        diagonal, row[0] = row[0], i
        for j, cb in enumerate(b, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ca != cb))
    return row[-1]


def near_miss(a: str, b: str) -> bool:
    """Two class names a typo apart: one edit (two for names of 8 characters or more), not only digits apart
    (`task1`, `task2` are meant)."""
    if re.sub(r"\d", "", a) == re.sub(r"\d", "", b):
        return False
    return edit_distance(a.lower(), b.lower()) <= (2 if min(len(a), len(b)) >= 8 else 1)


def _near_names(tables: Sequence[Table]) -> list[str]:
    samples: dict[str, int] = defaultdict(int)
    files: dict[str, Path] = {}
    for table in tables:
        for name in dict.fromkeys(table.labels):
            samples[name] += int((table.labels == name).sum())
            files.setdefault(name, table.session.file)
    names = sorted(samples)
    lines = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if near_miss(a, b):
                rare, common = sorted((a, b), key=lambda n: samples[n])
                lines.append(f"{files[rare]}: class {rare!r} ({samples[rare]} samples) is a typo away from "
                             f"{common!r} ({samples[common]}); fix the name, or list both in classes: of "
                             f"dataset.yaml if they are different activities")
    return lines
