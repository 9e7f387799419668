"""AEKD min-norm teacher weights: exactness against scipy and brute force, closed form, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from sdkd_pipeline.distill.minnorm import (
    ENUMERATION_MAX_TEACHERS,
    _solve_enumerate,
    _solve_two,
    min_norm_weights,
    min_norm_weights_pgd,
    min_norm_weights_torch,
    project_capped_simplex,
)
from sdkd_pipeline.errors import ConfigError

CAPS = (
    None,
    0.4,
    0.6,
    0.8,
    1.0,
)  # None stands for 1/M, where only the uniform weights are feasible
SEEDS = range(5)


def _caps(m: int) -> list[float]:
    """The caps of CAPS that are feasible for m teachers."""
    caps = [1.0 / m if cap is None else cap for cap in CAPS]
    return [cap for cap in caps if cap >= 1.0 / m]


def _gram(m: int, d: int, seed: int) -> np.ndarray:
    """Q = G G^T of m random gradients in d dimensions (singular when d < m)."""
    g = np.random.default_rng(seed).standard_normal((m, d))
    return g @ g.T


def _objective(q: np.ndarray, w: np.ndarray) -> float:
    return 0.5 * float(w @ q @ w)


def _assert_feasible(w: np.ndarray, cap: float, tol: float = 1e-9) -> None:
    assert w.dtype == np.float64
    assert abs(w.sum() - 1.0) <= tol
    assert np.all(w >= -tol)
    assert np.all(w <= min(cap, 1.0) + tol)


def _slsqp(fun, jac, m: int, cap: float) -> np.ndarray:
    """A general-purpose QP reference: SLSQP from the uniform weights, tight tolerance."""
    result = minimize(
        fun,
        np.full(m, 1.0 / m),
        jac=jac,
        method="SLSQP",
        bounds=[(0.0, min(cap, 1.0))] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return result.x


def _random_feasible(m: int, cap: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n feasible points, from the interior to the vertices: random vectors at several spreads,
    each projected onto the capped simplex (a vectorised bisection written independently of
    ``project_capped_simplex``)."""
    c = min(cap, 1.0)
    spreads = np.repeat([0.1, 1.0, 10.0], -(-n // 3))[:n, None]
    v = rng.standard_normal((n, m)) * spreads
    lo, hi = v.min(axis=1) - c, v.max(axis=1)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        above = np.clip(v - mid[:, None], 0.0, c).sum(axis=1) > 1.0
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    points = np.clip(v - hi[:, None], 0.0, c)  # sum <= 1 by a hair: rescale onto the plane
    points = np.minimum(points / points.sum(axis=1, keepdims=True), c)
    assert np.all(np.abs(points.sum(axis=1) - 1.0) < 1e-9)
    return points


# ----------------------------------------------------------------------------------------------
# Exactness
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 3, 10])
@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_matches_slsqp(m: int, d: int) -> None:
    for seed in SEEDS:
        q = _gram(m, d, 100 * m + 10 * d + seed)
        scale = float(np.max(np.diag(q)))
        eigenvalues = np.linalg.eigvalsh(q)
        positive_definite = eigenvalues[0] > 1e-3 * eigenvalues[-1]
        for cap in _caps(m):
            ours = min_norm_weights(q, cap)
            _assert_feasible(ours, cap)
            ref = _slsqp(lambda w, q=q: _objective(q, w), lambda w, q=q: q @ w, m, cap)
            assert _objective(q, ours) <= _objective(q, ref) + 1e-8 * scale, (seed, cap)
            if positive_definite:  # unique optimum: the weights themselves must agree
                np.testing.assert_allclose(ours, ref, atol=1e-5, err_msg=f"seed={seed} cap={cap}")


@pytest.mark.parametrize("m", [3, 4, 5, 6])
def test_not_beaten_by_random_feasible_points(m: int) -> None:
    rng = np.random.default_rng(m)
    for d in (1, 2, 10):
        q = _gram(m, d, 7 * m + d)
        scale = float(np.max(np.diag(q)))
        for cap in _caps(m):
            ours = _objective(q, min_norm_weights(q, cap))
            points = _random_feasible(m, cap, 3000, rng)
            others = 0.5 * np.einsum("si,ij,sj->s", points, q, points)
            assert ours <= others.min() + 1e-12 * scale, (d, cap)


