"""One resolved config for `harkd run` and both searches: the searches extend the run's shared sections, a worker
process rebuilds the parent's config from its resolved data (never the user's raw config), and a kit's run config is
built from the resolved search config."""

import json
import pickle
from dataclasses import fields
from pathlib import Path

import yaml

from conftest import head_search_config, run_config, sensor_search_config
from harkd.experiment import fold_unit
from harkd.experiment.config import ExperimentConfig, SharedConfig, experiment_yaml, parse_config
from harkd.search.head_search import SearchConfig, parse_search_config, search_yaml
from harkd.search.sensor_search import SensorSearchConfig, parse_sensor_search, sensor_search_yaml
from harkd.search.sensor_space import kit_channels, run_config as kit_run_config

# The user's spelling differs from the resolved one: shorthands, a kit of channels, a YAML-boolean label.
RAW = run_config(students={"channels": [{"position": "hip", "modality": "acc"}, {"position": "right_wrist"}],
                           "models": ["cnn_student", {"model": "cnn_student", "params": {"width": 0.5}}]},
                 methods=["none", "logit", {"name": "mix", "terms": [{"distiller": "logit"}], "mixup": {"copies": 1}}],
                 personalise={"labels": ["teacher", True]})
DATA = ("dataset", "dataset_options", "windowing", "split", "seeds")


def test_a_worker_rebuilds_the_parents_config_from_the_resolved_data():
    config = parse_config(RAW)
    spec = fold_unit.FoldUnits(json.dumps(config.resolved), Path("work"))
    worker = fold_unit._config_of(pickle.loads(pickle.dumps(spec)).resolved_json)
    assert worker == config and worker.resolved == config.resolved
    assert config.raw["methods"][0] == "none" and config.raw["personalise"]["labels"] == ["teacher", "true"]


def test_each_config_carries_what_print_config_prints_and_the_users_raw_config():
    for raw, parse, dump in ((RAW, parse_config, experiment_yaml), (head_search_config(), parse_search_config,
                                                                    search_yaml),
                             (sensor_search_config(), parse_sensor_search, sensor_search_yaml)):
        config = parse(raw)
        assert config.resolved == yaml.safe_load(dump(raw)) == json.loads(json.dumps(config.resolved))
        assert parse(config.resolved) == config
        if raw is not RAW:  # what results.json records and a study's identity hashes: the config as written
            assert config.raw == raw


def test_both_searches_extend_the_runs_shared_config():
    run, head, sensors = (parse_config(run_config()), parse_search_config(head_search_config()),
                          parse_sensor_search(sensor_search_config()))
    assert isinstance(run, SharedConfig) and isinstance(head, SearchConfig) and isinstance(head, SharedConfig)
    assert isinstance(sensors, SensorSearchConfig) and isinstance(sensors, SharedConfig)
    # the head search config's data sections are the run config's: the same values, of the same types
    assert all(getattr(head, name) == getattr(run, name) for name in (*DATA, "student_channels"))
    assert head.teacher is None and head.semantic is None and head.seed == 0
    # the sensor search's members' run config is the search's shared part, on every channel
    assert isinstance(sensors.run, ExperimentConfig) and sensors.run.student_channels.describe() == "all"
    assert sensors.student_channels is None
    for field in fields(SharedConfig):
        if field.name not in ("student_channels", "resolved", "raw"):
            assert getattr(sensors.run, field.name) == getattr(sensors, field.name), field.name


def test_a_kits_run_config_parses_to_a_run_config_with_the_kits_channels():
    search = parse_sensor_search(sensor_search_config())
    kit = (("hip", ("acc",)), ("right_wrist", ("acc", "gyro")))
    member = parse_config(kit_run_config(search.resolved, kit))
    assert member.student_channels == kit_channels(kit)
    assert [m.name for m in member.methods] == ["none", "logit"] and member.students == (search.student,)
    assert all(getattr(member, f.name) == getattr(search.run, f.name) for f in fields(ExperimentConfig)
               if f.name not in ("student_channels", "resolved", "raw"))
    alone = parse_sensor_search(sensor_search_config(method="none"))
    assert [m.name for m in parse_config(kit_run_config(alone.resolved, kit)).methods] == ["none"]
