"""Contracts every registered KD strategy and model keeps, parametrized over the registries (as timm's
tests/test_models.py covers every model), so a new strategy or model is covered by registering it.

Strategies: each term's gradient equals central finite differences in float64 (torch.autograd.gradcheck), reaches
the student and never the teacher, and the losses and their gradients stay finite in float32 on extreme inputs.
Models: declared rep_dims / map_dims are the outputs' sizes, harkd.cost has a FLOP rule for every layer, and the
model exports to ONNX with a dynamic batch size.
"""

from __future__ import annotations

import onnxruntime
import pytest
import torch
from torch import nn
from torch.autograd.gradcheck import GradcheckError
from torch.func import functional_call

from conftest import KD_CLASSES, KD_STRATEGIES, KD_STRATEGY_IDS, build_strategy, pair_outputs, strategy_labels
from harkd.cost import count_flops
from harkd.deploy.onnx_export import INPUT, to_onnx
from harkd.distill import distiller_defaults
from harkd.models import ModelOutput, build_model, model_names


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Every tensor here is tiny: on a loaded machine, waking a second intra-op thread costs more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- KD strategies (every registered one and its variants, on made-up outputs: conftest) ----

CLASSES = KD_CLASSES  # the classes of conftest's made-up outputs; the models' below too


def tensors(out: ModelOutput) -> dict[str, torch.Tensor]:
    return {"logits": out.logits, **{f"reps[{k}]": v for k, v in out.reps.items()},
            **{f"maps[{k}]": v for k, v in out.maps.items()},
            **{f"head_logits[{k}]": v for k, v in out.head_logits.items()}}


