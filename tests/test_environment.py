import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch

import harkd
from harkd import environment as env_module
from harkd.environment import cpu_model, environment

CHECKOUT = Path(harkd.__file__).resolve().parent.parent


def _git_head() -> str | None:
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_environment_names_the_versions_and_threads_in_use():
    record = environment()
    assert record["versions"] == {"torch": torch.__version__, "numpy": np.__version__,
                                  "onnxruntime": version("onnxruntime"), "harkd": harkd.__version__}
    assert record["threads_per_process"] == torch.get_num_threads()
    assert environment(threads=3)["threads_per_process"] == 3
    assert record["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert record["cpus"] >= 1 and record["cpu"]
    assert (record["cuda_device"] is None) == (not torch.cuda.is_available())
    json.dumps(record)  # it goes into results.json as it is


def test_environment_records_the_commit_of_this_checkout():
    head = _git_head()
    if head is None:
        pytest.skip("harkd's source is not a git checkout here")
    record = environment()
    assert record["git_commit"] == head
    assert isinstance(record["git_dirty"], bool)


def test_a_copy_outside_its_checkout_records_no_commit(tmp_path, monkeypatch):
    # e.g. harkd installed into a virtual environment that lies inside some other git repository
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    package = tmp_path / ".venv" / "site-packages" / "harkd"
    package.mkdir(parents=True)
    monkeypatch.setattr(env_module, "PACKAGE_DIR", package)
    record = environment()
    assert (record["git_commit"], record["git_dirty"]) == (None, None)


@pytest.mark.parametrize(("text", "expected"), [
    ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n",
     "Intel(R) Xeon(R) CPU @ 2.20GHz"),
    ("processor\t: 0\nBogoMIPS\t: 50.00\n", None),  # e.g. ARM Linux names no model: platform's answer instead
])
def test_cpu_model_reads_cpuinfo_else_falls_back_to_platform(tmp_path, monkeypatch, text, expected):
    monkeypatch.setattr(env_module.platform, "processor", lambda: "")
    monkeypatch.setattr(env_module.platform, "machine", lambda: "aarch64")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_model(cpuinfo) == (expected or "aarch64")
    assert cpu_model(tmp_path / "absent") == "aarch64"


def test_recording_the_environment_does_not_import_onnxruntime():
    code = ("import sys; from harkd.environment import environment; record = environment(); "
            "print(record['versions']['onnxruntime'] is not None, 'onnxruntime' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"]
