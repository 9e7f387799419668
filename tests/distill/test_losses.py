"""The distillation losses: KD terms, teacher weights, balancing, cached teachers, resume.

Teacher outputs are mostly handed to the loss as a cached batch target
(``{"y": y, "teachers": {name: {"prediction", "state"}}}``), so each test chooses them
exactly; the students are tiny (a learnable shift of a fixed field, or a small U-Net).

The band methods (``sdkd``, ``sdkd_latent``, ``sdkd_multi``) are tested in both weightings:
``advantage`` (the default: log-spaced bands weighted by the teacher's advantage, see
test_band_weights.py) and ``fixed`` (the paper's two-band ``D_high + alpha D_low`` at the cutoff).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sdkd_pipeline.distill import (
    METHODS,
    Balancer,
    DistillConfig,
    build_loss,
    camkd_weights,
    choose_cutoff,
    min_norm_weights,
)
from sdkd_pipeline.distill.losses import HIGH, LOW, DistillationLoss
from sdkd_pipeline.distill.teachers import WithTeacherTargets, freeze, precompute_teacher_outputs
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.models import build_model
from sdkd_pipeline.training import TrainConfig, load_checkpoint, train

B, T, C, H, W = 2, 3, 1, 16, 16
CUTOFF = 3.0
LATENT = 4  # channels of the shifted student's bottleneck and of the teacher's latent state
LATENT_HW = 8
TEACHERS = ("alpha_net", "beta_net", "gamma_net")
SHAPE = {"in_frames": T, "out_frames": T, "channels": C, "height": H, "width": W}
FIXED = {"weighting": "fixed"}

# every method but none, each band weighting, teacher weighting rule and gradient mode, and
# balanced lambda (balance.alpha is refused: test_config.py)
CASES: dict[str, tuple[str, dict]] = {
    "output_mse": ("output_mse", {}),
    "sdkd": ("sdkd", {}),
    "sdkd_whiten": ("sdkd", {"advantage": {"whiten": True}}),
    "sdkd_balanced": ("sdkd", {"balance": {"lambda": "loss_ratio"}}),
    "sdkd_fixed": ("sdkd", FIXED),
    "sdkd_fixed_balanced": ("sdkd", {**FIXED, "balance": {"lambda": "grad_ratio"}}),
    "sdkd_latent": ("sdkd_latent", {}),
    "sdkd_latent_fixed": ("sdkd_latent", {**FIXED, "latent": {"share": None, "weight": 0.5}}),
    "aver_mkd": ("aver_mkd", {}),
    "aekd": ("aekd", {}),
    "aekd_parameters": ("aekd", {"aekd": {"gradients": "parameters"}}),
    "camkd": ("camkd", {}),
    "sdkd_multi_aver": ("sdkd_multi", {"sdkd_multi": {"weighting": "aver"}}),
    "sdkd_multi_aekd": ("sdkd_multi", {"sdkd_multi": {"weighting": "aekd"}}),
    "sdkd_multi_camkd": ("sdkd_multi", {"sdkd_multi": {"weighting": "camkd"}}),
    "sdkd_multi_fixed_aver": ("sdkd_multi", {**FIXED, "sdkd_multi": {"weighting": "aver"}}),
    "sdkd_multi_fixed_aekd": ("sdkd_multi", {**FIXED, "sdkd_multi": {"weighting": "aekd"}}),
    "sdkd_multi_fixed_camkd": ("sdkd_multi", {**FIXED, "sdkd_multi": {"weighting": "camkd"}}),
    "sdkd_multi_balanced": ("sdkd_multi", {"balance": {"lambda": "grad_ratio"}}),
}
MULTI_CASES = [
    name
    for name, (method, _) in CASES.items()
    if method in ("aver_mkd", "aekd", "camkd", "sdkd_multi")
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _config(method: str, extra: dict | None = None, **shared) -> DistillConfig:
    params = {"cutoff": {"k": CUTOFF}, **shared}
    for key, value in (extra or {}).items():
        params[key] = {**params.get(key, {}), **value} if isinstance(value, dict) else value
    return DistillConfig.from_params(method, params)


def _loss(
    cfg: DistillConfig,
    *,
    n_teachers: int = 2,
    student: nn.Module | None = None,
    student_latent: int = LATENT,
    teacher_latent: int = LATENT,
    teachers: dict[str, nn.Module] | None = None,
) -> DistillationLoss:
    if teachers is None:
        names = TEACHERS[:n_teachers] if cfg.multi_teacher else TEACHERS[:1]
        teachers = {name: nn.Identity() for name in names}  # unused: targets carry outputs
    loss = build_loss(
        cfg,
        teachers,
        height=H,
        width=W,
        cutoff=choose_cutoff(cfg, H, W) if cfg.uses_cutoff else None,
        student_latent_channels=student_latent,
        teacher_latent_channels=teacher_latent,
        student_parameters=None if student is None else list(student.parameters()),
    )
    assert isinstance(loss, DistillationLoss)
    return loss


def _cached(
    y: torch.Tensor, predictions: dict[str, torch.Tensor], state: torch.Tensor | None = None
) -> dict:
    teachers = {}
    for name, prediction in predictions.items():
        teachers[name] = {"prediction": prediction}
        if state is not None:
            teachers[name]["state"] = state
    return {"y": y, "teachers": teachers}


def _standardized(state: torch.Tensor) -> torch.Tensor:
    """The teacher's state standardized per channel by its own (population) statistics: what
    the loss aligns the projected bottleneck with on its first batch."""
    mean = state.mean((0, 2, 3), keepdim=True)
    std = state.var((0, 2, 3), unbiased=False, keepdim=True).sqrt()
    return (state - mean) / std


class ShiftedStudent(nn.Module):
    """Predicts a fixed field plus a learnable (zero-initialised) shift field; its bottleneck
    is a learnable latent map, so every method has student parameters to send gradient to."""

    def __init__(self, base: torch.Tensor, latent: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("base", base.clone())
        self.shift = nn.Parameter(torch.zeros(base.shape[1:]))
        if latent is None:
            latent = torch.zeros(base.shape[0], LATENT, LATENT_HW, LATENT_HW)
        self.latent = nn.Parameter(latent.clone())

    def forward(self, x: torch.Tensor, return_features: bool = False):
        prediction = self.base + self.shift
        return (prediction, {"bottleneck": self.latent}) if return_features else prediction


def _identity_projector(loss: DistillationLoss) -> None:
    assert loss.projector is not None
    with torch.no_grad():
        loss.projector.weight.copy_(torch.eye(LATENT)[:, :, None, None])
        loss.projector.bias.zero_()


def _unet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("unet", **SHAPE, hidden=8, base_width=8)


def test_the_cases_cover_every_method_but_none():
    assert {method for method, _ in CASES.values()} == set(METHODS) - {"none"}
    assert build_loss(DistillConfig.from_params("none", {}), {}, height=H, width=W) is None
    with pytest.raises(ConfigError, match="none"):
        DistillationLoss(
            DistillConfig.from_params("none", {}), {"t": nn.Identity()}, height=H, width=W
        )


# --------------------------------------------------------------------------------------------
# 1. the KD term vanishes exactly when the student agrees with every teacher


@pytest.mark.parametrize("case", CASES)
def test_kd_is_zero_when_student_equals_every_teacher_and_positive_otherwise(case):
    method, extra = CASES[case]
    cfg = _config(method, extra)
    x, y = _randn(B, T, C, H, W, seed=1), _randn(B, T, C, H, W, seed=2)
    teacher = _randn(B, T, C, H, W, seed=3)
    state = 2.0 + 3.0 * _randn(B, LATENT, LATENT_HW, LATENT_HW, seed=4)  # not unit scale
    student = ShiftedStudent(teacher)
    loss = _loss(cfg, student=student)
    if cfg.needs_latents:
        # a bottleneck whose projection is the teacher's standardized state
        _identity_projector(loss)
        with torch.no_grad():
            student.latent.copy_(_standardized(state))
    agree = _cached(y, {name: teacher for name in loss.names}, state)

    total, components = loss(student, x, agree)
    total = total.detach()
    assert 0.0 <= float(components["kd"]) <= 1e-10, components
    latent_part = 0.0
    if cfg.needs_latents:
        assert 0.0 <= float(components["latent"]) <= 1e-10, components
        # the latent term keeps its weight (a share of the loss, or the fixed weight)
        latent_part = float(components["latent_weight"] * components["latent"])
    assert torch.isfinite(total)
    assert float(total) == pytest.approx(
        float(components["task"]) + latent_part, rel=1e-5, abs=1e-6
    )

    # the student differs from the teacher(s)
    with torch.no_grad():
        student.shift.copy_(0.3 * _randn(T, C, H, W, seed=6))
    _, components = loss(student, x, agree)
    assert float(components["kd"]) > 1e-3, components
    with torch.no_grad():
        student.shift.zero_()

    if cfg.multi_teacher:  # the teachers disagree: the student cannot equal both
        second = teacher + 0.3 * _randn(B, T, C, H, W, seed=7)
        disagree = _cached(y, {loss.names[0]: teacher, loss.names[1]: second})
        _, components = loss(student, x, disagree)
        assert float(components["kd"]) > 1e-4, components
    if cfg.needs_latents:  # the outputs agree, the latents do not: only the latent term grows
        with torch.no_grad():
            student.latent.add_(0.3 * _randn(*student.latent.shape, seed=8))
        _, components = loss(student, x, agree)
        assert float(components["kd"]) <= 1e-10, components
        assert float(components["latent"]) > 1e-3, components
        assert "latent_high" not in components and "latent_low" not in components


def test_latent_term_aligns_the_projection_with_the_standardized_teacher_state():
    loss = _loss(_config("sdkd_latent"))
    _identity_projector(loss)
    state = 5.0 + 20.0 * _randn(B, LATENT, LATENT_HW, LATENT_HW, seed=11)
    target = _standardized(state)
    components: dict = {}
    zero = loss._latent_term({"bottleneck": target}, {"state": state}, components).detach()
    assert 0.0 <= float(zero) <= 1e-10
    assert set(components) == {"latent"}
    # plain MSE against the standardized state: the raw state (scale 20) is far off
    torch.testing.assert_close(
        loss._latent_term({"bottleneck": state}, {"state": state}, {}).detach(),
        F.mse_loss(state, target),
        rtol=1e-4,
        atol=1e-6,
    )
    # the standardization removes the teacher's per-channel offset and scale
    fresh = _loss(_config("sdkd_latent"))
    _identity_projector(fresh)
    scaled = -3.0 + 0.01 * state
    assert float(fresh._latent_term({"bottleneck": target}, {"state": scaled}, {}).detach()) <= 1e-8
    # a student bottleneck on a coarser grid is interpolated to the teacher's
    coarse = loss._latent_term({"bottleneck": target[..., ::2, ::2]}, {"state": state}, {})
    assert torch.isfinite(coarse)
    with pytest.raises(ConfigError, match="bottleneck"):
        loss._latent_term({"other": target}, {"state": state}, {})


def test_latent_weight_is_fixed_without_a_share_and_is_the_share_otherwise():
    x, y = _randn(B, T, C, H, W, seed=13), _randn(B, T, C, H, W, seed=14)
    state = _randn(B, LATENT, LATENT_HW, LATENT_HW, seed=15)
    batch = _cached(y, {TEACHERS[0]: y + 0.5 * _randn(B, T, C, H, W, seed=16)}, state)
    student = ShiftedStudent(
        _randn(B, T, C, H, W, seed=17), _randn(B, LATENT, LATENT_HW, LATENT_HW, seed=18)
    )
    fixed = _loss(_config("sdkd_latent", {"latent": {"share": None, "weight": 0.5}}))
    total, parts = fixed(student, x, batch)
    total = total.detach()
    assert float(parts["latent_weight"]) == 0.5
    main = parts["task"] + parts["lambda"] * parts["kd"]
    assert float(total) == pytest.approx(float(main + 0.5 * parts["latent"]), rel=1e-5)
    for share in (0.2, 0.5):
        shared = _loss(_config("sdkd_latent", {"latent": {"share": share}}))
        total, parts = shared(student, x, batch)
        total = total.detach()
        # first batch: the running means are this batch's terms, so the share is exact
        assert float(parts["latent_share"]) == pytest.approx(share, rel=1e-5)
        latent = float(parts["latent_weight"] * parts["latent"])
        assert latent / float(total) == pytest.approx(share, rel=1e-5)


# --------------------------------------------------------------------------------------------
# 2. gradients reach the student (no detached averages)


def _output_parameters(model: nn.Module) -> set[str]:
    """Names of the parameters that change the output (float64 probe: conv biases right
    before a per-channel GroupNorm cancel out and get no gradient by construction)."""
    probe = copy.deepcopy(model).double()
    x = _randn(B, T, C, H, W, seed=21).double()
    out = probe(x)
    (out * _randn(*out.shape, seed=22).double()).sum().backward()
    names = {
        n
        for n, p in probe.named_parameters()
        if p.grad is not None and float(p.grad.abs().max()) > 1e-8
    }
    assert len(names) > len(list(probe.parameters())) // 2
    return names


def _student_batch(seed: int) -> tuple[torch.Tensor, dict]:
    x, y = _randn(B, T, C, H, W, seed=seed), _randn(B, T, C, H, W, seed=seed + 1)
    predictions = {
        name: y + 0.5 * _randn(B, T, C, H, W, seed=seed + 2 + i)
        for i, name in enumerate(TEACHERS[:2])
    }
    return x, _cached(y, predictions, _randn(B, 16, 8, 8, seed=seed + 5))


@pytest.mark.parametrize("case", CASES)
def test_total_and_kd_loss_send_finite_nonzero_gradient_to_every_student_parameter(case):
    method, extra = CASES[case]
    student = _unet()
    relevant = _output_parameters(student)
    x, batch = _student_batch(seed=30)
    grads = {}
    for lam in (0.0, 2.0):
        cfg = _config(method, extra, **{"lambda": lam})
        torch.manual_seed(1)  # the same projector for both
        loss = _loss(cfg, student=student, student_latent=8, teacher_latent=16)
        student.zero_grad(set_to_none=True)
        total, components = loss(student, x, batch)
        assert torch.isfinite(total)
        total.backward()
        grads[lam] = {
            n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None
        }
        if cfg.needs_latents:
            # the latent term has its own weight (not lambda): the projector always learns
            projector = list(loss.parameters())
            assert len(projector) == 2
            for param in projector:
                assert param.grad is not None and torch.isfinite(param.grad).all()
                assert float(param.grad.abs().max()) > 0
    for name in relevant:
        full = grads[2.0][name]
        assert torch.isfinite(full).all(), name
        assert float(full.abs().max()) > 0, name
        # the KD term alone (lambda 2 minus lambda 0) reaches the parameter too
        kd_part = full - grads[0.0][name]
        assert float(kd_part.abs().max()) > 1e-9, name


def _reference_kd(
    loss: DistillationLoss,
    g: torch.Tensor,
    target: torch.Tensor,
    preds: torch.Tensor,
    components: dict,
) -> torch.Tensor:
    """The KD term rebuilt from its definition with detached weights, for autograd."""
    names = loss.names
    cfg = loss.cfg
    if cfg.method in ("aver_mkd", "aekd"):
        return sum(
            components[f"w_{n}"] * F.mse_loss(g, p) for n, p in zip(names, preds, strict=True)
        )
    if cfg.method == "camkd":
        errors = (preds - target[None]).square().flatten(2).mean(-1)
        weights = camkd_weights(errors, cfg.camkd_temperature)
        per_sample = (g[None] - preds).square().flatten(2).mean(-1)
        return (weights * per_sample).sum(0).mean()
    # sdkd_multi: band b of teacher m weighted by the rule's w_mb, then the band by w_b
    # (advantage: the logged w_band<b>; fixed: 1 for the high band, alpha for the low one)
    split = loss.split
    bands = range(split.n_bands)
    if cfg.weighting == "advantage":
        scale = {b: components[f"w_band{b}"] for b in bands}

        def teacher_weight(n: str, b: int) -> torch.Tensor:
            return components[f"w_band{b}_{n}"]
    else:
        assert split.n_bands == 2
        scale = {HIGH: 1.0, LOW: components["alpha"]}

        def teacher_weight(n: str, b: int) -> torch.Tensor:
            return components[f"w_{'high' if b == HIGH else 'low'}_{n}"]

    total = 0.0
    if cfg.band_weighting == "camkd":  # per-sample weights
        for b in bands:
            errors = torch.stack([split.band_mse_per_sample(p, target)[:, b] for p in preds])
            weights = camkd_weights(errors, cfg.camkd_temperature)
            dist = torch.stack([split.band_mse_per_sample(g, p)[:, b] for p in preds])
            total = total + scale[b] * (weights * dist).sum(0).mean()
        return total
    for n, p in zip(names, preds, strict=True):
        distance = split.band_mse(g, p)
        total = total + sum(scale[b] * teacher_weight(n, b) * distance[b] for b in bands)
    return total


@pytest.mark.parametrize("case", [c for c in MULTI_CASES if c != "aekd_parameters"])
def test_multi_teacher_kd_gradient_is_the_weighted_sum_of_the_teachers_gradients(case):
    method, extra = CASES[case]
    loss = _loss(_config(method, extra, alpha=0.7))
    target = _randn(B, T, C, H, W, seed=40)
    # teachers of unlike quality, both closer to the truth than the student (in every band:
    # white errors), so the advantage weighting distils every band
    preds = torch.stack(
        [
            target + 0.2 * _randn(B, T, C, H, W, seed=41),
            target + 0.4 * _randn(B, T, C, H, W, seed=42),
        ]
    )
    g = (target + 0.5 * _randn(B, T, C, H, W, seed=43)).requires_grad_(True)
    components: dict = {}
    kd = loss._kd_term(g, target, None, preds, components)
    (grad,) = torch.autograd.grad(kd, g)
    g_ref = g.detach().clone().requires_grad_(True)
    ref = _reference_kd(loss, g_ref, target, preds, components)
    (grad_ref,) = torch.autograd.grad(ref, g_ref)
    assert float(kd.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    assert float(grad.abs().max()) > 0
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-9)
    if loss.advantage is not None:  # sdkd_multi's default weighting: no alpha, no cutoff
        assert loss.cutoff is None and loss.split.n_bands == 3
        assert all(float(components[f"w_band{b}"]) > 0 for b in range(3)), components
        assert "alpha" not in components and "kd_high" not in components


def test_aekd_parameter_gradients_keep_the_graph_for_the_final_backward():
    student = ShiftedStudent(_randn(B, T, C, H, W, seed=50))
    loss = _loss(_config("aekd", {"aekd": {"gradients": "parameters"}}), student=student)
    x, y = _randn(B, T, C, H, W, seed=51), _randn(B, T, C, H, W, seed=52)
    batch = _cached(
        y, {n: y + _randn(B, T, C, H, W, seed=53 + i) for i, n in enumerate(loss.names)}
    )
    total, components = loss(student, x, batch)
    total.backward()
    assert float(student.shift.grad.abs().max()) > 0
    weights = [float(components[f"w_{n}"]) for n in loss.names]
    assert sum(weights) == pytest.approx(1.0, abs=1e-6)
    assert all(0.4 - 1e-6 <= w <= 0.6 + 1e-6 for w in weights)

    no_params = _loss(_config("aekd", {"aekd": {"gradients": "parameters"}}))
    with pytest.raises(ConfigError, match="parameters"):
        no_params(student, x, batch)


# --------------------------------------------------------------------------------------------
# 3. CA-MKD weights


def test_camkd_weights_favour_the_more_accurate_teacher_per_sample():
    errors = torch.tensor([[0.1, 2.0, 1.0], [1.0, 0.5, 1.0]])  # (M=2, B=3)
    weights = camkd_weights(errors, temperature=0.5)
    assert weights.shape == errors.shape
    torch.testing.assert_close(weights.sum(0), torch.ones(3))
    assert weights[0, 0] > weights[1, 0]  # teacher 0 better on sample 0
    assert weights[1, 1] > weights[0, 1]  # teacher 1 better on sample 1
    assert float(weights[0, 2]) == pytest.approx(0.5)  # equal errors: uniform
    assert ((weights >= 0) & (weights <= 1)).all()

    three = camkd_weights(torch.tensor([[0.1], [0.5], [2.0]]), temperature=1.0)
    assert float(three.sum()) == pytest.approx(1.0)
    assert three[0, 0] > three[1, 0] > three[2, 0]
    torch.testing.assert_close(
        camkd_weights(torch.full((3, 4), 7.0), 0.5), torch.full((3, 4), 1 / 3)
    )
    torch.testing.assert_close(camkd_weights(torch.zeros(2, 4), 0.5), torch.full((2, 4), 0.5))
    assert torch.equal(camkd_weights(torch.rand(1, 4), 0.5), torch.ones(1, 4))


def test_camkd_weights_do_not_depend_on_the_error_scale():
    errors = torch.tensor([[1.0, 3.0], [2.0, 1.0]])
    tiny = errors * 1e-6
    weights = camkd_weights(tiny, temperature=0.5)
    torch.testing.assert_close(weights, camkd_weights(errors, temperature=0.5))
    assert float((weights[0] - weights[1]).abs().min()) > 0.1  # far from uniform
    # a plain softmax over the raw errors is uniform to 1e-6: the failure being avoided
    plain = 1 - torch.softmax(tiny, dim=0)
    assert float((plain - 0.5).abs().max()) < 1e-5
    # a lower temperature sharpens the weights
    sharp = camkd_weights(errors, temperature=0.1)
    assert float(sharp[0, 0]) > float(weights[0, 0]) > 0.5


@pytest.mark.parametrize("case", ["camkd", "sdkd_multi_camkd", "sdkd_multi_fixed_camkd"])
def test_camkd_loss_weights_the_teacher_equal_to_the_truth_higher(case):
    method, extra = CASES[case]
    loss = _loss(_config(method, extra))
    x, y = _randn(B, T, C, H, W, seed=60), _randn(B, T, C, H, W, seed=61)
    good, bad = loss.names
    batch = _cached(y, {good: y.clone(), bad: y + 0.5 * _randn(B, T, C, H, W, seed=62)})
    student = ShiftedStudent(_randn(B, T, C, H, W, seed=63))
    _, components = loss(student, x, batch)
    if method == "camkd":
        bands = [""]
    elif loss.cfg.weighting == "fixed":
        bands = ["low_", "high_"]
    else:
        bands = [f"band{b}_" for b in range(loss.split.n_bands)]
        assert len(bands) == 3
    for band in bands:
        assert float(components[f"w_{band}{good}"]) > float(components[f"w_{band}{bad}"])
        total = components[f"w_{band}{good}"] + components[f"w_{band}{bad}"]
        assert float(total) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# 4. AEKD weights


def _aekd_case(residual_scales: tuple[float, float], shared: float, seed: int, cap: float = 0.6):
    """Two teachers whose residuals G - F_m are s_m (shared * u + v_m), u, v_m white noise."""
    loss = _loss(_config("aekd", {"aekd": {"cap": cap}}))
    g = _randn(B, T, C, H, W, seed=seed)
    common = _randn(B, T, C, H, W, seed=seed + 1)
    own = [_randn(B, T, C, H, W, seed=seed + 2 + i) for i in range(2)]
    preds = [g - s * (shared * common + o) for s, o in zip(residual_scales, own, strict=True)]
    batch = _cached(g, dict(zip(loss.names, preds, strict=True)))
    _, components = loss(ShiftedStudent(g), g, batch)
    weights = np.array([float(components[f"w_{n}"]) for n in loss.names])
    flat = torch.stack([(g - p).double().flatten() for p in preds])
    return weights, min_norm_weights(flat @ flat.T, cap)


@pytest.mark.parametrize(
    ("scales", "shared", "binding"),
    [
        ((1.0, 1.0), 3.0, False),  # alike: about even
        ((1.0, 1.1), 0.0, False),  # orthogonal: 1.21 / 2.21 inside the cap
        ((1.0, 1.3), 3.0, True),  # nearly parallel: the smaller gradient takes the cap
        ((3.0, 0.2), 0.0, True),
    ],
)
def test_aekd_weights_are_the_capped_min_norm_point_of_the_output_gradients(
    scales, shared, binding
):
    weights, expected = _aekd_case(scales, shared, seed=70)
    assert weights.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.all(weights >= 0.4 - 1e-6) and np.all(weights <= 0.6 + 1e-6)
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    # the smaller gradient gets the larger weight; a lopsided pair hits the cap
    if scales[0] != scales[1]:
        assert (weights[0] > weights[1]) == (scales[0] < scales[1])
    assert (abs(weights.max() - 0.6) < 1e-6) == binding


def test_aekd_cap_changes_the_weights_and_one_allows_a_single_teacher():
    weights, expected = _aekd_case((0.2, 3.0), 0.0, seed=75, cap=1.0)
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    assert weights[0] > 0.6


@pytest.mark.parametrize(
    ("method", "extra", "n", "cap"),
    [
        ("aekd", {}, 2, 0.4),
        ("aekd", {"aekd": {"gradients": "parameters"}}, 3, 0.3),
        ("sdkd_multi", {"sdkd_multi": {"weighting": "aekd"}}, 3, 0.3),
    ],
)
def test_aekd_cap_below_one_over_m_is_refused(method, extra, n, cap):
    extra = {**extra, "aekd": {**extra.get("aekd", {}), "cap": cap}}
    with pytest.raises(ConfigError, match=r"distill\.aekd\.cap"):
        _loss(_config(method, extra), n_teachers=n)
    # the cap is not checked for rules that do not use it
    _loss(_config("camkd", {"aekd": {"cap": cap}}), n_teachers=n)


# --------------------------------------------------------------------------------------------
# 5. Parseval: the band split of the MSE adds up


def _total(loss: DistillationLoss, student: nn.Module, x, batch) -> float:
    total, _ = loss(student, x, batch)
    return float(total.detach())


def test_sdkd_fixed_with_alpha_one_is_output_mse_and_aver_mkd_of_identical_teachers_too():
    x, y = _randn(B, T, C, H, W, seed=80), _randn(B, T, C, H, W, seed=81)
    teacher = _randn(B, T, C, H, W, seed=82)
    student = ShiftedStudent(_randn(B, T, C, H, W, seed=83))
    single = _cached(y, {TEACHERS[0]: teacher})
    reference = _total(_loss(_config("output_mse")), student, x, single)
    with torch.no_grad():
        by_hand = F.mse_loss(student(x), y) + F.mse_loss(student(x), teacher)
    assert reference == pytest.approx(float(by_hand), rel=1e-6)
    for k in (1.0, 3.0, 6.5):
        sdkd = _loss(_config("sdkd", FIXED, cutoff={"k": k}, alpha=1.0, **{"lambda": 1.0}))
        assert sdkd.split.n_bands == 2 and sdkd.advantage is None
        assert _total(sdkd, student, x, single) == pytest.approx(reference, rel=1e-5)
    both = _cached(y, {TEACHERS[0]: teacher, TEACHERS[1]: teacher.clone()})
    assert _total(_loss(_config("aver_mkd")), student, x, both) == pytest.approx(
        reference, rel=1e-6
    )
    # any weights summing to one: identical teachers make every multi-teacher rule one teacher
    for method in ("aekd", "camkd"):
        assert _total(_loss(_config(method)), student, x, both) == pytest.approx(
            reference, rel=1e-6
        )
    multi = _loss(_config("sdkd_multi", {**FIXED, "sdkd_multi": {"weighting": "aver"}}))
    assert _total(multi, student, x, both) == pytest.approx(reference, rel=1e-5)
    # alpha scales the low band only
    sdkd = _loss(_config("sdkd", FIXED, alpha=0.0))
    _, components = sdkd(student, x, single)
    assert float(components["kd"]) == pytest.approx(float(components["kd_high"]))
    assert float(components["kd_high"] + components["kd_low"]) == pytest.approx(
        reference - float(components["task"]), rel=1e-5
    )


def test_advantage_bands_add_up_to_output_kd_and_identical_teachers_act_as_one():
    x, y = _randn(B, T, C, H, W, seed=84), _randn(B, T, C, H, W, seed=85)
    teacher = y + 0.3 * _randn(B, T, C, H, W, seed=86)
    student = ShiftedStudent(_randn(B, T, C, H, W, seed=87))
    single = _cached(y, {TEACHERS[0]: teacher})
    sdkd = _loss(_config("sdkd", bands=4))
    assert sdkd.split.n_bands == 4 and sdkd.cutoff is None
    total, components = sdkd(student, x, single)
    total = total.detach()
    with torch.no_grad():
        distance = F.mse_loss(student(x), teacher)
    # Parseval: the band distances add up to the output KD distance
    assert sum(float(components[f"kd_band{b}"]) for b in range(4)) == pytest.approx(
        float(distance), rel=1e-5
    )
    weights = torch.stack([components[f"w_band{b}"] for b in range(4)])
    bands = torch.stack([components[f"kd_band{b}"] for b in range(4)])
    assert float(components["kd"]) == pytest.approx(float((weights * bands).sum()), rel=1e-5)
    assert float(total) == pytest.approx(float(components["task"] + components["kd"]), rel=1e-6)
    # two copies of the teacher, weighted by any rule, are that teacher (same weights too)
    both = _cached(y, {TEACHERS[0]: teacher, TEACHERS[1]: teacher.clone()})
    for rule in ("aver", "aekd", "camkd"):
        multi = _loss(_config("sdkd_multi", {"sdkd_multi": {"weighting": rule}}, bands=4))
        multi_total, parts = multi(student, x, both)
        assert float(multi_total.detach()) == pytest.approx(float(total), rel=1e-5), rule
        for b in range(4):
            assert float(parts[f"w_band{b}"]) == pytest.approx(
                float(weights[b]), rel=1e-5, abs=1e-7
            )
            pair = parts[f"w_band{b}_{TEACHERS[0]}"] + parts[f"w_band{b}_{TEACHERS[1]}"]
            assert float(pair) == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------------------------
# 6. the balancer


def test_balancer_fixed_returns_one():
    balancer = Balancer("fixed", 0.9, 1e-3, 1e3)
    for value in (0.0, 5.0, 1e9):
        assert float(balancer(torch.tensor(value), torch.tensor(2.0))) == 1.0
    assert balancer.state_dict() == {"num": None, "den": None, "steps": 0}


def test_balancer_ratio_converges_and_grad_ratio_is_its_square_root():
    loss_ratio = Balancer("loss_ratio", 0.9, 1e-3, 1e3)
    grad_ratio = Balancer("grad_ratio", 0.9, 1e-3, 1e3)
    for _ in range(5):
        a = loss_ratio(torch.tensor(6.0), torch.tensor(1.5))
        b = grad_ratio(torch.tensor(6.0), torch.tensor(1.5))
    assert float(a) == pytest.approx(4.0, rel=1e-6)
    assert float(b) == pytest.approx(2.0, rel=1e-6)
    # running means: a step change moves the ratio gradually towards the new ratio
    values = [float(loss_ratio(torch.tensor(1.0), torch.tensor(1.0))) for _ in range(200)]
    assert 1.0 < values[0] < 4.0 and values[0] > values[1] > values[10]
    assert values[-1] == pytest.approx(1.0, rel=1e-6)
    # the inputs are detached: the factor carries no gradient
    num = torch.tensor(3.0, requires_grad=True)
    assert not loss_ratio(num, torch.tensor(1.0)).requires_grad


def test_balancer_first_step_and_running_mean_match_a_hand_computed_ema():
    balancer = Balancer("loss_ratio", 0.5, 1e-3, 1e3)
    pairs = [(2.0, 1.0), (4.0, 4.0), (1.0, 3.0)]
    num = den = 0.0
    for a, b in pairs:
        num, den = 0.5 * num + 0.5 * a, 0.5 * den + 0.5 * b
        assert float(balancer(torch.tensor(a), torch.tensor(b))) == pytest.approx(
            num / den, rel=1e-6
        )


def test_balancer_is_clamped_to_its_bounds():
    high = Balancer("loss_ratio", 0.9, 0.01, 100.0)
    assert float(high(torch.tensor(1e6), torch.tensor(1.0))) == pytest.approx(100.0)
    low = Balancer("grad_ratio", 0.9, 0.01, 100.0)
    assert float(low(torch.tensor(1.0), torch.tensor(1e8))) == pytest.approx(0.01)
    zero = Balancer("loss_ratio", 0.9, 0.01, 100.0)
    assert float(zero(torch.tensor(1.0), torch.tensor(0.0))) == pytest.approx(100.0)
    assert float(zero(torch.tensor(0.0), torch.tensor(0.0))) <= 100.0


def test_balancer_state_round_trip_continues_identically():
    first = Balancer("grad_ratio", 0.8, 1e-3, 1e3)
    inputs = [
        (torch.tensor(float(a)), torch.tensor(float(b)))
        for a, b in zip(_randn(8, seed=90).exp(), _randn(8, seed=91).exp(), strict=True)
    ]
    for a, b in inputs[:3]:
        first(a, b)
    state = first.state_dict()
    assert all(isinstance(state[k], float) for k in ("num", "den")) and state["steps"] == 3
    second = Balancer("grad_ratio", 0.8, 1e-3, 1e3)
    second.load_state_dict(state)
    for a, b in inputs[3:]:
        assert torch.equal(first(a, b), second(a, b))
    assert first.state_dict() == second.state_dict()
    fresh = Balancer("grad_ratio", 0.8, 1e-3, 1e3)
    fresh.load_state_dict(Balancer("grad_ratio", 0.8, 1e-3, 1e3).state_dict())
    assert fresh.num is None and fresh.steps == 0


def _assert_same_state(left, right, where: str = "state") -> None:
    """Nested loss states (dicts of tensors, floats, None) are equal, tensors bit for bit."""
    if isinstance(left, dict):
        assert left.keys() == right.keys(), where
        for key in left:
            _assert_same_state(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, torch.Tensor):
        assert torch.equal(left, right), where
    else:
        assert left == right, where


@pytest.mark.parametrize(
    "case", ["sdkd_latent", "sdkd_fixed_balanced", "sdkd_multi_balanced", "sdkd_whiten"]
)
def test_loss_state_round_trips_and_continues_identically(case):
    method, extra = CASES[case]
    cfg = _config(method, extra, balance={"lambda": "grad_ratio"})
    torch.manual_seed(3)
    first = _loss(cfg)
    x, y = _randn(B, T, C, H, W, seed=95), _randn(B, T, C, H, W, seed=96)
    batch = _cached(
        y,
        {
            name: y + (i + 1) * 0.3 * _randn(B, T, C, H, W, seed=97 + i)
            for i, name in enumerate(first.names)
        },
        _randn(B, LATENT, 8, 8, seed=99),
    )
    student = ShiftedStudent(_randn(B, T, C, H, W, seed=100))
    first(student, x, batch)
    first(student, x, {**batch, "y": y.flip(0)})
    state = first.state_dict()
    assert (state["advantage"] is None) == (cfg.weighting == "fixed")
    torch.manual_seed(4)  # another projector: restored from the state
    second = _loss(cfg)
    second.load_state_dict(copy.deepcopy(state))
    _assert_same_state(second.state_dict(), state)
    a, ca = first(student, x, batch)
    b, cb = second(student, x, batch)
    assert torch.equal(a, b) and ca.keys() == cb.keys()
    for key in ca:
        assert torch.equal(ca[key], cb[key]), key
    assert float(ca["lambda"]) != 1.0  # balanced
    if cfg.weighting == "advantage":
        assert {f"w_band{b}" for b in range(3)} <= ca.keys()
    _assert_same_state(first.state_dict(), second.state_dict())


# --------------------------------------------------------------------------------------------
# 7. cached and online teacher outputs


class Exploding(nn.Module):
    def forward(self, x):  # pragma: no cover - must not run
        raise AssertionError("the cached path ran a teacher")


@pytest.mark.parametrize(
    "case", ["sdkd", "sdkd_fixed", "sdkd_latent", "camkd", "sdkd_multi_aekd", "aekd_parameters"]
)
def test_cached_and_online_teacher_outputs_give_the_same_loss_and_gradients(case):
    method, extra = CASES[case]
    cfg = _config(method, extra)
    torch.manual_seed(0)
    shape = dict(SHAPE)
    teachers = {
        "st_alternet": freeze(
            build_model(
                "st_alternet",
                **shape,
                hidden=16,
                depth=1,
                heads=2,
                frame_hidden=8,
                spatial_layers=2,
            )
        ),
        "simvp": freeze(
            build_model("simvp", **shape, frame_hidden=8, hidden=16, spatial_layers=2, depth=2)
        ),
    }
    if not cfg.multi_teacher:
        teachers = {"st_alternet": teachers["st_alternet"]}
    data = TensorDataset(_randn(8, T, C, H, W, seed=110), _randn(8, T, C, H, W, seed=111))
    cache = precompute_teacher_outputs(
        teachers, data, latents=cfg.needs_latents, batch_size=4, device=torch.device("cpu")
    )
    cached_data = WithTeacherTargets(data, cache)
    x, target = next(iter(DataLoader(cached_data, batch_size=4, shuffle=False)))
    assert torch.equal(x, data.tensors[0][:4]) and torch.equal(target["y"], data.tensors[1][:4])

    results = []
    for path in ("cached", "online"):
        student = _unet()
        torch.manual_seed(5)  # the same projector
        used = teachers if path == "online" else {n: Exploding() for n in teachers}
        loss = _loss(cfg, student=student, student_latent=8, teacher_latent=16, teachers=used)
        total, components = loss(student, x, target if path == "cached" else target["y"])
        total.backward()
        grads = [p.grad.clone() for p in student.parameters() if p.grad is not None]
        grads += [p.grad.clone() for p in loss.parameters()]
        results.append((total.detach(), components, grads))
    (a, ca, ga), (b, cb, gb) = results
    assert torch.equal(a, b)  # same eval-mode forward on the same windows: same bits
    assert ca.keys() == cb.keys()
    for key in ca:
        torch.testing.assert_close(ca[key], cb[key], rtol=1e-6, atol=1e-9)
    assert len(ga) == len(gb) > 0
    for left, right in zip(ga, gb, strict=True):
        torch.testing.assert_close(left, right, rtol=1e-5, atol=1e-9)


def test_loss_rejects_a_student_output_of_another_shape():
    loss = _loss(_config("output_mse"))
    y = _randn(B, T, C, H, W, seed=120)
    student = ShiftedStudent(_randn(B, T, C, H, W - 1, seed=121))
    with pytest.raises(ValueError, match="differs from target shape"):
        loss(student, y, _cached(y, {TEACHERS[0]: y}))


# --------------------------------------------------------------------------------------------
# 8. resuming a killed distillation run ends bit-identical


class FailOnce:
    """A loss that raises on its ``fail_at``-th call (a crash mid-epoch), else delegates."""

    def __init__(self, inner: DistillationLoss, fail_at: int) -> None:
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def __call__(self, model, x, y):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        return self.inner(model, x, y)

    def __getattr__(self, name):  # to, parameters, state_dict, load_state_dict
        return getattr(self.inner, name)


def test_resumed_distillation_run_ends_bit_identical(tmp_path):
    torch.manual_seed(0)
    teacher = freeze(
        build_model(
            "st_alternet", **SHAPE, hidden=16, depth=1, heads=2, frame_hidden=8, spatial_layers=2
        )
    )
    x = _randn(12, T, C, H, W, seed=130)
    train_set = TensorDataset(x, x.flip(1) + 0.1 * _randn(12, T, C, H, W, seed=131))
    xv = _randn(4, T, C, H, W, seed=132)
    val_set = TensorDataset(xv, xv.flip(1))
    cfg = _config("sdkd_latent", balance={"lambda": "grad_ratio"})
    train_cfg = TrainConfig(
        epochs=2,
        batch_size=4,
        lr=1e-3,
        seed=0,
        device="cpu",
        patience=None,
        checkpoint_every_steps=1,
    )

    def fresh(seed: int) -> tuple[nn.Module, DistillationLoss]:
        torch.manual_seed(seed)
        student = build_model("unet", **SHAPE, hidden=8, base_width=8)
        return student, _loss(
            cfg,
            student=student,
            student_latent=8,
            teacher_latent=16,
            teachers={"st_alternet": teacher},
        )

    student_a, loss = fresh(0)
    whole = train(
        student_a,
        train_set,
        val_set,
        train_cfg,
        out_dir=tmp_path / "whole",
        loss=loss,
        progress=False,
    )

    student, loss = fresh(0)
    crashing = FailOnce(loss, fail_at=5)  # step 2 of epoch 2 (3 steps per epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(
            student,
            train_set,
            val_set,
            train_cfg,
            out_dir=tmp_path / "resumed",
            loss=crashing,
            progress=False,
        )
    state = load_checkpoint(tmp_path / "resumed" / "last.pt")["state"]
    assert (state["epochs_done"], state["step_in_epoch"]) == (1, 1)

    student_b, loss_b = fresh(7)  # other initial weights and projector: all must be restored
    resumed = train(
        student_b,
        train_set,
        val_set,
        train_cfg,
        out_dir=tmp_path / "resumed",
        loss=loss_b,
        progress=False,
    )
    assert resumed.resumed_from_epoch == 1

    a = load_checkpoint(tmp_path / "whole" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    # every part of the loss's state: projector, balancers, band advantage, running means
    _assert_same_state(a["loss_state"], b["loss_state"], "loss_state")
    assert a["loss_state"]["lambda_balance"]["steps"] > 0
    assert a["loss_state"]["advantage"]["distance"]["weight"] > 0
    assert a["loss_state"]["running"]["latent_mean"]["value"] is not None
    for index, slot in a["optimizer"]["state"].items():
        for key, value in slot.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(b["optimizer"]["state"][index][key])
            ), key
    for left, right in zip(whole.history, resumed.history, strict=True):
        assert {k: v for k, v in left.items() if k != "time_s"} == {
            k: v for k, v in right.items() if k != "time_s"
        }
    last = whole.history[-1]
    assert {"train_kd", "train_latent", "train_latent_share", "train_w_band0"} <= last.keys()
    assert whole.best_val_loss == resumed.best_val_loss
    for (name, p), q in zip(student_a.named_parameters(), student_b.parameters(), strict=True):
        assert torch.equal(p, q), name
