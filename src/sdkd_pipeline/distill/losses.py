"""Distillation losses, each a ``TrainingLoss`` for the one training engine.

Every loss is ``L = MSE(G, Y) + lambda * L_KD`` in normalized units, with G the student's
prediction, Y the truth and F_m the teachers' predictions. Per-band distances use the
orthonormal band operators of ``sdkd_pipeline.spectral``: the bands' D_b(G, F) sum to MSE(G, F)
exactly (Parseval).

- ``output_mse``: L_KD = MSE(G, F).
- ``sdkd``: L_KD = sum_b w_b D_b(G, F) over ``bands`` log-spaced radial bands, w_b the teacher's
  advantage in band b (``distill/band_weights.py``; ``weighting: advantage``, the default), or
  the paper's D_high + alpha D_low at the cutoff (``weighting: fixed``; alpha = 1 is exactly
  ``output_mse``), or per (region, wavelet band) cell (``weighting: local``,
  ``distill/local.py``).
- ``sdkd_latent``: ``sdkd`` plus the MSE between the student's bottleneck through a trained
  1x1 projector P and the teacher's latent state, standardized per channel, weighted to be
  ``latent_share`` of the loss (or by the fixed ``latent_weight``).
- ``aver_mkd``: L_KD = mean_m MSE(G, F_m).
- ``aekd``: L_KD = sum_m w_m MSE(G, F_m), w the min-norm point of the teachers' loss gradients
  on the capped simplex (AEKD), recomputed every batch.
- ``camkd``: L_KD = mean_i sum_m w_mi MSE(G_i, F_mi), per-sample confidence weights
  w_mi = (1 - softmax_m(e_mi / (T mean e))) / (M - 1) from the teachers' errors e against Y.
- ``sdkd_multi``: per band, teacher weights from the ``aver``, ``aekd`` or ``camkd`` rule
  applied to that band, then the bands weighted as ``sdkd`` weighs them (advantage of the
  teachers so combined, or D_high + alpha D_low).

Teacher weights never carry gradient (they are computed from detached quantities), and every
loss term keeps its graph to the student: terms are combined with tensor ops
(``torch.stack``), never through ``torch.tensor(list)``, which detaches (a bug of the peers'
code). ``lambda`` can be balanced on the fly (``balance.lambda``); the fixed weighting's cutoff
is fixed per run (chosen before training, see ``choose_cutoff``). A batch may mark samples
without a truth (function matching): the task term uses the labelled samples only.

The cutoff (``distill/cutoff.py``) and the balancing and teacher weighting rules
(``distill/weighting.py``) have their own modules; their names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sdkd_pipeline.distill.band_weights import BandAdvantage, RunningMean, all_ranks_mean
from sdkd_pipeline.distill.config import DistillConfig
from sdkd_pipeline.distill.cutoff import choose_cutoff, max_wavenumber
from sdkd_pipeline.distill.local import RegionBands, build_local_advantage, local_advantage_sum
from sdkd_pipeline.distill.teachers import run_teacher
from sdkd_pipeline.distill.weighting import (
    Balancer,
    _camkd_or_uniform,
    _per_sample_mse,
    aekd_output_gram,
    aekd_weights,
    band_gram,
    camkd_weights,
)
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral import BandSplit

__all__ = [
    "HIGH",
    "LOW",
    "Balancer",
    "DistillationLoss",
    "aekd_output_gram",
    "aekd_weights",
    "band_gram",
    "build_loss",
    "camkd_weights",
    "choose_cutoff",
    "max_wavenumber",
]

LOW, HIGH = 0, 1
_EPS = 1e-12


class DistillationLoss:
    """The ``TrainingLoss`` of one distillation method (see the module docstring).

    ``teachers`` maps names to frozen teacher models; they are used only when a batch's target
    carries no cached teacher outputs (``WithTeacherTargets``). They stay out of
    ``parameters()`` and ``state_dict()``: the teachers have their own checkpoints.

    A batch's target may mark samples without a truth (function matching): ``{"y": ...,
    "labelled": bool (B,), "teachers": ...}``. The task term and every statistic that needs the
    truth then use the labelled samples only; the KD terms use all samples.
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
            raise ConfigError(
                f"method {cfg.name!r} ({cfg.method}) distills one teacher, got {sorted(teachers)}"
            )
        if cfg.method in ("aekd",) or (cfg.method == "sdkd_multi" and cfg.band_weighting == "aekd"):
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
        self.advantage: BandAdvantage | None = None
        self.cutoff = cutoff
        if cfg.uses_cutoff:
            if cutoff is None:
                raise ConfigError(f"method {cfg.name!r} needs a band cutoff (choose_cutoff)")
            self.split = BandSplit.two_band(height, width, cutoff)
        elif cfg.uses_local:
            # (region, wavelet band) cells as the flat bands of the same estimator
            cells, self.advantage = build_local_advantage(cfg, height, width)
            self.split = cells  # type: ignore[assignment]
        elif cfg.uses_bands:
            self.split = BandSplit.log_spaced(height, width, cfg.bands)
            self.advantage = BandAdvantage(
                self.split,
                w_max=cfg.advantage_w_max,
                momentum=cfg.advantage_momentum,
                whiten=cfg.advantage_whiten,
                whiten_max=cfg.advantage_whiten_max,
            )
        self.projector: nn.Conv2d | None = None
        self.latent_mean = RunningMean(cfg.advantage_momentum)
        self.latent_var = RunningMean(cfg.advantage_momentum)
        self.main_running = RunningMean(cfg.balance_momentum)
        self.latent_running = RunningMean(cfg.balance_momentum)
        if cfg.needs_latents:
            if not student_latent_channels or not teacher_latent_channels:
                raise ConfigError("sdkd_latent needs the student's and teacher's latent widths")
            self.projector = nn.Conv2d(student_latent_channels, teacher_latent_channels, 1)
        if cfg.aekd_gradients == "parameters" and (
            torch.distributed.is_available() and torch.distributed.is_initialized()
        ):
            raise ConfigError(
                "distill.aekd.gradients 'parameters' runs per-process backward "
                "passes that DDP does not synchronise; use 'output' under torchrun"
            )
        self.student_parameters = student_parameters
        self.alpha_balance = Balancer(
            cfg.balance_alpha, cfg.balance_momentum, cfg.balance_min, cfg.balance_max
        )
        self.lambda_balance = Balancer(
            cfg.balance_lambda, cfg.balance_momentum, cfg.balance_min, cfg.balance_max
        )

    # -- the TrainingLoss protocol's optional members -------------------------------------

    def to(self, device: torch.device) -> DistillationLoss:
        for model in self.teachers.values():
            model.to(device)
        if self.projector is not None:
            self.projector.to(device)
        if self.split is not None:
            self.split.to(device)
        return self

    def parameters(self):
        return iter(() if self.projector is None else self.projector.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {
            "projector": None if self.projector is None else self.projector.state_dict(),
            "alpha_balance": self.alpha_balance.state_dict(),
            "lambda_balance": self.lambda_balance.state_dict(),
            "advantage": None if self.advantage is None else self.advantage.state_dict(),
            "running": {name: getattr(self, name).state_dict() for name in _RUNNING},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.projector is not None and state.get("projector") is not None:
            self.projector.load_state_dict(state["projector"])
        self.alpha_balance.load_state_dict(state["alpha_balance"])
        self.lambda_balance.load_state_dict(state["lambda_balance"])
        if self.advantage is not None and state.get("advantage") is not None:
            self.advantage.load_state_dict(state["advantage"])
        for name, value in (state.get("running") or {}).items():
            getattr(self, name).load_state_dict(value)

    # -- the loss ------------------------------------------------------------------------

    def teacher_outputs(
        self, x: torch.Tensor, y: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, dict[str, torch.Tensor]]]:
        """``(truth, labelled mask or None, teachers' outputs)``: cached outputs from the
        batch, else a forward pass of each teacher."""
        if isinstance(y, Mapping):
            labelled = y.get("labelled")
            if "teachers" in y:
                return y["y"], labelled, {n: y["teachers"][n] for n in self.names}
            y = y["y"]
        else:
            labelled = None
        return (
            y,
            labelled,
            {n: run_teacher(self.teachers[n], x, self.cfg.needs_latents) for n in self.names},
        )

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target, labelled, outputs = self.teacher_outputs(x, y)
        labelled_share = None
        if labelled is not None:
            labelled = labelled.to(x.device).bool()
            # logged for every batch that carries a mask, all-labelled ones too (the engine
            # averages components over all samples of the epoch)
            labelled_share = labelled.float().mean()
            if bool(labelled.all()):
                labelled = None  # every sample has a truth: the plain path
        if self.cfg.needs_latents:
            prediction, features = model(x, return_features=True)
        else:
            prediction, features = model(x), {}
        if prediction.shape != target.shape:
            raise ValueError(
                f"student output shape {tuple(prediction.shape)} differs from "
                f"target shape {tuple(target.shape)}"
            )
        prediction = prediction.float()
        target = target.float()
        if labelled is None:
            task = F.mse_loss(prediction, target)
        elif bool(labelled.any()):
            task = F.mse_loss(prediction[labelled], target[labelled])
        else:
            task = prediction.sum() * 0.0  # no truth in this batch
        teacher_preds = torch.stack([outputs[n]["prediction"].float() for n in self.names])
        components: dict[str, torch.Tensor] = {"task": task.detach()}
        if labelled_share is not None:
            components["labelled"] = labelled_share
        kd = self._kd_term(prediction, target, labelled, teacher_preds, components)
        lam = self.cfg.lam * self.lambda_balance(task, kd)
        components["kd"] = kd.detach()
        components["lambda"] = lam.detach()
        total = task + lam * kd
        if self.cfg.needs_latents:
            latent = self._latent_term(features, outputs[self.names[0]], components)
            weight = self._latent_weight(total, latent)
            components.update(
                latent_weight=weight.detach(),
                latent_share=(weight * latent / (total + weight * latent).clamp_min(_EPS)).detach(),
            )
            total = total + weight * latent
        return total, components

    # -- the KD terms --------------------------------------------------------------------

    def _alpha(self, d_high: torch.Tensor, d_low: torch.Tensor) -> torch.Tensor:
        return self.cfg.alpha * self.alpha_balance(d_high, d_low)

    def _kd_term(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        labelled: torch.Tensor | None,
        teacher_preds: torch.Tensor,
        components: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        method = self.cfg.method
        names = self.names
        if method == "output_mse":
            return F.mse_loss(prediction, teacher_preds[0])
        if method in ("sdkd", "sdkd_latent"):
            assert self.split is not None
            bands = self.split.band_mse(prediction, teacher_preds[0])
            if self.advantage is not None:
                self.advantage.update(prediction, target, teacher_preds[0], labelled)
                return self._advantage_sum(bands, components)
            alpha = self._alpha(bands[HIGH], bands[LOW])
            components.update(
                kd_high=bands[HIGH].detach(), kd_low=bands[LOW].detach(), alpha=alpha.detach()
            )
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
            weights_ms = _camkd_or_uniform(
                _per_sample_mse(teacher_preds, target[None]), labelled, self.cfg.camkd_temperature
            )
            kd = (weights_ms * per_sample).sum(0).mean()
            weights = weights_ms.mean(1)
        elif method == "sdkd_multi":
            return self._sdkd_multi(prediction, target, labelled, teacher_preds, components)
        else:  # pragma: no cover - config validation rejects other names
            raise ConfigError(f"unknown distillation method {method!r}")
        for name, w in zip(names, weights, strict=True):
            components[f"w_{name}"] = w.detach()
        return kd

    def _advantage_sum(
        self, bands: torch.Tensor, components: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """sum_b w_b s_b D_b with the advantage weights w_b and whitening scales s_b."""
        assert self.advantage is not None
        if isinstance(self.split, RegionBands):
            return local_advantage_sum(self.split, self.advantage, bands, components)
        weights = self.advantage.weights().to(bands.device)
        scales = self.advantage.scales().to(bands.device)
        for b in range(len(bands)):
            components[f"kd_band{b}"] = bands[b].detach()
            components[f"w_band{b}"] = weights[b]
        return (weights * scales * bands).sum()

    def _aekd(
        self,
        prediction: torch.Tensor,
        teacher_preds: torch.Tensor,
        per_teacher: torch.Tensor,
        band: int | None,
    ) -> torch.Tensor:
        if self.cfg.aekd_gradients == "parameters":
            params = [p for p in (self.student_parameters or []) if p.requires_grad]
            if not params:
                raise ConfigError("aekd.gradients 'parameters' needs the student's parameters")
            grads = []
            for loss_m in per_teacher:
                g = torch.autograd.grad(loss_m, params, retain_graph=True, allow_unused=True)
                grads.append(
                    torch.cat(
                        [
                            (gi if gi is not None else torch.zeros_like(p)).float().flatten()
                            for gi, p in zip(g, params, strict=True)
                        ]
                    )
                )
            flat = torch.stack(grads)
            gram = flat @ flat.T
        else:
            residuals = prediction.detach()[None] - teacher_preds
            gram = (
                aekd_output_gram(residuals)
                if band is None
                else band_gram(residuals, self.split, band)
            )  # type: ignore[arg-type]
        return aekd_weights(gram, self.cfg.aekd_cap)

    def _sdkd_multi(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        labelled: torch.Tensor | None,
        teacher_preds: torch.Tensor,
        components: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        assert self.split is not None
        rule = self.cfg.band_weighting
        n, n_bands = len(self.names), self.split.n_bands
        if rule == "camkd":
            # per sample: (M, B, bands) distances and teacher errors against the truth
            dist = torch.stack(
                [self.split.band_mse_per_sample(prediction, p) for p in teacher_preds]
            )
            errors = torch.stack([self.split.band_mse_per_sample(p, target) for p in teacher_preds])
            weights = torch.stack(
                [
                    _camkd_or_uniform(errors[..., b], labelled, self.cfg.camkd_temperature)
                    for b in range(n_bands)
                ],
                dim=-1,
            )  # (M, B, bands)
            banded = (weights * dist).sum(0).mean(0)  # (bands,)
            mean_w = weights.mean(1)  # (M, bands)
        else:
            dist = torch.stack([self.split.band_mse(prediction, p) for p in teacher_preds])
            if rule == "aver":
                mean_w = torch.full_like(dist, 1.0 / n)
            else:  # aekd per band: min-norm weights of each band's gradients
                mean_w = torch.stack(
                    [
                        self._aekd(prediction, teacher_preds, dist[:, b], band=b)
                        for b in range(n_bands)
                    ],
                    dim=-1,
                )
            banded = (mean_w * dist).sum(0)  # (bands,)
        for i, name in enumerate(self.names):
            if self.advantage is None:
                components[f"w_low_{name}"] = mean_w[i, LOW].detach()
                components[f"w_high_{name}"] = mean_w[i, HIGH].detach()
            else:
                for b in range(n_bands):
                    components[f"w_band{b}_{name}"] = mean_w[i, b].detach()
        if self.advantage is not None:
            self._observe_ensemble(prediction, target, labelled, teacher_preds, mean_w.detach())
            return self._advantage_sum(banded, components)
        alpha = self._alpha(banded[HIGH], banded[LOW])
        components.update(
            kd_high=banded[HIGH].detach(), kd_low=banded[LOW].detach(), alpha=alpha.detach()
        )
        return banded[HIGH] + alpha * banded[LOW]

    @torch.no_grad()
    def _observe_ensemble(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        labelled: torch.Tensor | None,
        teacher_preds: torch.Tensor,
        mean_w: torch.Tensor,
    ) -> None:
        """The teachers' band statistics folded with their per-band weights (M, bands), so
        the advantage is the weighted ensemble's."""
        assert self.advantage is not None and self.split is not None
        split, adv = self.split, self.advantage
        prediction = prediction.detach()
        distance = torch.stack([split.band_mse(prediction, p) for p in teacher_preds])
        energy = torch.stack([adv.band_power(p) for p in teacher_preds])
        student_error = teacher_error = None
        if labelled is None or bool(labelled.any()):
            sel = slice(None) if labelled is None else labelled
            student_error = split.band_mse(prediction[sel], target[sel])
            teacher_error = (
                mean_w * torch.stack([split.band_mse(p[sel], target[sel]) for p in teacher_preds])
            ).sum(0)
        adv.observe(
            distance=(mean_w * distance).sum(0),
            teacher_energy=(mean_w * energy).sum(0),
            student_error=student_error,
            teacher_error=teacher_error,
        )

    # -- latent alignment ----------------------------------------------------------------

    def _latent_term(
        self,
        features: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor],
        components: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """MSE between the student's projected bottleneck and the teacher's latent state,
        standardized per channel by running statistics (FitNets)."""
        if "bottleneck" not in features:
            raise ConfigError(
                f"sdkd_latent needs the student's 'bottleneck' latent; the "
                f"student returns {sorted(features)}"
            )
        assert self.projector is not None
        state = teacher["state"].float()
        with torch.no_grad():
            self.latent_mean.update(all_ranks_mean(state.mean((0, 2, 3))))
            self.latent_var.update(all_ranks_mean(state.var((0, 2, 3), unbiased=False)))
        mean = self.latent_mean.get()[None, :, None, None]
        std = self.latent_var.get().clamp_min(_EPS).sqrt()[None, :, None, None]
        standardized = (state - mean) / std
        projected = self.projector(features["bottleneck"].float())
        if projected.shape[-2:] != standardized.shape[-2:]:
            projected = F.interpolate(
                projected, size=standardized.shape[-2:], mode="bilinear", align_corners=False
            )
        latent = F.mse_loss(projected, standardized)
        components["latent"] = latent.detach()
        return latent

    def _latent_weight(self, main: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """``latent_share / (1 - latent_share)`` times running main / latent: the latent term
        is then that share of the loss; or the fixed ``latent_weight``."""
        if self.cfg.latent_share is None:
            return torch.tensor(self.cfg.latent_weight, device=latent.device)
        self.main_running.update(main.detach())
        self.latent_running.update(latent.detach())
        share = self.cfg.latent_share
        ratio = self.main_running.get() / self.latent_running.get().clamp_min(_EPS)
        # capped like the balancers: a latent term that has nearly vanished is not blown up
        weight = (share / (1 - share) * ratio).clamp(max=self.cfg.balance_max)
        return weight.to(latent.device)


_RUNNING = ("latent_mean", "latent_var", "main_running", "latent_running")


def build_loss(
    cfg: DistillConfig, teachers: Mapping[str, nn.Module], **kwargs: Any
) -> DistillationLoss | None:
    """The engine's loss for ``cfg`` (``None`` for ``none``: the engine's plain MSE)."""
    if not cfg.needs_teachers:
        return None
    return DistillationLoss(cfg, teachers, **kwargs)
