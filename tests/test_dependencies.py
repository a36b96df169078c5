import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DROPPED = {"lightning", "pytorch-lightning"}  # imported for a device and a seed only, at seconds per process start


def _declared() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["dependencies"] + sum(PYPROJECT["optional-dependencies"].values(), [])]


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line)
            (spec,) = pin.specifier
            assert spec.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(pin.name)] = Version(spec.version)
    return pins


@pytest.mark.parametrize("requirement", _declared(), ids=str)
def test_every_declared_dependency_is_locked_within_its_range(requirement):
    pinned = _lock().get(canonicalize_name(requirement.name))
    assert pinned is not None, f"{requirement.name} is declared in pyproject.toml but not pinned in constraints.txt"
    assert requirement.specifier.contains(pinned, prereleases=True), f"{requirement.name}=={pinned} is outside " \
                                                                     f"pyproject's {requirement.specifier}"


def test_lightning_is_neither_declared_nor_locked():
    assert not DROPPED & {canonicalize_name(r.name) for r in _declared()}
    assert not DROPPED & set(_lock())


def _pip_installs(script: str) -> list[list[str]]:
    commands = [shlex.split(part) for part in re.split(r"&&|\n", script) if "pip install" in part]
    return [words for words in commands if words[0].endswith("pip") and words[1] == "install"]


def test_the_setup_and_ci_install_everything_through_the_lock():
    first_screen = (ROOT / "README.md").read_text().split("\n---\n")[0]  # set-up and test command; not the relock
    readme_blocks = re.findall(r"```bash\n(.*?)```", first_screen, re.S)
    installs = [words for text in [(ROOT / ".ci/run").read_text(), *readme_blocks] for words in _pip_installs(text)]
    assert len(installs) >= 3  # torch, harkd, its test extra
    for words in installs:
        assert "constraints.txt" in words and words[words.index("constraints.txt") - 1] == "-c", " ".join(words)


def test_the_cli_and_a_worker_import_no_dropped_or_test_only_package():
    # `harkd --help` imports harkd.cli only (no torch: it answers in a fraction of a second); a spawned worker
    # imports the runner to unpickle its initializer.
    code = ("import sys; import harkd.cli; print('torch' in sys.modules); import harkd.experiment.runner; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'pytorch_lightning', "
            "'torchmetrics'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert (done.returncode, done.stdout.splitlines()) == (0, ["False", "[]"]), done.stderr
