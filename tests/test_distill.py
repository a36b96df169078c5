"""KD strategies: exact loss values from hand formulas, registry errors."""

import math
from types import SimpleNamespace

import pytest
import torch

from harkd.distill import (CompositeKD, build_distiller, build_method, distiller_defaults, distiller_names,
                           distiller_summary)
from harkd.errors import HarkdError
from harkd.models import ModelOutput, build_model
from harkd.models.tsak import SemanticClassifier, TwoStageTeacher

STUDENT_DIMS = {"feat": 2}
TEACHER_DIMS = {"attn": 2, "causal": 3, "combi": 2}
STUDENT_LOGITS = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
TEACHER_LOGITS = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]
SEMANTIC_LOGITS = [[0.0, 0.0, 4.0], [1.0, -1.0, 0.0]]
STUDENT_FEAT = [[1.0, 2.0], [3.0, -1.0]]
TEACHER_REPS = {"attn": [[0.5, 0.5], [2.0, 0.0]], "causal": [[1.0, 0.0, 0.0], [0.0, 0.0, -2.0]],
                "combi": [[0.0, 1.0], [1.0, 1.0]]}
TARGETS = [0, 2]


def outputs():
    """Fresh tensors of the values above (tests/test_contracts.py checks where gradients go)."""
    student = ModelOutput(logits=torch.tensor(STUDENT_LOGITS), reps={"feat": torch.tensor(STUDENT_FEAT)})
    teacher = ModelOutput(logits=torch.tensor(TEACHER_LOGITS),
                          reps={k: torch.tensor(v) for k, v in TEACHER_REPS.items()},
                          head_logits={"semantic": torch.tensor(SEMANTIC_LOGITS)})
    return student, teacher


def build(name, **config):
    return build_distiller(name, STUDENT_DIMS, TEACHER_DIMS, n_classes=3, **config)


# Hand formulas over plain lists: no torch, no code shared with harkd.
def log_softmax(z, t=1.0):
    scaled = [v / t for v in z]
    log_norm = math.log(sum(math.exp(v) for v in scaled))
    return [v - log_norm for v in scaled]


def cross_entropy(logits, targets):
    return sum(-log_softmax(z)[y] for z, y in zip(logits, targets)) / len(targets)


def hinton(student, teacher, t):
    """T^2 x mean over the batch of sum_k p_t (log p_t - log p_s)."""
    total = 0.0
    for zs, zt in zip(student, teacher):
        log_s, log_t = log_softmax(zs, t), log_softmax(zt, t)
        total += sum(math.exp(lt) * (lt - ls) for ls, lt in zip(log_s, log_t))
    return t * t * total / len(student)


def normalised_distance(projected, target):
    """mean over the batch of || a/|a| - b/|b| ||^2."""
    total = 0.0
    for a, b in zip(projected, target):
        na, nb = math.sqrt(sum(v * v for v in a)), math.sqrt(sum(v * v for v in b))
        total += sum((x / na - y / nb) ** 2 for x, y in zip(a, b))
    return total / len(projected)


def set_connector(distiller, weight, bias):
    with torch.no_grad():
        distiller.connector.weight.copy_(torch.tensor(weight))
        distiller.connector.bias.copy_(torch.tensor(bias))


def connect(weight, bias, feats):
    return [[sum(w * f for w, f in zip(row, feat)) + b for row, b in zip(weight, bias)] for feat in feats]


# Connector weights per teacher rep (teacher dim x student dim).
CONNECTORS = {"attn": ([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]),
              "causal": ([[1.0, 1.0], [0.0, 2.0], [-1.0, 0.0]], [0.5, 0.0, 0.0]),
              "combi": ([[0.0, 1.0], [1.0, 0.0]], [0.0, 1.0])}


