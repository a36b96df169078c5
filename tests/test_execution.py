"""The local backend: a worker built from a picklable spec does each unit, in this process or in spawned ones, with
the same results; errors come back as they were raised, and option names in messages are the caller's."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from harkd.errors import HarkdError
from harkd.execution.processes import Processes


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
