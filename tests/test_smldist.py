"""SMLDist: 1D MobileNetV3 blocks and stages, the Hopfield memory head, and the smld_* losses against hand formulas."""

import cmath
import math

import pytest
import torch

from harkd.cost import count_flops, count_params
from harkd.distill import build_distiller
from harkd.distill.base import Distiller
from harkd.distill.compose import CompositeKD
from harkd.distill.smld_logit import conditional_targets
from harkd.errors import HarkdError
from harkd.models import ModelOutput, build_model
from harkd.models.memory import HopfieldMemory
from harkd.models.mobilenet import InvertedResidual, make_divisible
from harkd.train.engine import TrainConfig, fit, predict

WINDOW, CLASSES = 125, 19


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


# ---- backbone ----

@pytest.mark.parametrize("c_in,c_out,stride,residual", [(8, 8, 1, True), (8, 16, 1, False), (8, 8, 2, False),
                                                        (16, 8, 3, False)])
def test_block_adds_its_input_only_for_stride_1_and_equal_channels(c_in, c_out, stride, residual):
    block = InvertedResidual(c_in, 5, 24, c_out, True, "hardswish", stride).eval()
    with torch.no_grad():  # a zero last BN makes the body output zero: what is left is the skip connection
        block.body[-1].weight.zero_()
        block.body[-1].bias.zero_()
    x = torch.randn(2, c_in, 125)
    out = block(x)
    assert block.residual is residual
    assert out.shape == (2, c_out, math.ceil(125 / stride))
    torch.testing.assert_close(out, x if residual else torch.zeros_like(out))


def test_block_skips_the_expansion_when_expanded_equals_input():
    convs = [m for m in InvertedResidual(16, 3, 16, 24, False, "relu", 1).body if isinstance(m, torch.nn.Conv1d)]
    assert [(c.groups, c.kernel_size[0]) for c in convs] == [(16, 3), (1, 1)]  # depthwise, project
    with pytest.raises(HarkdError, match="odd kernel"):
        InvertedResidual(8, 4, 16, 8, False, "relu", 1)
    with pytest.raises(HarkdError, match="activation"):
        InvertedResidual(8, 3, 16, 8, False, "gelu", 1)


def test_make_divisible_follows_torchvision():
    # round to the nearest multiple of 8 (at least 8), then up one step if that lost more than 10%
    assert [make_divisible(v) for v in (4, 11, 13, 18, 20, 144)] == [8, 16, 16, 24, 24, 144]


@pytest.mark.parametrize("preset,width", [("tiny", 1.0), ("small", 0.25), ("large", 0.25)])
def test_stage_maps_have_one_time_resolution_each(preset, width):
    model = build_model("mobilenet_v3_1d", 3, CLASSES, preset=preset, width=width)
    out = model(torch.randn(2, 3, WINDOW))
    # stem /2, then a stage per anchor (stride-2 block): /4, /8, /16, /32 of 125 steps, rounded up
    assert {name: tuple(m.shape) for name, m in out.maps.items()} == {
        f"stage{i}": (2, model.map_dims[f"stage{i}"], length) for i, length in enumerate((32, 16, 8, 4), 1)}
    assert out.logits.shape == (2, CLASSES) and out.reps["feat"].shape == (2, model.rep_dims["feat"])


def test_width_scales_every_channel_count():
    small = build_model("mobilenet_v3_1d", 3, 5, preset="small")
    quarter = build_model("mobilenet_v3_1d", 3, 5, preset="small", width=0.25)
    assert small.map_dims == {"stage1": 16, "stage2": 24, "stage3": 48, "stage4": 96}
    assert quarter.map_dims == {"stage1": 8, "stage2": 8, "stage3": 16, "stage4": 24}
    assert (small.rep_dims, quarter.rep_dims) == ({"feat": 576}, {"feat": 144})


