"""The machine and software a result was measured on, for results files: figures from two machines or two dependency
sets are only comparable when the record says which ones they were."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

# Read from the installed metadata, so that recording onnxruntime's version does not cost importing it.
RECORDED_PACKAGES = ("numpy", "onnxruntime", "harkd")
PACKAGE_DIR = Path(__file__).resolve().parent


def environment(threads: int | None = None) -> dict[str, Any]:
    """CPU, threads per process (`threads`, else torch's current setting), OS, Python, the versions of torch, numpy,
    onnxruntime and harkd (None for one not installed), harkd's git commit and whether its checkout had uncommitted
    changes (None outside a git checkout), and the CUDA device (None without one)."""
    commit, dirty = _git_state()
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "threads_per_process": threads if threads is not None else torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {"torch": torch.__version__, **{name: _installed_version(name) for name in RECORDED_PACKAGES}},
        "git_commit": commit,
        "git_dirty": dirty,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """Linux names the model in /proc/cpuinfo; elsewhere `platform` gives what it can (e.g. 'arm', 'x86_64')."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def _installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_state() -> tuple[str | None, bool | None]:
    """The commit of the checkout harkd's source lies in, and whether tracked files differ from it. Only a checkout
    whose top folder holds the package counts: an installed copy in a virtual environment inside some other
    repository must not report that repository's commit."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != PACKAGE_DIR.parent:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return _git("rev-parse", "HEAD"), None if status is None else status != ""
