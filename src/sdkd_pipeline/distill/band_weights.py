"""Band weights from the teacher's advantage: distil a wavenumber band only where it helps.

With complementary orthogonal band projectors, ``sum_b D_b(G, F) = MSE(G, F)`` (Parseval), so a
band-split KD loss differs from plain output KD only through *which bands get weight*. This
module gives each band the weight the teacher's advantage in it earns, over ``n_bands``
log-spaced radial bands b (``BandSplit.log_spaced``):

    w_b = clip((E_b(G, Y) - E_b(F, Y)) / E_b(G, F), 0, w_max)

with E_b(A, B) the running mean over training batches of the band-b part of MSE(A, B), G the
student, F the teacher, Y the truth. It is the band-wise form of the teacher-bounded regression
loss (Chen et al. 2017) and of attentive imitation (Saputra et al. 2019): a band where the
student already errs less than the teacher (numerator <= 0) is not distilled at all; a band where
the teacher is much better than the student and the student is far from the teacher gets weight
near 1 (exactly 1 when the teacher is exact there: then E_b(G, Y) = E_b(G, F)), and more (up to
``w_max``) where the student's error exceeds the teacher's by more than their distance.

Optional whitening multiplies band b by ``mean_b' e_b' / e_b`` (capped at ``whiten_max``), e_b
the running energy of the teacher's prediction in band b, so that a fine-scale band holding 0.1 %
of the energy is not numerically invisible next to the forcing scale.

Running means are exponential moving averages (``momentum``) with bias correction, detached and
kept on the device (no host sync per step). Under DistributedDataParallel each batch's band
values are averaged over ranks first, so every rank uses the same weights. The state is saved in
``last.pt`` through the loss's ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sdkd_pipeline.spectral import BandSplit

_EPS = 1e-12


class RunningMean:
    """Bias-corrected exponential moving average of a small tensor (detached)."""

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self.value: torch.Tensor | None = None
        self.weight = 0.0  # 1 - momentum ** steps: the bias correction

    def update(self, value: torch.Tensor) -> None:
        value = value.detach().float()
        if self.value is None:
            self.value = torch.zeros_like(value)
        self.value = self.value.to(value.device) * self.momentum + value * (1 - self.momentum)
        self.weight = self.weight * self.momentum + (1 - self.momentum)

    def get(self) -> torch.Tensor | None:
        return None if self.value is None else self.value / self.weight

    def state_dict(self) -> dict[str, Any]:
        return {
            "value": None if self.value is None else self.value.detach().cpu(),
            "weight": self.weight,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.value = None if state["value"] is None else torch.as_tensor(state["value"]).float()
        self.weight = float(state["weight"])


def all_ranks_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the ranks of a DistributedDataParallel run (itself alone)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def advantage_weights(
    student_error: torch.Tensor, teacher_error: torch.Tensor, distance: torch.Tensor, w_max: float
) -> torch.Tensor:
    """``clip((E(G,Y) - E(F,Y)) / E(G,F), 0, w_max)`` per band (any matching shapes)."""
    return ((student_error - teacher_error) / distance.clamp_min(_EPS)).clamp(0.0, w_max)


class BandAdvantage:
    """Running band errors of student and teacher and the weights ``w_b`` they give.

    ``update(student, target, teacher, labelled)`` takes one batch: ``student`` the student's
    prediction, ``teacher`` the teacher's (or the teachers' weighted combination), ``target``
    the truth, ``labelled`` a bool mask (B,) of the samples that have a truth (function matching
    mixes in inputs without one: they inform E(G, F) and the whitening, never the errors).
    ``weights()`` then gives ``(n_bands,)``; ``scales()`` the whitening factors (ones without
    whitening). Until a labelled sample has been seen the weights are 1 (plain output KD).
    """

    def __init__(
        self,
        split: BandSplit,
        *,
        w_max: float,
        momentum: float,
        whiten: bool = False,
        whiten_max: float = 100.0,
    ) -> None:
        self.split = split
        self.w_max, self.whiten, self.whiten_max = float(w_max), bool(whiten), float(whiten_max)
        self.student_error = RunningMean(momentum)
        self.teacher_error = RunningMean(momentum)
        self.distance = RunningMean(momentum)
        self.teacher_energy = RunningMean(momentum)

    @property
    def n_bands(self) -> int:
        return self.split.n_bands

    @torch.no_grad()
    def update(
        self,
        student: torch.Tensor,
        target: torch.Tensor | None,
        teacher: torch.Tensor,
        labelled: torch.Tensor | None = None,
    ) -> None:
        """One batch of one teacher (see the class docstring)."""
        student, teacher = student.detach().float(), teacher.detach().float()
        errors = None
        if target is not None and (labelled is None or bool(labelled.any())):
            s, t, y = (
                (student, teacher, target)
                if labelled is None
                else (student[labelled], teacher[labelled], target[labelled])
            )
            errors = (self.split.band_mse(s, y.float()), self.split.band_mse(t, y.float()))
        self.observe(
            distance=self.split.band_mse(student, teacher),
            teacher_energy=self.band_power(teacher),
            student_error=None if errors is None else errors[0],
            teacher_error=None if errors is None else errors[1],
        )

    def band_power(self, field: torch.Tensor) -> torch.Tensor:
        """Mean energy per value of ``field`` in each band: ``(n_bands,)``, summing to the mean
        square of ``field``."""
        energy = self.split.band_energy(field.detach().float()).reshape(-1, self.n_bands)
        return energy.sum(0) / field.numel()

    @torch.no_grad()
    def observe(
        self,
        *,
        distance: torch.Tensor,
        teacher_energy: torch.Tensor,
        student_error: torch.Tensor | None = None,
        teacher_error: torch.Tensor | None = None,
    ) -> None:
        """Add one batch's band values (each ``(n_bands,)``): E(G, F), the teacher's energy,
        and when the batch has labelled samples E(G, Y) and E(F, Y). Several teachers can be
        folded in by passing their weighted sums."""
        self.distance.update(all_ranks_mean(distance))
        self.teacher_energy.update(all_ranks_mean(teacher_energy))
        if student_error is not None and teacher_error is not None:
            self.student_error.update(all_ranks_mean(student_error))
            self.teacher_error.update(all_ranks_mean(teacher_error))

    def weights(self) -> torch.Tensor:
        e_s, e_t, d = self.student_error.get(), self.teacher_error.get(), self.distance.get()
        if e_s is None or e_t is None or d is None:
            device = self.split.device if d is None else d.device
            return torch.ones(self.n_bands, device=device)
        return advantage_weights(e_s, e_t, d, self.w_max)

    def scales(self) -> torch.Tensor:
        energy = self.teacher_energy.get()
        if not self.whiten or energy is None:
            device = self.split.device if energy is None else energy.device
            return torch.ones(self.n_bands, device=device)
        return (energy.mean() / energy.clamp_min(_EPS)).clamp(max=self.whiten_max)

    def state_dict(self) -> dict[str, Any]:
        return {
            name: getattr(self, name).state_dict()
            for name in ("student_error", "teacher_error", "distance", "teacher_energy")
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            getattr(self, name).load_state_dict(value)
