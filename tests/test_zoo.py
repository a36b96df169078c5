"""The KD baseline zoo: exact loss values from hand formulas in plain Python, errors, listing."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from harkd.cli import app
from harkd.distill import build_distiller, distiller_defaults, distiller_names
from harkd.errors import HarkdError
from harkd.models import ModelOutput, build_model

ZOO = ["fitnets", "at", "sp", "rkd", "pkt", "nst", "crd", "dkd"]

# Student: 3 samples, rep size 2, map 2 channels x 3 steps. Teacher: rep size 3, maps of 3 channels x 2, 3 or 5 steps.
STUDENT_REP = [[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]
TEACHER_REP = [[0.5, 0.5, 1.0], [2.0, 0.0, -1.0], [1.0, 1.0, 0.0]]
STUDENT_MAP = [[[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]],
               [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]],
               [[0.5, -0.5, 1.5], [2.0, 0.0, 1.0]]]
TEACHER_MAPS = {3: [[[1.0, 0.0, 2.0], [0.5, 1.0, 0.0], [2.0, -1.0, 1.0]],
                    [[0.0, 1.0, 1.0], [1.0, 0.0, -1.0], [3.0, 2.0, 0.0]],
                    [[1.0, 1.0, 1.0], [0.0, 2.0, 0.5], [-1.0, 0.0, 2.0]]],
                5: [[[1.0, 0.0, 2.0, 1.0, 0.5], [0.5, 1.0, 0.0, 0.0, 1.0], [2.0, -1.0, 1.0, 3.0, 0.0]],
                    [[0.0, 1.0, 1.0, 2.0, 2.0], [1.0, 0.0, -1.0, 0.5, 0.0], [3.0, 2.0, 0.0, 1.0, 1.0]],
                    [[1.0, 1.0, 1.0, 0.0, -1.0], [0.0, 2.0, 0.5, 0.5, 1.0], [-1.0, 0.0, 2.0, 1.0, 0.0]]],
                2: [[[1.0, 2.0], [0.5, 0.0], [2.0, 1.0]],
                    [[0.0, 1.0], [1.0, -1.0], [3.0, 0.0]],
                    [[1.0, 0.5], [0.0, 2.0], [-1.0, 1.0]]]}
STUDENT_LOGITS = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 2.0, 1.0]]
TEACHER_LOGITS = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, -2.0]]
TARGETS = [0, 2, 1]


def outputs(teacher_length=3):
    """Fresh tensors of the values above (tests/test_contracts.py checks where gradients go)."""
    student = ModelOutput(logits=torch.tensor(STUDENT_LOGITS), reps={"feat": torch.tensor(STUDENT_REP)},
                          maps={"feat": torch.tensor(STUDENT_MAP)})
    teacher = ModelOutput(logits=torch.tensor(TEACHER_LOGITS), reps={"combi": torch.tensor(TEACHER_REP)},
                          maps={"encoder": torch.tensor(TEACHER_MAPS[teacher_length])})
    return student, teacher


def build(name, **config):
    return build_distiller(name, {"feat": 2}, {"combi": 3}, 3, {"feat": 2}, {"encoder": 3}, **config)


def kd_loss(name, teacher_length=3, **config):
    distiller = build(name, **config)
    return distiller, (lambda: distiller(*outputs(teacher_length), torch.tensor(TARGETS)))


# Hand formulas over plain lists: no torch, no code shared with harkd.
def mean(values):
    values = list(values)
    return sum(values) / len(values)


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def unit(v, eps=1e-12):
    n = max(norm(v), eps)
    return [x / n for x in v]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def resample(seq, length):
    """Linear interpolation, half-pixel centres (torch's align_corners=False)."""
    scale = len(seq) / length
    out = []
    for i in range(length):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = int(src)
        i1 = min(i0 + 1, len(seq) - 1)
        out.append((1 - (src - i0)) * seq[i0] + (src - i0) * seq[i1])
    return out


def resample_map(sample, length):
    return [resample(channel, length) for channel in sample]


def smooth_l1(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def softmax(z, t=1.0):
    exps = [math.exp(v / t) for v in z]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def flat(sample):
    return [x for row in sample for x in row] if isinstance(sample[0], list) else sample


def test_zoo_is_registered_with_the_papers_defaults():
    assert set(ZOO) <= set(distiller_names())
    assert distiller_defaults("fitnets") == {"student_map": "feat", "teacher_map": "encoder", "weight": 100.0,
                                             "ce_weight": 1.0}
    assert distiller_defaults("at")["p"] == 2.0 and distiller_defaults("at")["weight"] == 1000.0
    assert distiller_defaults("sp")["weight"] == 3000.0 and distiller_defaults("nst")["weight"] == 50.0
    assert distiller_defaults("pkt")["weight"] == 30000.0
    assert (distiller_defaults("rkd")["distance_weight"], distiller_defaults("rkd")["angle_weight"]) == (25.0, 50.0)
    crd = distiller_defaults("crd")
    assert (crd["dim"], crd["temperature"], crd["weight"], crd["teacher_rep"]) == (128, 0.07, 0.8, "combi")
    dkd = distiller_defaults("dkd")
    assert (dkd["alpha"], dkd["beta"], dkd["temperature"]) == (1.0, 8.0, 4.0)


FITNETS_W = [[1.0, 0.0], [0.5, -1.0], [2.0, 1.0]]  # teacher channels x student channels
FITNETS_B = [0.0, 0.5, -1.0]


@pytest.mark.parametrize("teacher_length", [3, 5, 2])
def test_fitnets_is_mse_of_the_projected_and_resampled_student_map(teacher_length):
    distiller, run = kd_loss("fitnets", teacher_length, weight=2.0)
    with torch.no_grad():
        distiller.connector.weight.copy_(torch.tensor(FITNETS_W)[:, :, None])
        distiller.connector.bias.copy_(torch.tensor(FITNETS_B))
    losses = run()
    assert set(losses) == {"loss_ce", "loss_fitnets"}
    squared = []
    for s, t in zip(STUDENT_MAP, TEACHER_MAPS[teacher_length]):
        projected = [[dot(w, [c[k] for c in s]) + b for k in range(3)] for w, b in zip(FITNETS_W, FITNETS_B)]
        hint = resample_map(projected, teacher_length)
        squared += [(h - y) ** 2 for hint_c, t_c in zip(hint, t) for h, y in zip(hint_c, t_c)]
    assert losses["loss_fitnets"].item() == pytest.approx(2.0 * mean(squared), rel=1e-5)


def test_fitnets_is_zero_when_the_connector_reproduces_the_teacher():
    distiller, _ = kd_loss("fitnets")
    student, teacher = outputs()
    teacher.maps["encoder"] = distiller.connector(student.maps["feat"]).detach()
    assert distiller.kd_terms(student, teacher, torch.tensor(TARGETS))["loss_fitnets"].item() == 0.0


def attention(sample, p):
    return unit([mean(abs(c[t]) ** p for c in sample) for t in range(len(sample[0]))])


@pytest.mark.parametrize("teacher_length", [3, 5])
@pytest.mark.parametrize("p", [2.0, 3.0])
def test_at_is_the_squared_distance_of_normalised_attention_over_time(teacher_length, p):
    losses = kd_loss("at", teacher_length, p=p)[1]()
    squared = []
    for s, t in zip(STUDENT_MAP, TEACHER_MAPS[teacher_length]):
        a_s, a_t = attention(resample_map(s, teacher_length), p), attention(t, p)
        squared += [(x - y) ** 2 for x, y in zip(a_s, a_t)]
    assert losses["loss_at"].item() == pytest.approx(1000.0 * mean(squared), rel=1e-5)


def gram(samples):
    rows = [[dot(flat(a), flat(b)) for b in samples] for a in samples]
    return [unit(row) for row in rows]


@pytest.mark.parametrize("on", ["maps", "reps"])
def test_sp_is_the_frobenius_distance_of_normalised_gram_matrices(on):
    losses = kd_loss("sp", 5, on=on)[1]()  # maps of different shapes: Gram matrices are B x B either way
    student, teacher = (STUDENT_MAP, TEACHER_MAPS[5]) if on == "maps" else (STUDENT_REP, TEACHER_REP)
    g_s, g_t = gram(student), gram(teacher)
    expected = sum((a - b) ** 2 for r_s, r_t in zip(g_s, g_t) for a, b in zip(r_s, r_t)) / 3 ** 2
    assert losses["loss_sp"].item() == pytest.approx(3000.0 * expected, rel=1e-5)


def normalised_distances(samples):
    d = [[norm([x - y for x, y in zip(a, b)]) for b in samples] for a in samples]
    scale = mean(v for row in d for v in row if v > 0)
    return [v / scale for row in d for v in row]


def angles(samples):
    """[i, j, k] flattened: cos of the angle at sample i between samples j and k."""
    def direction(frm, to):
        return unit([x - y for x, y in zip(samples[to], samples[frm])])

    n = range(len(samples))
    return [dot(direction(i, j), direction(i, k)) for i in n for j in n for k in n]


def test_rkd_is_smooth_l1_on_normalised_distances_and_angles():
    losses = kd_loss("rkd", distance_weight=2.0, angle_weight=3.0)[1]()
    assert set(losses) == {"loss_ce", "loss_rkd_distance", "loss_rkd_angle"}
    distance = mean(smooth_l1(a, b) for a, b in zip(normalised_distances(STUDENT_REP),
                                                    normalised_distances(TEACHER_REP)))
    angle = mean(smooth_l1(a, b) for a, b in zip(angles(STUDENT_REP), angles(TEACHER_REP)))
    assert angle > 1e-3 and distance > 1e-3  # not a comparison of zeros
    assert losses["loss_rkd_distance"].item() == pytest.approx(2.0 * distance, rel=1e-5)
    assert losses["loss_rkd_angle"].item() == pytest.approx(3.0 * angle, rel=1e-5)


def test_rkd_ignores_scale_and_translation_of_the_teacher():
    distiller, _ = kd_loss("rkd")
    student, teacher = outputs()
    teacher.reps["combi"] = 5.0 * torch.tensor(STUDENT_REP) + 1.0
    terms = distiller.kd_terms(student, teacher, torch.tensor(TARGETS))
    assert terms["loss_rkd_distance"].item() == pytest.approx(0, abs=1e-6)
    assert terms["loss_rkd_angle"].item() == pytest.approx(0, abs=1e-6)


def test_rkd_on_a_batch_of_one_is_zero_not_nan():
    """One window has no pair and no triplet: the reference's mean over no distances is NaN, ours leaves 0."""
    distiller, _ = kd_loss("rkd")
    student, teacher = outputs()
    one = ModelOutput(student.logits[:1], reps={"feat": student.reps["feat"][:1]})
    terms = distiller.kd_terms(one, ModelOutput(teacher.logits[:1], reps={"combi": teacher.reps["combi"][:1]}),
                               torch.tensor(TARGETS[:1]))
    assert terms["loss_rkd_distance"].item() == 0.0 and terms["loss_rkd_angle"].item() == 0.0


def similarity_probabilities(samples, eps=1e-7):
    units = [[x / (norm(v) + eps) for x in v] for v in samples]
    rows = [[(dot(a, b) + 1) / 2 for b in units] for a in units]
    return [[v / sum(row) for v in row] for row in rows]


def test_pkt_is_the_mean_kl_term_of_cosine_similarity_probabilities():
    losses = kd_loss("pkt", weight=10.0)[1]()
    p_s, p_t = similarity_probabilities(STUDENT_REP), similarity_probabilities(TEACHER_REP)
    eps = 1e-7
    expected = mean(t * math.log((t + eps) / (s + eps)) for r_s, r_t in zip(p_s, p_t) for s, t in zip(r_s, r_t))
    assert expected > 0
    assert losses["loss_pkt"].item() == pytest.approx(10.0 * expected, rel=1e-4)


def kernel_mean(a, b):
    return mean(dot(x, y) ** 2 for x in a for y in b)


@pytest.mark.parametrize("teacher_length", [3, 5])
def test_nst_is_the_polynomial_mmd_of_normalised_channel_time_courses(teacher_length):
    losses = kd_loss("nst", teacher_length)[1]()
    per_sample = []
    for s, t in zip(STUDENT_MAP, TEACHER_MAPS[teacher_length]):
        f_s = [unit(c) for c in resample_map(s, teacher_length)]
        f_t = [unit(c) for c in t]
        per_sample.append((kernel_mean(f_t, f_t), kernel_mean(f_s, f_s), kernel_mean(f_s, f_t)))
    mmd = mean(tt for tt, _, _ in per_sample) + mean(ss for _, ss, _ in per_sample) \
        - 2 * mean(st for _, _, st in per_sample)
    assert losses["loss_nst"].item() == pytest.approx(50.0 * mmd, rel=1e-5)


CRD_S = ([[1.0, 0.5], [-0.5, 1.0]], [0.1, 0.0])  # embedding dim x student rep size, bias
CRD_T = ([[0.5, 0.0, 1.0], [1.0, -1.0, 0.0]], [0.0, 0.2])


def embed(samples, weight, bias):
    return [unit([dot(w, v) + b for w, b in zip(weight, bias)]) for v in samples]


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_crd_is_symmetric_in_batch_infonce_over_embedded_reps(temperature):
    distiller, run = kd_loss("crd", dim=2, temperature=temperature)
    with torch.no_grad():
        for layer, (weight, bias) in ((distiller.student_embed, CRD_S), (distiller.teacher_embed, CRD_T)):
            layer.weight.copy_(torch.tensor(weight))
            layer.bias.copy_(torch.tensor(bias))
    losses = run()
    e_s, e_t = embed(STUDENT_REP, *CRD_S), embed(TEACHER_REP, *CRD_T)
    scores = [[dot(a, b) / temperature for b in e_t] for a in e_s]

    def nce(rows):
        return mean(-math.log(softmax(row)[i]) for i, row in enumerate(rows))

    expected = nce(scores) + nce([list(column) for column in zip(*scores)])
    assert losses["loss_crd"].item() == pytest.approx(0.8 * expected, rel=1e-5)


def dkd_terms(t):
    tckd = nckd = 0.0
    for zs, zt, y in zip(STUDENT_LOGITS, TEACHER_LOGITS, TARGETS):
        p_s, p_t = softmax(zs, t), softmax(zt, t)
        tckd += kl([p_t[y], 1 - p_t[y]], [p_s[y], 1 - p_s[y]])
        others = [k for k in range(len(zs)) if k != y]
        nckd += kl(softmax([zt[k] for k in others], t), softmax([zs[k] for k in others], t))
    return t * t * tckd / len(TARGETS), t * t * nckd / len(TARGETS)


@pytest.mark.parametrize("alpha,beta,temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_is_weighted_target_and_non_target_kl(alpha, beta, temperature):
    losses = kd_loss("dkd", alpha=alpha, beta=beta, temperature=temperature)[1]()
    assert set(losses) == {"loss_ce", "loss_tckd", "loss_nckd"}
    tckd, nckd = dkd_terms(temperature)
    assert losses["loss_tckd"].item() == pytest.approx(alpha * tckd, rel=1e-4)
    assert losses["loss_nckd"].item() == pytest.approx(beta * nckd, rel=1e-4)


def test_dkd_warmup_ramps_over_epochs_as_the_reference():
    """mdistiller weighs epoch e (1-based) min(e / warmup, 1); start_epoch announces 0-based epochs."""
    distiller, run = kd_loss("dkd", warmup=4)
    tckd, nckd = dkd_terms(4.0)
    assert run()["loss_tckd"].item() == pytest.approx(0.25 * tckd, rel=1e-4)  # before start_epoch: epoch 0
    ramps = []
    for epoch in range(6):
        distiller.start_epoch(epoch, 6)
        ramps += [run()[term].item() / value for term, value in (("loss_tckd", tckd), ("loss_nckd", 8 * nckd))]
    assert ramps == pytest.approx([w for w in (0.25, 0.5, 0.75, 1.0, 1.0, 1.0) for _ in range(2)], rel=1e-4)
    distiller.start_epoch(1, 6)
    assert [run()["loss_tckd"].item() / tckd for _ in range(3)] == pytest.approx([0.5] * 3, rel=1e-4)  # not steps


def test_dkd_is_finite_where_the_target_probability_rounds_to_one():
    """At T=1 a margin of 30 over 18 other classes makes softmax(target) exactly 1 in float32: the non-target mass
    is taken from logsumexps, not as 1 - p_target, so the loss stays the float64 value."""
    student, teacher = torch.zeros(2, 19), torch.zeros(2, 19)
    student[:, 0], teacher[0, 0], teacher[1, 3] = 30.0, 30.0, 30.0
    assert torch.softmax(student, 1)[0, 0].item() == 1.0
    distiller = build_distiller("dkd", {}, {}, 19, temperature=1.0)
    labels = torch.tensor([0, 0])
    single = distiller.kd_terms(ModelOutput(student), ModelOutput(teacher), labels)
    double = distiller.kd_terms(ModelOutput(student.double()), ModelOutput(teacher.double()), labels)
    for term in ("loss_tckd", "loss_nckd"):
        assert torch.isfinite(single[term]) and single[term].item() == pytest.approx(double[term].item(), rel=1e-5)
    # row 1 alone: the teacher puts ~all mass off the target, the student's non-target log-mass is log 18 - 30
    assert single["loss_tckd"].item() == pytest.approx((30.0 - math.log(18)) / 2, rel=1e-5)
    with pytest.raises(HarkdError, match="needs at least 2 classes"):
        build_distiller("dkd", {}, {}, 1)


@pytest.mark.parametrize("depth", [3, 2])
def test_every_zoo_method_runs_on_the_real_models(depth):
    """Default rep/map names fit cnn_student and tsak_teacher; depth 2 gives the student twice the teacher's steps."""
    teacher = build_model("tsak_teacher", 6, 3).eval().requires_grad_(False)
    student = build_model("cnn_student", 3, 3, depth=depth)
    x, y = torch.randn(4, 6, 64), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        teacher_out = teacher(x)
    student_out = student(x[:, :3])
    assert (student_out.maps["feat"].shape[-1] == teacher_out.maps["encoder"].shape[-1]) == (depth == 3)
    for name in ZOO:
        distiller = build_distiller(name, student.rep_dims, teacher.rep_dims, 3, student.map_dims, teacher.map_dims)
        losses = distiller(student_out, teacher_out, y)
        assert all(torch.isfinite(v) for v in losses.values()), name
        student.zero_grad()
        sum(v for k, v in losses.items() if k != "loss_ce").backward(retain_graph=True)
        assert student.features[0].weight.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name,config,message", [
    ("fitnets", {"student_map": "conv"}, r"student has no feature map 'conv'; it has: \['feat'\]"),
    ("at", {"teacher_map": "lstm"}, r"teacher has no feature map 'lstm'; it has: \['encoder'\]"),
    ("nst", {"teacher_map": "causal"}, r"teacher has no feature map 'causal'"),
    ("sp", {"on": "reps", "teacher_rep": "attn"}, r"teacher has no representation 'attn'; it has: \['combi'\]"),
    ("sp", {"on": "logits"}, "on must be 'maps' or 'reps'"),
    ("rkd", {"student_rep": "pooled"}, r"student has no representation 'pooled'; it has: \['feat'\]"),
    ("pkt", {"teacher_rep": "causal"}, r"teacher has no representation 'causal'"),
    ("crd", {"teacher_rep": "causal"}, r"teacher has no representation 'causal'"),
    ("crd", {"temperature": 0}, "temperature and dim must be positive"),
    ("dkd", {"warmup": -1}, "warmup >= 0"),
    ("at", {"p": 0}, "p must be positive"),
])
def test_bad_names_and_options_are_errors_naming_what_exists(name, config, message):
    with pytest.raises(HarkdError, match=message):
        build(name, **config)


def test_map_strategies_without_maps_say_the_model_has_none():
    with pytest.raises(HarkdError, match=r"student has no feature map 'feat'; it has: \[\]"):
        build_distiller("fitnets", {"feat": 2}, {"combi": 3}, 3)


def test_methods_command_lists_every_strategy_with_summary_and_defaults():
    runner = CliRunner()
    listing = json.loads(runner.invoke(app, ["methods", "--json"]).stdout)
    assert list(listing) == distiller_names()
    for name in distiller_names():
        assert listing[name]["options"] == distiller_defaults(name)
        assert listing[name]["summary"] and "\n" not in listing[name]["summary"]
    assert "in-batch negatives" in listing["crd"]["summary"]
    text = runner.invoke(app, ["methods"]).stdout
    assert all(f"\n{name} " in f"\n{text}" for name in ZOO)
    assert "weight=30000.0" in text
