"""Progress lines while units train: each process's status file, and the heartbeat that prints them after silence."""

import time

from harkd.experiment.progress import Heartbeat, status_hook


def test_the_status_hook_records_unit_fit_and_epoch(tmp_path):
    record = status_hook(tmp_path)
    record(tmp_path / "loso-p1-seed0" / "cnn_student-logit", 3, 30)
    record(tmp_path / "loso-p1-seed0" / "teacher", 7, 25)  # the same process: its line is replaced
    (status,) = (tmp_path / "status").iterdir()
    assert status.read_text() == "loso-p1-seed0: teacher, epoch 7/25"


def test_the_heartbeat_speaks_after_silence_and_keeps_quiet_while_lines_come(tmp_path):
    status_hook(tmp_path)(tmp_path / "loso-p2-seed1" / "semantic", 4, 30)
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
