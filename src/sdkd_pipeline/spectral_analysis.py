"""Spectral analysis of the data and of a teacher's latents (``kedro run --pipeline=spectral``).

What it measures, for one (dataset, teacher):

- Radially binned energy spectra ``E(k)`` (``spectral.radial_energy_spectrum``) of the target
  fields and of the teacher's latents ``high`` (Z_h, conv branch), ``low`` (Z_l, attention
  branch) and ``fused``, averaged over windows, channels and frames.
- A least-squares slope of ``log E`` on ``log k`` over a stated range, with its standard error,
  reported beside the reference slopes -5/3 and -3 of 2-D turbulence theory. The slopes are
  what they are: nothing here assumes or asserts a scaling law (METHOD.md: FNO-style vorticity
  measures about -4.5 at nu = 1e-5 and has no power law at nu = 1e-3).
- Which branch is the high-pass one: the share of energy above a cutoff wavenumber and the
  spectral centroid of Z_h against Z_l, with a plain verdict.

Units. The data are the store's normalized fields ((x - mean) / std per channel, training-split
statistics): a constant factor per channel, so a single channel's slope is as in physical units
(several channels weigh equally). Wavenumbers are cycles per domain length (the longer axis)
for the data *and* the latents: a latent grid ``h x w`` that covers the (padded) domain has its
own integer shells rescaled by ``max(H, W) / (max(h, w) * downsample_factor)``, which is 1 when
the grid needs no padding, so a latent's ``k`` is the same physical scale as the data's ``k``.

Non-periodic directions (RBC's walls, latitude) leak energy into every wavenumber through the
jump at the boundary; ``window`` removes the linear trend and applies a Hann window first
(``hann_y``: along rows only; ``hann``: along both axes), for the data and the latents alike.

Imports torch, numpy and (inside ``plot_spectra``) matplotlib only; no Kedro, MLflow, Zarr or
Dask, so it runs in a notebook on any ``(x, y)`` dataset and any model with
``forward_features``.
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
    fit_power_law,
    high_band_fraction,
    spectral_centroid,
)
from sdkd_pipeline.spectral import (
    radial_energy_spectrum as _radial_energy_spectrum,
)

__all__ = [
    "LATENT_NAMES",
    "REFERENCE_SLOPES",
    "SUMMARY_COLUMNS",
    "WINDOWS",
    "SpectralConfig",
    "analyse_spectra",
    "apply_window",
    "branch_check",
    "data_spectrum",
    "evenly_spaced_indices",
    "latent_spectra",
    "plot_spectra",
    "slope_summary",
    "spectral_metrics",
    "summary_rows",
]

Spectrum = tuple[np.ndarray, np.ndarray]

LATENT_NAMES = ("high", "low", "fused")
WINDOWS = ("none", "hann", "hann_y")
# 2-D turbulence theory's reference slopes: -5/3 in an inverse energy cascade, -3 in the
# enstrophy cascade. Drawn and reported for comparison only.
REFERENCE_SLOPES = {"k^-5/3": -5.0 / 3.0, "k^-3": -3.0}
SUMMARY_COLUMNS = ("dataset", "teacher", "latent", "slope", "slope_stderr", "fit_k_min",
                   "fit_k_max", "r2", "high_band_fraction", "centroid")
_LATENT_SYMBOLS = {"high": "Z_h", "low": "Z_l", "fused": "fused"}


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpectralConfig:
    """Settings of one analysis (the ``spectral`` parameters resolved for one dataset)."""

    split: str = "test"
    max_windows: int = 64
    batch_size: int = 16
    data_fit_range: tuple[float, float] = (3.0, 12.0)
    latent_fit_range: tuple[float, float] = (2.0, 6.0)
    high_band_cutoff: float | None = None  # None: half the latent grid's largest shell
    window: str = "none"
    device: str = "auto"

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, dataset: str,
                    prefix: str = "spectral") -> SpectralConfig:
        """Validate the ``spectral`` parameters; ``window`` is a mapping dataset -> window (or
        one window for all). Errors name the parameter."""
        params = dict(params or {})
        known = {"split", "max_windows", "batch_size", "fit_range", "high_band_cutoff", "window",
                 "device"}
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
            high_band_cutoff=cutoff,
            window=_window_for(params.get("window", defaults.window), dataset, prefix),
            device=str(params.get("device", defaults.device)),
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


def _positive_float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(f"parameter {name} must be a positive number, got {value!r}")
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


def latent_spectra(model: torch.nn.Module, dataset, *, max_windows: int, batch_size: int,
                   window: str = "none", device: torch.device | str | None = None,
                   names: Sequence[str] | None = None) -> dict[str, Spectrum]:
    """Mean radial spectra ``{name: (k, E)}`` of the model's latents (``forward_features``,
    each ``(B, C_lat, h, w)``) on the inputs of up to ``max_windows`` windows, averaged over
    windows and latent channels.

    ``k`` is in cycles per domain length like the data's (see the module docstring). The model
    runs in eval mode without gradients on ``device`` (default: where its parameters are); its
    training mode is restored afterwards.
    """
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    means: dict[str, _MeanSpectrum] = {}
    k_scale = 1.0
    try:
        with torch.no_grad():
            for x, _ in _loader(dataset, max_windows, batch_size):
                _, features = model.forward_features(x.to(device))
                wanted = names or getattr(model, "latent_names", None) or tuple(features)
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
    return {name: mean.result(k_scale) for name, mean in means.items()}


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


def slope_summary(k, E, k_range: Sequence[float]) -> dict[str, float | int]:
    """Power-law fit of ``E(k)`` over ``k_range`` (``spectral.fit_power_law``) as plain numbers:
    slope, slope_stderr, intercept (natural log), r2, fit_k_min, fit_k_max, n_points."""
    k_min, k_max = (float(v) for v in k_range)
    fit = fit_power_law(k, E, k_min, k_max)
    return {
        "slope": fit.slope,
        "slope_stderr": fit.slope_stderr,
        "intercept": fit.intercept,
        "r2": fit.r2,
        "fit_k_min": k_min,
        "fit_k_max": k_max,
        "n_points": fit.n_points,
    }


def _fit_line(fit: Mapping[str, Any], k) -> np.ndarray:
    return np.exp(fit["intercept"]) * np.asarray(k, dtype=np.float64) ** fit["slope"]


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
    """Spectra of the data and of the model's latents, their slopes, the branch check and the
    figure: ``(summary, Figure)``. ``summary`` is JSON-ready (plain numbers and lists)."""
    spectra: dict[str, Spectrum] = {
        "data": data_spectrum(dataset, cfg.max_windows, window=cfg.window,
                              batch_size=cfg.batch_size)
    }
    spectra.update(latent_spectra(model, dataset, max_windows=cfg.max_windows,
                                  batch_size=cfg.batch_size, window=cfg.window, device=device))
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
            fit = slope_summary(k, E, k_range)
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
                 "their standard errors. The reference slopes -5/3 and -3 (2-D turbulence: "
                 "inverse energy and enstrophy cascades) are shown for comparison only; the "
                 "measured slopes are not constrained to them and no scaling law is asserted."),
        "branch_check": check,
    }
    figure = plot_spectra(spectra, {n: e for n, e in entries.items()}, title=title,
                          cutoff=cutoff)
    return summary, figure


def summary_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per spectrum (data, high, low, fused) with ``SUMMARY_COLUMNS``."""
    rows = []
    for latent, entry in summary["spectra"].items():
        row = {"dataset": summary.get("dataset"), "teacher": summary.get("teacher"),
               "latent": latent}
        row.update({c: entry[c] for c in SUMMARY_COLUMNS[3:]})
        rows.append(row)
    return rows