def test_custom_block_table_and_bad_options():
    table = {"stem": 8, "last": 16, "blocks": [[3, 8, 8, False, "relu", 1], [3, 16, 16, True, "hardswish", 2]]}
    model = build_model("mobilenet_v3_1d", 2, 3, preset=table)
    assert model.map_dims == {"stage1": 16}  # one anchor block: a single stage
    assert model(torch.randn(1, 2, 20)).maps["stage1"].shape == (1, 16, 5)
    with pytest.raises(HarkdError, match="presets: \\['large', 'small', 'tiny'\\]"):
        build_model("mobilenet_v3_1d", 2, 3, preset="huge")
    with pytest.raises(HarkdError, match="exactly stem, last and blocks"):
        build_model("mobilenet_v3_1d", 2, 3, preset={"blocks": table["blocks"]})
    with pytest.raises(HarkdError, match="exactly stem, last and blocks"):
        build_model("mobilenet_v3_1d", 2, 3, preset={**table, "blocks": [[3, 8, 8, False, "relu"]]})
    with pytest.raises(HarkdError, match="heads: linear, memory, linear\\+memory"):
        build_model("mobilenet_v3_1d", 2, 3, head="knn")


def test_tiny_preset_fits_the_cnn_students_budget():
    shape = (1, 3, WINDOW)
    cnn = build_model("cnn_student", 3, CLASSES, width=32)
    tiny = build_model("mobilenet_v3_1d", 3, CLASSES, preset="tiny")
    assert (count_params(cnn), count_params(tiny)) == (5_731, 5_547)
    assert count_flops(tiny, shape) <= count_flops(cnn, shape)


# ---- memory head ----

def test_memory_heads_outputs_and_initial_mix():
    for head in ("linear", "memory", "linear+memory"):
        model = build_model("mobilenet_v3_1d", 3, 4, preset="tiny", head=head, memory_dim=8)
        out = model(torch.randn(2, 3, 40))
        assert set(model.rep_dims) == ({"feat"} if head == "linear" else {"feat", "memory"})
        assert {k: v.shape[1] for k, v in out.reps.items()} == model.rep_dims
    model.eval()  # the mixed head: equal weights at initialisation
    out = model(torch.randn(2, 3, 40))
    feat = out.reps["feat"]
    memory_logits, state = model.memory(feat)
    torch.testing.assert_close(out.logits, (model.linear(feat) + memory_logits) / 2)
    torch.testing.assert_close(out.reps["memory"], state)


def stored(patterns, beta, steps=1):
    memory = HopfieldMemory(3, 2, len(patterns), beta=beta, steps=steps)
    with torch.no_grad():
        memory.patterns.copy_(torch.tensor(patterns))
    return memory


PATTERNS = [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [1.4, 1.4, 0.0]]


def test_hopfield_retrieves_the_stored_pattern_nearest_a_noisy_query():
    memory = stored(PATTERNS, beta=20.0)
    queries = torch.tensor([[1.8, 0.3, -0.2], [0.1, -0.2, 2.3], [1.2, 1.6, 0.1]])
    torch.testing.assert_close(memory.retrieve(queries), torch.tensor([PATTERNS[0], PATTERNS[2], PATTERNS[3]]))
    # beta = 0 cannot tell patterns apart: every query retrieves their mean
    torch.testing.assert_close(stored(PATTERNS, beta=0.0).retrieve(queries),
                               torch.tensor(PATTERNS).mean(0).expand(3, 3))


def test_hopfield_update_steps_follow_the_softmax_rule():
    memory = stored(PATTERNS, beta=0.5, steps=2)
    state = [0.5, 0.2, -0.1]
    for _ in range(2):  # xi <- sum_n softmax(beta <xi, x_n>)_n x_n
        scores = [math.exp(0.5 * sum(a * b for a, b in zip(state, x))) for x in PATTERNS]
        state = [sum(s * x[d] for s, x in zip(scores, PATTERNS)) / sum(scores) for d in range(3)]
    torch.testing.assert_close(memory.retrieve(torch.tensor([[0.5, 0.2, -0.1]])), torch.tensor([state]))


def test_hopfield_flops_count_the_pattern_products():
    memory = HopfieldMemory(4, 3, n_patterns=6, pattern_dim=5, steps=2)
    rows = 7
    macs = rows * (4 * 5 + 2 * 2 * 6 * 5 + 5 * 3)  # query, 2 steps x (scores + retrieval), readout
    assert count_flops(memory, (rows, 4)) == 2 * macs


# ---- losses: fixed tensors and hand formulas ----

STUDENT_LOGITS = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [-0.5, 0.0, 2.0]]
TEACHER_LOGITS = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [0.5, 0.2, 0.1]]
LABELS = [0, 2, 2, 1]  # the teacher is right on rows 0 and 2, wrong on rows 1 and 3
STUDENT_MAPS = {"stage1": [[[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, -1.0]],
                           [[2.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]],
                           [[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]],
                           [[1.0, -1.0, 1.0, -1.0], [0.5, 0.5, 0.0, 0.0]]],
                "stage2": [[[1.0, 3.0]], [[0.0, 2.0]], [[-1.0, 1.0]], [[2.0, 2.0]]]}
