"""Every config under configs/ parses and names only registered models and methods, so a shipped config cannot break
silently between the runs that use it."""

from pathlib import Path

import pytest
import yaml

from harkd.errors import HarkdError
from harkd.experiment.config import experiment_yaml, load_config, parse_config, read_config
from harkd.experiment.runner import check_names
from harkd.search.head_search import parse_search_config, search_yaml
from harkd.search.sensor_search import check_method, parse_sensor_search, sensor_search_yaml

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_configs_are_found():
    assert len(CONFIGS) >= 10


def _search_kind(path):
    """(print, parse) of a search config, by its name: *-sensors.yaml for search-sensors, else search-head."""
    if path.stem.endswith("-sensors"):
        return sensor_search_yaml, parse_sensor_search
    return search_yaml, parse_search_config


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_is_valid(path):
    raw = read_config(path)
    if path.stem.endswith("-sensors"):
        check_method(parse_sensor_search(raw, where=str(path)))
    elif "search" in raw:
        assert parse_search_config(raw, where=str(path)).trials > 0
    else:
        config = load_config(path)
        assert config.methods and config.students
        check_names(config)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_printed_config_is_the_same_config(path):
    """--print-config's YAML, defaults filled in, parses to the config it was printed from."""
    raw = read_config(path)
    dump, parse = _search_kind(path) if "search" in raw else (experiment_yaml, parse_config)
    printed = yaml.safe_load(dump(raw))
    assert {**vars(parse(printed)), "raw": None} == {**vars(parse(raw)), "raw": None}
    assert printed != raw and yaml.safe_load(dump(printed)) == printed


def test_a_misspelt_method_in_a_shipped_config_is_caught(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text((Path(CONFIGS[0]).parent / "dsads-mixup.yaml").read_text().replace("sc_logit}", "sc_logt}"))
    with pytest.raises(HarkdError, match="sc_logt"):
        check_names(load_config(broken))
