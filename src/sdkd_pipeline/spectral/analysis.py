"""Spectral analysis of the data and of a teacher's latents (``kedro run --pipelines=spectral``).

What it measures, for one (dataset, teacher):

- Radially binned energy spectra ``E(k)`` (``spectra.radial_energy_spectrum``) of the target
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
in physical units: the factor std^2 cancels). Wavenumbers are cycles per domain length (the
longer axis) for the data *and* the latents: a latent grid ``h x w`` that covers the (padded) domain has its
own integer shells rescaled by ``max(H, W) / (max(h, w) * downsample_factor)``, which is 1 when
the grid needs no padding, so a latent's ``k`` is the same physical scale as the data's ``k``.

Non-periodic directions (RBC's walls, latitude) leak energy into every wavenumber through the
jump at the boundary; ``window`` removes the linear trend and applies a Hann window first
(``hann_y``: along rows only; ``hann``: along both axes), for the data and the latents alike.

This module holds the statistics (``slope_summary``, ``branch_check``), the whole analysis
(``analyse_spectra``) and its tables (``summary_rows``, ``spectral_metrics``), and gathers the
stage's other public names from ``config`` (``SpectralConfig``), ``measure`` (``teacher_pass``
and the spectra), ``plots`` (``plot_spectra``) and ``shares`` (the band shares), so callers
import the whole library from here.

Imports torch, numpy and (inside ``plot_spectra``, in ``plots``) matplotlib only; no
Kedro, MLflow, Zarr or Dask, so it runs in a notebook on any ``(x, y)`` dataset and any model
with ``forward_features``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral.config import WINDOWS, SpectralConfig
from sdkd_pipeline.spectral.measure import (
    LATENT_NAMES,
    Spectrum,
    apply_window,
    data_spectrum,
    evenly_spaced_indices,
    latent_spectra,
    teacher_pass,
)
from sdkd_pipeline.spectral.plots import REFERENCE_SLOPES, plot_spectra
from sdkd_pipeline.spectral.shares import (
    SHARE_BANDS,
    SHARE_KEYS,
    band_share_text,
    band_shares,
    share_bands,
)
from sdkd_pipeline.spectral.spectra import (
    fit_exponential,
    fit_power_law,
    high_band_fraction,
    spectral_centroid,
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

# one row per spectrum (data, high, low, fused) and one "teacher_error" row for the band shares
# of the teacher's error; a slope only where the spectrum is a power law
SUMMARY_COLUMNS = (
    "dataset",
    "teacher",
    "latent",
    "power_law",
    "slope",
    "slope_stderr",
    "raw_slope",
    "fit_k_min",
    "fit_k_max",
    "r2",
    "exp_r2",
    "high_band_fraction",
    "centroid",
    *(f"share_{key}" for key in SHARE_KEYS),
    "verdict",
)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def slope_summary(
    k, E, k_range: Sequence[float], *, min_r2: float = 0.95, exponential_r2_margin: float = 0.01
) -> dict[str, Any]:
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
        verdict = f"no power law: exponential {kind} fits better (r^2 {exp.r2:.3f} vs {fit.r2:.3f})"
    elif fit.r2 < min_r2:
        verdict = f"no power law (r^2 {fit.r2:.3f} < {min_r2:g})"
    else:
        verdict = (
            f"power law: slope {fit.slope:.2f} ± {fit.slope_stderr:.2f} (r^2 "
            f"{fit.r2:.3f}; exponential r^2 {exp.r2:.3f})"
        )
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
    numbers = (
        f"high-band energy fraction (k > {cutoff:.3g}) Z_h {frac_h:.3f} vs Z_l "
        f"{frac_l:.3f}, spectral centroid Z_h {cent_h:.3g} vs Z_l {cent_l:.3g}"
    )
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


def _spectrum_entries(
    spectra: Mapping[str, Spectrum], cfg: SpectralConfig, latent_k_max: float, cutoff: float
) -> dict[str, dict[str, Any]]:
    """Each spectrum's fit and power-law verdict, its high-band fraction and centroid over the
    latent grid's shells, and the spectrum itself (JSON-ready)."""
    entries: dict[str, dict[str, Any]] = {}
    for name, (k, E) in spectra.items():
        is_data = name == "data"
        k_range = cfg.data_fit_range if is_data else cfg.latent_fit_range
        param = "spectral.fit_range." + ("data" if is_data else "latent")
        try:
            fit = slope_summary(
                k, E, k_range, min_r2=cfg.min_r2, exponential_r2_margin=cfg.exponential_r2_margin
            )
        except ValueError as error:
            raise ConfigError(
                f"parameter {param} = {list(k_range)}: {error} (the {name} spectrum has shells "
                f"k = {k[1]:.3g} .. {k[-1]:.3g}; choose a range inside them)"
            ) from error
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
    return entries


def analyse_spectra(
    model: torch.nn.Module,
    dataset,
    cfg: SpectralConfig,
    *,
    title: str | None = None,
    device: torch.device | str | None = None,
) -> tuple[dict[str, Any], Any]:
    """Spectra of the data and of the model's latents, their fits and power-law verdicts, the
    branch check, the band shares of the data and of the model's error, and the figure:
    ``(summary, Figure)``. ``summary`` is JSON-ready (plain numbers, lists and None)."""
    passed = teacher_pass(
        model,
        dataset,
        max_windows=cfg.max_windows,
        batch_size=cfg.batch_size,
        window=cfg.window,
        device=device,
        distill_cutoff=cfg.distill_cutoff,
    )
    spectra: dict[str, Spectrum] = {"data": passed["data"], **passed["latents"]}
    latent_names = [n for n in spectra if n != "data"]
    latent_k_max = max(float(spectra[n][0].max()) for n in latent_names)
    cutoff = cfg.high_band_cutoff if cfg.high_band_cutoff is not None else 0.5 * latent_k_max
    if not 0 < cutoff < latent_k_max:
        raise ConfigError(
            f"parameter spectral.high_band_cutoff = {cutoff:g} must lie between 0 "
            f"and the latent grid's largest wavenumber {latent_k_max:.3g}"
        )

    entries = _spectrum_entries(spectra, cfg, latent_k_max, cutoff)

    check = (
        branch_check(spectra["high"], spectra["low"], cutoff)
        if {"high", "low"} <= set(spectra)
        else None
    )
    shares = {
        **passed["band_shares"],
        "note": (
            "Shares of the energy sum x^2 of the test truth (data) and of the teacher's "
            "error (prediction - truth), over the windows, frames and channels, in three "
            "log-spaced radial bands (BandSplit.log_spaced(H, W, 3): the evaluation's band "
            "MSE bands, the mean in the low band, no window); above_cutoff is the share at "
            "|k| > distill.cutoff.k (BandSplit.two_band, as the distillation loss); "
            "mean_square of the error is its MSE. Normalized units."
        ),
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
        "note": (
            "Slopes are least-squares fits of log E on log k over the stated ranges, with "
            "their standard errors, reported as a power law only when r^2 >= "
            f"{cfg.min_r2:g} and an exponential (log E linear in k) over the same shells "
            f"does not fit better by more than {cfg.exponential_r2_margin:g} in r^2; "
            "otherwise slope is null and the fit is kept as raw_slope for the record. The "
            "reference slopes -5/3 and -3 (2-D turbulence: inverse energy and enstrophy "
            "cascades) are shown for comparison only; the measured slopes are not "
            "constrained to them and no scaling law is asserted."
        ),
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
        keys = ["r2", "exp_r2", "raw_slope", "raw_slope_stderr", "high_band_fraction", "centroid"]
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