def test_matches_projected_gradient() -> None:
    for m in (3, 5):
        for seed in range(3):
            q = _gram(m, 10, seed)
            for cap in _caps(m):
                exact = min_norm_weights(q, cap)
                pgd = min_norm_weights_pgd(q, cap, iters=20000)
                _assert_feasible(pgd, cap)
                np.testing.assert_allclose(exact, pgd, atol=1e-6)


def test_known_solutions_for_three_teachers() -> None:
    # Orthogonal gradients of equal norm: every teacher is equally informative.
    np.testing.assert_allclose(min_norm_weights(np.eye(3)), np.full(3, 1 / 3), atol=1e-12)
    # Orthogonal gradients: w_m proportional to 1 / |g_m|^2 = (4, 2, 1) / 7 ...
    q = np.diag([1.0, 2.0, 4.0])
    np.testing.assert_allclose(min_norm_weights(q), [4 / 7, 2 / 7, 1 / 7], atol=1e-12)
    # ... and with C = 0.5 the first sits at the cap; the other two keep their ratio 2 : 1.
    np.testing.assert_allclose(min_norm_weights(q, 0.5), [0.5, 1 / 3, 1 / 6], atol=1e-12)
    # Gradients that cancel: g3 = -(g1 + g2) / 2 with weights (1/4, 1/4, 1/2) gives norm zero.
    g = np.array([[1.0, 0.0], [0.0, 1.0], [-0.5, -0.5]])
    w = min_norm_weights(g @ g.T)
    assert _objective(g @ g.T, w) <= 1e-14
    np.testing.assert_allclose(w, [0.25, 0.25, 0.5], atol=1e-10)


def test_identical_gradients_give_uniform_weights_deterministically() -> None:
    # Every feasible point is optimal; the first active set (all free) gives the min-norm
    # weights, which are uniform, and repeated calls give the same answer.
    for m in (2, 3, 5):
        q = np.full((m, m), 3.0)
        for cap in _caps(m):
            w = min_norm_weights(q, cap)
            np.testing.assert_allclose(w, np.full(m, 1.0 / m), atol=1e-12)
            np.testing.assert_array_equal(w, min_norm_weights(q, cap))


def test_cap_equal_to_one_over_m_gives_uniform() -> None:
    for m in (2, 3, 4):
        q = _gram(m, 3, m)
        np.testing.assert_allclose(min_norm_weights(q, 1.0 / m), np.full(m, 1.0 / m))


def test_single_teacher_and_zero_gram() -> None:
    np.testing.assert_array_equal(min_norm_weights(np.array([[2.5]])), [1.0])
    np.testing.assert_array_equal(min_norm_weights(np.zeros((1, 1))), [1.0])
    np.testing.assert_allclose(min_norm_weights(np.zeros((4, 4)), 0.3), np.full(4, 0.25))


def test_many_teachers_fall_back_to_projected_gradient() -> None:
    m = ENUMERATION_MAX_TEACHERS + 2
    rng = np.random.default_rng(0)
    for d in (4, 30):
        q = _gram(m, d, d)
        scale = float(np.max(np.diag(q)))
        w = min_norm_weights(q, 0.3)
        _assert_feasible(w, 0.3)
        ref = _slsqp(lambda x, q=q: _objective(q, x), lambda x, q=q: q @ x, m, 0.3)
        assert _objective(q, w) <= _objective(q, ref) + 1e-6 * scale
        points = _random_feasible(m, 0.3, 300, rng)
        assert _objective(q, w) <= (0.5 * np.einsum("si,ij,sj->s", points, q, points)).min()


# ----------------------------------------------------------------------------------------------
# Two teachers: closed form
# ----------------------------------------------------------------------------------------------