TEACHER_MAPS = {"stage1": [[[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 0.0, 0.0], [2.0, 0.0, 2.0, 0.0]],
                           [[1.0, 0.0, 0.0, 1.0], [0.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]],
                           [[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 1.0]],
                           [[1.0, 2.0, 1.0, 2.0], [0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 1.0, 1.0]]],
                "stage2": [[[1.0, 2.0, 2.0, 3.0]], [[0.0, 1.0, 0.0, 1.0]], [[0.0, 0.0, 1.0, 1.0]],
                           [[2.0, 1.0, 2.0, 1.0]]]}
STUDENT_MEMORY = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]]
TEACHER_MEMORY = [[0.5, 0.5, 0.0], [1.0, 0.0, 1.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]]
CONNECTOR = ([[1.0, 0.0], [0.5, -1.0], [0.0, 2.0]], [0.0, 0.5, -0.5])  # stage1: 2 -> 3 channels


def outputs(student_maps=STUDENT_MAPS, teacher_maps=TEACHER_MAPS):
    """Fresh tensors of the values above (tests/test_contracts.py checks where gradients go)."""
    student = ModelOutput(torch.tensor(STUDENT_LOGITS), reps={"memory": torch.tensor(STUDENT_MEMORY)},
                          maps={k: torch.tensor(v) for k, v in student_maps.items()})
    teacher = ModelOutput(torch.tensor(TEACHER_LOGITS), reps={"memory": torch.tensor(TEACHER_MEMORY)},
                          maps={k: torch.tensor(v) for k, v in teacher_maps.items()})
    return student, teacher


def dims(maps):
    return {name: len(values[0]) for name, values in maps.items()}


def build(name, student_maps=STUDENT_MAPS, teacher_maps=TEACHER_MAPS, **config):
    return build_distiller(name, {"memory": 2}, {"memory": 3}, 3, dims(student_maps), dims(teacher_maps), **config)


def set_stage_connector(distiller):
    with torch.no_grad():
        distiller.align.connectors[0].weight.copy_(torch.tensor(CONNECTOR[0])[..., None])
        distiller.align.connectors[0].bias.copy_(torch.tensor(CONNECTOR[1]))


# Hand formulas over plain lists: no torch, no code shared with harkd.
def softmax(z, t=1.0):
    exps = [math.exp(v / t) for v in z]
    return [e / sum(exps) for e in exps]


def hand_targets(teacher, labels, t, eps):
    rows = []
    for z, y in zip(teacher, labels):
        if max(range(len(z)), key=z.__getitem__) == y:
            rows.append(softmax(z, t))
        else:
            rows.append([1 - eps if k == y else eps / (len(z) - 1) for k in range(len(z))])
    return rows


def hand_smld_logit(student, teacher, labels, t, eps):
    total = 0.0
    for zs, p in zip(student, hand_targets(teacher, labels, t, eps)):
        q = softmax(zs, t)
        total += sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q) if pk > 0)
    return t * t * total / len(student)


def conv1x1(weight, bias, channels):
    return [[sum(w * c[i] for w, c in zip(row, channels)) + b for i in range(len(channels[0]))]
            for row, b in zip(weight, bias)]


def interp(row, n_out):
    """Linear resampling, align_corners=False: output i reads source position (i + 0.5) * n_in / n_out - 0.5."""
    n_in, out = len(row), []
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = int(src)
        hi, frac = min(lo + 1, n_in - 1), src - lo
        out.append((1 - frac) * row[lo] + frac * row[hi])
    return out


def mse(a, b):
    flat = [(x - y) ** 2 for sa, sb in zip(a, b) for ca, cb in zip(sa, sb) for x, y in zip(ca, cb)]
    return sum(flat) / len(flat)


def hand_stage():
    stage1 = mse([conv1x1(*CONNECTOR, sample) for sample in STUDENT_MAPS["stage1"]], TEACHER_MAPS["stage1"])
    stage2 = mse([[interp(c, 4) for c in sample] for sample in STUDENT_MAPS["stage2"]], TEACHER_MAPS["stage2"])
    return (stage1 + stage2) / 2


