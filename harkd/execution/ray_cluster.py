"""Runs and searches on a Ray cluster (`--backend ray`, the optional extra `pip install 'harkd[ray]'`).

Each (seed, fold) unit of a run, or each trial of a search, is one Ray task with the resources asked for. The driver
(the process the user started) loads the data once and puts it in Ray's object store, which ships it to each node
once, so workers need harkd installed but no dataset. The driver is the only writer of the run's unit store and of
OUT/models: a unit's result comes back with its kept models' bytes, since a cluster's nodes do not share OUT; so does
a search trial's with what its objective keeps (a sensor search's students). A task lost with its node is retried by
Ray; the driver stores each (seed, fold) once, whichever attempt returned it.

Ray itself is imported by these functions only: harkd without the extra never imports it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import tempfile
import threading
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator, Mapping, Protocol, Sequence

import torch

from harkd.errors import HarkdError

if TYPE_CHECKING:
    import optuna

KEPT = "kept"  # what a search trial's objective writes under its work folder's KEPT goes back to the driver
MAX_RETRIES = 3  # attempts after a task's node or worker process dies; an error in harkd's code is not retried


@dataclass(frozen=True)
class RayBackend:
    """Where the tasks run: the cluster at `address` (host:port of its head), or, without one, a Ray instance this
    process starts on this machine (127.0.0.1 only); and the CPUs and GPUs each task holds (fractions allowed)."""

    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    per: str = "unit"  # what a task is, as the caller's options name it (--cpus-per-unit, --cpus-per-trial)

    def __post_init__(self) -> None:
        if self.cpus <= 0:
            raise HarkdError(f"--cpus-per-{self.per} must be more than 0, got {self.cpus:g}")
        if self.gpus < 0:
            raise HarkdError(f"--gpus-per-{self.per} must be at least 0, got {self.gpus:g}")
        if self.address is not None:
            _host_port(self.address)

    @classmethod
    def from_options(cls, backend: str, address: str | None, cpus: float | None, gpus: float | None,
                     per: str = "unit") -> "RayBackend | None":
        """The CLI's --backend and its options; None for the default, local processes."""
        if backend == "local":
            given = [name for name, value in (("--address", address), (f"--cpus-per-{per}", cpus),
                                              (f"--gpus-per-{per}", gpus)) if value is not None]
            if given:
                raise HarkdError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --backend ray "
                                 f"only")
            return None
        if backend != "ray":
            raise HarkdError(f"--backend: local or ray, got {backend!r}")
        ray = cls(address, 1.0 if cpus is None else cpus, 0.0 if gpus is None else gpus, per)
        _import_ray(address)  # a missing extra or a dead address fails now, before any data loads
        if address is not None:
            _check_reachable(address)
        return ray

    def cli_options(self) -> list[str]:
        """The options that ask for this backend, as the recorded command line spells them."""
        return (["--backend", "ray"] + (["--address", self.address] if self.address else [])
                + [f"--cpus-per-{self.per}", f"{self.cpus:g}"]
                + ([f"--gpus-per-{self.per}", f"{self.gpus:g}"] if self.gpus else []))

    @property
    def threads(self) -> int:
        """torch threads in a task: the whole CPUs it holds, at least one."""
        return max(1, int(self.cpus))


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise HarkdError(f"--address {address}: expected HOST:PORT of the Ray head, e.g. 10.0.0.5:6379")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _import_ray(address: str | None) -> Any:
    """Ray, imported now; a missing extra is a one-line error."""
    if address is None or _is_loopback(_host_port(address)[0]):
        # Ray resolves a loopback address to the machine's outward IP (ray-project/ray#59110), where a cluster
        # started on 127.0.0.1 does not listen; this switch (read when ray is imported) keeps the loopback address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise HarkdError("--backend ray needs Ray: pip install 'harkd[ray]'") from None
    return ray


def _check_reachable(address: str) -> None:
    """A quick look before ray.init, which retries an address with nothing behind it for minutes."""
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise HarkdError(f"--address {address}: no Ray head answers there ({exc.strerror or exc}); start one with "
                         f"`ray start --head`, or leave --address out to use this machine") from None


@contextmanager
def ray_session(backend: RayBackend) -> Iterator[Any]:
    """Ray, connected to the backend's cluster or to a Ray instance started on 127.0.0.1 for this block; an existing
    connection of this process is used as it is. Only what this block started is shut down."""
    ray = _import_ray(backend.address)
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    if backend.address is None:
        options.update(address="local", _node_ip_address="127.0.0.1")
    else:
        _check_reachable(backend.address)
        options.update(address=backend.address)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:  # e.g. a version mismatch; the first line says which
        where = "a Ray instance on 127.0.0.1" if backend.address is None else f"--address {backend.address}"
        raise HarkdError(f"{where}: {str(exc).strip().splitlines()[0]}") from None
    if sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm)  # Ray's own exits at once; the CLI's unwinds (finished units kept)
    try:
        yield ray
    finally:
        ray.shutdown()


def _finished(ray: Any, pending: dict[Any, Any]) -> Iterator[tuple[Any, Any]]:
    """(key, value) of each task in `pending` ({ref: key}) as it finishes; the caller may add tasks between items. A
    task's HarkdError is re-raised as itself (one line); the tasks still pending are cancelled when this stops."""
    try:
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(done)
            try:
                value = ray.get(done)
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, HarkdError):
                    raise exc.cause from None
                raise
            yield key, value
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


# ---------------------------------------------------------------------------------------------- map units

