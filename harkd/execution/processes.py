"""Units in this process or in spawned worker processes (`--jobs N`): one torch thread per process by default, since
on two threads a process ran 2.7x slower than on one when another job took a core (benchmarks/bench_threads.py)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Mapping, Protocol

import torch

from harkd.errors import HarkdError


class WorkerSpec(Protocol):
    """What a worker process needs, as plain picklable data; `build(shared)` makes the function that does one unit,
    from `shared` when the caller hands data over (else it loads its own: what is costly to load is memoised by the
    loader, not kept in a module global here)."""

    def build(self, shared: Any = None) -> Callable[[Any], Any]: ...


def _one(spec: WorkerSpec, threads: int, shared: Any, unit: Any) -> Any:
    torch.set_num_threads(threads)
    return spec.build(shared)(unit)


@dataclass(frozen=True)
class Processes:
    """`jobs` processes (1: this one), each with `threads` torch threads; `flag` names the option that sets `jobs`
    in messages (the caller's)."""

    jobs: int = 1
    threads: int = 1
    flag: str = "--jobs"

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise HarkdError(f"{self.flag} must be at least 1, got {self.jobs}")
        if self.threads < 1:
            raise HarkdError(f"--threads must be at least 1, got {self.threads}")

    def map(self, spec: WorkerSpec, units: Mapping[Hashable, Any], shared: Any = None
            ) -> Iterator[tuple[Hashable, Any]]:
        """(key, result) of each unit as it finishes; with one job, in order and in this process (its torch threads
        restored afterwards). `shared` goes to every worker's build (pickled once per unit to a process: hand over
        only what is cheaper to send than to load). Stopping early (an error, Ctrl-C, `kill`) cancels the units not
        started and stops the worker processes at once: the units they run would not be kept."""
        if not units:
            return
        if self.jobs == 1:
            yield from self._here(spec, units, shared)
            return
        spawn = multiprocessing.get_context("spawn")  # no fork: torch and Ray threads do not survive one
        with ProcessPoolExecutor(min(self.jobs, len(units)), mp_context=spawn) as pool:
            futures = {pool.submit(_one, spec, self.threads, shared, unit): key for key, unit in units.items()}
            try:
                yield from ((futures[future], future.result()) for future in as_completed(futures))
            except BaseException:  # an error, Ctrl-C, `kill`: what the workers would still finish goes unread
                pool.shutdown(wait=False, cancel_futures=True)
                for worker in multiprocessing.active_children():
                    worker.terminate()
                raise

    def _here(self, spec: WorkerSpec, units: Mapping[Hashable, Any], shared: Any) -> Iterator[tuple[Hashable, Any]]:
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            worker = spec.build(shared)
            yield from ((key, worker(unit)) for key, unit in units.items())
        finally:
            torch.set_num_threads(threads)


class StudyStop(Protocol):
    """When a search's study has its trials: `done` before a process starts one, and as optuna's callback after each
    trial (which it may also report), stopping the study."""

    def done(self, study: Any) -> bool: ...

    def __call__(self, study: Any, trial: Any) -> None: ...


@dataclass(frozen=True)
class StudyTrials:
    """What each process of a local search runs, as picklable data: it opens the study `study_name` from `storage`
    (what the processes share; SQLite on this machine), seeds its sampler with `sampler(study, process index)`, and
    runs trials of `make_objective(shared, work/process<i>)` until `stop` says the study has its trials (every
    process's, read from the storage). `catch` as for study.optimize."""

    make_objective: Callable[[Any, Path], Callable[[Any], Any]]
    storage: str
    study_name: str
    work: Path
    sampler: Callable[[Any, int], Any]
    stop: StudyStop
    catch: tuple[type[Exception], ...] = ()

    def build(self, shared: Any = None) -> Callable[[int], None]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # the search writes its own trial lines

        def optimise(index: int) -> None:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            if self.stop.done(study):  # the other processes have filled the budget already
                return
            study.sampler = self.sampler(study, index)
            study.optimize(self.make_objective(shared, self.work / f"process{index}"), callbacks=[self.stop],
                           catch=self.catch, gc_after_trial=False)

        return optimise


def optimize_in_processes(processes: Processes, trials: StudyTrials, shared: Any = None) -> None:
    """Each of `processes.jobs` processes (one: this one) runs the study's trials until its stop rule holds;
    `shared` (the search's prepared windows) goes to each."""
    for _ in processes.map(trials, {index: index for index in range(processes.jobs)}, shared):
        pass


__all__ = ["Processes", "StudyStop", "StudyTrials", "WorkerSpec", "optimize_in_processes"]
