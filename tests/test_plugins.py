"""Bring your own model, KD strategy or dataset without forking harkd: an installed distribution declares entry
points in the registries' groups, and its names resolve, list and run like harkd's own. The distribution here is
importable from a temporary folder (a package and its .dist-info), which is how an installed one is found."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import run_config

PLUGIN = '''"""A user's own package: a teacher, a KD strategy and a dataset layout, registered as harkd's own are."""
import torch
from torch import nn

from harkd.data.registry import DatasetSpec, Layout, WindowConfig, register_dataset
from harkd.distill.base import register_distiller
from harkd.distill.logit import LogitKD
from harkd.models.base import HarModel, ModelOutput, register_model


@register_model("plugin_teacher")
class PluginTeacher(HarModel):
    def __init__(self, in_channels, n_classes, channel_groups=None, width=16):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, width, 5, padding=2)
        self.head = nn.Linear(width, n_classes)
        self.rep_dims, self.map_dims = {"feat": width}, {"feat": width}

    def forward(self, x):
        feature_map = torch.relu(self.conv(x))
        feat = feature_map.mean(-1)
        return ModelOutput(logits=self.head(feat), reps={"feat": feat}, maps={"feat": feature_map})


@register_distiller("plugin_logit", family="zoo")
class PluginLogit(LogitKD):
    """Logit KD at temperature 2, half CE (a user's own strategy)."""

    def __init__(self, student_dims, teacher_dims, n_classes, weight=0.5, temperature=2.0, ce_weight=0.5):
        super().__init__(student_dims, teacher_dims, n_classes, weight, temperature, ce_weight)


register_dataset(DatasetSpec("plugin_data", "a user's own publisher layout", load=lambda root: [],
                             layout=Layout("plugin-marker", max_depth=1),
                             default_windowing=WindowConfig(length=50, stride=25), licence="CC0-1.0"))
'''
ENTRY_POINTS = "".join(f"[harkd.{group}]\nmine = harkd_plugin_demo\n\n"
                       for group in ("models", "strategies", "datasets"))


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """A folder holding the package harkd_plugin_demo and its distribution metadata with the entry points."""
    root = tmp_path_factory.mktemp("site")
    (root / "harkd_plugin_demo").mkdir()
    (root / "harkd_plugin_demo" / "__init__.py").write_text(PLUGIN)
    info = root / "harkd_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harkd-plugin-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


def _harkd(plugin_path, data_root, *args, check=True):
    env = {**os.environ, "HARKD_DATA": str(data_root),
           "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "harkd", *args], capture_output=True, text=True, env=env,
                            timeout=300)
    assert not check or result.returncode == 0, result.stderr
    return result


def test_the_plugins_names_are_listed_with_harkds_own(plugin_path, data_root):
    methods = json.loads(_harkd(plugin_path, data_root, "methods", "--json").stdout)
    assert "plugin_logit" in json.dumps(methods)
    assert "plugin_data" in json.loads(_harkd(plugin_path, data_root, "data", "list", "--json").stdout)["known"]


def test_a_one_fold_run_with_the_plugins_teacher_and_strategy(plugin_path, data_root, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(teacher={"model": "plugin_teacher",
                                                         "train": {"epochs": 1, "batch_size": 32}},
                                                methods=["none", "plugin_logit"], latency_runs=1)))
    _harkd(plugin_path, data_root, "run", str(config), "--out", str(tmp_path / "out"), "--no-teacher-cache")
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert {(r["role"], r["model"], r["method"]) for r in rows} == {
        ("teacher", "plugin_teacher", "-"), ("student", "cnn_student", "none"),
        ("student", "cnn_student", "plugin_logit")}


def test_the_registry_driven_contract_tests_cover_the_plugin_when_installed(plugin_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    tests = Path(__file__).parent
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "plugin",
                             str(tests / "test_contracts.py"), str(tests / "test_models.py")],
                            capture_output=True, text=True, env=env, cwd=tests.parent, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and " 0 passed" not in result.stdout


def test_a_broken_plugin_is_one_line_naming_it(plugin_path, data_root, tmp_path):
    broken = tmp_path / "broken"
    (broken / "harkd_plugin_broken").mkdir(parents=True)
    (broken / "harkd_plugin_broken" / "__init__.py").write_text("raise ImportError('needs scikit-foo')\n")
    (broken / "harkd_plugin_broken-0.1.dist-info").mkdir()
    (broken / "harkd_plugin_broken-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: harkd-plugin-broken\nVersion: 0.1\n")
    (broken / "harkd_plugin_broken-0.1.dist-info" / "entry_points.txt").write_text(
        "[harkd.models]\nbroken = harkd_plugin_broken\n")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config()))
    result = _harkd(broken, data_root, "run", str(config), "--out", str(tmp_path / "o"), check=False)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "harkd: error: plugin 'harkd-plugin-broken' (entry point harkd.models: broken = harkd_plugin_broken): "
        "ImportError: needs scikit-foo"], result.stderr
