"""Optuna studies as harkd's searches keep them: in an RDB storage (SQLite in OUT by default), tied to the config that
made them, so a rerun resumes and a changed config is refused instead of mixing trials."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import optuna
from sqlalchemy.exc import SQLAlchemyError

from harkd.errors import HarkdError


def storage_urls(out_dir: Path, storage: str | None) -> tuple[str, str]:
    """(the URL in use, the URL to record): the default SQLite file in OUT is used by its absolute path, so that the
    study is found whatever the working directory of a process, and recorded as given."""
    if storage is not None:
        return storage, storage
    return f"sqlite:///{(Path(out_dir) / 'search.db').resolve()}", f"sqlite:///{Path(out_dir) / 'search.db'}"


def config_identity(raw: Mapping[str, Any], volatile: Sequence[str] = ("trials",)) -> str:
    """What makes trials comparable: the whole config but the search's `volatile` keys (the trial count)."""
    raw = copy.deepcopy(dict(raw))
    raw["search"] = {k: v for k, v in (raw.get("search") or {}).items() if k not in volatile}
    return json.dumps(raw, sort_keys=True, default=str)


def open_study(storage: str, name: str, identity: str, directions: Sequence[str]) -> optuna.Study:
    """The study `name` in `storage`, created when absent; one made with another config is refused."""
    study = _create_or_load(storage, name, directions)
    stored = study.user_attrs.get("config")
    if stored is None:
        study.set_user_attr("config", identity)
    elif stored != identity:
        raise HarkdError(f"study {name!r} in {storage} was made with a different config; restore it, or search "
                         f"into a new --out or --storage")
    return study


# What a second process opening a fresh storage at the same moment meets: Optuna creates the schema without a lock.
_SCHEMA_RACE = ("already exists", "UNIQUE constraint failed: alembic_version")


def _create_or_load(storage: str, name: str, directions: Sequence[str], attempts: int = 5) -> optuna.Study:
    attempt = 0
    while True:
        try:
            return optuna.create_study(storage=storage, study_name=name, directions=list(directions),
                                       load_if_exists=True)
        except SQLAlchemyError as exc:  # a bad URL or an unreachable database; the first line says which
            first_line = str(exc).splitlines()[0]
            attempt += 1
            if attempt == attempts or not any(race in first_line for race in _SCHEMA_RACE):
                raise HarkdError(f"storage {storage}: {first_line}") from None
            time.sleep(0.1 * attempt)  # the other process finishes the schema meanwhile


__all__ = ["config_identity", "open_study", "storage_urls"]