def test_two_teacher_closed_form_matches_enumeration() -> None:
    for d in (1, 2, 5):
        for seed in range(20):
            q = _gram(2, d, seed)
            q = q / np.max(np.diag(q))
            for cap in (0.5, 0.6, 0.8, 1.0):
                closed = _solve_two(q, cap)
                enumerated = _solve_enumerate(q, cap)
                _assert_feasible(closed, cap)
                assert _objective(q, closed) <= _objective(q, enumerated) + 1e-14
                if d >= 2:  # Q positive definite: unique optimum
                    np.testing.assert_allclose(closed, enumerated, atol=1e-10)


def test_two_teachers_worked_example() -> None:
    # t* = (Q22 - Q12) / (Q11 - 2 Q12 + Q22) = 0.7 / 2.4 for the first weight.
    q = np.array([[2.0, 0.3], [0.3, 1.0]])
    np.testing.assert_allclose(min_norm_weights(q), [7 / 24, 17 / 24], atol=1e-14)
    # With C = 0.6 the second weight (17/24 > 0.6) is capped.
    np.testing.assert_allclose(min_norm_weights(q, 0.6), [0.4, 0.6], atol=1e-14)


def test_two_identical_gradients_any_split_is_optimal() -> None:
    g = np.array([[1.0, -2.0, 0.5]] * 2)
    q = g @ g.T
    w = min_norm_weights(q, 0.7)
    np.testing.assert_allclose(w, [0.5, 0.5])
    for t in (0.3, 0.45, 0.7):
        assert _objective(q, w) == pytest.approx(_objective(q, np.array([t, 1 - t])), rel=1e-14)


def test_two_opposite_gradients_cancel_evenly() -> None:
    g1 = np.array([0.3, -1.0, 2.0])
    q = np.stack([g1, -g1]) @ np.stack([g1, -g1]).T
    for cap in (0.5, 0.6, 1.0):
        w = min_norm_weights(q, cap)
        np.testing.assert_allclose(w, [0.5, 0.5], atol=1e-14)
        assert _objective(q, w) <= 1e-14


def test_zero_gradient_teacher_takes_all_it_may() -> None:
    # g1 = 0: f(t) = 1/2 (1 - t)^2 |g2|^2 falls all the way to t = 1, so w1 = min(C, 1).
    g = np.array([[0.0, 0.0], [1.0, 2.0]])
    q = g @ g.T
    for cap in (0.5, 0.6, 0.9):
        np.testing.assert_allclose(min_norm_weights(q, cap), [cap, 1 - cap], atol=1e-14)
    np.testing.assert_allclose(min_norm_weights(q, 1.0), [1.0, 0.0], atol=1e-14)
    np.testing.assert_allclose(min_norm_weights(q, 5.0), [1.0, 0.0], atol=1e-14)
    np.testing.assert_allclose(min_norm_weights(q[::-1, ::-1], 0.6), [0.4, 0.6], atol=1e-14)


def test_two_teachers_stay_within_cap() -> None:
    for seed in range(30):
        w = min_norm_weights(_gram(2, 1 + seed % 4, seed), 0.6)
        _assert_feasible(w, 0.6, tol=1e-15)
        assert np.all((w >= 0.4 - 1e-15) & (w <= 0.6 + 1e-15))


# ----------------------------------------------------------------------------------------------
# Scale invariance, input types
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 10])
def test_scale_invariance(d: int) -> None:
    for m in (2, 3, 5):
        for seed in SEEDS:
            q = _gram(m, d, seed)
            for cap in _caps(m):
                w = min_norm_weights(q, cap)
                for factor in (1e-12, 1e6):
                    np.testing.assert_allclose(min_norm_weights(factor * q, cap), w, atol=1e-9)


