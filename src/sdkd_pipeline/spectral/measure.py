"""Measuring spectra over a dataset: the mean radial spectrum of the data, and one forward pass
of a model (``forward_features``) that collects the spectra of its latents and the band shares
of the data and of its error (``teacher_pass``).

A latent grid ``h x w`` that covers the (padded) domain has its shells rescaled by
``max(H, W) / (max(h, w) * downsample_factor)`` (1 without padding), so a latent's ``k`` is in
cycles per data domain length, the same physical scale as the data's (``analysis``, Units).
``apply_window`` detrends and Hann-windows non-periodic axes. Imports torch and numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral.config import WINDOWS
from sdkd_pipeline.spectral.shares import BandTotals
from sdkd_pipeline.spectral.spectra import detrend_and_window
from sdkd_pipeline.spectral.spectra import (
    radial_energy_spectrum as _radial_energy_spectrum,
)

__all__ = [
    "LATENT_NAMES",
    "Spectrum",
    "apply_window",
    "data_spectrum",
    "evenly_spaced_indices",
    "latent_spectra",
    "teacher_pass",
]

Spectrum = tuple[np.ndarray, np.ndarray]

# the latents analysed by default (a model's others, such as a teacher's "state", on request)
LATENT_NAMES = ("high", "low", "fused")


# ---------------------------------------------------------------------------------------------
# Spectra
# ---------------------------------------------------------------------------------------------


def apply_window(x: torch.Tensor, window: str) -> torch.Tensor:
    """Detrend and Hann-window ``(..., H, W)`` fields along their non-periodic axes:
    ``none`` (periodic), ``hann_y`` (rows: RBC's walls, latitude) or ``hann`` (both axes)."""
    if window == "none":
        return x
    if window == "hann_y":
        return detrend_and_window(x, (-2,))
    if window == "hann":
        return detrend_and_window(x, (-2, -1))
    raise ConfigError(f"window must be one of {list(WINDOWS)}, got {window!r}")


def evenly_spaced_indices(n_items: int, max_items: int) -> list[int]:
    """At most ``max_items`` distinct indices spread evenly over ``range(n_items)``.

    Neighbouring windows overlap and share a trajectory; spreading them samples the split."""
    if n_items < 1:
        raise ValueError("the dataset is empty")
    if max_items >= n_items:
        return list(range(n_items))
    return sorted({int(i) for i in np.linspace(0, n_items - 1, max_items).round()})


class _MeanSpectrum:
    """Running mean of spectra over batches of unequal size."""

    def __init__(self) -> None:
        self.k: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, fields: torch.Tensor, n: int) -> None:
        k, energy = _radial_energy_spectrum(fields)
        if self.total is None:
            self.k, self.total = k, energy * n
        else:
            self.total = self.total + energy * n
        self.count += n

    def result(self, k_scale: float = 1.0) -> Spectrum:
        assert self.k is not None and self.total is not None
        return self.k * k_scale, self.total / self.count


def _loader(dataset, max_windows: int, batch_size: int):
    indices = evenly_spaced_indices(len(dataset), max_windows)
    subset = torch.utils.data.Subset(dataset, indices)
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False)


def data_spectrum(
    dataset, max_windows: int, *, window: str = "none", batch_size: int = 16
) -> Spectrum:
    """Mean radial spectrum ``(k, E)`` of the target fields ``y`` of up to ``max_windows``
    windows of an ``(x, y)`` dataset (``y``: ``(T, C, H, W)``), over windows, frames and
    channels. In the dataset's units (normalized for a ``WindowDataset``)."""
    mean = _MeanSpectrum()
    for _, y in _loader(dataset, max_windows, batch_size):
        mean.add(apply_window(y, window), len(y))
    return mean.result()