def test_registry_names_defaults_and_errors():
    names = distiller_names()
    assert names == sorted(names)
    assert {"attn_rep", "causal_rep", "combi_rep", "logit", "none", "sc_logit", "tsak_all"} <= set(names)
    assert distiller_defaults("logit") == {"weight": 0.9, "temperature": 4.0, "ce_weight": 0.1}
    assert "teacher_rep" not in distiller_defaults("attn_rep")  # fixed by the strategy's name
    with pytest.raises(HarkdError, match="unknown KD strategy 'fitnet'; known strategies: .*attn_rep, causal_rep"):
        build("fitnet")
    with pytest.raises(HarkdError, match=r"unknown option\(s\) \['tau'\]; valid options: .*'temperature'"):
        build("logit", tau=2.0)
    with pytest.raises(HarkdError, match="temperature must be positive"):
        build("logit", temperature=0)
    with pytest.raises(HarkdError, match=r"student has no representation 'pooled'; it has: \['feat'\]"):
        build("attn_rep", student_rep="pooled")
    assert distiller_summary("sc_logit").startswith("Hinton KD towards")


def test_none_is_cross_entropy_only():
    student, _ = outputs()
    losses = build("none")(student, None, torch.tensor(TARGETS))
    assert list(losses) == ["loss_ce"]
    assert losses["loss_ce"].item() == pytest.approx(cross_entropy(STUDENT_LOGITS, TARGETS), rel=1e-6)


@pytest.mark.parametrize("name,target,term", [("logit", TEACHER_LOGITS, "loss_logit"),
                                              ("sc_logit", SEMANTIC_LOGITS, "loss_sc_logit")])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_logit_strategies_match_the_hinton_formula(name, target, term, temperature):
    student, teacher = outputs()
    losses = build(name, temperature=temperature, weight=0.7, ce_weight=0.3)(student, teacher, torch.tensor(TARGETS))
    assert set(losses) == {"loss_ce", term}
    assert losses["loss_ce"].item() == pytest.approx(0.3 * cross_entropy(STUDENT_LOGITS, TARGETS), rel=1e-6)
    assert losses[term].item() == pytest.approx(0.7 * hinton(STUDENT_LOGITS, target, temperature), rel=1e-5)


def test_hinton_is_zero_for_identical_logits():
    student, teacher = outputs()
    teacher.logits = torch.tensor(STUDENT_LOGITS)
    assert build("logit")(student, teacher, torch.tensor(TARGETS))["loss_logit"].item() == pytest.approx(0, abs=1e-7)


def test_sc_logit_without_semantic_logits_is_an_error():
    student, teacher = outputs()
    teacher.head_logits = {}
    with pytest.raises(HarkdError, match="semantic classifier"):
        build("sc_logit")(student, teacher, torch.tensor(TARGETS))


@pytest.mark.parametrize("rep", ["attn", "causal", "combi"])
def test_rep_strategies_match_normalised_squared_distance(rep):
    student, teacher = outputs()
    distiller = build(f"{rep}_rep", weight=2.0)
    set_connector(distiller, *CONNECTORS[rep])
    losses = distiller(student, teacher, torch.tensor(TARGETS))
    assert set(losses) == {"loss_ce", f"loss_{rep}_rep"}
    expected = normalised_distance(connect(*CONNECTORS[rep], STUDENT_FEAT), TEACHER_REPS[rep])
    assert losses[f"loss_{rep}_rep"].item() == pytest.approx(2.0 * expected, rel=1e-5)


def test_tsak_all_sums_every_term_with_its_weight():
    student, teacher = outputs()
    distiller = build("tsak_all", logit_weight=0.5, sc_logit_weight=0.25, attn_rep_weight=1.0,
                      causal_rep_weight=2.0, combi_rep_weight=3.0, temperature=2.0, ce_weight=1.0)
    for part in distiller.parts[2:]:
        set_connector(part, *CONNECTORS[part.teacher_rep])
    losses = distiller(student, teacher, torch.tensor(TARGETS))

    def rep_term(rep):
        return normalised_distance(connect(*CONNECTORS[rep], STUDENT_FEAT), TEACHER_REPS[rep])

    expected = {"loss_ce": cross_entropy(STUDENT_LOGITS, TARGETS),
                "loss_logit": 0.5 * hinton(STUDENT_LOGITS, TEACHER_LOGITS, 2.0),
                "loss_sc_logit": 0.25 * hinton(STUDENT_LOGITS, SEMANTIC_LOGITS, 2.0),
                "loss_attn_rep": 1.0 * rep_term("attn"), "loss_causal_rep": 2.0 * rep_term("causal"),
                "loss_combi_rep": 3.0 * rep_term("combi")}
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5), name


