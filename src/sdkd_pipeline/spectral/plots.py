"""The figure of the spectral analysis (``analysis.analyse_spectra``): log-log spectra
with fitted and reference lines, in the evaluation figures' colour-blind-safe palette
(``evaluation.plots.style.OKABE_ITO``), each panel's legend below it (never over the data).

Imports numpy only at module level and matplotlib inside ``plot_spectra`` (no pyplot state).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sdkd_pipeline.evaluation.plots.style import OKABE_ITO

__all__ = ["LATENT_SYMBOLS", "REFERENCE_SLOPES", "plot_spectra"]

# 2-D turbulence theory's reference slopes: -5/3 in an inverse energy cascade, -3 in the
# enstrophy cascade. Drawn and reported for comparison only.
REFERENCE_SLOPES = {"k^-5/3": -5.0 / 3.0, "k^-3": -3.0}
LATENT_SYMBOLS = {"high": "Z_h", "low": "Z_l", "fused": "fused"}


def _is_power_law(fit: Mapping[str, Any]) -> bool:
    """A ``slope_summary`` entry's verdict; a bare fit without one (older callers) counts as a
    power law."""
    return bool(fit.get("power_law", True))


def _fit_slope(fit: Mapping[str, Any]) -> float:
    return float(fit["raw_slope"] if "raw_slope" in fit else fit["slope"])


def _fit_line(fit: Mapping[str, Any], k) -> np.ndarray:
    return np.exp(fit["intercept"]) * np.asarray(k, dtype=np.float64) ** _fit_slope(fit)


def _measured_at(k: np.ndarray, E: np.ndarray, k0: float) -> float:
    """``E`` at ``k0``, interpolated log-log between the shells (positive shells only)."""
    use = (k > 0) & (E > 0)
    return float(np.exp(np.interp(np.log(k0), np.log(k[use]), np.log(E[use]))))


def plot_spectra(
    spectra: Mapping[str, tuple[np.ndarray, np.ndarray]],
    fits: Mapping[str, Mapping[str, Any]],
    *,
    title: str | None = None,
    cutoff: float | None = None,
):
    """Log-log ``E(k)`` of the data (left) and the latents (right).

    A spectrum whose fit is a power law (``fits[name]["power_law"]``, see
    ``analysis.slope_summary``) gets its fitted line over the fit range (gid
    ``fit_<name>``, label ``... fit: slope s ± e``); one that is not gets no line, and its legend
    entry says ``no power law`` with the verdict's numbers. The reference lines ``k^-5/3`` and
    ``k^-3`` (gids ``reference_k^-5/3``, ``reference_k^-3``) start at the panel's first power-law
    fit at its ``k_min``, or at the first spectrum itself when no fit in the panel is one.
    Returns a ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    panels = [
        ("data", [n for n in spectra if n == "data"]),
        ("latents", [n for n in spectra if n != "data"]),
    ]
    panels = [(label, names) for label, names in panels if names]
    figure = Figure(figsize=(5.2 * len(panels), 4.2), layout="constrained")
    axes_list = figure.subplots(1, len(panels), sharex=True, squeeze=False)[0]
    for axes, (label, names) in zip(axes_list, panels, strict=True):
        for index, name in enumerate(names):
            k, E = (np.asarray(a, dtype=np.float64) for a in spectra[name])
            use = (k > 0) & (E > 0)
            color = OKABE_ITO[index % len(OKABE_ITO)]
            symbol = LATENT_SYMBOLS.get(name, name)
            fit = fits.get(name)
            law = fit is not None and _is_power_law(fit)
            spectrum_label = symbol
            if fit is not None and not law:
                spectrum_label = f"{symbol}: {fit.get('verdict') or 'no power law'}"
            axes.loglog(
                k[use],
                E[use],
                "o-",
                color=color,
                markersize=3,
                linewidth=1,
                label=spectrum_label,
                gid=f"spectrum_{name}",
            )
            if law:
                k_fit = np.linspace(fit["fit_k_min"], fit["fit_k_max"], 50)
                axes.loglog(
                    k_fit,
                    _fit_line(fit, k_fit),
                    "--",
                    color=color,
                    linewidth=2,
                    label=f"{symbol} fit: slope {_fit_slope(fit):.2f} ± {fit['slope_stderr']:.2f}",
                    gid=f"fit_{name}",
                )
        _draw_references(axes, spectra, fits, names)
        if cutoff is not None and label == "latents":
            axes.axvline(
                cutoff, color="0.6", linewidth=0.8, label=f"high-band cutoff k = {cutoff:.3g}"
            )
        axes.set_xlabel("k (cycles per domain length)")
        axes.set_ylabel("E(k)" + (" (normalized units)" if label == "data" else ""))
        axes.set_title(label)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(  # below the axes, clear of the ticks and the x label (4.5 font sizes)
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            borderaxespad=4.5,
            frameon=False,
        )
    if title:
        figure.suptitle(title)
    return figure


def _draw_references(axes, spectra, fits, names) -> None:
    with_fit = [n for n in names if n in fits]
    if not with_fit:
        return
    laws = [n for n in with_fit if _is_power_law(fits[n])]
    anchor = fits[(laws or with_fit)[0]]
    k0 = float(anchor["fit_k_min"])
    if laws:
        e0 = float(_fit_line(anchor, k0))
    else:  # no fitted line to start from: start on the measured spectrum
        k, E = (np.asarray(a, dtype=np.float64) for a in spectra[with_fit[0]])
        e0 = _measured_at(k, E, k0)
    k_ref = np.geomspace(k0, 2.0 * float(anchor["fit_k_max"]), 50)
    for (ref_name, slope), style in zip(REFERENCE_SLOPES.items(), (":", "-."), strict=True):
        exponent = ref_name.removeprefix("k^")
        axes.loglog(
            k_ref,
            e0 * (k_ref / k0) ** slope,
            style,
            color="0.35",
            linewidth=1.2,
            label=f"reference $k^{{{exponent}}}$",
            gid=f"reference_{ref_name}",
        )
