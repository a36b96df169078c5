"""Results files record paths as the user gave them or relative to the working directory, never resolved into the
machine that wrote them; the head search writes its outputs whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from conftest import head_search_config
from harkd.search import head_search, parse_search_config, run_head_search

REPO = Path(__file__).resolve().parents[1]
RESULTS = sorted((REPO / "benchmarks" / "results").rglob("*.json"))


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


@pytest.mark.parametrize("path", RESULTS, ids=[str(p.relative_to(REPO)) for p in RESULTS])
def test_committed_results_hold_no_path_resolved_into_the_checkout(path):
    assert not [s for s in strings(json.loads(path.read_text())) if str(REPO) in s]


def test_head_search_records_its_default_storage_as_given_and_writes_atomically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_search_config(head_search_config())
    (tmp_path / "out").mkdir()
    # One finished trial already stored, so the search only writes its outputs (no data, no training).
    study = head_search._open_study(config, f"sqlite:///{tmp_path / 'out' / 'search.db'}", "synth")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"head": "mlp", "options": {}, "params": 10,
                                                                     "flops": 100}))
    written = []
    real_atomic_output = head_search.atomic_output

    def recording_atomic_output(path):
        written.append(Path(path).name)
        return real_atomic_output(path)

    monkeypatch.setattr(head_search, "atomic_output", recording_atomic_output)
    results = run_head_search(config, Path("out"), "synth", trials=1, log=lambda _: None)
    assert results["storage"] == "sqlite:///out/search.db"
    assert json.loads((tmp_path / "out" / "search.json").read_text())["storage"] == "sqlite:///out/search.db"
    assert written == ["search.json", "search.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["search.db", "search.json", "search.png"]
