"""Distillation losses, each a ``TrainingLoss`` for the one training engine.

Every loss is ``L = MSE(G, Y) + lambda * L_KD`` in normalized units, with G the student's
prediction, Y the truth and F_m the teachers' predictions. Per-band distances use the
orthonormal band operators of ``sdkd_pipeline.spectral``: ``D_low(G, F) + D_high(G, F) =
MSE(G, F)`` exactly (Parseval), so ``sdkd`` with ``alpha = 1`` is ``output_mse``.

- ``output_mse``: L_KD = MSE(G, F).
- ``sdkd``: L_KD = D_high(G, F) + alpha D_low(G, F).
- ``sdkd_latent``: ``sdkd`` plus ``latent_weight`` times the same band distance between the
  student's bottleneck through a trained 1x1 projector P and the teacher's latents:
  D_high(P(b), Z_h) + alpha D_low(P(b), Z_l).
- ``aver_mkd``: L_KD = mean_m MSE(G, F_m).
- ``aekd``: L_KD = sum_m w_m MSE(G, F_m), w the min-norm point of the teachers' loss gradients
  on the capped simplex (AEKD), recomputed every batch.
- ``camkd``: L_KD = mean_i sum_m w_mi MSE(G_i, F_mi), per-sample confidence weights
  w_mi = (1 - softmax_m(e_mi / (T mean e))) / (M - 1) from the teachers' errors e against Y.
- ``sdkd_multi``: L_KD = sum_m (w^high_m D_high(G, F_m) + alpha w^low_m D_low(G, F_m)), with
  per-band weights from the ``aver``, ``aekd`` or ``camkd`` rule applied to that band.

Teacher weights never carry gradient (they are computed from detached quantities), and every
loss term keeps its graph to the student: terms are combined with tensor ops
(``torch.stack``), never through ``torch.tensor(list)``, which detaches (a bug of the peers'
code). ``lambda`` and ``alpha`` can be balanced on the fly (``balance``); the cutoff is fixed
per run (chosen before training, see ``choose_cutoff``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sdkd_pipeline.distill.config import DistillConfig
from sdkd_pipeline.distill.minnorm import min_norm_weights_torch
from sdkd_pipeline.distill.teachers import WithTeacherTargets, run_teacher
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral import (
    BandSplit,
    energy_fraction_cutoff,
    radial_energy_spectrum,
    radial_wavenumber,
    rfft_weights,
)

log = logging.getLogger(__name__)
LOW, HIGH = 0, 1
_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# the cutoff


def max_wavenumber(height: int, width: int) -> float:
    return float(radial_wavenumber(height, width).max())


def choose_cutoff(cfg: DistillConfig, height: int, width: int,
                  teacher_predictions: list[torch.Tensor] | None = None) -> float:
    """The band cutoff k_c of a run, in cycles per domain length of the longer axis.

    ``fixed``: ``cfg.cutoff_k``. ``energy``: the smallest shell k holding
    ``cfg.cutoff_energy_fraction`` of the energy of the teachers' predictions (radially binned,
    averaged over windows, frames, channels and teachers): the low band is then "what the
    teachers' fields are mostly made of" and the high band their fine detail, whatever the
    dataset's resolution.
    """
    k_max = max_wavenumber(height, width)
    if cfg.cutoff_mode == "fixed":
        cutoff = cfg.cutoff_k
    else:
        if not teacher_predictions:
            raise ConfigError("cutoff.mode 'energy' needs the teachers' predictions")
        spectra = [radial_energy_spectrum(p.detach().float().cpu()) for p in teacher_predictions]
        k = spectra[0][0]
        energy = np.mean([e for _, e in spectra], axis=0)
        shell = float(energy_fraction_cutoff(k, energy, cfg.cutoff_energy_fraction))
        # shell s holds s - 1/2 <= |k| < s + 1/2: the low band takes shells 0..s whole
        cutoff = shell + 0.5
        if cutoff >= k_max:
            # the fraction is reached only in the outermost shell: leave the grid's largest
            # wavenumber(s) alone in the high band
            distinct = torch.unique(radial_wavenumber(height, width))
            cutoff = float(distinct[-2])
            log.warning("cutoff.energy_fraction %g is reached only in the outermost shell of "
                        "the %dx%d grid: k_c = %g", cfg.cutoff_energy_fraction, height, width,
                        cutoff)
    if not 0 < cutoff < k_max:  # only a fixed cutoff can get here
        raise ConfigError(
            f"distill cutoff k_c={cutoff:g} leaves an empty band on the {height}x{width} grid "
            f"(wavenumbers 0..{k_max:.2f}): set distill.cutoff.k between 0 and {k_max:.2f}"
        )
    return cutoff


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
        return {"num": None if self.num is None else float(self.num),
                "den": None if self.den is None else float(self.den), "steps": self.steps}

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
    weights = rfft_weights(h, w, device=residuals.device) * split.masks[band].to(
        residuals.device).float()
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


# --------------------------------------------------------------------------------------------
# the loss


class DistillationLoss:
    """The ``TrainingLoss`` of one distillation method (see the module docstring).

    ``teachers`` maps names to frozen teacher models; they are used only when a batch's target
    carries no cached teacher outputs (``WithTeacherTargets``). They stay out of
    ``parameters()`` and ``state_dict()``: the teachers have their own checkpoints.
    """

    def __init__(
        self,
        cfg: DistillConfig,
        teachers: Mapping[str, nn.Module],
        *,
        height: int,
        width: int,
        cutoff: float | None = None,
        student_latent_channels: int | None = None,
        teacher_latent_channels: int | None = None,
        student_parameters: Any = None,
    ) -> None:
        if not cfg.needs_teachers:
            raise ConfigError("method 'none' trains on the data alone: use the engine's MSE loss")
        if not teachers:
            raise ConfigError(f"method {cfg.name!r} needs at least one teacher")
        if not cfg.multi_teacher and len(teachers) != 1:
            raise ConfigError(f"method {cfg.name!r} ({cfg.method}) distills one teacher, got "
                              f"{sorted(teachers)}")
        if cfg.method in ("aekd",) or (cfg.method == "sdkd_multi"
                                       and cfg.band_weighting == "aekd"):
            if cfg.aekd_cap * len(teachers) < 1 - 1e-9:
                raise ConfigError(
                    f"distill.aekd.cap C={cfg.aekd_cap:g} is infeasible for {len(teachers)} "
                    f"teachers: the weights sum to 1, so C must be >= 1/{len(teachers)}"
                )
        self.cfg = cfg
        self.teachers = dict(teachers)
        self.names = sorted(self.teachers) if cfg.multi_teacher else list(self.teachers)
        self.height, self.width = height, width
        self.split: BandSplit | None = None
        self.cutoff = cutoff
        if cfg.uses_bands:
            if cutoff is None:
                raise ConfigError(f"method {cfg.name!r} needs a band cutoff (choose_cutoff)")
            self.split = BandSplit.two_band(height, width, cutoff)
        self.projector: nn.Conv2d | None = None
        self.latent_split: BandSplit | None = None
        if cfg.needs_latents:
            if not student_latent_channels or not teacher_latent_channels:
                raise ConfigError("sdkd_latent needs the student's and teacher's latent widths")
            self.projector = nn.Conv2d(student_latent_channels, teacher_latent_channels, 1)
        if cfg.aekd_gradients == "parameters" and (
                torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ConfigError("distill.aekd.gradients 'parameters' runs per-process backward "
                              "passes that DDP does not synchronise; use 'output' under torchrun")
        self.student_parameters = student_parameters
        self.alpha_balance = Balancer(cfg.balance_alpha, cfg.balance_momentum, cfg.balance_min,
                                      cfg.balance_max)
        self.lambda_balance = Balancer(cfg.balance_lambda, cfg.balance_momentum,
                                       cfg.balance_min, cfg.balance_max)

    # -- the TrainingLoss protocol's optional members -------------------------------------

    def to(self, device: torch.device) -> DistillationLoss:
        for model in self.teachers.values():
            model.to(device)
        if self.projector is not None:
            self.projector.to(device)
        return self

    def parameters(self):
        return iter(() if self.projector is None else self.projector.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {
            "projector": None if self.projector is None else self.projector.state_dict(),
            "alpha_balance": self.alpha_balance.state_dict(),
            "lambda_balance": self.lambda_balance.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.projector is not None and state.get("projector") is not None:
            self.projector.load_state_dict(state["projector"])
        self.alpha_balance.load_state_dict(state["alpha_balance"])
        self.lambda_balance.load_state_dict(state["lambda_balance"])

    # -- the loss ------------------------------------------------------------------------

    def teacher_outputs(self, x: torch.Tensor, y: Any) -> tuple[torch.Tensor,
                                                               dict[str, dict[str, torch.Tensor]]]:
        """The truth and the teachers' outputs: cached ones from the batch, else a forward."""
        if isinstance(y, Mapping):
            return y["y"], {n: y["teachers"][n] for n in self.names}
        return y, {n: run_teacher(self.teachers[n], x, self.cfg.needs_latents)
                   for n in self.names}

    def __call__(self, model: nn.Module, x: torch.Tensor, y: Any
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target, outputs = self.teacher_outputs(x, y)
        if self.cfg.needs_latents:
            prediction, features = model(x, return_features=True)
        else:
            prediction, features = model(x), {}
        if prediction.shape != target.shape:
            raise ValueError(f"student output shape {tuple(prediction.shape)} differs from "
                             f"target shape {tuple(target.shape)}")
        prediction = prediction.float()
        target = target.float()
        task = F.mse_loss(prediction, target)
        teacher_preds = torch.stack([outputs[n]["prediction"].float() for n in self.names])
        components: dict[str, torch.Tensor] = {"task": task.detach()}
        kd = self._kd_term(prediction, target, teacher_preds, components)
        if self.cfg.needs_latents:
            latent = self._latent_term(features, outputs[self.names[0]], components)
            kd = kd + self.cfg.latent_weight * latent
        lam = self.cfg.lam * self.lambda_balance(task, kd)
        components["kd"] = kd.detach()
        components["lambda"] = lam.detach()
        return task + lam * kd, components

    # -- the KD terms --------------------------------------------------------------------

    def _alpha(self, d_high: torch.Tensor, d_low: torch.Tensor) -> torch.Tensor:
        return self.cfg.alpha * self.alpha_balance(d_high, d_low)

    def _kd_term(self, prediction: torch.Tensor, target: torch.Tensor,
                 teacher_preds: torch.Tensor, components: dict[str, torch.Tensor]
                 ) -> torch.Tensor:
        method = self.cfg.method
        names = self.names
        if method == "output_mse":
            return F.mse_loss(prediction, teacher_preds[0])
        if method in ("sdkd", "sdkd_latent"):
            assert self.split is not None
            bands = self.split.band_mse(prediction, teacher_preds[0])
            alpha = self._alpha(bands[HIGH], bands[LOW])
            components.update(kd_high=bands[HIGH].detach(), kd_low=bands[LOW].detach(),
                              alpha=alpha.detach())
            return bands[HIGH] + alpha * bands[LOW]
        # multi-teacher: one distance per teacher, weights without gradient
        per_teacher = torch.stack([F.mse_loss(prediction, p) for p in teacher_preds])
        if method == "aver_mkd":
            weights = torch.full_like(per_teacher, 1.0 / len(names))
            kd = (weights * per_teacher).sum()
        elif method == "aekd":
            weights = self._aekd(prediction, teacher_preds, per_teacher, band=None)
            kd = (weights * per_teacher).sum()
        elif method == "camkd":
            per_sample = _per_sample_mse(prediction[None], teacher_preds)  # (M, B)
            weights_ms = camkd_weights(_per_sample_mse(teacher_preds, target[None]),
                                       self.cfg.camkd_temperature)
            kd = (weights_ms * per_sample).sum(0).mean()
            weights = weights_ms.mean(1)
        elif method == "sdkd_multi":
            return self._sdkd_multi(prediction, target, teacher_preds, components)
        else:  # pragma: no cover - config validation rejects other names
            raise ConfigError(f"unknown distillation method {method!r}")
        for name, w in zip(names, weights, strict=True):
            components[f"w_{name}"] = w.detach()
        return kd

    def _aekd(self, prediction: torch.Tensor, teacher_preds: torch.Tensor,
              per_teacher: torch.Tensor, band: int | None) -> torch.Tensor:
        if self.cfg.aekd_gradients == "parameters":
            params = [p for p in (self.student_parameters or []) if p.requires_grad]
            if not params:
                raise ConfigError("aekd.gradients 'parameters' needs the student's parameters")
            grads = []
            for loss_m in per_teacher:
                g = torch.autograd.grad(loss_m, params, retain_graph=True, allow_unused=True)
                grads.append(torch.cat([
                    (gi if gi is not None else torch.zeros_like(p)).float().flatten()
                    for gi, p in zip(g, params, strict=True)]))
            flat = torch.stack(grads)
            gram = flat @ flat.T
        else:
            residuals = prediction.detach()[None] - teacher_preds
            gram = aekd_output_gram(residuals) if band is None else band_gram(
                residuals, self.split, band)  # type: ignore[arg-type]
        return aekd_weights(gram, self.cfg.aekd_cap)

    def _sdkd_multi(self, prediction: torch.Tensor, target: torch.Tensor,
                    teacher_preds: torch.Tensor, components: dict[str, torch.Tensor]
                    ) -> torch.Tensor:
        assert self.split is not None
        rule = self.cfg.band_weighting
        n = len(self.names)
        if rule == "camkd":
            # per sample: (M, B, bands) distances and teacher errors against the truth
            dist = torch.stack([self.split.band_mse_per_sample(prediction, p)
                                for p in teacher_preds])
            errors = torch.stack([self.split.band_mse_per_sample(p, target)
                                  for p in teacher_preds])
            weights = torch.stack([camkd_weights(errors[..., b], self.cfg.camkd_temperature)
                                   for b in (LOW, HIGH)], dim=-1)  # (M, B, 2)
            banded = (weights * dist).sum(0).mean(0)  # (2,)
            mean_w = weights.mean(1)  # (M, 2)
        else:
            dist = torch.stack([self.split.band_mse(prediction, p) for p in teacher_preds])
            if rule == "aver":
                mean_w = torch.full_like(dist, 1.0 / n)
            else:  # aekd per band: min-norm weights of each band's gradients
                mean_w = torch.stack([self._aekd(prediction, teacher_preds, dist[:, b], band=b)
                                      for b in (LOW, HIGH)], dim=-1)
            banded = (mean_w * dist).sum(0)  # (2,)
        alpha = self._alpha(banded[HIGH], banded[LOW])
        components.update(kd_high=banded[HIGH].detach(), kd_low=banded[LOW].detach(),
                          alpha=alpha.detach())
        for i, name in enumerate(self.names):
            components[f"w_low_{name}"] = mean_w[i, LOW].detach()
            components[f"w_high_{name}"] = mean_w[i, HIGH].detach()
        return banded[HIGH] + alpha * banded[LOW]

    def _latent_term(self, features: Mapping[str, torch.Tensor],
                     teacher: Mapping[str, torch.Tensor], components: dict[str, torch.Tensor]
                     ) -> torch.Tensor:
        if "bottleneck" not in features:
            raise ConfigError(f"sdkd_latent needs the student's 'bottleneck' latent; the "
                              f"student returns {sorted(features)}")
        assert self.projector is not None
        projected = self.projector(features["bottleneck"].float())
        z_high, z_low = teacher["high"].float(), teacher["low"].float()
        if projected.shape[-2:] != z_high.shape[-2:]:
            projected = F.interpolate(projected, size=z_high.shape[-2:], mode="bilinear",
                                      align_corners=False)
        split = self._latent_bands(*z_high.shape[-2:])
        high = split.band_mse(projected, z_high)[HIGH]
        low = split.band_mse(projected, z_low)[LOW]
        # the same band weighting as the output term (balanced there when configured)
        alpha = components.get("alpha", torch.tensor(self.cfg.alpha, device=high.device))
        latent = high + alpha * low
        components.update(latent_high=high.detach(), latent_low=low.detach())
        return latent

    def _latent_bands(self, h: int, w: int) -> BandSplit:
        if self.latent_split is None or (self.latent_split.height, self.latent_split.width) != (
                h, w):
            assert self.cutoff is not None
            k_max = max_wavenumber(h, w)
            cutoff = self.cutoff
            if cutoff >= k_max:
                # the latent grid is coarser than the data's: keep a non-empty high band
                cutoff = k_max / 2
                log.warning("latent grid %dx%d resolves wavenumbers up to %.2f only: latent "
                            "band cutoff lowered from %g to %g", h, w, k_max, self.cutoff, cutoff)
            self.latent_split = BandSplit.two_band(h, w, cutoff)
        return self.latent_split


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per (teacher, sample): (M|1, B, ...) x (M|1, B, ...) -> (M, B)."""
    return (a - b).square().flatten(2).mean(-1)


def build_loss(cfg: DistillConfig, teachers: Mapping[str, nn.Module], **kwargs: Any
               ) -> DistillationLoss | None:
    """The engine's loss for ``cfg`` (``None`` for ``none``: the engine's plain MSE)."""
    if not cfg.needs_teachers:
        return None
    return DistillationLoss(cfg, teachers, **kwargs)


def loss_from_cache(cfg: DistillConfig, teachers: Mapping[str, nn.Module],
                    cache: Mapping[str, Mapping[str, torch.Tensor]], train_set: Any,
                    model: nn.Module, *, height: int, width: int, cutoff_windows: int = 128
                    ) -> tuple[DistillationLoss, WithTeacherTargets, float | None]:
    """``(loss, training windows with the teachers' cached targets, cutoff)`` for distilling
    ``model`` from ``teachers``, whose outputs on ``train_set`` are ``cache`` (as made by
    ``precompute_teacher_outputs``; it may hold other teachers too). An energy cutoff is set
    from the first ``cutoff_windows`` cached predictions."""
    names = list(teachers)
    predictions = [cache[n]["prediction"][:cutoff_windows] for n in names]
    cutoff = choose_cutoff(cfg, height, width, predictions) if cfg.uses_bands else None
    first = teachers[names[0]]
    loss = build_loss(
        cfg, teachers, height=height, width=width, cutoff=cutoff,
        student_latent_channels=getattr(model, "latent_channels", None),
        teacher_latent_channels=getattr(first, "latent_channels", None),
        student_parameters=list(model.parameters()),
    )
    return loss, WithTeacherTargets(train_set, {n: cache[n] for n in names}), cutoff
