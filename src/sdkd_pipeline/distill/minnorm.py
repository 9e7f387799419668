"""AEKD teacher weights: the minimum-norm point of the teachers' gradients, solved exactly.

AEKD (Du et al., NeurIPS 2020, "Agree to Disagree") weights the M teachers' distillation losses
by the convex combination of their loss gradients g_m that has the least norm, with each weight
capped at C so that no single teacher takes over:

    min_w 1/2 w^T Q w   s.t.  sum_m w_m = 1,  0 <= w_m <= C,      Q = G G^T (M x M).

Q is a Gram matrix, so it is symmetric positive semi-definite and singular whenever the
gradients are linearly dependent (always when M exceeds the gradient dimension). The problem is
feasible only when C >= 1/M. M is tiny (a handful of teachers), so rather than an iterative
solver whose answer depends on a step size and an iteration count, ``min_norm_weights`` solves
the QP exactly: a closed form for two teachers and an enumeration of active sets up to eight.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError

__all__ = [
    "ENUMERATION_MAX_TEACHERS",
    "min_norm_weights",
    "min_norm_weights_pgd",
    "min_norm_weights_torch",
    "project_capped_simplex",
]

# Active-set enumeration visits up to 3^M sets (6561 at M = 8, well under a second); above that
# the projected-gradient solver is used instead.
ENUMERATION_MAX_TEACHERS = 8

# A candidate counts as feasible when it breaks a bound or the sum by at most this much (Q is
# normalised to a unit largest diagonal first, so the tolerance is relative).
_FEASIBILITY_TOL = 1e-10
# Candidates within this of the least objective count as tied and the first one (in enumeration
# order) wins, so that between several optimal vertices (singular Q) the answer is
# deterministic rather than decided by rounding.
_TIE_TOL = 1e-14
# Relative tolerance of the symmetry and positive semi-definiteness checks: loose enough for a
# Gram matrix accumulated in float32 on a GPU, tight enough to catch a matrix that is not one.
_MATRIX_RTOL = 1e-4
# Slack on the feasibility bound C >= 1/M, so that C = 1/M computed in floating point passes.
_CAP_SLACK = 1e-12
# Two-teacher curvature |g1 - g2|^2 (relative) below which every split is optimal.
_FLAT_TOL = 1e-12

# Projected gradient stops early once a step moves no weight by more than this.
_PGD_STEP_TOL = 1e-13

# Per-variable states of the active-set enumeration, in the order they are tried.
_FREE, _AT_ZERO, _AT_CAP = 0, 1, 2


def min_norm_weights(gram: np.ndarray | torch.Tensor, cap: float = 1.0) -> np.ndarray:
    """Teacher weights w (float64, shape (M,)) minimising 1/2 w^T Q w on the capped simplex.

    ``gram`` is Q = G G^T, the M x M Gram matrix of the teachers' loss gradients (numpy array
    or torch tensor, any device); ``cap`` is C, the largest weight one teacher may get. C >= 1
    means no upper bound; C < 1/M is infeasible and raises ``ConfigError``. A Q that is not
    square, not finite, not symmetric or clearly not positive semi-definite raises
    ``ValueError``.

    The solution is exact, not iterated: M = 1 gives [1]; M = 2 the clipped closed form; up to
    ``ENUMERATION_MAX_TEACHERS`` teachers an enumeration of the active sets. Above that the
    projected-gradient solver ``min_norm_weights_pgd`` is used, which is only approximate.

    Q is divided by its largest diagonal entry first: the weights do not depend on the scale
    of the gradients, and this makes every tolerance relative. Q = 0 gives uniform weights
    (every feasible point is optimal, and uniform ones are feasible since C >= 1/M); so does
    C = 1/M, where they are the only feasible point.
    """
    q = _validated_gram(gram)
    m = q.shape[0]
    c = _validated_cap(cap, m)
    uniform = np.full(m, 1.0 / m)
    if m == 1:
        return np.ones(1)
    scale = float(np.max(np.diag(q)))
    if not scale > 0.0 or c * m <= 1.0 + _CAP_SLACK:
        return uniform
    q = q / scale
    if m == 2:
        return _solve_two(q, c)
    if m <= ENUMERATION_MAX_TEACHERS:
        return _solve_enumerate(q, c)
    return _solve_pgd(q, c, iters=2000)


def project_capped_simplex(v: np.ndarray | torch.Tensor, cap: float = 1.0) -> np.ndarray:
    """Euclidean projection of ``v`` onto {w : sum w = 1, 0 <= w <= C} (float64).

    The projection is w = clip(v - tau, 0, C) for the shift tau that makes the weights sum to
    one; the sum falls monotonically in tau, so tau is bracketed by bisection (until no entry
    changes state inside the bracket, or to 1e-12) and then made exact from the entries strictly
    inside the bounds. C >= 1 means no upper bound.
    """
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().double().numpy()
    vec = np.asarray(v, dtype=np.float64)
    if vec.ndim != 1 or vec.size == 0:
        raise ValueError(
            f"project_capped_simplex needs a non-empty 1-D vector, got shape {vec.shape}"
        )
    if not np.all(np.isfinite(vec)):
        raise ValueError("project_capped_simplex got a vector with NaN or Inf entries")
    c = _validated_cap(cap, vec.size)
    return _project(vec, c)


def min_norm_weights_pgd(
    gram: np.ndarray | torch.Tensor, cap: float = 1.0, iters: int = 2000
) -> np.ndarray:
    """Approximate ``min_norm_weights`` by projected gradient descent (float64, shape (M,)).

    Steps of 1/L (L the largest eigenvalue of Q, so each step decreases the objective) from the
    uniform weights, each followed by ``project_capped_simplex``, for ``iters`` steps or until
    a step moves no weight by more than 1e-13. For more teachers than the enumeration allows,
    and as an independent cross-check of the exact solver; its accuracy depends on ``iters``
    and on the conditioning of Q.
    """
    if iters < 0:
        raise ValueError(f"min_norm_weights_pgd needs iters >= 0, got {iters}")
    q = _validated_gram(gram)
    m = q.shape[0]
    c = _validated_cap(cap, m)
    scale = float(np.max(np.diag(q)))
    if m == 1 or not scale > 0.0 or c * m <= 1.0 + _CAP_SLACK:
        return np.full(m, 1.0 / m)
    return _solve_pgd(q / scale, c, iters=iters)


def min_norm_weights_torch(gram: torch.Tensor, cap: float = 1.0) -> torch.Tensor:
    """``min_norm_weights`` as a float32 tensor on ``gram``'s device, ready to weight losses.

    The solve itself runs in float64 numpy on the CPU: M is a handful of teachers, so moving an
    M x M matrix costs less than any GPU kernel would save.
    """
    if not isinstance(gram, torch.Tensor):
        raise TypeError(f"min_norm_weights_torch needs a torch.Tensor, got {type(gram).__name__}")
    weights = min_norm_weights(gram, cap)
    return torch.as_tensor(weights, dtype=torch.float32).to(gram.device)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _validated_gram(gram: np.ndarray | torch.Tensor) -> np.ndarray:
    """Q as a float64 symmetric array, or a ValueError saying what is wrong with it."""
    if isinstance(gram, torch.Tensor):
        gram = gram.detach().cpu().double().numpy()
    q = np.array(gram, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != q.shape[1]:
        raise ValueError(f"gram must be a square M x M matrix, got shape {q.shape}")
    if q.shape[0] < 1:
        raise ValueError("gram must have at least one teacher (M >= 1), got shape (0, 0)")
    if not np.all(np.isfinite(q)):
        raise ValueError(f"gram of shape {q.shape} has NaN or Inf entries")
    magnitude = float(np.max(np.abs(q)))
    asymmetry = float(np.max(np.abs(q - q.T)))
    if asymmetry > _MATRIX_RTOL * magnitude:
        raise ValueError(
            f"gram of shape {q.shape} is not symmetric: max |Q - Q^T| = {asymmetry:.3g} "
            f"against max |Q| = {magnitude:.3g}"
        )
    q = 0.5 * (q + q.T)
    if magnitude > 0.0:
        smallest = float(np.linalg.eigvalsh(q)[0])
        if smallest < -_MATRIX_RTOL * magnitude:
            raise ValueError(
                f"gram of shape {q.shape} is not positive semi-definite (smallest eigenvalue "
                f"{smallest:.3g}, max |Q| = {magnitude:.3g}), so it is not a Gram matrix"
            )
    return q


def _validated_cap(cap: float, m: int) -> float:
    """C capped at 1 (where the bound stops binding), or a ConfigError naming C and the bound."""
    if isinstance(cap, bool) or not isinstance(cap, numbers.Real) or math.isnan(float(cap)):
        raise ConfigError(f"aekd cap C must be a real number, got {cap!r}")
    c = float(cap)
    if c < 1.0 / m - _CAP_SLACK:
        raise ConfigError(
            f"aekd cap C={c:g} is infeasible for {m} teachers: need C >= 1/M = {1.0 / m:g}"
        )
    return min(c, 1.0)


# ----------------------------------------------------------------------------------------------
# Solvers (Q normalised, 1/M < C <= 1)
# ----------------------------------------------------------------------------------------------


def _solve_two(q: np.ndarray, c: float) -> np.ndarray:
    """Two teachers: minimise the parabola along w = (t, 1 - t), clipped to the caps.

    f(t) = 1/2 |t g1 + (1 - t) g2|^2 has f'(t) = t (Q11 - 2 Q12 + Q22) - (Q22 - Q12), so the
    unconstrained minimiser is t* = (Q22 - Q12) / |g1 - g2|^2; f is convex, so clipping t* to
    the feasible interval [max(0, 1 - C), min(C, 1)] gives the constrained minimiser. When
    g1 = g2 (zero curvature) every t is optimal and the even split is returned.
    """
    curvature = q[0, 0] - 2.0 * q[0, 1] + q[1, 1]
    t = 0.5 if curvature <= _FLAT_TOL else (q[1, 1] - q[0, 1]) / curvature
    t = min(max(float(t), 1.0 - c), c)  # c <= 1, so [1 - C, C] lies within [0, 1]
    return np.array([t, 1.0 - t])


def _solve_enumerate(q: np.ndarray, c: float) -> np.ndarray:
    """Exact minimiser by enumerating which weights sit at 0, at C, or strictly between.

    Why this is exact: Q is PSD, so the QP is convex and its optimal set is a polytope, which
    has a vertex. At a vertex with free set F (weights strictly inside the bounds) and active
    set A, the KKT stationarity on F plus the sum constraint,

        [Q_FF 1; 1^T 0] [w_F; nu] = [-Q_FA w_A; 1 - sum w_A],

    has a unique solution: two solutions would differ by a direction d with 1^T d = 0 and
    G_F^T d = 0, along which the objective is constant, so the vertex would be the midpoint of
    two optimal points. Its matrix is therefore nonsingular and a least-squares solve (which
    also copes with the singular systems of the other sets) recovers w_F. Every kept candidate
    is feasible, so none is below the optimum, and the one built from an optimal vertex's
    active set attains it: the least objective over the feasible candidates is the optimum.

    All the systems are solved in one batched call. To give them one size, each is padded to
    M + 1 unknowns with the rows w_i = w_A,i for the weights at a bound, which does not change
    the solution of a nonsingular system (the padded matrix is block triangular with an
    identity block) and only has to give some point for the others, which are then filtered
    for feasibility like every candidate.

    Sets are ordered as itertools.product over (free, at 0, at C) per weight, all-free first;
    of the candidates within a rounding tolerance of the least objective the first is returned,
    so ties between optimal vertices (singular Q) are broken deterministically. With C = 1 the
    bound w <= C is implied by the others, so only (free, at 0) is enumerated (2^M sets).
    """
    m = q.shape[0]
    is_free, at_cap = _active_sets(m, c < 1.0)
    w = np.where(at_cap, c, 0.0)  # (sets, M): the candidates, free entries filled in below
    fixed_sum = w.sum(axis=1)
    # A set with no free weight is its own candidate; one whose weights at C alone sum past
    # one has none (it is left at its infeasible fixed part, which the checks below reject).
    solve = np.flatnonzero(is_free.any(axis=1) & (fixed_sum <= 1.0 + _FEASIBILITY_TOL))
    free = is_free[solve]
    kkt = np.zeros((solve.size, m + 1, m + 1))
    kkt[:, :m, :m] = np.where(free[:, :, None], q, np.eye(m))
    kkt[:, :m, m] = free
    kkt[:, m, :m] = 1.0
    rhs = np.empty((solve.size, m + 1))
    rhs[:, :m] = w[solve]
    rhs[:, m] = 1.0
    w[solve] = _lstsq_batched(kkt, rhs)[:, :m]
    # Bounds and the sum are checked on the whole vector: a least-squares solve of an
    # inconsistent system satisfies neither the stationarity nor, in general, the sum.
    candidate = np.all(w >= -_FEASIBILITY_TOL, axis=1)
    candidate &= np.all(w <= c + _FEASIBILITY_TOL, axis=1)
    candidate &= np.abs(w.sum(axis=1) - 1.0) <= _FEASIBILITY_TOL
    if not np.any(candidate):  # unreachable for C >= 1/M: the optimum's own set is a candidate
        raise RuntimeError("min_norm_weights found no feasible active set")
    objective = np.where(candidate, 0.5 * np.einsum("si,ij,sj->s", w, q, w), np.inf)
    best = int(np.argmax(objective <= objective.min() + _TIE_TOL))
    return np.clip(w[best], 0.0, c)


@functools.cache
def _active_sets(m: int, with_cap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every active set, as masks (sets, M) of the free weights and of the weights at C.

    Cached: they depend only on M and on whether the cap binds, not on its value (sets whose
    weights at C alone sum past one simply give infeasible candidates).
    """
    states = (_FREE, _AT_ZERO, _AT_CAP) if with_cap else (_FREE, _AT_ZERO)
    labels = np.array(list(itertools.product(states, repeat=m)), dtype=np.int8).reshape(-1, m)
    is_free, at_cap = labels == _FREE, labels == _AT_CAP
    is_free.setflags(write=False)
    at_cap.setflags(write=False)
    return is_free, at_cap


