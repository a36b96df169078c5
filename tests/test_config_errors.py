"""Every bad key, type or value in a config, from the file or a dotted override, is one line naming where, the key,
the value and what is allowed; the CLI exits 2 with it before loading any data."""

from pathlib import Path

import pytest
import yaml

from conftest import assert_one_line_error, run_cli
from harkd.data.registry import WindowConfig
from harkd.errors import HarkdError
from harkd.experiment.config import parse_config, read_config
from harkd.search.head_search import parse_search_config, search_yaml
from harkd.train.engine import TrainConfig
from harkd.train.mixup import MixupSpec

CONFIGS = Path(__file__).parent.parent / "configs"
RUN, SEARCH = CONFIGS / "dsads.yaml", CONFIGS / "dsads-head-search.yaml"

# (override, key, value as shown, what is allowed)
RUN_CASES = [
    ("split.val_subjects=abc", "split.val_subjects", "'abc'", "expected an integer"),
    ("latency_runs=x", "latency_runs", "'x'", "expected an integer"),
    ("windowing={length: abc}", "windowing.length", "'abc'", "expected an integer"),
    ("windowing.label_rule=middle", "windowing.label_rule", "'middle'", "expected 'majority' or 'centre'"),
    ("split.val_fraction=1.5", "split.val_fraction", "1.5", "must be less than 1"),
    ("split.kind=kfold", "split.kind", "'kfold'", "expected 'loso', 'fixed', 'protocol' or 'groups'"),
    ("split.kind=fixed", "split", "'fixed'", "needs test_subjects"),
    ("split.n_folds=1", "split.n_folds", "1", "must be at least 2"),
    ("split.calibration=1.0", "split.calibration", "1.0", "must be less than 1"),
    ("seeds=[0, 1.5]", "seeds[1]", "1.5", "expected an integer"),
    ("seeds=[-1]", "seeds[0]", "-1", "must be at least 0"),
    ("teacher.train.epochs=2.5", "teacher.train.epochs", "2.5", "expected an integer"),
    ("teacher.train.batch_size=true", "teacher.train.batch_size", "True", "expected an integer"),
    ("teacher.train.lr=-0.1", "teacher.train.lr", "-0.1", "must be at least 0"),
    ("teacher.train.epoch=3", "teacher.train", "['epoch']", "valid keys: ['accelerator', 'batch_size'"),
    ("teacher.train.accelerator=tpu", "teacher.train.accelerator", "'tpu'", "expected 'auto', 'cpu', 'cuda' or 'gpu'"),
    ("teacher.channels={positon: torso}", "teacher.channels", "['positon']", "valid keys: ['modality', 'position']"),
    ("semantic.model=3", "semantic.model", "3", "expected a string"),
    ("semantic.modle=x", "semantic", "['modle']", "valid keys: ['model', 'params', 'train']"),
    ("students.models=[]", "students.models", "[]", "must have at least 1 item(s)"),
    ("students.models=[3]", "students.models[0]", "3", "expected a mapping"),
    ("students.models=[cnn_student, cnn_student]", "students.models", "['cnn_student', 'cnn_student']",
     "give each a distinct 'label'"),
    ("students.train.deterministic=maybe", "students.train.deterministic", "'maybe'", "expected true or false"),
    ("methods=[none, {name: x, terms: [logit]}]", "methods[1].terms[0]", "'logit'", "expected a mapping"),
    ("methods=[none, {name: m, terms: [], mixup: {copies: 0}}]", "methods[1].mixup.copies", "0",
     "must be at least 1"),
    ("methods=[none, {name: m, terms: [], mixup: {alpha: 0}}]", "methods[1].mixup.alpha", "0",
     "must be greater than 0"),
    ("methods=[none, {name: m, terms: [{distiller: logit}], teacher: student}]", "methods[1].teacher", "'student'",
     "valid: teacher, self"),
    ("methods=[{name: m, terms: [{distiller: logit}], teacher: self}]", "methods[0]", "'self'",
     "list a method with no terms (none) before it"),
    ("methods=[logit, logit]", "methods", "['logit', 'logit']", "duplicate method names"),
    ("dataset_options=3", "dataset_options", "3", "expected a mapping"),
]
SEARCH_CASES = [
    ("search.trials=0", "search.trials", "0", "must be at least 1"),
    ("search.widths=[1.0, 1.0]", "search.widths", "[1.0, 1.0]", "values must be distinct"),
    ("search.heads=[linear, knn]", "search.heads", "'knn'", "distinct heads from linear, memory"),
    ("search.sizes.head_hidden=[8, -8]", "search.sizes.head_hidden[1]", "-8", "must be at least 1"),
    ("search.budget.flops=abc", "search.budget.flops", "'abc'", "expected an integer"),
    ("search.method={name: m, terms: [], mixup: {copies: 1}}", "search.method", "mixup", "is for `harkd run`"),
    ("seeds=[0, 1]", "seeds", "[0, 1]", "one seed"),
]


