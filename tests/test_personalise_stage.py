"""The personalisation stage (harkd.personalise): the session cut from a worker's recordings, each adaptation option
(what it changes and what it must not touch), the held-back stretches and the guard. Synthetic data throughout."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import MeanTeacher
from harkd.data.recording import Recording, sensor_channels
from harkd.data.registry import WindowConfig
from harkd.data.windowing import make_windows
from harkd.errors import HarkdError
from harkd.models.base import build_model
from harkd.personalise.adapt import AdaptSpec, Replay, adapt_steps, augment, axis_groups, draw_weights, reestimate_bn
from harkd.personalise.guard import guard
from harkd.personalise.session import SessionCut, scored_fold, session_windows, shown_activities, window_starts
from harkd.personalise.tune import (LOGIT, Adaptation, FrozenTeacher, Session, Tuned, WindowTimes, fine_tune,
                                    labels_of)
from harkd.train.engine import TrainConfig

RATE, LENGTH = 10.0, 20
WINDOWING = WindowConfig(length=LENGTH, stride=LENGTH)


def _segments(subject: str = "W", activities: int = 3, segments: int = 6, seconds: float = 4.0) -> list[Recording]:
    """Recordings "aNN/sMM" of one activity each, cut in consecutive segments (as DSADS publishes them); the signal
    is a ramp, so each sample's value says where it lies in its recording."""
    n = int(seconds * RATE)
    recordings = []
    for a in range(activities):
        for s in range(segments):
            t = np.arange(s * n, (s + 1) * n, dtype=np.float32)
            signals = np.stack([t, t + 1000 * a, np.full(n, 9.81, np.float32)], 1)
            recordings.append(Recording(signals, tuple(sensor_channels("wrist", "acc", "m/s^2")), np.full(n, a),
                                        tuple(f"act{i}" for i in range(activities)), subject, f"a{a:02d}/s{s + 1:02d}",
                                        RATE))
    return recordings


