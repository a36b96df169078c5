"""Bad input through the CLI: one line on stderr, exit code 2, no traceback, nothing left in the data root."""

import hashlib
import tarfile

import pytest
import yaml

from conftest import assert_one_line_error, run_cli
from harkd.data.loaders.generic import write_generic
from harkd.data.synthetic import make_recordings


@pytest.fixture()
def factory_folder(tmp_path):
    """A small, valid dataset in harkd's generic format (two hands, IMU + capacitive)."""
    folder = tmp_path / "factory"
    write_generic(make_recordings(n_subjects=2, duration_s=20, rate_hz=20, seed=1), folder)
    return folder


def install(folder, tmp_path):
    archive = tmp_path / "factory.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="factory")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    root = tmp_path / "root"
    return run_cli("data", "install", "factory", "--from", str(archive), "--sha256", digest, data_root=root), root


def first_session(folder):
    return sorted(folder.glob("*.csv"))[0]


def test_valid_generic_dataset_installs_and_reports(factory_folder, tmp_path):
    result, root = install(factory_folder, tmp_path)
    assert result.returncode == 0, result.stderr
    info = run_cli("data", "info", "factory", data_root=root, check=True).stdout
    assert "2 subjects" in info and "capacitive" in info


def test_truncated_csv(factory_folder, tmp_path):
    path = first_session(factory_folder)
    text = path.read_text()
    path.write_text(text[: len(text) // 2].rsplit(",", 3)[0] + "\n")
    result, root = install(factory_folder, tmp_path)
    assert_one_line_error(result, path.name, "row")
    assert not root.exists() or list(root.iterdir()) == []


def test_long_nan_run(factory_folder, tmp_path):
    path = first_session(factory_folder)
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("right_wrist/acc/x")
    for i in range(10, 60):  # 50 rows at 20 Hz = 2.5 s, over the 1 s limit
        fields = lines[i].split(",")
        fields[col] = ""
        lines[i] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    result, root = install(factory_folder, tmp_path)
    assert_one_line_error(result, path.name, "rows 11-60")
    assert not root.exists() or list(root.iterdir()) == []


def test_missing_channel_column(factory_folder, tmp_path):
    path = first_session(factory_folder)
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("left_wrist/gyro/z")
    path.write_text("\n".join(",".join(f for j, f in enumerate(line.split(",")) if j != col) for line in lines) + "\n")
    result, root = install(factory_folder, tmp_path)
    assert_one_line_error(result, path.name, "left_wrist/gyro/z")
    assert not root.exists() or list(root.iterdir()) == []


def test_wrong_yaml_schema(factory_folder, tmp_path):
    schema = factory_folder / "dataset.yaml"
    spec = yaml.safe_load(schema.read_text())
    spec["sampling_rate"] = spec.pop("rate_hz")
    schema.write_text(yaml.safe_dump(spec))
    result, root = install(factory_folder, tmp_path)
    assert_one_line_error(result, "dataset.yaml", "sampling_rate")
    assert not root.exists() or list(root.iterdir()) == []
