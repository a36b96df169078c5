"""Model registry, output contracts, TSAK stages, student causality and the teacher/student cost ratios."""

import math

import pytest
import torch

from harkd.cost import count_flops, count_params
from harkd.errors import HarkdError
from harkd.models import ModelOutput, build_model, model_defaults, model_names
from harkd.models.tsak import SemanticClassifier, TSAKTeacher, TwoStageTeacher

# DSADS: 5 units x 9 channels at 25 Hz, 5 s windows, 19 activities; the student sees one tri-axial accelerometer.
DSADS_CHANNELS, STUDENT_CHANNELS, WINDOW, CLASSES = 45, 3, 125, 19


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def test_registry_lists_models_and_rejects_unknown_names_and_options():
    assert {"tsak_teacher", "tsak_semantic", "cnn_student", "causal_student"} <= set(model_names())
    with pytest.raises(HarkdError, match="known models: .*cnn_student"):
        build_model("resnet", 3, 4)
    with pytest.raises(HarkdError, match=r"unknown option\(s\) \['widht'\]; valid options: .*'width'"):
        build_model("cnn_student", 3, 4, widht=8)
    assert model_defaults("cnn_student")["width"] == 32


def test_teacher_outputs_logits_reps_and_head_logits():
    teacher = build_model("tsak_teacher", DSADS_CHANNELS, CLASSES)
    out = teacher(torch.randn(2, DSADS_CHANNELS, WINDOW))
    assert isinstance(out, ModelOutput) and out.logits.shape == (2, CLASSES)
    assert {name: rep.shape for name, rep in out.reps.items()} == {
        name: (2, dim) for name, dim in teacher.rep_dims.items()}
    assert set(out.reps) == set(out.head_logits) == {"attn", "causal", "combi"}
    teacher.eval()
    out = teacher(torch.randn(2, DSADS_CHANNELS, WINDOW))  # without dropout the logits are the heads' mean
    torch.testing.assert_close(out.logits, sum(out.head_logits.values()) / 3)


def test_teacher_accepts_uneven_groups_and_rejects_bad_ones():
    groups = [[0, 1, 2, 3], [4], [5, 6]]  # e.g. a quaternion, a capacitive channel, two more
    teacher = build_model("tsak_teacher", 7, 5, channel_groups=groups)
    assert teacher.n_tokens == 3
    assert teacher(torch.randn(2, 7, 50)).logits.shape == (2, 5)
    for bad in ([[0, 1], [1, 2, 3, 4, 5, 6]], [[0, 1, 2]], [[0, 1, 2, 3, 4, 5, 6], []]):
        with pytest.raises(HarkdError, match="channel_groups"):
            build_model("tsak_teacher", 7, 5, channel_groups=bad)


def test_padded_group_slots_read_zeros():
    teacher = build_model("tsak_teacher", 4, 2, channel_groups=[[0, 1, 2], [3]])
    # Slot order is token by token; the short group's empty slots point past the input (the appended zero channel).
    assert teacher.gather_index.tolist() == [0, 1, 2, 3, 4, 4]


def test_teacher_loss_is_ce_of_combined_plus_each_head():
    logits = {"attn": [[2.0, 0.0]], "causal": [[0.0, 1.0]], "combi": [[1.0, 1.0]], "mean": [[1.0, 2 / 3]]}
    out = ModelOutput(logits=torch.tensor(logits["mean"]), reps={},
                      head_logits={k: torch.tensor(v) for k, v in logits.items() if k != "mean"})

    def ce_first_class(z):  # -log softmax(z)[0]
        return -z[0] + math.log(math.exp(z[0]) + math.exp(z[1]))

    expected = sum(ce_first_class(v[0]) for v in logits.values())
    assert TSAKTeacher.loss(out, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def test_semantic_classifier_is_trained_on_a_frozen_teacher():
    teacher = build_model("tsak_teacher", 6, 4)
    semantic = SemanticClassifier.for_teacher(teacher, 4)
    assert build_model("tsak_semantic", sum(teacher.rep_dims.values()), 4).mlp[0].in_features == \
        semantic.mlp[0].in_features
    out = semantic(teacher(torch.randn(3, 6, 40)))
    assert out.logits.shape == (3, 4) and set(out.reps) == {"semantic"}
    out.logits.sum().backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in semantic.parameters())

    both = TwoStageTeacher(teacher, semantic).eval()
    staged = both(torch.randn(3, 6, 40))
    assert set(staged.head_logits) == {"attn", "causal", "combi", "semantic"}
    assert both.rep_dims == teacher.rep_dims


@pytest.mark.parametrize("name", ["cnn_student", "causal_student"])
def test_students_output_feat_and_are_small(name):
    student = build_model(name, STUDENT_CHANNELS, CLASSES, channel_groups=[[0, 1, 2]])  # groups are ignored
    out = student(torch.randn(2, STUDENT_CHANNELS, WINDOW))
    assert out.logits.shape == (2, CLASSES) and out.head_logits == {}
    assert set(out.reps) == {"feat"} and out.reps["feat"].shape == (2, student.rep_dims["feat"])
    assert 5_000 <= count_params(student) <= 20_000
    assert build_model(name, 3, 4, depth=1, width=8)(torch.randn(1, 3, 64)).logits.shape == (1, 4)


def test_causal_student_never_looks_ahead():
    student = build_model("causal_student", 3, 4).eval()
    x = torch.randn(1, 3, 128)
    later = x.clone()
    later[..., 64:] += 1.0
    # Final step m sees samples up to 16 m (strides 4, 2, 2, left padding): steps 0-3 end before sample 64.
    before, after = student.features(x), student.features(later)
    torch.testing.assert_close(before[..., :4], after[..., :4])
    assert not torch.allclose(before[..., 4:], after[..., 4:])


@pytest.mark.parametrize("name", ["cnn_student", "causal_student"])
def test_dsads_student_is_90_percent_smaller_and_97_percent_cheaper(name):
    teacher = build_model("tsak_teacher", DSADS_CHANNELS, CLASSES)
    student = build_model(name, STUDENT_CHANNELS, CLASSES)
    assert count_params(student) <= 0.10 * count_params(teacher)
    assert count_flops(student, (1, STUDENT_CHANNELS, WINDOW)) <= 0.03 * count_flops(teacher,
                                                                                     (1, DSADS_CHANNELS, WINDOW))
