"""The weights inside the distillation losses: balancing lambda and alpha, weighting teachers.

``Balancer`` makes two loss terms weigh alike (``balance.lambda``, ``balance.alpha``). The teacher
weighting rules give the multi-teacher losses their weights, always from detached quantities:
AEKD's min-norm point of the teachers' gradients (``aekd_output_gram`` and ``band_gram`` give
the Gram matrix, ``aekd_weights`` the weights) and CA-MKD's confidence weights
(``camkd_weights``). Re-exported by ``sdkd_pipeline.distill.losses``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sdkd_pipeline.distill.minnorm import min_norm_weights_torch
from sdkd_pipeline.spectral import BandSplit, rfft_weights

_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# balancing lambda and alpha


class Balancer:
    """A factor that makes ``numerator`` and ``denominator`` terms weigh alike.

    Keeps bias-corrected running means of both (detached, on the device: no host sync) and
    returns their ratio (``loss_ratio``) or its square root (``grad_ratio``: for squared errors
    the gradient norm at the prediction is proportional to the square root of the loss), clamped
    to ``[low, high]``. ``fixed`` always returns 1.
    """

    def __init__(self, mode: str, momentum: float, low: float, high: float) -> None:
        self.mode, self.momentum, self.low, self.high = mode, momentum, low, high
        self.num: torch.Tensor | None = None
        self.den: torch.Tensor | None = None
        self.steps = 0

    def __call__(self, numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
        if self.mode == "fixed":
            return torch.ones((), device=numerator.device)
        num, den = numerator.detach().float(), denominator.detach().float()
        if self.num is None or self.den is None:
            self.num, self.den = torch.zeros_like(num), torch.zeros_like(den)
        self.num = self.num.to(num.device) * self.momentum + num * (1 - self.momentum)
        self.den = self.den.to(den.device) * self.momentum + den * (1 - self.momentum)
        self.steps += 1
        # bias correction cancels in the ratio
        ratio = self.num / self.den.clamp_min(_EPS)
        if self.mode == "grad_ratio":
            ratio = ratio.sqrt()
        return ratio.clamp(self.low, self.high)

    def state_dict(self) -> dict[str, Any]:
        return {
            "num": None if self.num is None else float(self.num),
            "den": None if self.den is None else float(self.den),
            "steps": self.steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.num = None if state["num"] is None else torch.tensor(float(state["num"]))
        self.den = None if state["den"] is None else torch.tensor(float(state["den"]))
        self.steps = int(state["steps"])


# --------------------------------------------------------------------------------------------
# teacher weighting rules


def aekd_output_gram(residuals: torch.Tensor) -> torch.Tensor:
    """Gram matrix of the teachers' output-MSE gradients at the student's prediction.

    ``residuals`` (M, B, ...) = G - F_m; d MSE(G, F_m) / dG = 2 (G - F_m) / N, so the Gram
    matrix is proportional to the residuals' inner products, flattened over the whole batch
    (averaging over the batch first would let residuals of opposite sign cancel).
    """
    flat = residuals.detach().float().flatten(1)
    return flat @ flat.T


def band_gram(residuals: torch.Tensor, split: BandSplit, band: int) -> torch.Tensor:
    """Gram matrix of the gradients of the band distances D_band(G, F_m) at G.

    The band operator is an orthogonal projector P, so grad D = 2 P (G - F_m) / N and
    <P r_m, P r_n> is the band's part of the cross-spectrum of the residuals.
    """
    spectra = torch.fft.rfft2(residuals.detach().float(), norm="ortho")
    h, w = residuals.shape[-2:]
    weights = (
        rfft_weights(h, w, device=residuals.device) * split.masks[band].to(residuals.device).float()
    )
    flat = (spectra * weights.sqrt()).flatten(1)  # (M, n): weighted band coefficients
    return (flat @ flat.conj().T).real


def aekd_weights(gram: torch.Tensor, cap: float) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # every rank must use the same weights: the Gram matrix of the global batch
        torch.distributed.all_reduce(gram)
    return min_norm_weights_torch(gram, cap).to(gram.device)


def camkd_weights(errors: torch.Tensor, temperature: float) -> torch.Tensor:
    """CA-MKD confidence weights from per-sample teacher errors ``errors`` (M, B) -> (M, B).

    Errors are divided by their batch mean before the softmax: raw regression errors are small
    numbers whose softmax is nearly uniform. ``w = (1 - softmax_m) / (M - 1)`` favours the
    teacher with the lower error; the weights of a sample sum to 1.
    """
    n_teachers = errors.shape[0]
    if n_teachers == 1:
        return torch.ones_like(errors)
    errors = errors.detach().float()
    scaled = errors / (temperature * errors.mean().clamp_min(_EPS))
    return (1 - torch.softmax(scaled, dim=0)) / (n_teachers - 1)


def _camkd_or_uniform(
    errors: torch.Tensor, labelled: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """CA-MKD weights (M, B) from the teachers' errors on samples with a truth; uniform
    weights on samples without one (function matching), where confidence is unknown."""
    if labelled is None:
        return camkd_weights(errors, temperature)
    weights = torch.full_like(errors, 1.0 / errors.shape[0])
    if bool(labelled.any()):
        weights[:, labelled] = camkd_weights(errors[:, labelled], temperature)
    return weights


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per (teacher, sample): (M|1, B, ...) x (M|1, B, ...) -> (M, B)."""
    return (a - b).square().flatten(2).mean(-1)