@pytest.mark.parametrize("name,config", KD_STRATEGIES, ids=KD_STRATEGY_IDS)
def test_every_term_has_the_gradient_of_float64_finite_differences(name, config):
    """Autograd against central differences (step 1e-6) of every loss term with respect to every student tensor and
    every connector parameter, along random directions (gradcheck's fast mode; the full Jacobians take minutes):
    |analytic - numeric| <= 1e-6 + 1e-4 |numeric|. Fails on a detached student tensor or a norm whose normaliser is
    held constant."""
    distiller = build_strategy(name, config, torch.float64)
    student, teacher = pair_outputs(3, torch.float64)
    student_names, param_names = list(tensors(student)), [k for k, _ in distiller.named_parameters()]
    targets = strategy_labels(3)
    terms = distiller(student, teacher, targets)
    # gradcheck skips outputs without a graph: a term detached from every input must fail here
    assert all(v.requires_grad for v in terms.values()), \
        f"terms without a gradient: {[k for k, v in terms.items() if not v.requires_grad]}"
    term_names = list(terms)

    def losses(*inputs):
        leaves = dict(zip(student_names, inputs))
        out = ModelOutput(logits=leaves["logits"], reps={k: leaves[f"reps[{k}]"] for k in student.reps},
                          maps={k: leaves[f"maps[{k}]"] for k in student.maps})
        params = dict(zip(param_names, inputs[len(student_names):]))
        terms = functional_call(distiller, params, (out, teacher, targets))
        return tuple(terms[k] for k in term_names)

    inputs = (*tensors(student).values(), *(p.detach().clone().requires_grad_() for p in distiller.parameters()))
    try:
        torch.autograd.gradcheck(losses, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
    except GradcheckError as error:
        pytest.fail(f"{name}: outputs {term_names}, inputs {student_names + param_names}: {error}")


@pytest.mark.parametrize("name,config", KD_STRATEGIES, ids=KD_STRATEGY_IDS)
def test_each_term_moves_the_student_and_never_the_teacher(name, config):
    distiller = build_strategy(name, config)
    terms = list(distiller(*pair_outputs(3), strategy_labels(3)))
    for term in terms:
        student, teacher = pair_outputs(3)
        loss = distiller(student, teacher, strategy_labels(3))[term]
        assert loss.requires_grad, f"{term} is detached from the student"
        loss.backward()
        reached = [k for k, t in tensors(student).items() if t.grad is not None and t.grad.abs().sum() > 0]
        assert reached, f"{term} gives the student no gradient"
        touched = [k for k, t in tensors(teacher).items() if t.grad is not None]
        assert not touched, f"{term} sends gradients to the teacher's {touched}"
    distiller.zero_grad()
    sum(distiller(*pair_outputs(3), strategy_labels(3)).values()).backward()
    idle = [k for k, p in distiller.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not idle, f"connector parameters {idle} get no gradient"


def assert_finite(distiller, student, teacher, targets, case):
    terms = distiller(student, teacher, targets)
    sum(terms.values()).backward()
    bad = [k for k, v in terms.items() if not torch.isfinite(v)]
    grads = {k: t.grad for k, t in [*tensors(student).items(), *distiller.named_parameters()] if t.grad is not None}
    bad += [f"grad of {k}" for k, grad in grads.items() if not grad.isfinite().all()]
    assert not bad, f"{case}: not finite: {bad} ({ {k: v.item() for k, v in terms.items()} })"


def extreme_cases():
    """(name, config, margin, batch) for every strategy, times temperatures 0.5-8 where it has a temperature."""
    for (name, config), case_id in zip(KD_STRATEGIES, KD_STRATEGY_IDS):
        temperatures = [0.5, 1.0, 4.0, 8.0] if "temperature" in distiller_defaults(name) else [None]
        for temperature in temperatures:
            for margin in (0.0, 20.0, 100.0):
                for batch in (1, 2):
                    chosen = config if temperature is None else {**config, "temperature": temperature}
                    yield pytest.param(name, chosen, margin, batch,
                                       id=f"{case_id}-T={temperature}-margin={margin:g}-batch={batch}")


@pytest.mark.parametrize("name,config,margin,batch", list(extreme_cases()))
def test_losses_and_gradients_are_finite_at_large_margins(name, config, margin, batch):
    """float32; one class's logit raised by `margin` on each side: the target on both (confident and right), a
    non-target on the teacher (confident and wrong) or on the student."""
    distiller = build_strategy(name, config)
    targets = strategy_labels(batch)
    other = (targets + 1) % CLASSES
    generator = torch.Generator().manual_seed(1)
    for student_class, teacher_class in ((targets, targets), (targets, other), (other, targets)):
        raised = [torch.randn(batch, CLASSES, generator=generator) + margin * nn.functional.one_hot(c, CLASSES)
                  for c in (student_class, teacher_class)]
        distiller.zero_grad()
        assert_finite(distiller, *pair_outputs(batch, logits=raised), targets,
                      f"student raises {student_class.tolist()}, teacher {teacher_class.tolist()}")


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("fill", [0.0, 1.0])
@pytest.mark.parametrize("name,config", KD_STRATEGIES, ids=KD_STRATEGY_IDS)
def test_losses_and_gradients_are_finite_on_constant_inputs(name, config, fill, batch):
    """Every logit, rep and map value equal (all-equal logits; zero or identical samples: norms of 0, distances of
    0, maps without rhythm)."""
    distiller = build_strategy(name, config)
    assert_finite(distiller, *pair_outputs(batch, fill=fill), strategy_labels(batch), f"every value {fill}")


# ---- models ----

CHANNELS, STEPS = 6, 32
# Configs beyond the defaults that put other layer types in a model: MobileNet's heads with the Hopfield memory (and
# the linear/memory mix) and with attention pooling ("memory" and "mlp" add no layer type beyond these and the default
# linear head; each ONNX export takes seconds).
MODEL_VARIANTS = {"mobilenet_v3_1d": [{"head": "linear+memory"}, {"head": "attention"}]}
# Models that read another model's output instead of windows, and that model: TSAK's stage-2 semantic classifier
# reads the teacher's reps.
READS_OUTPUT_OF = {"tsak_semantic": "tsak_teacher"}
MODELS = [(name, {}) for name in model_names()] + [
    (name, config) for name, configs in MODEL_VARIANTS.items() for config in configs]
MODEL_IDS = [name + "".join(f"-{k}={v}" for k, v in config.items()) for name, config in MODELS]


def on_windows(name, config):
    """(windows (B, C, T) -> the model's ModelOutput, the model): the model itself, or the model after the one
    whose output it reads; in eval mode."""
    torch.manual_seed(0)
    upstream = READS_OUTPUT_OF.get(name)
    if upstream is None:
        model = build_model(name, CHANNELS, CLASSES, **config)
        return model.eval(), model
    first = build_model(upstream, CHANNELS, CLASSES)
    model = build_model(name, sum(first.rep_dims.values()), CLASSES, **config)
    return nn.Sequential(first, model).eval(), model


@pytest.mark.parametrize("name,config", MODELS, ids=MODEL_IDS)
def test_declared_rep_and_map_sizes_are_the_outputs(name, config):
    runner, model = on_windows(name, config)
    with torch.no_grad():
        out = runner(torch.randn(2, CHANNELS, STEPS))
    assert out.logits.shape == (2, CLASSES)
    assert all(v.shape == (2, CLASSES) for v in out.head_logits.values())
    assert {k: tuple(v.shape) for k, v in out.reps.items()} == {k: (2, d) for k, d in model.rep_dims.items()}
    assert {k: tuple(v.shape[:2]) for k, v in out.maps.items()} == {k: (2, c) for k, c in model.map_dims.items()}
    assert all(v.dim() == 3 and v.shape[2] >= 1 for v in out.maps.values())


@pytest.mark.parametrize("name,config", MODELS, ids=MODEL_IDS)
def test_every_layer_has_a_flop_rule(name, config):
    """count_flops raises on a layer with parameters and no rule (tests/test_cost.py checks that it does)."""
    runner, _ = on_windows(name, config)
    assert count_flops(runner, (1, CHANNELS, STEPS)) > 0


class Logits(nn.Module):
    def __init__(self, runner: nn.Module):
        super().__init__()
        self.runner = runner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x).logits


@pytest.mark.parametrize("name,config", MODELS, ids=MODEL_IDS)
def test_exports_to_onnx_with_a_dynamic_batch(name, config, tmp_path):
    """Exported from a batch of 2 (harkd.deploy's exporter), run by ONNX Runtime on a batch of 3."""
    module = Logits(on_windows(name, config)[0])
    to_onnx(module, torch.randn(2, CHANNELS, STEPS), tmp_path / "model.onnx", output_names=("logits",))
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, CHANNELS, STEPS)
    with torch.no_grad():
        expected = module(x).numpy()
    got = session.run(["logits"], {INPUT: x.numpy()})[0]
    assert got.shape == expected.shape and abs(got - expected).max() <= 1e-4