class NodeSpec(Protocol):
    """A worker spec (harkd.execution.processes.WorkerSpec) that can move to a Ray node: `on_node(work)` is the same
    spec with its folders under the task's temporary `work`, and `kept_folder` the folder whose files travel back to
    the driver (on the driver's spec: where they are written)."""

    kept_folder: Path | None

    def build(self, shared: Any = None) -> Callable[[Any], Any]: ...

    def on_node(self, work: Path) -> "NodeSpec": ...


def _remote_unit(spec: NodeSpec, shared: Any, unit: Any, threads: int) -> tuple[Any, dict[str, bytes]]:
    """One unit in a Ray worker, as a local worker process runs it; and the bytes of the files it kept."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="harkd-ray-") as work:
        here = spec.on_node(Path(work))
        result = here.build(shared)(unit)
        kept = {} if here.kept_folder is None else _files_under(here.kept_folder)
    return result, kept


def _files_under(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (none when it is absent), by its path relative to it: what travels to the driver."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)


def map_on_ray(backend: RayBackend, spec: NodeSpec, units: Mapping[Hashable, Any], shared: Any, status: Path,
               threads: int | None = None, describe: Callable[[Any], str] = str) -> Iterator[tuple[Hashable, Any]]:
    """(key, result) of each unit as its Ray task finishes, each on `threads` torch threads (default: the CPUs a
    task holds); `shared` (e.g. the windows) goes through the object store once. Kept files are written under
    `spec.kept_folder`. While a unit is out, status/ray-unit<key> says so,
    for the caller's heartbeat (the tasks' own epochs are on other machines)."""
    status.mkdir(parents=True, exist_ok=True)
    with ray_session(backend) as ray:
        task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_remote_unit).options(
            num_cpus=backend.cpus, num_gpus=backend.gpus)
        shared_ref = ray.put(shared)  # once, whatever the number of units
        refs = {}
        for key, unit in units.items():
            refs[task.remote(spec, shared_ref, unit, threads or backend.threads)] = key
            (status / f"ray-unit{key}").write_text(f"{describe(unit)}: queued or training on Ray")
        with closing(_finished(ray, refs)) as finished:
            for key, (result, kept) in finished:
                if spec.kept_folder is not None:
                    _write_files(spec.kept_folder, kept)
                (status / f"ray-unit{key}").unlink()
                yield key, result


# ---------------------------------------------------------------------------------------------- search trials

Objective = Callable[["optuna.Trial"], "float | Sequence[float]"]


def _run_trial(make_objective: Callable[[Any, Path], Objective], prepared: Any, storage: str, study_name: str,
               index: int, sampler: Callable[[optuna.Study, int], optuna.samplers.BaseSampler] | None,
               catch: tuple[type[Exception], ...], threads: int) -> tuple[int, dict[str, bytes]]:
    """One trial in a Ray worker, on the study loaded by name from the shared storage; its number and the files its
    objective kept (under the work folder's KEPT)."""
    import optuna

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # SQLite makes an empty file where the driver's is absent: another machine's disk
        raise HarkdError(f"study {study_name!r} is not in {storage} as seen from {socket.gethostname()}; on a "
                         f"cluster, give --storage a database every node reaches") from None
    if sampler is not None:
        study.sampler = sampler(study, index)
    numbers: list[int] = []
    with tempfile.TemporaryDirectory(prefix="harkd-trial-") as work:
        study.optimize(make_objective(prepared, Path(work)), n_trials=1, catch=catch,
                       callbacks=[lambda _, trial: numbers.append(trial.number)])
        kept = _files_under(Path(work) / KEPT)
    return numbers[0], kept


def optimize_on_ray(make_objective: Callable[[Any, Path], Objective], prepared: Any, storage: str, study_name: str,
                    n_trials: int, backend: RayBackend,
                    sampler: Callable[[optuna.Study, int], optuna.samplers.BaseSampler] | None = None,
                    on_trial: Callable[[optuna.trial.FrozenTrial], None] = lambda trial: None,
                    catch: tuple[type[Exception], ...] = (), workers: int | None = None,
                    keep_into: Path | None = None) -> None:
    """`study.optimize(objective, n_trials)` with each trial a Ray task: the task loads the study `study_name` from
    `storage` (an RDB URL every node reaches; SQLite on one machine) and runs one trial of
    `make_objective(prepared, work)` (`work`: a temporary folder of the task). Single- or multi-objective alike.
    What the objective writes under `work`/KEPT is written under `keep_into` here, whichever node ran the trial.

    The driver schedules one task per trial, so exactly `n_trials` trials run, however many run at once (a worker
    optimising until a callback stops the study can start one more trial than the budget when another finishes
    meanwhile). `prepared` goes through the object store once; `sampler(study, i)` builds the sampler of the i-th
    task (0..n_trials-1; default: optuna's); `on_trial` is called here with each finished trial as read from the
    storage; `catch` as for study.optimize; at most `workers` trials at once (default: as the cluster's resources
    allow). A trial whose node dies is left RUNNING in the storage and its task retried as a new trial."""
    import optuna

    driver = optuna.load_study(study_name=study_name, storage=storage)
    with ray_session(backend) as ray:
        task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_run_trial).options(
            num_cpus=backend.cpus, num_gpus=backend.gpus)
        shared = ray.put(prepared)
        limit = n_trials if workers is None else max(1, workers)

        def submit(index: int) -> Any:
            return task.remote(make_objective, shared, storage, study_name, index, sampler, catch, backend.threads)

        pending = {submit(i): i for i in range(min(limit, n_trials))}
        submitted = len(pending)
        with closing(_finished(ray, pending)) as finished:
            for _, (number, kept) in finished:
                if keep_into is not None:
                    _write_files(keep_into, kept)
                on_trial(driver.get_trials(deepcopy=False)[number])
                if submitted < n_trials:
                    pending[submit(submitted)] = submitted
                    submitted += 1
