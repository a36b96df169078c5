"""Progress lines while units train: each process's status file, and the heartbeat that prints them after silence."""

import time

import torch

from harkd.experiment.progress import Heartbeat, unit_status
from harkd.train.engine import TrainConfig, fit


def test_each_epoch_of_a_unit_is_recorded_and_the_line_goes_with_the_unit(tmp_path):
    from harkd.models import build_model

    x, y = torch.randn(32, 3, 50), torch.arange(32) % 4
    seen = []
    with unit_status(tmp_path):
        for fit_name in ("teacher", "cnn_student-logit"):
            fit(build_model("cnn_student", 3, 4), (x, y), (x, y), TrainConfig(epochs=2, batch_size=16),
                tmp_path / "loso-p1-seed0" / fit_name, seed=0)
            seen += [p.read_text() for p in (tmp_path / "status").iterdir()]
    assert seen == ["loso-p1-seed0: teacher, epoch 2/2", "loso-p1-seed0: cnn_student-logit, epoch 2/2"]
    assert list((tmp_path / "status").iterdir()) == []  # the unit is done: nothing of it is reported
    fit(build_model("cnn_student", 3, 4), (x, y), (x, y), TrainConfig(epochs=1, batch_size=16), tmp_path / "u" / "f",
        seed=0)
    assert list((tmp_path / "status").iterdir()) == []  # outside a unit no hook is set


def test_the_heartbeat_speaks_after_silence_and_keeps_quiet_while_lines_come(tmp_path):
    (tmp_path / "status").mkdir()
    (tmp_path / "status" / "123").write_text("loso-p2-seed1: semantic, epoch 4/30")
    lines = []
    with Heartbeat(tmp_path, lines.append, lambda: "3/24, 5 min", every=0.05) as beat:
        for _ in range(10):  # a line every 0.01 s: never silent long enough
            beat.log("unit finished")
            time.sleep(0.01)
        assert lines == ["unit finished"] * 10
        time.sleep(0.3)
    assert "[3/24, 5 min] training loso-p2-seed1: semantic, epoch 4/30" in lines[10:]


def test_no_heartbeat_before_anything_trains(tmp_path):
    lines = []
    with Heartbeat(tmp_path, lines.append, lambda: "0/1, 0 min", every=0.01):
        time.sleep(0.1)
    assert lines == []