def test_one_training_step_moves_student_and_connectors_only():
    teacher = build_model("tsak_teacher", 6, 3)
    frozen = TwoStageTeacher(teacher, SemanticClassifier.for_teacher(teacher, 3)).eval().requires_grad_(False)
    student = build_model("cnn_student", 3, 3)
    distiller = build_distiller("tsak_all", student.rep_dims, frozen.rep_dims, 3)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    connector = distiller.parts[2].connector.weight.clone()
    optimiser = torch.optim.SGD([*student.parameters(), *distiller.parameters()], lr=0.1)

    x, y = torch.randn(4, 6, 64), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        teacher_out = frozen(x)
    losses = distiller(student(x[:, :3]), teacher_out, y)
    optimiser.zero_grad()
    sum(losses.values()).backward()
    optimiser.step()

    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    assert not torch.equal(connector, distiller.parts[2].connector.weight)


def method(*terms):
    return SimpleNamespace(name="m", terms=terms)


def test_build_method_none_single_and_composite():
    assert build_method(method(), STUDENT_DIMS, TEACHER_DIMS, 3) is None
    single = build_method(method({"distiller": "logit", "temperature": 2.0}), STUDENT_DIMS, TEACHER_DIMS, 3)
    assert type(single).__name__ == "LogitKD" and single.temperature == 2.0

    both = build_method(method({"distiller": "logit", "ce_weight": 0.5}, {"distiller": "attn_rep", "ce_weight": 0.5}),
                        STUDENT_DIMS, TEACHER_DIMS, 3)
    assert isinstance(both, CompositeKD)
    set_connector(both.parts[1], *CONNECTORS["attn"])
    student, teacher = outputs()
    losses = both(student, teacher, torch.tensor(TARGETS))
    assert set(losses) == {"loss_ce", "loss_logit", "loss_attn_rep"}
    assert losses["loss_ce"].item() == pytest.approx(0.5 * cross_entropy(STUDENT_LOGITS, TARGETS), rel=1e-6)
    assert losses["loss_logit"].item() == pytest.approx(0.9 * hinton(STUDENT_LOGITS, TEACHER_LOGITS, 4.0), rel=1e-5)


def test_build_method_rejects_conflicting_ce_weights_and_duplicate_terms():
    with pytest.raises(HarkdError, match="different ce_weight"):
        build_method(method({"distiller": "logit", "ce_weight": 0.1}, {"distiller": "attn_rep", "ce_weight": 1.0}),
                     STUDENT_DIMS, TEACHER_DIMS, 3)
    twice = build_method(method({"distiller": "logit"}, {"distiller": "logit"}), STUDENT_DIMS, TEACHER_DIMS, 3)
    with pytest.raises(HarkdError, match="both named 'loss_logit'"):
        twice(*outputs()[:2], torch.tensor(TARGETS))


def test_unlabelled_windows_skip_the_label_ce_and_label_reading_terms_see_the_teachers_prediction():
    student, teacher = outputs()
    unlabelled = torch.tensor([TARGETS[0], -1])
    teacher_pick = torch.tensor([TARGETS[0], max(range(3), key=lambda k: TEACHER_LOGITS[1][k])])
    for name in ("logit", "dkd"):
        terms = build(name, ce_weight=1.0)(student, teacher, unlabelled)
        reference = build(name, ce_weight=1.0)(student, teacher, teacher_pick)
        assert terms["loss_ce"].item() == pytest.approx(cross_entropy(STUDENT_LOGITS[:1], TARGETS[:1]))
        for key in set(terms) - {"loss_ce"}:
            assert terms[key].item() == pytest.approx(reference[key].item())
    nothing_labelled = build("logit")(student, teacher, torch.tensor([-1, -1]))
    assert nothing_labelled["loss_ce"].item() == 0.0 and nothing_labelled["loss_logit"].item() > 0
