"""The generic format for a user's own recordings: a folder with `dataset.yaml` and one CSV or Parquet file per session.

The schema and its rules are documented in docs/generic-format.md; every problem is a one-line HarkdError that names
the YAML key path or the session file, row and column. `check_generic` reads a folder the same way but collects every
problem it can (one per channel entry, session entry and session file) instead of stopping at the first, and what the
user may not have meant (files left out, copied sessions, misspelt class names).

schema.py (dataset.yaml) -> tables.py (session files) -> read.py (Recordings) and files.py (warnings); write.py
writes recordings in the format.
"""

from harkd.data.loaders.generic.read import GenericCheck, check_generic, load_generic, locate_generic
from harkd.data.loaders.generic.schema import SCHEMA_FILE, Schema, read_schema, schema_name
from harkd.data.loaders.generic.write import write_generic
from harkd.data.registry import Layout

GENERIC_LAYOUT = Layout(SCHEMA_FILE, max_depth=1)  # what locate_generic finds, for reading an archive's listing

__all__ = ["GENERIC_LAYOUT", "SCHEMA_FILE", "GenericCheck", "Schema", "check_generic", "load_generic",
           "locate_generic", "read_schema", "schema_name", "write_generic"]