def test_torch_input_and_variant() -> None:
    g = torch.randn(3, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    gram = g @ g.T  # still attached to the graph: the solver detaches
    expected = min_norm_weights(gram.detach().numpy().astype(np.float64), 0.6)
    np.testing.assert_allclose(min_norm_weights(gram, 0.6), expected, atol=1e-6)
    w = min_norm_weights_torch(gram, 0.6)
    assert isinstance(w, torch.Tensor)
    assert w.dtype == torch.float32 and w.device == gram.device and w.shape == (3,)
    assert not w.requires_grad
    np.testing.assert_allclose(w.numpy(), expected, atol=1e-6)
    with pytest.raises(TypeError, match="torch.Tensor"):
        min_norm_weights_torch(gram.detach().numpy(), 0.6)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_variant_on_cuda() -> None:
    gram = torch.eye(3, device="cuda")
    w = min_norm_weights_torch(gram, 0.5)
    assert w.device == gram.device and w.dtype == torch.float32
    torch.testing.assert_close(w.cpu(), torch.full((3,), 1 / 3))


def test_tolerates_float32_asymmetry() -> None:
    q = _gram(3, 2, 0)
    noisy = q + 1e-7 * np.max(q) * np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(min_norm_weights(noisy), min_norm_weights(q), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_infeasible_cap_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"C=0\.3 .*2 teachers.*1/M = 0\.5"):
        min_norm_weights(np.eye(2), 0.3)
    with pytest.raises(ConfigError, match=r"cap C=0\.2 .*5 teachers"):
        min_norm_weights(np.eye(5), 0.2 - 1e-9)
    with pytest.raises(ConfigError, match="cap"):
        project_capped_simplex(np.zeros(4), 0.2)
    with pytest.raises(ConfigError, match="cap"):
        min_norm_weights_pgd(np.eye(3), 0.25)
    for bad in (float("nan"), "0.5", True, None):
        with pytest.raises(ConfigError, match="cap"):
            min_norm_weights(np.eye(2), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("gram", "match"),
    [
        (np.ones((2, 3)), r"square .*\(2, 3\)"),
        (np.ones(3), r"square .*\(3,\)"),
        (np.ones((2, 2, 2)), "square"),
        (np.zeros((0, 0)), "at least one"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
        (np.array([[np.inf, 0.0], [0.0, 1.0]]), "NaN or Inf"),
        (np.array([[1.0, 0.5], [0.0, 1.0]]), "not symmetric"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive semi-definite"),
    ],
)
def test_bad_gram_raises_value_error(gram: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        min_norm_weights(gram, 1.0)
    assert not isinstance(info.value, ConfigError)


# ----------------------------------------------------------------------------------------------
# Projection onto the capped simplex
# ----------------------------------------------------------------------------------------------


def test_projection_matches_slsqp() -> None:
    rng = np.random.default_rng(0)
    for m in (2, 3, 5, 8):
        for cap in _caps(m) + [0.3, 2.0]:
            if cap < 1.0 / m:
                continue
            for spread in (0.1, 1.0, 5.0):
                v = rng.standard_normal(m) * spread
                w = project_capped_simplex(v, cap)
                _assert_feasible(w, cap, tol=1e-12)
                ref = _slsqp(
                    lambda x, v=v: 0.5 * np.sum((x - v) ** 2), lambda x, v=v: x - v, m, cap
                )
                np.testing.assert_allclose(w, ref, atol=1e-6, err_msg=f"m={m} cap={cap}")


def test_projection_keeps_feasible_points_and_accepts_torch() -> None:
    w = np.array([0.1, 0.5, 0.4])
    np.testing.assert_allclose(project_capped_simplex(w, 0.5), w, atol=1e-12)
    np.testing.assert_allclose(project_capped_simplex(torch.tensor(w), 0.5), w, atol=1e-12)
    np.testing.assert_allclose(project_capped_simplex(np.array([5.0, 0.0, 0.0]), 1.0), [1, 0, 0])
    np.testing.assert_allclose(
        project_capped_simplex(np.array([5.0, 0.0, 0.0]), 0.6), [0.6, 0.2, 0.2]
    )
    with pytest.raises(ValueError, match="1-D"):
        project_capped_simplex(np.ones((2, 2)), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        project_capped_simplex(np.array([np.nan, 1.0]), 1.0)