def check_message(message: str, where: Path, key: str, value: str, allowed: str) -> None:
    assert "\n" not in message and message.startswith(f"{where}: {key}"), message
    assert value in message and allowed in message, message


@pytest.mark.parametrize("override,key,value,allowed", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_bad_run_config_value_is_one_line_naming_key_value_and_what_is_allowed(override, key, value, allowed):
    with pytest.raises(HarkdError) as error:
        parse_config(read_config(RUN, [override]), str(RUN))
    check_message(str(error.value), RUN, key, value, allowed)


@pytest.mark.parametrize("override,key,value,allowed", SEARCH_CASES, ids=[c[0] for c in SEARCH_CASES])
def test_bad_search_config_value_is_one_line_naming_key_value_and_what_is_allowed(override, key, value, allowed):
    with pytest.raises(HarkdError) as error:
        parse_search_config(read_config(SEARCH, [override]), str(SEARCH))
    check_message(str(error.value), SEARCH, key, value, allowed)


def test_several_bad_values_report_the_first_and_count_the_rest():
    raw = read_config(RUN, ["split.val_subjects=abc", "latency_runs=x", "teacher.train.epochs=0"])
    with pytest.raises(HarkdError, match=r"\(and 2 more\)$"):
        parse_config(raw, str(RUN))


@pytest.mark.parametrize("build,message", [
    (lambda: WindowConfig(length=0, stride=5), "windowing: length: must be at least 1, got 0"),
    (lambda: WindowConfig(10, 5, "middle"), "windowing: label_rule: expected 'majority' or 'centre', got 'middle'"),
    (lambda: TrainConfig(epochs=True), "train: epochs: expected an integer, got True"),
    (lambda: MixupSpec(copies=2, alpha=0.5, labels="soft"), "mixup: labels: expected 'teacher' or 'mixed'"),
])
def test_settings_built_in_code_check_their_values_too(build, message):
    with pytest.raises(HarkdError) as error:
        build()
    assert str(error.value).startswith(message)


def test_yaml_spellings_users_mean_as_numbers_and_names_are_accepted():
    # YAML 1.1 reads 1e-3 (no dot) as a string, and numeric subject names as integers.
    config = parse_config(read_config(RUN, ["teacher.train.lr=1e-3", "split={kind: fixed, test_subjects: [1, p2]}"]))
    assert config.teacher_train.lr == 0.001 and config.split.test_subjects == ("1", "p2")


def test_a_label_yaml_reads_as_a_boolean_is_kept_as_the_name_meant():
    config = parse_config(yaml.safe_load((Path(__file__).parents[1] / "configs/dsads-personalise.yaml").read_text()))
    assert config.personalise.labels == ("teacher", "self", "true")
    assert config.raw["personalise"]["labels"] == ["teacher", "self", "true"]  # what results.json records


def test_search_print_config_fills_in_the_defaults():
    resolved = yaml.safe_load(search_yaml(read_config(SEARCH)))
    assert resolved["search"]["sizes"]["memory_dim"] == [4, 8, 16, 32]
    assert resolved["search"]["method"] == {"name": "none", "terms": [], "teacher": "teacher", "mixup": None}
    assert resolved["teacher"]["train"]["epochs"] == 30


@pytest.mark.parametrize("override,key,value,allowed", RUN_CASES[:3], ids=[c[0] for c in RUN_CASES[:3]])
def test_cli_run_bad_value_exits_2_with_one_line_before_loading_data(override, key, value, allowed, tmp_path):
    # An empty data root: the error has to come before any data is read.
    result = run_cli("run", str(RUN), override, "--out", str(tmp_path / "out"), data_root=tmp_path / "root")
    assert_one_line_error(result, f"{RUN}: {key}", value, allowed)
    assert not (tmp_path / "out").exists()


def test_cli_search_head_print_config_still_rejects_a_bad_value(tmp_path):
    result = run_cli("search-head", str(SEARCH), "search.trials=0", "--print-config", data_root=tmp_path)
    assert_one_line_error(result, f"{SEARCH}: search.trials", "got 0", "must be at least 1")
    assert result.stdout == ""


def test_cli_run_print_config_shows_the_resolved_config_and_trains_nothing(tmp_path):
    result = run_cli("run", str(RUN), "seeds=[4]", "--print-config", "--out", str(tmp_path / "out"),
                     data_root=tmp_path / "root", check=True)
    resolved = yaml.safe_load(result.stdout)
    assert resolved["seeds"] == [4] and resolved["split"]["val_fraction"] == 0.15
    assert resolved["teacher"]["train"]["weight_decay"] == 1e-4 and resolved["latency_runs"] == 200
    expected = parse_config(read_config(RUN, ["seeds=[4]"]))
    assert {**vars(parse_config(resolved)), "raw": None} == {**vars(expected), "raw": None}
    assert not (tmp_path / "out").exists()
