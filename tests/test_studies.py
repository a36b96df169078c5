"""Studies shared between processes: the storage's first users may arrive together."""

import multiprocessing

import optuna
import pytest

from harkd.errors import HarkdError
from harkd.search.studies import open_study


def _open_after(barrier, storage):
    barrier.wait(timeout=30)
    open_study(storage, "shared", "identity", ["maximize"])


def test_two_processes_opening_a_fresh_storage_at_once_both_get_the_study(tmp_path):
    # Optuna creates its schema without a lock: unguarded, about half of such pairs failed with "table ... already
    # exists" or a UNIQUE constraint on alembic_version (it made CI's kill-and-resume test flaky)
    context = multiprocessing.get_context("fork")
    for pair in range(6):
        storage = f"sqlite:///{tmp_path / f'{pair}.db'}"
        barrier = context.Barrier(2)
        processes = [context.Process(target=_open_after, args=(barrier, storage)) for _ in range(2)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
        assert [p.exitcode for p in processes] == [0, 0], f"pair {pair}"
        assert len(optuna.get_all_study_summaries(storage)) == 1


def test_a_study_made_with_another_config_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    open_study(storage, "shared", "identity", ["maximize"])
    with pytest.raises(HarkdError, match="was made with a different config"):
        open_study(storage, "shared", "another", ["maximize"])


def test_an_unusable_storage_is_one_line_naming_it(tmp_path):
    storage = f"sqlite:///{tmp_path / 'missing' / 'search.db'}"
    with pytest.raises(HarkdError, match=r"^storage sqlite:///.*missing/search.db: ") as error:
        open_study(storage, "shared", "identity", ["maximize"])
    assert "\n" not in str(error.value)