@pytest.mark.parametrize("join", [False, True])
def test_a_minutes_session_is_the_start_of_each_recording_and_ends_before_the_scored_windows(join):
    recordings = _segments()  # each recording 24 s, 240 samples
    windows = make_windows(recordings, replace(WINDOWING, drop_null=False))
    cut = SessionCut(minutes=0.1, stride=5)  # 6 s = 60 samples of each recording
    session = session_windows(recordings, "W", cut, WINDOWING, 0.5, join)
    first_sample = session.x[:, 0, 0]  # the ramp: the sample's place in its recording
    assert first_sample.max() + LENGTH <= 60  # windows lie wholly in the first 6 s
    assert sorted(set((session.x[:, 1, 0] // 1000).astype(int))) == [0, 1, 2]  # every recording contributes
    # joined, windows cross the 4 s seams of the segments; kept apart, none does
    crosses = ((first_sample % 40) + LENGTH > 40).any()
    assert crosses == join
    scored = windows.subset(scored_fold(windows, "W", 0.5).test)
    assert scored.x[:, 0, 0].min() >= 120  # the second half of each recording


def test_a_session_never_reaches_the_first_scored_window():
    recordings = _segments()
    session = session_windows(recordings, "W", SessionCut(minutes=10), WINDOWING, 0.5, True)
    assert session.x[:, 0, -1].max() < 120  # 10 minutes asked, half of each 24 s recording given


def test_a_session_too_short_for_one_window_is_one_line_naming_it():
    with pytest.raises(HarkdError, match="holds no whole window"):
        session_windows(_segments(), "W", SessionCut(minutes=0.01), WINDOWING, 0.5, True)
    with pytest.raises(HarkdError, match="no subject 'X'"):
        session_windows(_segments(), "X", SessionCut(), WINDOWING, 0.5, True)


def test_a_fraction_session_with_the_runs_stride_holds_the_windows_before_the_scored_ones():
    recordings = _segments()
    windows = make_windows(recordings, replace(WINDOWING, drop_null=False))
    session = session_windows(recordings, "W", SessionCut(calibration=0.5), WINDOWING, 0.5, True)
    fold = scored_fold(windows, "W", 0.5)
    assert len(session) + len(fold.test) == len(windows)
    assert sorted(session.x[:, 0, 0]) == sorted(windows.x[np.setdiff1d(np.arange(len(windows)), fold.test), 0, 0])


def test_held_back_stretches_share_no_sample_with_the_training_windows():
    recordings = _segments()
    session = session_windows(recordings, "W", SessionCut(calibration=0.5, stride=3), WINDOWING, 0.5, True)
    times = WindowTimes(session.sessions, window_starts(session, 3), LENGTH)
    train, val = times.held_back(0.3, seed=0)
    assert len(train) and len(val)
    for v in val:
        same = session.sessions[train] == session.sessions[v]
        apart = np.abs(times.starts[train][same] - times.starts[v]) >= LENGTH
        assert apart.all()


def test_reestimating_batch_norm_changes_statistics_only():
    torch.manual_seed(0)
    student = build_model("cnn_student", 3, 4).eval()
    weights = {k: v.clone() for k, v in student.named_parameters()}
    x = torch.randn(64, 3, 50) * 3 + 2
    reestimate_bn(student, x)
    assert all(torch.equal(v, dict(student.named_parameters())[k]) for k, v in weights.items())
    first = next(m for m in student.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert not first.training and not torch.allclose(first.running_mean, torch.zeros_like(first.running_mean))


def test_the_teacher_adapts_its_statistics_on_a_copy():
    torch.manual_seed(0)
    teacher = FrozenTeacher(build_model("cnn_student", 3, 4).eval())
    kept = copy.deepcopy(teacher.model.state_dict())
    adapted = teacher.on_session(torch.randn(32, 3, 50) + 5, AdaptSpec(teacher_bn="session"))
    assert adapted is not teacher and all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in kept.items())
    assert teacher.on_session(torch.randn(8, 3, 50), AdaptSpec()) is teacher


def test_weightings_read_the_teachers_outputs_only():
    logits = torch.tensor([[4.0, 0, 0], [4.0, 0, 0], [4.0, 0, 0], [0, 0.5, 0]])
    assert torch.allclose(draw_weights(logits, "none"), torch.full((4,), 0.25))
    balanced = draw_weights(logits, "balanced")
    assert torch.isclose(balanced[:3].sum(), balanced[3])  # each class the teacher says drawn equally often
    confident = draw_weights(logits, "confidence")
    assert confident[0] > confident[3]


def test_augmentation_rotates_each_sensor_in_its_frame_and_leaves_other_channels():
    names = ["wrist/acc/x", "wrist/acc/y", "wrist/acc/z", "wrist/capacitive/1"]
    mean, std = np.array([0, 0, 9.81, 0.5], np.float32), np.array([2, 2, 2, 1], np.float32)
    axes = axis_groups(names, mean, std)
    assert axes.triples == ((0, 1, 2),)
    raw = torch.randn(16, 4, 30) * 3
    x = (raw - torch.as_tensor(mean)[None, :, None]) / torch.as_tensor(std)[None, :, None]
    out = augment(x, axes, torch.Generator().manual_seed(0), jitter=0.0, scale=0.0)
    back = out * torch.as_tensor(std)[None, :, None] + torch.as_tensor(mean)[None, :, None]
    assert torch.allclose(back[:, :3].norm(dim=1), raw[:, :3].norm(dim=1), atol=1e-4)  # a rotation keeps |a|
    assert not torch.allclose(back[:, :3], raw[:, :3], atol=1e-3)
    assert torch.allclose(out[:, 3], x[:, 3])


def _session(n: int = 96, channels: int = 6, seed: int = 0, y_true: torch.Tensor | None = None) -> tuple:
    torch.manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 6, 32) + 2.0 * torch.nn.functional.one_hot(y, 6).float()[:, :, None]
    teacher = FrozenTeacher(MeanTeacher().eval())
    times = WindowTimes(np.repeat(np.arange(n // 8), 8).astype(str), np.tile(np.arange(8) * 64, n // 8), 32)
    labels = y if y_true is None else y_true
    return Session.split(x.numpy(), x[:, :channels].numpy(), labels.numpy(), times, 0, "test"), teacher


VARIANTS = {"shipped": AdaptSpec(), "steps": AdaptSpec(steps=40),
            "bn": AdaptSpec(steps=40, student_bn="session"), "frozen_bn": AdaptSpec(steps=40, student_bn="frozen"),
            "teacher_bn": AdaptSpec(steps=40, teacher_bn="session"),
            "weighted": AdaptSpec(steps=40, weighting="confidence_balanced"),
            "augment": AdaptSpec(steps=40, augment=True), "replay": AdaptSpec(steps=40, replay=0.5),
            "head": AdaptSpec(steps=40, layers="head"), "ensemble": AdaptSpec(steps=40, teacher_bn="ensemble"),
            "hard": AdaptSpec(steps=40, ce_on_teacher=True),
            "shipped_main": AdaptSpec(steps=40, teacher_bn="ensemble", replay=0.25, ce_on_teacher=True)}
QUICK = TrainConfig(epochs=6, batch_size=16, lr=1e-2, patience=6)


def _how(spec: AdaptSpec) -> Adaptation:
    torch.manual_seed(1)
    replay = Replay(torch.randn(40, 6, 32), torch.randint(0, 4, (40,)))
    return Adaptation(spec, QUICK, LOGIT, replay, axis_groups([f"w/acc/{a}" for a in "xyz"] * 2, np.zeros(6),
                                                                np.ones(6)))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_workers_labels_reach_only_the_true_bound(name, tmp_path):
    """The same session with the worker's labels scrambled: every model but the true-label bound is unchanged."""
    how = _how(VARIANTS[name])
    student = build_model("cnn_student", 6, 4).eval()
    right, _ = _session()
    scrambled, teacher = _session(y_true=torch.randperm(96) % 4)
    for source in ("teacher", "self", "true"):
        a = fine_tune(student, source, right, teacher, how, 4, 0, tmp_path / f"{source}-a")
        b = fine_tune(student, source, scrambled, teacher, how, 4, 0, tmp_path / f"{source}-b")
        same = all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
        assert same == (source != "true"), source


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_adapts_a_copy_towards_the_teacher(name, tmp_path):
    session, teacher = _session()
    student = build_model("cnn_student", 6, 4).eval()
    kept = copy.deepcopy(student.state_dict())
    tuned = fine_tune(student, "teacher", session, teacher, _how(VARIANTS[name]), 4, 0, tmp_path)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in kept.items())
    says = labels_of(teacher.model, session.x_teacher)
    agreement = lambda model: float((labels_of(model, session.x_student) == says).mean())  # noqa: E731
    assert agreement(tuned.model) > agreement(student)


def test_head_only_adaptation_trains_the_head_alone_and_frozen_statistics_stay():
    session, teacher = _session()
    student = build_model("cnn_student", 6, 4).eval()
    spec = AdaptSpec(steps=30, layers="head", student_bn="frozen")
    targets = teacher.label(session.x_teacher)
    model = adapt_steps(student, session.x_student, lambda out, i: torch.nn.functional.cross_entropy(
        out.logits, targets.logits[i].argmax(1)), torch.full((len(targets.logits),), 1 / len(targets.logits)), spec,
        QUICK, 0)
    for (name, before), after in zip(student.state_dict().items(), model.state_dict().values()):
        assert torch.equal(before, after) == (not name.startswith("head.")), name


def test_replay_batches_hold_the_training_windows_with_their_own_labels():
    seen = []
    student = build_model("cnn_student", 6, 4).eval()
    replay = Replay(torch.full((10, 6, 32), 7.0), torch.zeros(10, dtype=torch.long))

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            seen.append(x.detach().clone())
            return self.inner(x)

    wrapped = Spy(student)
    wrapped.rep_dims, wrapped.map_dims = student.rep_dims, student.map_dims
    adapt_steps(wrapped, torch.zeros(20, 6, 32), lambda out, i: out.logits.sum() * 0,
                torch.full((20,), 0.05), AdaptSpec(steps=3, replay=0.25), QUICK, 0, replay=replay)
    assert all((batch[:12] == 0).all() and (batch[12:] == 7).all() for batch in seen)  # 16 * 0.25 = 4 replayed


def test_the_guard_keeps_the_untouched_student_when_cross_fitted_students_agree_less():
    session, teacher = _session()
    student = build_model("cnn_student", 6, 4).eval()
    how = _how(VARIANTS["steps"])
    tuned = fine_tune(student, "teacher", session, teacher, how, 4, 0, None)
    refit = lambda on: fine_tune(student, "teacher", session, teacher, how, 4, 0, None, on).model  # noqa: E731
    kept = guard(student, tuned, session, refit)
    assert kept.kept == "adapted" and kept.model is tuned.model and kept.agreement[1] > kept.agreement[0]
    torch.manual_seed(3)
    worse = build_model("cnn_student", 6, 4).eval()
    refused = guard(tuned.model, Tuned(worse, 0, 0.0, tuned.says), session, lambda on: worse)
    assert refused.kept == "untouched" and refused.model is tuned.model and "kept the untouched" in refused.why


def test_cross_fitting_halves_share_no_sample_and_hold_every_recording():
    recordings = _segments()
    session = session_windows(recordings, "W", SessionCut(calibration=0.5, stride=3), WINDOWING, 0.5, True)
    times = WindowTimes(session.sessions, window_starts(session, 3), LENGTH)
    first, second = times.halves()
    for name in np.unique(session.sessions):
        mine = session.sessions == name
        a, b = times.starts[first][mine[first]], times.starts[second][mine[second]]
        assert len(a) and len(b) and a.max() + LENGTH <= b.min()


def test_fixed_steps_train_on_every_session_window_and_epochs_hold_a_slice_back():
    session, _ = _session()
    assert len(session.training_windows(AdaptSpec(steps=5))) == len(session.x_student)
    assert set(session.training_windows(AdaptSpec())).isdisjoint(session.val)


def test_a_partial_session_shows_a_share_of_the_activities_drawn_per_worker_and_seed():
    recordings = _segments(activities=6)
    cut = SessionCut(calibration=0.5, activities=0.5)
    shown = {seed: shown_activities(recordings, "W", cut, seed) for seed in range(4)}
    assert all(len(v) == 3 for v in shown.values()) and len({tuple(v) for v in shown.values()}) > 1
    session = session_windows(recordings, "W", cut, WINDOWING, 0.5, True, seed=1)
    assert sorted({session.class_names[c] for c in session.y}) == shown[1]


def test_later_recordings_calibrate_on_the_first_recording_and_score_the_others():
    recordings = _segments(activities=2)
    windows = make_windows(recordings, replace(WINDOWING, drop_null=False))
    cut = SessionCut(calibration=0.5, protocol="later_recordings")
    session = session_windows(recordings, "W", cut, WINDOWING, 0.5, True)
    assert set((session.x[:, 1, 0] // 1000).astype(int)) == {0} and session.x[:, 0, -1].max() < 120
    scored = windows.subset(scored_fold(windows, "W", 0.5, "later_recordings").test)
    assert set(scored.sessions.tolist()) == {f"a01/s{i:02d}" for i in range(1, 7)}
    with pytest.raises(HarkdError, match="needs more than one recording per worker"):
        alone = make_windows(_segments(activities=1), replace(WINDOWING, drop_null=False))
        scored_fold(alone, "W", 0.5, "later_recordings")