def dft_ac(row):
    """|X_f| for f = 1 .. n // 2 with X_f = (1/n) sum_t x_t exp(-2 pi i f t / n)."""
    n = len(row)
    return [abs(sum(x * cmath.exp(-2j * math.pi * f * t / n) for t, x in enumerate(row))) / n
            for f in range(1, n // 2 + 1)]


def hand_freq(student, teacher):
    s_mag = [dft_ac(c) for sample in student for c in sample]
    t_mag = [dft_ac(c) for sample in teacher for c in sample]
    bins = range(len(t_mag[0]))
    energy = [sum(m[f] ** 2 for m in t_mag) for f in bins]
    return sum(energy[f] / sum(energy) * sum((math.log1p(s[f]) - math.log1p(t[f])) ** 2
                                             for s, t in zip(s_mag, t_mag)) / len(t_mag) for f in bins)


def test_conditional_targets_change_exactly_the_wrongly_predicted_rows():
    teacher, labels = torch.tensor(TEACHER_LOGITS), torch.tensor(LABELS)
    targets = conditional_targets(teacher, labels, temperature=2.0, smoothing=0.2)
    plain = torch.softmax(teacher / 2.0, dim=1)
    changed = (targets != plain).any(1)
    assert changed.tolist() == [False, True, False, True]
    torch.testing.assert_close(targets, torch.tensor(hand_targets(TEACHER_LOGITS, LABELS, 2.0, 0.2)))
    torch.testing.assert_close(targets[1], torch.tensor([0.1, 0.1, 0.8]))
    torch.testing.assert_close(targets.sum(1), torch.ones(4))


@pytest.mark.parametrize("temperature,smoothing", [(1.0, 0.1), (4.0, 0.3), (2.0, 0.0)])
def test_smld_logit_matches_the_hand_formula(temperature, smoothing):
    student, teacher = outputs()
    losses = build("smld_logit", temperature=temperature, smoothing=smoothing, weight=0.7)(
        student, teacher, torch.tensor(LABELS))
    assert set(losses) == {"loss_ce", "loss_smld_logit"}
    expected = 0.7 * hand_smld_logit(STUDENT_LOGITS, TEACHER_LOGITS, LABELS, temperature, smoothing)
    assert losses["loss_smld_logit"].item() == pytest.approx(expected, rel=1e-5)


def test_smld_logit_is_zero_when_the_student_copies_a_correct_teacher():
    student, teacher = outputs()
    student.logits = teacher.logits.detach().clone()
    labels = teacher.logits.argmax(1)
    assert build("smld_logit")(student, teacher, labels)["loss_smld_logit"].item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(HarkdError, match="smoothing must be in"):
        build("smld_logit", smoothing=1.0)


def test_smld_stage_matches_the_hand_formula():
    distiller = build("smld_stage", weight=3.0)
    set_stage_connector(distiller)
    assert isinstance(distiller.align.connectors[1], torch.nn.Identity)  # stage2: equal channels, no connector
    student, teacher = outputs()
    losses = distiller(student, teacher, torch.tensor(LABELS))
    assert set(losses) == {"loss_ce", "loss_stage"}
    assert losses["loss_stage"].item() == pytest.approx(3.0 * hand_stage(), rel=1e-6)


def test_smld_stage_pairs_maps_across_families_and_rejects_bad_pairs():
    teacher_maps = {"encoder": TEACHER_MAPS["stage1"]}  # e.g. a TSAK teacher: other map names
    with pytest.raises(HarkdError, match="share no feature map name"):
        build("smld_stage", teacher_maps=teacher_maps)
    distiller = build("smld_stage", teacher_maps=teacher_maps, student_stages=["stage1"], teacher_stages=["encoder"])
    set_stage_connector(distiller)
    student, teacher = outputs(teacher_maps=teacher_maps)
    expected = mse([conv1x1(*CONNECTOR, sample) for sample in STUDENT_MAPS["stage1"]], TEACHER_MAPS["stage1"])
    assert distiller(student, teacher, torch.tensor(LABELS))["loss_stage"].item() == pytest.approx(expected, rel=1e-6)
    only = build("smld_stage", student_stages=["stage2"])  # one list names the same maps in both models
    assert only.align.pairs == [("stage2", "stage2")]
    with pytest.raises(HarkdError, match="pair up one to one"):
        build("smld_stage", student_stages=["stage1", "stage2"], teacher_stages=["stage1"])
    with pytest.raises(HarkdError, match="teacher has no feature map 'stage9'"):
        build("smld_stage", teacher_stages=["stage9"], student_stages=["stage1"])


# ---- stage schedule: joint (all pairs every epoch) or stagewise (one pair per phase of the fit's epochs) ----

BASE_MAP = [[[1.0, -2.0, 0.5]], [[0.0, 3.0, -1.0]]]  # (B=2, C=1, T=3); equal shapes: no connector, no resampling


def three_stage_outputs(gaps):
    """Three stage pairs; the teacher's map k is the student's plus gaps[k] everywhere, so pair k's MSE is
    gaps[k] ** 2 exactly (powers of two: no rounding)."""
    student = {f"stage{k + 1}": BASE_MAP for k in range(3)}
    teacher = {f"stage{k + 1}": [[[v + gap for v in c] for c in sample] for sample in BASE_MAP]
               for k, gap in enumerate(gaps)}
    return student, teacher


def stage_loss_per_epoch(name, gaps, epochs, **config):
    student_maps, teacher_maps = three_stage_outputs(gaps)
    distiller = build(name, student_maps, teacher_maps, **config)
    student, teacher = outputs(student_maps, teacher_maps)
    losses = []
    for epoch in range(epochs):
        distiller.start_epoch(epoch, epochs)
        losses.append(distiller(student, teacher, torch.tensor(LABELS))["loss_stage"].item())
    return losses


@pytest.mark.parametrize("differs", [0, 1, 2])
def test_stagewise_trains_pair_k_in_phase_k_only(differs):
    # Only pair `differs` has a gap (2.0, MSE 4): the stage loss is 3 * 4 exactly in that pair's two epochs, 0 else.
    gaps = [2.0 if k == differs else 0.0 for k in range(3)]
    losses = stage_loss_per_epoch("smld_stage", gaps, 6, weight=3.0, schedule="stagewise")
    assert losses == [12.0 if epoch // 2 == differs else 0.0 for epoch in range(6)]


def test_stagewise_phases_over_six_epochs_are_0_0_1_1_2_2():
    # Distinct gaps 1, 2, 4 (MSE 1, 4, 16) name the active pair in every epoch; one pair at a time, not averaged.
    losses = stage_loss_per_epoch("smld_stage", [1.0, 2.0, 4.0], 6, weight=0.5, schedule="stagewise")
    assert losses == [0.5, 0.5, 2.0, 2.0, 8.0, 8.0]
    distiller = build("smld_stage", *three_stage_outputs([0.0] * 3), schedule="stagewise")
    assert distiller.active_pair == 0  # before the first start_epoch: as in epoch 0
    active = []
    for epoch in range(6):
        distiller.start_epoch(epoch, 6)
        active.append(distiller.active_pair)
    assert active == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("epochs,expected", [(7, [0, 0, 1, 1, 2, 2, 2]), (8, [0, 0, 1, 1, 2, 2, 2, 2]),
                                             (3, [0, 1, 2]), (2, [0, 1]), (1, [0])])
def test_stagewise_last_phase_takes_the_remainder(epochs, expected):
    losses = stage_loss_per_epoch("smld_stage", [1.0, 2.0, 4.0], epochs, schedule="stagewise")
    assert losses == [[1.0, 4.0, 16.0][k] for k in expected]


def test_joint_schedule_is_the_mean_over_pairs_in_every_epoch():
    # the formula before schedules existed: weight * mean over pairs of each pair's MSE, whatever the epoch
    assert stage_loss_per_epoch("smld_stage", [1.0, 2.0, 4.0], 6, weight=0.5, schedule="joint") == [3.5] * 6
    assert stage_loss_per_epoch("smld_stage", [1.0, 2.0, 4.0], 3) == [7.0] * 3  # joint is the default
    distiller = build("smld_stage", weight=3.0, schedule="joint")
    set_stage_connector(distiller)
    student, teacher = outputs()
    for epoch in range(4):
        distiller.start_epoch(epoch, 4)
        assert distiller.active_pair is None
        loss = distiller(student, teacher, torch.tensor(LABELS))["loss_stage"].item()
        assert loss == pytest.approx(3.0 * hand_stage(), rel=1e-6)


def test_smldist_stagewise_switches_the_stage_pair_and_keeps_the_other_terms_on():
    student_maps, teacher_maps = three_stage_outputs([1.0, 2.0, 4.0])
    distiller = build("smldist", student_maps, teacher_maps, schedule="stagewise", stage_weight=1.0,
                      freq_weight=1.0, memory_weight=1.0)
    student, teacher = outputs(student_maps, teacher_maps)
    per_epoch = []
    for epoch in range(6):
        distiller.start_epoch(epoch, 6)
        per_epoch.append({k: v.item() for k, v in distiller(student, teacher, torch.tensor(LABELS)).items()})
    assert [epoch["loss_stage"] for epoch in per_epoch] == [1.0, 1.0, 4.0, 4.0, 16.0, 16.0]
    assert per_epoch[0]["loss_freq"] == 0.0  # the gaps are constant in time: pure DC, which smld_freq drops
    for name in ("loss_ce", "loss_smld_logit", "loss_freq", "loss_memory_rep"):
        assert all(epoch[name] == per_epoch[0][name] for epoch in per_epoch)
        assert name == "loss_freq" or per_epoch[0][name] > 0


@pytest.mark.parametrize("name,config", [("smld_stage", {}), ("smldist", {}), ("smldist", {"stage_weight": 0})])
def test_an_unknown_schedule_is_a_one_line_error_naming_the_valid_ones(name, config):
    with pytest.raises(HarkdError) as error:
        build(name, schedule="progressive", **config)
    message = str(error.value)
    assert "\n" not in message
    assert message == f"{name}: unknown schedule 'progressive'; schedules: joint, stagewise"


class _EpochSpy(Distiller):
    def __init__(self, term: str):
        super().__init__()
        self.term, self.calls = term, []

    def start_epoch(self, epoch, epochs):
        self.calls.append((epoch, epochs))

    def kd_terms(self, student_out, teacher_out, targets):
        return {self.term: student_out.logits.sum() * 0.0}


def test_composite_forwards_start_epoch_to_every_part():
    parts = [_EpochSpy("loss_a"), _EpochSpy("loss_b")]
    composite = CompositeKD(parts, ce_weight=1.0)
    composite.start_epoch(0, 5)
    composite.start_epoch(3, 5)
    assert [part.calls for part in parts] == [[(0, 5), (3, 5)]] * 2
    Distiller().start_epoch(0, 5)  # the base class's default: nothing to do, no error


def test_fit_announces_every_epoch_to_a_stagewise_distiller_before_its_steps(tmp_path):
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (96,), generator=generator)
    x = torch.randn(96, 3, 64, generator=generator) + y[:, None, None].float()
    teacher = build_model("mobilenet_v3_1d", 3, 4, preset="tiny", width=1.5).eval()
    targets = {"train": predict(teacher, x[:64])}
    student = build_model("mobilenet_v3_1d", 3, 4, preset="tiny")
    distiller = build_distiller("smldist", student.rep_dims, teacher.rep_dims, 4, student.map_dims,
                                teacher.map_dims, schedule="stagewise")
    stage = distiller.parts[0]
    assert len(stage.align.pairs) == 4
    calls, seen = [], []  # (epoch, epochs) per start_epoch; (last announced epoch, active pair) per step
    start_epoch, kd_terms = distiller.start_epoch, stage.kd_terms

    def spy_start(epoch, epochs):
        calls.append((epoch, epochs))
        start_epoch(epoch, epochs)

    def spy_terms(*args):
        seen.append((calls[-1][0] if calls else None, stage.active_pair))
        return kd_terms(*args)

    distiller.start_epoch, stage.kd_terms = spy_start, spy_terms
    result = fit(student, (x[:64], y[:64]), (x[64:], y[64:]),
                 TrainConfig(epochs=4, batch_size=16, patience=4, accelerator="cpu"), tmp_path, seed=0,
                 distiller=distiller, teacher=targets)
    assert result.epochs == 4
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert seen == [(epoch, epoch) for epoch in range(4) for _ in range(4)]  # 4 steps per epoch, pair k in epoch k
    assert all(epoch["loss_stage"] > 0 for epoch in result.history)


FREQ_STUDENT = {"a": STUDENT_MAPS["stage1"]}
FREQ_TEACHER = {"a": [sample[:2] for sample in TEACHER_MAPS["stage1"]]}


def test_smld_freq_matches_the_hand_formula():
    student, teacher = outputs(FREQ_STUDENT, FREQ_TEACHER)
    losses = build("smld_freq", FREQ_STUDENT, FREQ_TEACHER, weight=2.0)(student, teacher, torch.tensor(LABELS))
    assert set(losses) == {"loss_ce", "loss_freq"}
    expected = 2.0 * hand_freq(FREQ_STUDENT["a"], FREQ_TEACHER["a"])
    assert losses["loss_freq"].item() == pytest.approx(expected, rel=1e-5)


def freq_loss(student_map, teacher_map):
    maps_s, maps_t = {"a": student_map.tolist()}, {"a": teacher_map.tolist()}
    student, teacher = outputs(maps_s, maps_t)
    return build("smld_freq", maps_s, maps_t)(student, teacher, torch.tensor(LABELS))["loss_freq"].item()


def test_smld_freq_is_blind_to_circular_shifts_but_not_to_band_amplitudes():
    teacher = torch.randn(4, 3, 16)
    student = teacher + torch.randn(4, 3, 16)
    assert freq_loss(teacher, teacher) == 0.0
    base = freq_loss(student, teacher)
    assert base > 1e-3
    assert freq_loss(student.roll(5, -1), teacher.roll(5, -1)) == pytest.approx(base, rel=1e-5)
    assert freq_loss(student.roll(3, -1), teacher) == pytest.approx(base, rel=1e-5)
    assert freq_loss(teacher, teacher.roll(7, -1)) == pytest.approx(0.0, abs=1e-6)
    # a sinusoid in bin 2 against the same rhythm at twice the amplitude (no other band has energy)
    t = torch.arange(16.0)
    wave = torch.sin(2 * math.pi * 2 * t / 16).expand(4, 3, 16)
    assert freq_loss(2 * wave, wave) == pytest.approx((math.log1p(1.0) - math.log1p(0.5)) ** 2, rel=1e-4)


def test_smld_freq_needs_more_than_one_time_step():
    maps = {"a": [[[1.0]]] * 4}
    student, teacher = outputs(maps, maps)
    with pytest.raises(HarkdError, match="one time step"):
        build("smld_freq", maps, maps)(student, teacher, torch.tensor(LABELS))


def test_smldist_sums_its_terms_and_weight_zero_leaves_a_term_out():
    distiller = build("smldist", stage_weight=2.0, logit_weight=0.5, temperature=2.0, smoothing=0.2,
                      freq_weight=1.5, memory_weight=1.0, ce_weight=1.0)
    set_stage_connector(distiller.parts[0])
    student, teacher = outputs()
    losses = distiller(student, teacher, torch.tensor(LABELS))
    assert set(losses) == {"loss_ce", "loss_stage", "loss_smld_logit", "loss_freq", "loss_memory_rep"}
    assert losses["loss_stage"].item() == pytest.approx(2.0 * hand_stage(), rel=1e-6)
    assert losses["loss_smld_logit"].item() == pytest.approx(
        0.5 * hand_smld_logit(STUDENT_LOGITS, TEACHER_LOGITS, LABELS, 2.0, 0.2), rel=1e-5)
    default = build("smldist")(student, teacher, torch.tensor(LABELS))
    assert set(default) == {"loss_ce", "loss_stage", "loss_smld_logit"}
    no_stage = build_distiller("smldist", {"feat": 2}, {"feat": 3}, 3, {"feat": 2}, {"other": 3}, stage_weight=0)
    assert [type(p).__name__ for p in no_stage.parts] == ["ConditionalLogitKD"]


def test_one_step_between_mobilenets_moves_the_student_and_never_the_teacher():
    teacher = build_model("mobilenet_v3_1d", 6, 4, preset="small", width=0.25, head="linear+memory")
    teacher.eval().requires_grad_(False)
    student = build_model("mobilenet_v3_1d", 3, 4, preset="tiny", head="memory")
    distiller = build_distiller("smldist", student.rep_dims, teacher.rep_dims, 4, student.map_dims,
                                teacher.map_dims, freq_weight=1.0, memory_weight=1.0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = torch.randn(8, 6, 64), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    with torch.no_grad():
        teacher_out = teacher(x)
    losses = distiller(student(x[:, :3]), teacher_out, y)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad is not None for p in [*student.parameters(), *distiller.parameters()])
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
