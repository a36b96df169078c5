"""The local backend: a worker built from a picklable spec does each unit, in this process or in spawned ones, with
the same results; errors come back as they were raised, and option names in messages are the caller's."""

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from harkd.errors import HarkdError
from harkd.execution.processes import Processes, StudyTrials, optimize_in_processes


@dataclass(frozen=True)
class Squares:
    """A worker spec: each unit's square plus `offset` (or `shared`, when the caller hands it over), and the
    process's torch threads."""

    offset: int
    fail_on: int | None = None

    def build(self, shared=None):
        offset = self.offset if shared is None else shared

        def work(unit):
            if unit == self.fail_on:
                raise HarkdError(f"unit {unit}: refused")
            return unit * unit + offset, torch.get_num_threads()

        return work


UNITS = {f"u{i}": i for i in range(5)}


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_unit_gives_the_same_result_here_or_in_processes(jobs):
    results = dict(Processes(jobs, threads=1).map(Squares(10), UNITS))
    assert results == {key: (i * i + 10, 1) for key, i in UNITS.items()}
    assert dict(Processes(jobs).map(Squares(10), UNITS, shared=100))["u3"] == (109, 1)


def test_in_this_process_the_torch_threads_are_restored():
    before = torch.get_num_threads()
    assert [r[1] for _, r in Processes(1, threads=2).map(Squares(0), UNITS)] == [2] * len(UNITS)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_units_error_comes_back_as_raised(jobs):
    with pytest.raises(HarkdError, match="unit 3: refused"):
        dict(Processes(jobs).map(Squares(0, fail_on=3), UNITS))


@dataclass(frozen=True)
class Sleeps:
    """A worker spec whose unit sleeps `unit` seconds."""

    def build(self, shared=None):
        return lambda unit: time.sleep(unit) or unit


def test_stopping_early_stops_the_worker_processes_at_once():
    """A run stopped by Ctrl-C or `kill` once a unit finished: the units still running are not waited for."""
    units = Processes(2).map(Sleeps(), {"quick": 0.1, "long": 60, "longer": 60})
    assert next(units) == ("quick", 0.1)
    began = time.monotonic()
    units.close()  # what an exception in the caller's loop does to the generator
    assert time.monotonic() - began < 15
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert multiprocessing.active_children() == []


def test_option_names_in_errors_are_the_callers():
    with pytest.raises(HarkdError, match="--workers must be at least 1, got 0"):
        Processes(0, flag="--workers")


def test_the_ray_backends_errors_name_the_callers_option():
    from harkd.execution.ray_cluster import RayBackend

    with pytest.raises(HarkdError, match="--cpus-per-trial must be more than 0"):
        RayBackend(cpus=0, per="trial")
    assert RayBackend(cpus=2, per="trial").cli_options() == ["--backend", "ray", "--cpus-per-trial", "2"]


def test_no_module_keeps_a_worker_in_a_global():
    """The worker processes of run and sensor search once read module globals (_WORKER) set by an initializer."""
    for path in (Path(__file__).resolve().parents[1] / "harkd").rglob("*.py"):
        assert "_WORKER" not in path.read_text(), path


def _quadratic(shared, work):
    """An objective factory as a search hands one over: `shared` the prepared data, `work` the process's folder."""
    def objective(trial):
        work.mkdir(parents=True, exist_ok=True)
        return (trial.suggest_float("x", -1.0, 1.0) - shared) ** 2
    return objective


@dataclass(frozen=True)
class _StopAt:
    """Stops the study once it holds `n` complete trials (every process's, read from the storage)."""

    n: int

    def done(self, study):
        import optuna

        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) >= self.n

    def __call__(self, study, trial):
        if self.done(study):
            study.stop()


def _seeded(study, index):
    import optuna

    return optuna.samplers.RandomSampler(seed=index)


@pytest.mark.parametrize("jobs", [1, 2])
def test_study_trials_run_in_each_process_on_the_shared_storage_until_the_stop_rule_holds(jobs, tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=storage)
    trials = StudyTrials(_quadratic, storage, "s", tmp_path / "work", _seeded, _StopAt(6))
    optimize_in_processes(Processes(jobs), trials, shared=0.5)
    done = optuna.load_study(study_name="s", storage=storage).trials
    # Each process checks the count after its own trial: another's running trial may finish after the stop.
    assert 6 <= len(done) < 6 + jobs and all(t.state.name == "COMPLETE" for t in done)
    # Each process works in its own folder (one that starts after the others filled the budget runs no trial).
    assert {p.name for p in (tmp_path / "work").iterdir()} <= {f"process{i}" for i in range(jobs)}
    assert all(t.value == pytest.approx((t.params["x"] - 0.5) ** 2) for t in done)  # each objective saw `shared`
