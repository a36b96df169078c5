"""The dataset and protocol registries: a loader file is found without a list to edit, every registered dataset keeps
the contract `harkd data install` and the catalog rely on, and every protocol recuts a registered dataset."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import pytest

import harkd.data.loaders
from harkd.data import registry
from harkd.data.protocols import get_protocol, protocol_names
from harkd.data.registry import Layout, dataset_names, get_dataset
from harkd.errors import HarkdError

TOY_LOADER = '''
from harkd.data.registry import DatasetSpec, Layout, WindowConfig, register_dataset


def load(root, rate_hz=10.0):
    return []


SPEC = register_dataset(DatasetSpec(name="toyset", title="A toy", load=load, layout=Layout("toy/marker.txt"),
                                    default_windowing=WindowConfig(length=4, stride=2), licence="CC0",
                                    options={"rate_hz": 10.0}))
'''


def test_a_new_loader_file_is_registered_without_editing_a_list(tmp_path, monkeypatch):
    (tmp_path / "toyset.py").write_text(TOY_LOADER)
    # The loaders package gains a folder holding one more module, as if toyset.py were added to it. The registry's
    # entries (the shipped ones imported first: a module imports once) and the module are restored afterwards, so
    # other tests see the shipped datasets only.
    assert "toyset" not in dataset_names()
    monkeypatch.setattr(harkd.data.loaders, "__path__", [*harkd.data.loaders.__path__, str(tmp_path)])
    monkeypatch.setattr(registry._DATASETS, "_entries", dict(registry._DATASETS._entries))
    try:
        assert "toyset" in dataset_names()
        assert get_dataset("toyset").title == "A toy"
    finally:
        sys.modules.pop("harkd.data.loaders.toyset", None)


def test_the_shipped_datasets_and_the_generic_format():
    # generic.py (the user's own data with a dataset.yaml) is a loader module that registers no name.
    assert dataset_names() == ["dsads", "hapt", "openpack"]
    with pytest.raises(HarkdError, match=r"unknown dataset 'generic'; known datasets: dsads, hapt, openpack "
                                         r"\(or your own data with a dataset.yaml"):
        get_dataset("generic")


@pytest.mark.parametrize("name", dataset_names())
def test_dataset_options_are_the_loaders_keyword_defaults(name):
    spec = get_dataset(name)
    parameters = inspect.signature(spec.load).parameters
    assert list(parameters)[0] == "root"
    assert {key: parameters[key].default for key in spec.options} == dict(spec.options)


@pytest.mark.parametrize("name", dataset_names())
def test_dataset_archives_name_a_checksum_that_no_other_dataset_claims(name):
    spec = get_dataset(name)
    assert spec.archives and all(re.fullmatch(r"[0-9a-f]{64}", sha) for sha in spec.archives.values())
    others = {sha for other in dataset_names() if other != name for sha in get_dataset(other).archives.values()}
    assert not others & set(spec.archives.values())


def concrete(marker: str) -> str:
    """A path the marker's glob matches ('v*/U*/atr' -> 'v1/U1/atr')."""
    return marker.replace("*", "1")


@pytest.mark.parametrize("name", dataset_names())
@pytest.mark.parametrize("depth", [0, 1, 2])
def test_layout_is_found_alike_in_a_tree_and_in_an_archive_listing(name, depth, tmp_path):
    layout = get_dataset(name).layout
    top = Path(*[f"nest{i}" for i in range(depth)]) if depth else Path()
    member = top / concrete(layout.marker) / "file.txt"
    (tmp_path / member).parent.mkdir(parents=True)
    (tmp_path / member).write_text("x")
    assert get_dataset(name).locate(tmp_path) == tmp_path / top
    members = [str(top), str(member)] if depth else [str(member)]
    assert layout.in_members(members) and layout.in_members(f"./{m}" for m in members)


@pytest.mark.parametrize("name", dataset_names())
def test_layout_deeper_than_its_depth_or_partial_is_not_found(name, tmp_path):
    layout = get_dataset(name).layout
    deep = Path(*[f"nest{i}" for i in range(layout.max_depth + 1)]) / concrete(layout.marker)
    (tmp_path / deep).mkdir(parents=True)
    assert get_dataset(name).locate(tmp_path) is None
    assert not layout.in_members([str(deep / "file.txt")])
    partial = str(Path(concrete(layout.marker)).parent)  # the marker's folder without its last name
    assert not layout.in_members([partial, "README.md"])


def test_layout_matches_names_with_the_markers_glob():
    layout = Layout("v*/U*/atr", max_depth=1)
    assert layout.in_members(["openpack/v1.0.0/U0209/atr/atr01/S0500.csv"])
    assert not layout.in_members(["openpack/x1.0.0/U0209/atr/atr01/S0500.csv", "v1.0.0/U0209/e4/S0500.csv"])


@pytest.mark.parametrize("name", protocol_names())
def test_every_protocol_recuts_a_registered_dataset_into_train_and_test(name):
    spec = get_protocol(name)
    assert spec.name == name and spec.dataset in dataset_names()
    assert set(spec.original_windows) == {"train", "test"}
    assert get_protocol(name, dataset=spec.dataset) is spec


def test_protocol_registry_lists_uci_har_on_hapt_and_names_what_is_wrong():
    assert protocol_names() == ["uci-har"] and get_protocol("uci-har").dataset == "hapt"
    with pytest.raises(HarkdError, match=r"^unknown protocol 'ucihar'; known protocols: uci-har$"):
        get_protocol("ucihar")
    with pytest.raises(HarkdError, match=r"^protocol 'uci-har' applies to dataset 'hapt', not 'dsads'$"):
        get_protocol("uci-har", dataset="dsads")