def teacher_pass(
    model: torch.nn.Module,
    dataset,
    *,
    max_windows: int,
    batch_size: int,
    window: str = "none",
    device: torch.device | str | None = None,
    names: Sequence[str] | None = None,
    distill_cutoff: float | None = None,
) -> dict[str, Any]:
    """One forward pass of the model (``forward_features``) over up to ``max_windows`` windows
    of an ``(x, y)`` dataset, collecting:

    - ``data``: the mean radial spectrum ``(k, E)`` of the targets ``y`` (after ``window``);
    - ``latents``: ``{name: (k, E)}`` of the latents ``names`` (default: ``LATENT_NAMES`` that
      the model has, else all of its latents; each ``(B, C_lat, h, w)``), averaged over
      windows and latent channels, ``k`` in cycles per domain length like the data's (see the
      module docstring);
    - ``band_shares``: ``{"bands": {low: [0, c0], ...}, "distill_cutoff_k", "data": shares of
      y, "teacher_error": shares of prediction - y}`` (``band_shares``; no window).

    The model runs in eval mode without gradients on ``device`` (default: where its parameters
    are); its training mode is restored afterwards.
    """
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    data = _MeanSpectrum()
    means: dict[str, _MeanSpectrum] = {}
    truth: BandTotals | None = None
    error: BandTotals | None = None
    k_scale = 1.0
    try:
        with torch.no_grad():
            for x, y in _loader(dataset, max_windows, batch_size):
                prediction, features = model.forward_features(x.to(device))
                y = y.to(prediction.device)
                if prediction.shape != y.shape:
                    raise ValueError(
                        f"{type(model).__name__} predicts {tuple(prediction.shape)} "
                        f"for targets {tuple(y.shape)}"
                    )
                if truth is None:
                    truth = BandTotals(*y.shape[-2:], distill_cutoff)
                    error = BandTotals(*y.shape[-2:], distill_cutoff)
                data.add(apply_window(y, window), len(y))
                truth.add(y)
                error.add(prediction.double() - y.double())
                wanted = names or _default_latents(model, features)
                for name in wanted:
                    if name not in features:
                        raise KeyError(
                            f"{type(model).__name__} has no latent {name!r}; it "
                            f"returns {sorted(features)}"
                        )
                    latent = features[name].float()
                    means.setdefault(name, _MeanSpectrum()).add(
                        apply_window(latent, window), len(x)
                    )
                k_scale = _latent_k_scale(model, x.shape[-2:], latent.shape[-2:])
    finally:
        model.train(was_training)
    assert truth is not None and error is not None
    return {
        "data": data.result(),
        "latents": {name: mean.result(k_scale) for name, mean in means.items()},
        "band_shares": {
            "bands": truth.band_ranges(),
            "distill_cutoff_k": distill_cutoff,
            "data": truth.shares(),
            "teacher_error": error.shares(),
        },
    }


def _default_latents(model: torch.nn.Module, features: Mapping[str, Any]) -> tuple[str, ...]:
    """``LATENT_NAMES`` that the model has (a teacher's other latents, e.g. ``state``, are left
    out), else all of its latents (a student's ``bottleneck``)."""
    available = tuple(getattr(model, "latent_names", None) or features)
    return tuple(n for n in LATENT_NAMES if n in available) or available


def latent_spectra(
    model: torch.nn.Module,
    dataset,
    *,
    max_windows: int,
    batch_size: int,
    window: str = "none",
    device: torch.device | str | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Spectrum]:
    """Mean radial spectra ``{name: (k, E)}`` of the model's latents: ``teacher_pass``'s
    ``latents``."""
    return teacher_pass(
        model,
        dataset,
        max_windows=max_windows,
        batch_size=batch_size,
        window=window,
        device=device,
        names=names,
    )["latents"]


def _latent_k_scale(
    model: torch.nn.Module, data_hw: Sequence[int], latent_hw: Sequence[int]
) -> float:
    """Latent shells in cycles per latent domain -> cycles per data domain length."""
    factor = getattr(model, "downsample_factor", None)
    if factor is None:  # assume the latent grid covers exactly the data domain
        return 1.0
    scale = max(data_hw) / (max(latent_hw) * factor)
    return 1.0 if math.isclose(scale, 1.0) else float(scale)