def _lstsq_batched(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimum-norm least-squares solutions of a stack of square systems a x = b.

    What numpy.linalg.lstsq(a_i, b_i, rcond=None) computes, via the SVD with the same cutoff
    (singular values below eps * n * s_max count as zero), but in one call for the whole stack:
    one lstsq call per active set costs ~20 us of overhead, which dominates at these sizes.
    """
    n = a.shape[-1]
    u, s, vt = np.linalg.svd(a)
    cutoff = np.finfo(np.float64).eps * n * s[:, :1]
    inv_s = np.divide(1.0, s, out=np.zeros_like(s), where=s > cutoff)
    ut_b = np.einsum("nij,ni->nj", u, b)
    return np.einsum("nji,nj->ni", vt, inv_s * ut_b)


def _solve_pgd(q: np.ndarray, c: float, iters: int) -> np.ndarray:
    """Projected gradient descent with step 1/L from the uniform weights."""
    m = q.shape[0]
    w = np.full(m, 1.0 / m)
    lipschitz = float(np.linalg.eigvalsh(q)[-1])
    if not lipschitz > 0.0:
        return w
    step = 1.0 / lipschitz
    for _ in range(iters):
        w_next = _project(w - step * (q @ w), c)
        converged = float(np.max(np.abs(w_next - w))) <= _PGD_STEP_TOL
        w = w_next
        if converged:  # a fixed point of the projected step is the minimiser
            break
    return w


def _project(v: np.ndarray, c: float) -> np.ndarray:
    """Projection onto the capped simplex for a validated C in [1/M, 1]."""
    m = v.size
    if c * m <= 1.0 + _CAP_SLACK:
        return np.full(m, 1.0 / m)
    # sum(clip(v - tau, 0, C)) falls from M C >= 1 at tau = min(v) - C to 0 at tau = max(v).
    lo, hi = float(np.min(v)) - c, float(np.max(v))
    # The sum is piecewise linear in tau with kinks where an entry hits a bound: once no kink
    # lies inside the bracket, the entries' states are known and tau follows exactly (below).
    kinks = np.concatenate([v, v - c])
    for _ in range(200):
        if hi - lo <= 1e-12 or not np.any((kinks > lo) & (kinks < hi)):
            break
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):  # no float strictly between: as tight as it gets
            break
        if float(np.sum(np.clip(v - mid, 0.0, c))) > 1.0:
            lo = mid
        else:
            hi = mid
    tau = 0.5 * (lo + hi)
    w = np.clip(v - tau, 0.0, c)
    # Make tau exact: with the entries at 0 and at C fixed, the free ones must fill the rest.
    free = (w > 0.0) & (w < c)
    if np.any(free):
        n_cap = int(np.count_nonzero(w >= c))
        exact_tau = (float(np.sum(v[free])) - (1.0 - n_cap * c)) / int(np.count_nonzero(free))
        exact = np.clip(v - exact_tau, 0.0, c)
        if abs(float(np.sum(exact)) - 1.0) <= abs(float(np.sum(w)) - 1.0):
            w = exact
        # For large |v|, v - tau keeps only ~eps |v| absolute precision: hand the sum's last
        # rounding error to the free entries so that the weights sum to one to machine precision.
        free = (w > 0.0) & (w < c)
        if np.any(free):
            w[free] += (1.0 - float(np.sum(w))) / int(np.count_nonzero(free))
            w = np.clip(w, 0.0, c)
    return w
