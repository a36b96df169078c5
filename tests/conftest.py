import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def shared_archive(name: str) -> Path:
    """A publisher archive from ../shared/datasets; the test is skipped where the folder is absent."""
    path = SHARED_DATASETS / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def run_cli(*args: str, data_root: Path, check: bool = False) -> subprocess.CompletedProcess:
    """`harkd ARGS` in a subprocess, as a user runs it: real exit code, real stderr."""
    env = {**os.environ, "HARKD_DATA": str(data_root)}
    result = subprocess.run([sys.executable, "-m", "harkd", *args], capture_output=True, text=True, env=env,
                            stdin=subprocess.DEVNULL, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"harkd {' '.join(args)} failed:\n{result.stderr}")
    return result


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harkd: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="session")
def installed_root(tmp_path_factory):
    """All three shared archives installed once, through the CLI, into a fresh data root."""
    root = tmp_path_factory.mktemp("harkd-data")
    for name, archive in (("openpack", "openpack-sample.tar.xz"), ("hapt", "uci-hapt.tar.xz"),
                          ("dsads", "dsads.tar.xz")):
        run_cli("data", "install", name, "--from", str(shared_archive(archive)), data_root=root, check=True)
    return root


@pytest.fixture(scope="session")
def unpacked_archive(tmp_path_factory):
    """unpacked_archive('dsads.tar.xz') -> the folder it was extracted into, once per test session."""
    trees: dict[str, Path] = {}

    def unpack(name: str) -> Path:
        if name not in trees:
            tree = tmp_path_factory.mktemp(name.split(".")[0])
            with tarfile.open(shared_archive(name)) as tar:
                tar.extractall(tree, filter="data")
            trees[name] = tree
        return trees[name]

    return unpack


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A data root with "synth" installed: 3 subjects of seeded synthetic IMU + capacitive data, generic format."""
    import hashlib

    from harkd.data.install import install_dataset
    from harkd.data.loaders.generic import write_generic
    from harkd.data.synthetic import make_recordings

    root = tmp_path_factory.mktemp("root")
    folder = tmp_path_factory.mktemp("src") / "synth"
    write_generic(make_recordings(n_subjects=3, duration_s=40, rate_hz=25, seed=0), folder)
    archive = folder.parent / "synth.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="synth")
    install_dataset("synth", str(archive), sha256=hashlib.sha256(archive.read_bytes()).hexdigest(), root=root)
    return root


@pytest.fixture(scope="module")
def trained(data_root):
    """A cnn_student fitted on synth's subjects S02 and S03 (right-wrist acc) and kept as its run would keep it."""
    from harkd.data.catalog import load_windows
    from harkd.data.registry import WindowConfig
    from harkd.data.splits import Normaliser
    from harkd.models.bundle import ModelBundle
    from harkd.models.base import build_model

    os.environ["HARKD_DATA"] = str(data_root)
    windows = load_windows("synth", WindowConfig(length=50, stride=25)).select(
        {"position": "right_wrist", "modality": "acc"})
    y, class_names = windows.activity_targets()
    train = (windows.subjects != "S01") & (y >= 0)
    mean, std = windows.x[train].mean((0, 2)), windows.x[train].std((0, 2)) + 1e-6
    x = torch.from_numpy((windows.x[train] - mean[:, None]) / std[:, None])
    torch.manual_seed(0)
    model = build_model("cnn_student", 3, len(class_names))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x).logits, torch.from_numpy(y[train])).backward()
        optimiser.step()
    bundle = ModelBundle.of(model.eval(), "cnn_student", {}, windows.channels, class_names, 50, windows.rate_hz,
                            Normaliser(mean, std), dataset="synth", fold="loso-S01", test_subjects=["S01"], seed=0,
                            role="student", method="none")
    bundle.stride = 25
    yield bundle, windows, y
    os.environ.pop("HARKD_DATA")


def spy_fit(monkeypatch):
    """Record every fit of a run's stages: the model, its training windows and labels, the targets it distils from."""
    import harkd.experiment.students as students
    import harkd.experiment.teacher as teacher

    calls = []
    real_fit = students.fit

    def recording_fit(model, train, val, config, workdir, **kwargs):
        calls.append({"name": workdir.name, "model": model, "train": train, "targets": kwargs.get("teacher")})
        return real_fit(model, train, val, config, workdir, **kwargs)

    for stage in (teacher, students):
        monkeypatch.setattr(stage, "fit", recording_fit)
    return calls


class MeanTeacher(torch.nn.Module):
    """Class k when channel k is high: a teacher whose labels the students can learn (personalisation tests)."""

    rep_dims, map_dims = {}, {}

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(5.0), requires_grad=False)

    def forward(self, x):
        from harkd.models.base import ModelOutput

        return ModelOutput(logits=self.scale * x[:, :4].mean(-1))