def spectral_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """Flat numbers for an MLflow run: ``slope_<name>``, ``slope_stderr_<name>``, ``r2_<name>``,
    ``high_band_fraction_<name>``, ``centroid_<name>`` and ``conv_is_high_pass`` (1 / 0)."""
    metrics: dict[str, float] = {}
    for name, entry in summary["spectra"].items():
        for key in ("slope", "slope_stderr", "r2", "high_band_fraction", "centroid"):
            metrics[f"{key}_{name}"] = float(entry[key])
    check = summary.get("branch_check")
    if check is not None:
        metrics["conv_is_high_pass"] = float(check["conv_is_high_pass"])
    return metrics


# ---------------------------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------------------------


def plot_spectra(spectra: Mapping[str, Spectrum], fits: Mapping[str, Mapping[str, Any]], *,
                 title: str | None = None, cutoff: float | None = None):
    """Log-log ``E(k)`` of the data (left) and the latents (right), each with its fitted line
    over the fit range, and the reference lines ``k^-5/3`` and ``k^-3`` anchored at the start of
    the panel's first fit (gids ``reference_k^-5/3``, ``reference_k^-3``). ``fits`` are
    ``slope_summary`` dicts (or the summary's entries). Returns a ``matplotlib.figure.Figure``
    (no pyplot state)."""
    from matplotlib.figure import Figure

    panels = [("data", [n for n in spectra if n == "data"]),
              ("latents", [n for n in spectra if n != "data"])]
    panels = [(label, names) for label, names in panels if names]
    figure = Figure(figsize=(5.2 * len(panels), 4.2), layout="constrained")
    axes_list = figure.subplots(1, len(panels), sharex=True, squeeze=False)[0]
    for axes, (label, names) in zip(axes_list, panels, strict=True):
        for index, name in enumerate(names):
            k, E = (np.asarray(a, dtype=np.float64) for a in spectra[name])
            use = (k > 0) & (E > 0)
            color = f"C{index}"
            symbol = _LATENT_SYMBOLS.get(name, name)
            axes.loglog(k[use], E[use], "o-", color=color, markersize=3, linewidth=1,
                        label=symbol)
            fit = fits.get(name)
            if fit is not None:
                k_fit = np.linspace(fit["fit_k_min"], fit["fit_k_max"], 50)
                axes.loglog(k_fit, _fit_line(fit, k_fit), "--", color=color, linewidth=2,
                            label=f"{symbol} fit: slope {fit['slope']:.2f} ± "
                                  f"{fit['slope_stderr']:.2f}")
        anchor = next((fits[n] for n in names if n in fits), None)
        if anchor is not None:
            k0 = float(anchor["fit_k_min"])
            e0 = float(_fit_line(anchor, k0))
            k_ref = np.geomspace(k0, 2.0 * float(anchor["fit_k_max"]), 50)
            for (ref_name, slope), style in zip(REFERENCE_SLOPES.items(), (":", "-."),
                                                strict=True):
                exponent = ref_name.removeprefix("k^")
                axes.loglog(k_ref, e0 * (k_ref / k0) ** slope, style, color="0.35",
                            linewidth=1.2, label=f"reference $k^{{{exponent}}}$",
                            gid=f"reference_{ref_name}")
        if cutoff is not None and label == "latents":
            axes.axvline(cutoff, color="0.6", linewidth=0.8,
                         label=f"high-band cutoff k = {cutoff:.3g}")
        axes.set_xlabel("k (cycles per domain length)")
        axes.set_ylabel("E(k)" + (" (normalized units)" if label == "data" else ""))
        axes.set_title(label)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    return figure
