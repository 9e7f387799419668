"""Spectral analysis of the data and of a teacher's latents (``kedro run --pipeline=spectral``).

What it measures, for one (dataset, teacher):

- Radially binned energy spectra ``E(k)`` (``spectral.radial_energy_spectrum``) of the target
  fields and of the teacher's latents ``high`` (Z_h, conv branch), ``low`` (Z_l, attention
  branch) and ``fused``, averaged over windows, channels and frames.
- A least-squares slope of ``log E`` on ``log k`` over a stated range, with its standard error,
  reported beside the reference slopes -5/3 and -3 of 2-D turbulence theory, and called a
  power law only when it is one: r^2 >= ``min_r2`` and an exponential ``log E = a + b k`` over
  the same shells does not fit better by more than ``exponential_r2_margin`` (a laminar
  spectrum falls off exponentially, and over k = 3..12 even a pure exponential has a power-law
  r^2 of 0.96). Otherwise the spectrum's verdict is "no power law" and its slope is kept only as
  ``raw_slope``, for the record (METHOD.md: FNO-style vorticity measures about -4.5 at
  nu = 1e-5 and has no power law at nu = 1e-3).
- Which branch is the high-pass one: the share of energy above a cutoff wavenumber and the
  spectral centroid of Z_h against Z_l, with a plain verdict.
- Which scales are worth aligning: the share of the energy of the data (the test truth) and of
  the teacher's error (prediction minus truth, from the same forward pass as the latents) in
  three log-spaced radial bands, low / mid / high (``BandSplit.log_spaced(H, W, 3)``, the bands
  of the evaluation's band MSE: the mean is in the low band and no window is applied), and
  above the distillation cutoff ``distill.cutoff.k`` when given.

Units. The data are the store's normalized fields ((x - mean) / std per channel, training-split
statistics): a constant factor per channel, so a single channel's slope is as in physical units
(several channels weigh equally), and the band shares are those the distillation losses see
(for one channel the teacher error's shares equal the evaluation's ``band_mse / mse``, which is
in physical units: the factor std^2 cancels). Wavenumbers are cycles per domain length (the longer axis)
for the data *and* the latents: a latent grid ``h x w`` that covers the (padded) domain has its
own integer shells rescaled by ``max(H, W) / (max(h, w) * downsample_factor)``, which is 1 when
the grid needs no padding, so a latent's ``k`` is the same physical scale as the data's ``k``.

Non-periodic directions (RBC's walls, latitude) leak energy into every wavenumber through the
jump at the boundary; ``window`` removes the linear trend and applies a Hann window first
(``hann_y``: along rows only; ``hann``: along both axes), for the data and the latents alike.

Imports torch, numpy and (inside ``plot_spectra``, in ``spectral_plot``) matplotlib only; no
Kedro, MLflow, Zarr or Dask, so it runs in a notebook on any ``(x, y)`` dataset and any model
with ``forward_features``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral import (
    detrend_and_window,
    fit_exponential,
    fit_power_law,
    high_band_fraction,
    spectral_centroid,
)
from sdkd_pipeline.spectral import (
    radial_energy_spectrum as _radial_energy_spectrum,
)
from sdkd_pipeline.spectral_plot import REFERENCE_SLOPES, plot_spectra
from sdkd_pipeline.spectral_shares import (
    SHARE_BANDS,
    SHARE_KEYS,
    BandTotals,
    band_share_text,
    band_shares,
    share_bands,
)

__all__ = [
    "LATENT_NAMES",
    "REFERENCE_SLOPES",
    "SHARE_BANDS",
    "SUMMARY_COLUMNS",
    "WINDOWS",
    "SpectralConfig",
    "analyse_spectra",
    "apply_window",
    "band_share_text",
    "band_shares",
    "branch_check",
    "data_spectrum",
    "evenly_spaced_indices",
    "latent_spectra",
    "plot_spectra",
    "share_bands",
    "slope_summary",
    "spectral_metrics",
    "summary_rows",
    "teacher_pass",
]

Spectrum = tuple[np.ndarray, np.ndarray]

# the latents analysed by default (a model's others, such as a teacher's "state", on request)
LATENT_NAMES = ("high", "low", "fused")
WINDOWS = ("none", "hann", "hann_y")
# one row per spectrum (data, high, low, fused) and one "teacher_error" row for the band shares
# of the teacher's error; a slope only where the spectrum is a power law
SUMMARY_COLUMNS = ("dataset", "teacher", "latent", "power_law", "slope", "slope_stderr",
                   "raw_slope", "fit_k_min", "fit_k_max", "r2", "exp_r2", "high_band_fraction",
                   "centroid", *(f"share_{key}" for key in SHARE_KEYS), "verdict")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpectralConfig:
    """Settings of one analysis (the ``spectral`` parameters resolved for one dataset).

    ``distill_cutoff`` is the distillation's band cutoff ``distill.cutoff.k`` (None: no share
    above it is reported)."""

    split: str = "test"
    max_windows: int = 64
    batch_size: int = 16
    data_fit_range: tuple[float, float] = (3.0, 12.0)
    latent_fit_range: tuple[float, float] = (2.0, 6.0)
    min_r2: float = 0.95
    exponential_r2_margin: float = 0.01
    high_band_cutoff: float | None = None  # None: half the latent grid's largest shell
    window: str = "none"
    device: str = "auto"
    distill_cutoff: float | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, dataset: str,
                    prefix: str = "spectral", *, distill_cutoff: Any = None) -> SpectralConfig:
        """Validate the ``spectral`` parameters; ``window`` is a mapping dataset -> window (or
        one window for all). ``distill_cutoff``: ``distill.cutoff.k`` or None. Errors name the
        parameter."""
        params = dict(params or {})
        known = {"split", "max_windows", "batch_size", "fit_range", "min_r2",
                 "exponential_r2_margin", "high_band_cutoff", "window", "device"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"parameter {prefix}: unknown key(s) {unknown}; known: "
                              f"{sorted(known)}")
        defaults = cls()
        split = str(params.get("split", defaults.split))
        if split not in ("train", "val", "test"):
            raise ConfigError(f"parameter {prefix}.split must be train, val or test, got "
                              f"{split!r}")
        fit = dict(params.get("fit_range") or {})
        bad = sorted(set(fit) - {"data", "latent"})
        if bad:
            raise ConfigError(f"parameter {prefix}.fit_range: unknown key(s) {bad}; use data "
                              "and latent")
        cutoff = params.get("high_band_cutoff", defaults.high_band_cutoff)
        if cutoff is not None:
            cutoff = _positive_float(cutoff, f"{prefix}.high_band_cutoff")
        min_r2 = _positive_float(params.get("min_r2", defaults.min_r2), f"{prefix}.min_r2")
        if min_r2 > 1:
            raise ConfigError(f"parameter {prefix}.min_r2 must lie in (0, 1], got {min_r2:g}")
        margin = _fraction(params.get("exponential_r2_margin", defaults.exponential_r2_margin),
                           f"{prefix}.exponential_r2_margin")
        return cls(
            split=split,
            max_windows=_positive_int(params.get("max_windows", defaults.max_windows),
                                      f"{prefix}.max_windows"),
            batch_size=_positive_int(params.get("batch_size", defaults.batch_size),
                                     f"{prefix}.batch_size"),
            data_fit_range=_fit_range(fit.get("data", defaults.data_fit_range),
                                      f"{prefix}.fit_range.data"),
            latent_fit_range=_fit_range(fit.get("latent", defaults.latent_fit_range),
                                        f"{prefix}.fit_range.latent"),
            min_r2=min_r2,
            exponential_r2_margin=margin,
            high_band_cutoff=cutoff,
            window=_window_for(params.get("window", defaults.window), dataset, prefix),
            device=str(params.get("device", defaults.device)),
            distill_cutoff=(None if distill_cutoff is None
                            else _positive_float(distill_cutoff, "distill.cutoff.k")),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_fit_range"] = list(self.data_fit_range)
        out["latent_fit_range"] = list(self.latent_fit_range)
        return out


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"parameter {name} must be a positive integer, got {value!r}")
    return int(value)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _positive_float(value: Any, name: str) -> float:
    number = _number(value)
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"parameter {name} must be a positive number, got {value!r}")
    return number


def _fraction(value: Any, name: str) -> float:
    number = _number(value)
    if not 0 <= number < 1:
        raise ConfigError(f"parameter {name} must be a number in [0, 1), got {value!r}")
    return number


def _fit_range(value: Any, name: str) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"parameter {name} must be [k_min, k_max], got {value!r}")
    k_min, k_max = (_positive_float(v, name) for v in value)
    # radial shells are the integers (times the latent's scale, 1 without padding)
    n_shells = math.floor(k_max) - math.ceil(k_min) + 1
    if n_shells < 3:
        raise ConfigError(
            f"parameter {name} = [{k_min:g}, {k_max:g}] holds {max(n_shells, 0)} integer "
            "wavenumber(s); a slope fit needs at least 3"
        )
    return k_min, k_max


def _window_for(value: Any, dataset: str, prefix: str) -> str:
    name = f"{prefix}.window"
    if isinstance(value, Mapping):
        if dataset not in value:
            raise ConfigError(f"parameter {name} names no window for dataset {dataset!r}; add "
                              f"{name}.{dataset}: one of {list(WINDOWS)}")
        value, name = value[dataset], f"{name}.{dataset}"
    window = "none" if value is None or value is False else str(value).lower()
    if window not in WINDOWS:
        raise ConfigError(f"parameter {name} must be one of {list(WINDOWS)}, got {value!r}")
    return window



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


def data_spectrum(dataset, max_windows: int, *, window: str = "none",
                  batch_size: int = 16) -> Spectrum:
    """Mean radial spectrum ``(k, E)`` of the target fields ``y`` of up to ``max_windows``
    windows of an ``(x, y)`` dataset (``y``: ``(T, C, H, W)``), over windows, frames and
    channels. In the dataset's units (normalized for a ``WindowDataset``)."""
    mean = _MeanSpectrum()
    for _, y in _loader(dataset, max_windows, batch_size):
        mean.add(apply_window(y, window), len(y))
    return mean.result()


