"""Every shipped run config's students, kept as its run keeps them (its dataset, windowing, channels and first fold;
fitted for a few steps instead of a whole run: the export does not care how well), export as ONNX fp32, ONNX int8 and
TFLM (the CLI's path is tested in test_deploy_chain and test_tflm): a model of HAPT, OpenPack or any config's dataset
exports as a DSADS one does, and a model without an int8 kernel route is one line naming it. Configs with the same
dataset and students share one check."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harkd.models.bundle import load_bundle
from harkd.deploy.lowering import LOWERINGS
from harkd.deploy.onnx_export import export_onnx
from harkd.deploy.quantise import plan_int8, quantisation_data
from harkd.deploy.tflm_export import export_tflm
from harkd.errors import HarkdError
from harkd.experiment.config import load_config, read_config
from harkd.experiment.folds import FoldLabels, fold_views
from harkd.experiment.rows import ResultRow
from harkd.experiment.fold_unit import FoldRunner, load_data
from harkd.models.base import build_model

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def _run_configs() -> dict[str, list[Path]]:
    """Run configs (not searches) by what their kept students depend on."""
    groups: dict[str, list[Path]] = {}
    for path in CONFIGS:
        raw = read_config(path)
        if path.stem.endswith("-sensors") or "search" in raw:
            continue
        cfg = load_config(path)
        key = json.dumps([cfg.dataset, cfg.dataset_options, str(cfg.windowing), cfg.student_channels.describe(),
                          [s.label for s in cfg.students], cfg.split.kind], sort_keys=True, default=str)
        groups.setdefault(key, []).append(path)
    return groups


GROUPS = list(_run_configs().values())


def kept_students(path: Path, folder: Path) -> list[Path]:
    """The config's students on its first fold of seed 0, fitted for 20 steps and kept by the runner's own code."""
    cfg = load_config(path)
    data = load_data(cfg)
    fold = data.folds(cfg.split, 0)[0]
    xs, y = fold_views(data.student_view, fold), FoldLabels.of(data.labels, fold)
    runner, kept = FoldRunner(cfg, data, folder, folder / "models"), []
    for spec in cfg.students:
        torch.manual_seed(0)
        model = build_model(spec.name, xs.train.shape[1], data.n_classes, **spec.params)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(20):
            pick = torch.randint(len(xs.train), (64,))
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(xs.train[pick]).logits, y.train[pick]).backward()
            optimiser.step()
        row = ResultRow(cfg.dataset, fold.name, tuple(fold.test_subjects), 0, "student", spec.label, "none", "", 0, 0.0,
                        0.0, 0, 0.0)
        runner._keep(model.eval(), spec, data.student_view, xs, fold, row)
        kept.append(next((folder / "models").glob(f"*/student-{spec.label}-none.pt")))
    return kept


def test_every_run_config_is_in_a_group():
    assert sum(len(g) for g in GROUPS) == len([p for p in CONFIGS if not p.stem.endswith("-sensors")
                                                and "search" not in read_config(p)])


@pytest.mark.realdata
@pytest.mark.parametrize("configs", GROUPS, ids=["+".join(p.stem for p in g) for g in GROUPS])
def test_each_shipped_configs_student_exports_as_fp32_int8_and_tflm(configs, installed_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(installed_root))
    pytest.importorskip("tflite_micro", reason="the tflm extra is not installed")
    for student in kept_students(configs[0], tmp_path):
        bundle = load_bundle(student)
        export_onnx(bundle, tmp_path / "fp32.onnx")
        if bundle.model not in LOWERINGS:
            with pytest.raises(HarkdError, match=f"{bundle.model} has no int8 route"):
                plan_int8(bundle, quantisation_data(bundle), "post-training")
            continue
        data = quantisation_data(bundle)  # calibrated on 16 windows: the export's path, not its quality, is tested
        plan = plan_int8(bundle, replace(data, calibration=data.calibration[:16], min_agreement=0.0), "post-training")
        for spec in (export_onnx(bundle, tmp_path / "int8.onnx", int8=plan), export_tflm(plan, tmp_path / "m.tflite")):
            test = spec["int8"]["test"]
            fold = bundle.provenance["fold"]
            assert test["windows"] > 0 and test["scored_on"].startswith(f"the test windows of {fold}")
        assert (tmp_path / "m.cc").is_file() and (tmp_path / "int8.onnx").is_file()