def teacher_pass(model: torch.nn.Module, dataset, *, max_windows: int, batch_size: int,
                 window: str = "none", device: torch.device | str | None = None,
                 names: Sequence[str] | None = None, distill_cutoff: float | None = None,
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
                    raise ValueError(f"{type(model).__name__} predicts {tuple(prediction.shape)} "
                                     f"for targets {tuple(y.shape)}")
                if truth is None:
                    truth = BandTotals(*y.shape[-2:], distill_cutoff)
                    error = BandTotals(*y.shape[-2:], distill_cutoff)
                data.add(apply_window(y, window), len(y))
                truth.add(y)
                error.add(prediction.double() - y.double())
                wanted = names or _default_latents(model, features)
                for name in wanted:
                    if name not in features:
                        raise KeyError(f"{type(model).__name__} has no latent {name!r}; it "
                                       f"returns {sorted(features)}")
                    latent = features[name].float()
                    means.setdefault(name, _MeanSpectrum()).add(apply_window(latent, window),
                                                                len(x))
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


def latent_spectra(model: torch.nn.Module, dataset, *, max_windows: int, batch_size: int,
                   window: str = "none", device: torch.device | str | None = None,
                   names: Sequence[str] | None = None) -> dict[str, Spectrum]:
    """Mean radial spectra ``{name: (k, E)}`` of the model's latents: ``teacher_pass``'s
    ``latents``."""
    return teacher_pass(model, dataset, max_windows=max_windows, batch_size=batch_size,
                        window=window, device=device, names=names)["latents"]


def _latent_k_scale(model: torch.nn.Module, data_hw: Sequence[int],
                    latent_hw: Sequence[int]) -> float:
    """Latent shells in cycles per latent domain -> cycles per data domain length."""
    factor = getattr(model, "downsample_factor", None)
    if factor is None:  # assume the latent grid covers exactly the data domain
        return 1.0
    scale = max(data_hw) / (max(latent_hw) * factor)
    return 1.0 if math.isclose(scale, 1.0) else float(scale)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def slope_summary(k, E, k_range: Sequence[float], *, min_r2: float = 0.95,
                  exponential_r2_margin: float = 0.01) -> dict[str, Any]:
    """Power-law and exponential fits of ``E(k)`` over ``k_range`` and whether it is a power law.

    ``power_law`` is True when the power-law fit (``fit_power_law``, log E on log k) has
    ``r2 >= min_r2`` and the exponential fit (``fit_exponential``, log E on k, same shells)
    does not beat it by more than ``exponential_r2_margin``. ``verdict`` says which, with the
    r^2. ``slope`` and ``slope_stderr`` are the fit's for a power law and None otherwise; the
    fit's numbers are kept whatever the verdict as ``raw_slope``, ``raw_slope_stderr``,
    ``intercept`` (natural log), ``r2``, and ``exp_rate`` (per unit k: E ~ exp(exp_rate k)),
    ``exp_intercept``, ``exp_r2``; also ``fit_k_min``, ``fit_k_max``, ``n_points``.
    """
    k_min, k_max = (float(v) for v in k_range)
    fit = fit_power_law(k, E, k_min, k_max)
    exp = fit_exponential(k, E, k_min, k_max)
    if exp.r2 > fit.r2 + exponential_r2_margin:
        kind = "decay" if exp.rate < 0 else "growth"
        verdict = (f"no power law: exponential {kind} fits better (r^2 {exp.r2:.3f} vs "
                   f"{fit.r2:.3f})")
    elif fit.r2 < min_r2:
        verdict = f"no power law (r^2 {fit.r2:.3f} < {min_r2:g})"
    else:
        verdict = (f"power law: slope {fit.slope:.2f} ± {fit.slope_stderr:.2f} (r^2 "
                   f"{fit.r2:.3f}; exponential r^2 {exp.r2:.3f})")
    power_law = verdict.startswith("power law")
    return {
        "power_law": power_law,
        "verdict": verdict,
        "slope": fit.slope if power_law else None,
        "slope_stderr": fit.slope_stderr if power_law else None,
        "raw_slope": fit.slope,
        "raw_slope_stderr": fit.slope_stderr,
        "intercept": fit.intercept,
        "r2": fit.r2,
        "exp_rate": exp.rate,
        "exp_intercept": exp.intercept,
        "exp_r2": exp.r2,
        "fit_k_min": k_min,
        "fit_k_max": k_max,
        "n_points": fit.n_points,
    }


def _band_limited(k, E, k_max: float | None) -> Spectrum:
    k, E = np.asarray(k, dtype=np.float64), np.asarray(E, dtype=np.float64)
    if k_max is None:
        return k, E
    keep = k <= k_max * (1 + 1e-9)
    return k[keep], E[keep]
def branch_check(high: Spectrum, low: Spectrum, cutoff: float | None = None) -> dict[str, Any]:
    """Is the conv branch (Z_h, ``high``) the high-pass one and attention (Z_l, ``low``) the
    low-pass one? Compares the energy share above ``cutoff`` (default: half the largest shell
    of ``high``'s grid) and the spectral centroids; the verdict says which carries more high-k
    energy, with the numbers. The mean (k = 0) is left out of both statistics.
    """
    k_high, e_high = (np.asarray(a, dtype=np.float64) for a in high)
    k_low, e_low = (np.asarray(a, dtype=np.float64) for a in low)
    if cutoff is None:
        cutoff = 0.5 * float(k_high.max())
    frac_h = high_band_fraction(k_high, e_high, cutoff)
    frac_l = high_band_fraction(k_low, e_low, cutoff)
    cent_h = spectral_centroid(k_high, e_high)
    cent_l = spectral_centroid(k_low, e_low)
    numbers = (f"high-band energy fraction (k > {cutoff:.3g}) Z_h {frac_h:.3f} vs Z_l "
               f"{frac_l:.3f}, spectral centroid Z_h {cent_h:.3g} vs Z_l {cent_l:.3g}")
    if frac_h > frac_l:
        verdict = "conv branch (Z_h) carries more high-k energy than attention (Z_l)"
    elif frac_h < frac_l:
        verdict = "attention (Z_l) carries more high-k energy than conv branch (Z_h)"
    else:
        verdict = "conv branch (Z_h) and attention (Z_l) carry the same high-k energy share"
    centroid_agrees = (cent_h > cent_l) == (frac_h > frac_l) or frac_h == frac_l
    if not centroid_agrees:
        numbers += " (the centroids order the branches the other way)"
    return {
        "cutoff": float(cutoff),
        "high_band_fraction": {"high": frac_h, "low": frac_l},
        "centroid": {"high": cent_h, "low": cent_l},
        "conv_is_high_pass": bool(frac_h > frac_l),
        "centroid_agrees": bool(centroid_agrees),
        "verdict": f"{verdict}: {numbers}",
    }


# ---------------------------------------------------------------------------------------------
# The whole analysis
# ---------------------------------------------------------------------------------------------


def analyse_spectra(model: torch.nn.Module, dataset, cfg: SpectralConfig, *,
                    title: str | None = None, device: torch.device | str | None = None
                    ) -> tuple[dict[str, Any], Any]:
    """Spectra of the data and of the model's latents, their fits and power-law verdicts, the
    branch check, the band shares of the data and of the model's error, and the figure:
    ``(summary, Figure)``. ``summary`` is JSON-ready (plain numbers, lists and None)."""
    passed = teacher_pass(model, dataset, max_windows=cfg.max_windows,
                          batch_size=cfg.batch_size, window=cfg.window, device=device,
                          distill_cutoff=cfg.distill_cutoff)
    spectra: dict[str, Spectrum] = {"data": passed["data"], **passed["latents"]}
    latent_names = [n for n in spectra if n != "data"]
    latent_k_max = max(float(spectra[n][0].max()) for n in latent_names)
    cutoff = cfg.high_band_cutoff if cfg.high_band_cutoff is not None else 0.5 * latent_k_max
    if not 0 < cutoff < latent_k_max:
        raise ConfigError(f"parameter spectral.high_band_cutoff = {cutoff:g} must lie between 0 "
                          f"and the latent grid's largest wavenumber {latent_k_max:.3g}")

    entries: dict[str, dict[str, Any]] = {}
    for name, (k, E) in spectra.items():
        is_data = name == "data"
        k_range = cfg.data_fit_range if is_data else cfg.latent_fit_range
        param = "spectral.fit_range." + ("data" if is_data else "latent")
        try:
            fit = slope_summary(k, E, k_range, min_r2=cfg.min_r2,
                                exponential_r2_margin=cfg.exponential_r2_margin)
        except ValueError as error:
            raise ConfigError(
                f"parameter {param} = {list(k_range)}: {error} (the {name} spectrum has shells "
                f"k = {k[1]:.3g} .. {k[-1]:.3g}; choose a range inside them)") from error
        # statistics over the latent grid's shells for every spectrum, so the data row compares
        # like for like with the latents
        k_band, e_band = _band_limited(k, E, latent_k_max)
        entries[name] = {
            **fit,
            "high_band_fraction": high_band_fraction(k_band, e_band, cutoff),
            "centroid": spectral_centroid(k_band, e_band),
            "k": [float(v) for v in k],
            "E": [float(v) for v in E],
        }

    check = branch_check(spectra["high"], spectra["low"], cutoff) if {
        "high", "low"} <= set(spectra) else None
    shares = {
        **passed["band_shares"],
        "note": ("Shares of the energy sum x^2 of the test truth (data) and of the teacher's "
                 "error (prediction - truth), over the windows, frames and channels, in three "
                 "log-spaced radial bands (BandSplit.log_spaced(H, W, 3): the evaluation's band "
                 "MSE bands, the mean in the low band, no window); above_cutoff is the share at "
                 "|k| > distill.cutoff.k (BandSplit.two_band, as the distillation loss); "
                 "mean_square of the error is its MSE. Normalized units."),
    }
    summary: dict[str, Any] = {
        "n_windows": len(evenly_spaced_indices(len(dataset), cfg.max_windows)),
        "config": cfg.to_dict(),
        "units": {
            "k": "cycles per domain length (longer axis); latents rescaled to the same scale",
            "data": "normalized fields ((x - mean) / std per channel, training split): slopes "
                    "as in physical units; channels weigh equally",
            "latents": "latent activations (arbitrary units)",
        },
        "band_statistics_k_max": latent_k_max,
        "spectra": entries,
        "reference_slopes": dict(REFERENCE_SLOPES),
        "note": ("Slopes are least-squares fits of log E on log k over the stated ranges, with "
                 "their standard errors, reported as a power law only when r^2 >= "
                 f"{cfg.min_r2:g} and an exponential (log E linear in k) over the same shells "
                 f"does not fit better by more than {cfg.exponential_r2_margin:g} in r^2; "
                 "otherwise slope is null and the fit is kept as raw_slope for the record. The "
                 "reference slopes -5/3 and -3 (2-D turbulence: inverse energy and enstrophy "
                 "cascades) are shown for comparison only; the measured slopes are not "
                 "constrained to them and no scaling law is asserted."),
        "branch_check": check,
        "band_shares": shares,
    }
    figure = plot_spectra(spectra, entries, title=title, cutoff=cutoff)
    return summary, figure


def summary_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per spectrum (data, high, low, fused) and one ``teacher_error`` row (band shares
    only) with ``SUMMARY_COLUMNS``; the data row carries the data's band shares. Blank (None)
    where a column does not apply: ``slope`` and ``slope_stderr`` unless a power law."""
    shares = summary.get("band_shares") or {}

    def share_columns(values: Mapping[str, Any] | None) -> dict[str, Any]:
        return {f"share_{key}": (values or {}).get(key) for key in SHARE_KEYS}

    base = {"dataset": summary.get("dataset"), "teacher": summary.get("teacher")}
    rows = []
    for latent, entry in summary["spectra"].items():
        row = {**base, "latent": latent}
        row.update({c: entry.get(c) for c in SUMMARY_COLUMNS if c not in row})
        row["power_law"] = int(bool(entry["power_law"]))
        row.update(share_columns(shares.get("data") if latent == "data" else None))
        rows.append(row)
    if "teacher_error" in shares:
        row = dict.fromkeys(SUMMARY_COLUMNS)
        row.update(base, latent="teacher_error", **share_columns(shares["teacher_error"]))
        rows.append(row)
    return rows


def spectral_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """Flat numbers for an MLflow run, per spectrum ``<name>``: ``power_law_<name>`` (1 / 0),
    ``r2_<name>``, ``exp_r2_<name>``, ``raw_slope_<name>``, ``raw_slope_stderr_<name>``,
    ``high_band_fraction_<name>``, ``centroid_<name>``, and ``slope_<name>`` /
    ``slope_stderr_<name>`` only for a power law; ``conv_is_high_pass`` (1 / 0);
    ``share_<band>_data`` and ``share_<band>_teacher_error`` for band in low, mid, high,
    above_cutoff, and ``teacher_error_mse``."""
    metrics: dict[str, float] = {}
    for name, entry in summary["spectra"].items():
        metrics[f"power_law_{name}"] = float(bool(entry["power_law"]))
        keys = ["r2", "exp_r2", "raw_slope", "raw_slope_stderr", "high_band_fraction",
                "centroid"]
        if entry["power_law"]:
            keys += ["slope", "slope_stderr"]
        for key in keys:
            metrics[f"{key}_{name}"] = float(entry[key])
    check = summary.get("branch_check")
    if check is not None:
        metrics["conv_is_high_pass"] = float(check["conv_is_high_pass"])
    shares = summary.get("band_shares") or {}
    for what in ("data", "teacher_error"):
        values = shares.get(what) or {}
        for key in SHARE_KEYS:
            if values.get(key) is not None:
                metrics[f"share_{key}_{what}"] = float(values[key])
    error = shares.get("teacher_error") or {}
    if error.get("mean_square") is not None:
        metrics["teacher_error_mse"] = float(error["mean_square"])
    return metrics
