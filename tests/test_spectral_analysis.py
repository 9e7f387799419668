"""Tests of the spectral analysis library ``sdkd_pipeline.spectral_analysis`` (no Kedro)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.models import build_model
from sdkd_pipeline.spectral import radial_energy_spectrum
from sdkd_pipeline.spectral_analysis import (
    REFERENCE_SLOPES,
    SUMMARY_COLUMNS,
    SpectralConfig,
    analyse_spectra,
    branch_check,
    data_spectrum,
    evenly_spaced_indices,
    latent_spectra,
    plot_spectra,
    slope_summary,
    spectral_metrics,
    summary_rows,
)

TINY = dict(in_frames=3, out_frames=3, channels=1, height=32, width=32, hidden=16, depth=1,
            heads=2, frame_hidden=8, spatial_layers=2)


def _power_law_fields(n: int, size: int, slope: float, seed: int = 0) -> torch.Tensor:
    """``n`` real fields ``(size, size)`` whose shell spectrum is ``E(k) ~ k^slope``: amplitude
    ``|k|^((slope - 1) / 2)`` per mode (a shell holds ~2 pi k modes) with random phases."""
    gen = torch.Generator().manual_seed(seed)
    ky = torch.fft.fftfreq(size, dtype=torch.float64) * size
    kx = torch.fft.rfftfreq(size, dtype=torch.float64) * size
    kmag = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    amplitude = torch.where(kmag > 0, kmag.clamp(min=1) ** ((slope - 1) / 2), 0.0)
    phase = 2 * math.pi * torch.rand((n, *kmag.shape), generator=gen, dtype=torch.float64)
    return torch.fft.irfft2(amplitude * torch.exp(1j * phase), s=(size, size), norm="ortho")


def _band_noise(n: int, size: int, k_lo: float, k_hi: float, seed: int) -> torch.Tensor:
    """White noise keeping only the modes with ``k_lo <= |k| <= k_hi``."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, 4, size, size), generator=gen, dtype=torch.float64)
    ky = torch.fft.fftfreq(size, dtype=torch.float64) * size
    kx = torch.fft.rfftfreq(size, dtype=torch.float64) * size
    kmag = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    mask = (kmag >= k_lo) & (kmag <= k_hi)
    return torch.fft.irfft2(torch.fft.rfft2(noise) * mask, s=(size, size))


def _xy(fields: torch.Tensor) -> TensorDataset:
    """An (x, y) dataset whose targets are ``fields`` (N, H, W) as (T=1, C=1, H, W) frames."""
    y = fields.float()[:, None, None]
    return TensorDataset(torch.zeros_like(y), y)


# -- slopes ------------------------------------------------------------------------------------


def test_slope_of_a_known_k_minus_3_field_is_recovered():
    dataset = _xy(_power_law_fields(8, 128, -3.0))
    k, E = data_spectrum(dataset, max_windows=8, batch_size=3)
    fit = slope_summary(k, E, (4, 40))
    assert fit["slope"] == pytest.approx(-3.0, abs=0.1)
    assert 0 < fit["slope_stderr"] < 0.1
    assert fit["r2"] > 0.98
    assert (fit["fit_k_min"], fit["fit_k_max"], fit["n_points"]) == (4.0, 40.0, 37)


def test_data_spectrum_averages_exactly_over_windows_and_batches():
    fields = _power_law_fields(5, 32, -2.0, seed=3)
    _, whole = radial_energy_spectrum(fields)
    _, batched = data_spectrum(_xy(fields), max_windows=5, batch_size=2)
    np.testing.assert_allclose(batched, whole, rtol=1e-5, atol=1e-12)


def test_evenly_spaced_indices_spread_over_the_split():
    assert evenly_spaced_indices(5, 10) == [0, 1, 2, 3, 4]
    assert evenly_spaced_indices(100, 4) == [0, 33, 66, 99]
    with pytest.raises(ValueError):
        evenly_spaced_indices(0, 4)


# -- the branch check --------------------------------------------------------------------------


def test_branch_check_names_the_high_pass_branch():
    smooth = radial_energy_spectrum(_band_noise(4, 16, 1, 3, seed=1))
    rough = radial_energy_spectrum(_band_noise(4, 16, 6, 11, seed=2))
    check = branch_check(high=rough, low=smooth)
    assert check["cutoff"] == 5.5  # half of the 16x16 grid's largest shell, 11
    assert check["conv_is_high_pass"] and check["centroid_agrees"]
    assert check["high_band_fraction"]["high"] > 0.99 > 0.01 > check["high_band_fraction"]["low"]
    assert check["verdict"].startswith(
        "conv branch (Z_h) carries more high-k energy than attention (Z_l)")
    assert "0.0" in check["verdict"] and "centroid" in check["verdict"]

    swapped = branch_check(high=smooth, low=rough, cutoff=4.0)
    assert not swapped["conv_is_high_pass"]
    assert swapped["verdict"].startswith(
        "attention (Z_l) carries more high-k energy than conv branch (Z_h)")
    assert "k > 4" in swapped["verdict"]


# -- latents of a real (tiny, untrained) teacher -----------------------------------------------


def _tiny_dataset(n: int = 6, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 3, 1, 32, 32), generator=gen)
    y = torch.randn((n, 3, 1, 32, 32), generator=gen)
    return TensorDataset(x, y)


def test_latent_spectra_of_a_teacher_on_the_data_wavenumber_scale():
    torch.manual_seed(0)
    model = build_model("st_alternet", **TINY)
    model.train()
    spectra = latent_spectra(model, _tiny_dataset(), max_windows=4, batch_size=3)
    assert set(spectra) == {"high", "low", "fused"}
    for k, E in spectra.values():
        # a 16x16 latent of a 32x32 field: shells 0..11, the same cycles per domain as the data
        np.testing.assert_array_equal(k, np.arange(12))
        assert np.all(np.isfinite(E)) and E[1:].sum() > 0
    assert model.training  # the mode is restored
    assert all(p.grad is None for p in model.parameters())


def test_latent_wavenumbers_are_rescaled_when_the_grid_is_padded():
    torch.manual_seed(0)
    model = build_model("st_alternet", **{**TINY, "height": 31, "width": 31})
    dataset = TensorDataset(torch.randn(2, 3, 1, 31, 31), torch.randn(2, 3, 1, 31, 31))
    spectra = latent_spectra(model, dataset, max_windows=2, batch_size=2)
    k, _ = spectra["high"]
    # padded to 32: the 16x16 latent spans 32 data cells, the data domain 31
    np.testing.assert_allclose(k[1], 31 / 32)


def test_analysis_summary_states_slopes_and_references_without_claiming_a_law():
    torch.manual_seed(0)
    model = build_model("st_alternet", **TINY)
    cfg = SpectralConfig(max_windows=4, batch_size=2, data_fit_range=(3, 12),
                         latent_fit_range=(2, 6))
    summary, figure = analyse_spectra(model, _tiny_dataset(), cfg, title="tiny")
    text = json.dumps(summary, allow_nan=False)  # plain, finite JSON
    assert "kolmogorov" not in text.lower()
    assert summary["reference_slopes"] == {"k^-5/3": pytest.approx(-5 / 3), "k^-3": -3.0}
    assert set(summary["spectra"]) == {"data", "high", "low", "fused"}
    for name, entry in summary["spectra"].items():
        assert math.isfinite(entry["slope"]) and math.isfinite(entry["slope_stderr"])
        expected = (3.0, 12.0) if name == "data" else (2.0, 6.0)
        assert (entry["fit_k_min"], entry["fit_k_max"]) == expected
    assert summary["branch_check"]["verdict"]
    assert summary["n_windows"] == 4

    rows = summary_rows({"dataset": "d", "teacher": "t", **summary})
    assert [r["latent"] for r in rows] == ["data", "high", "low", "fused"]
    assert all(set(r) == set(SUMMARY_COLUMNS) for r in rows)
    metrics = spectral_metrics(summary)
    assert {"slope_data", "slope_stderr_high", "centroid_low", "conv_is_high_pass"} <= set(metrics)
    assert len(figure.axes) == 2


def test_figure_has_fitted_and_reference_lines():
    fields = _power_law_fields(2, 64, -3.0)
    spectra = {"data": radial_energy_spectrum(fields),
               "high": radial_energy_spectrum(fields[:, :16, :16])}
    fits = {"data": slope_summary(*spectra["data"], (3, 12)),
            "high": slope_summary(*spectra["high"], (2, 6))}
    figure = plot_spectra(spectra, fits, cutoff=5.5)
    for axes in figure.axes:
        gids = {line.get_gid() for line in axes.get_lines()}
        assert {f"reference_{name}" for name in REFERENCE_SLOPES} <= gids
        labels = [line.get_label() for line in axes.get_lines()]
        assert any("fit: slope" in label for label in labels)
        assert axes.get_xscale() == "log" and axes.get_yscale() == "log"
    # the reference lines start at the fit's start
    data_axes = figure.axes[0]
    reference = next(li for li in data_axes.get_lines() if li.get_gid() == "reference_k^-3")
    k0, e0 = reference.get_xdata()[0], reference.get_ydata()[0]
    assert k0 == pytest.approx(3.0)
    assert e0 == pytest.approx(math.exp(fits["data"]["intercept"]) * 3.0 ** fits["data"]["slope"])


# -- windows for non-periodic directions -------------------------------------------------------


def test_window_removes_the_leakage_of_a_non_periodic_ramp():
    size = 64
    grid = torch.arange(size, dtype=torch.float64)
    ramp = torch.linspace(0.0, 1.0, size, dtype=torch.float64)[:, None].expand(size, size)
    # a wave at |k| = 5 (kx = 4, ky = 3) on a ramp along y (rows), like a wall-bounded field
    wave = 0.05 * torch.cos(2 * math.pi * (4 * grid[None, :] + 3 * grid[:, None]) / size)
    dataset = _xy((ramp + wave).expand(2, size, size))
    k, plain = data_spectrum(dataset, max_windows=2)
    _, rows_only = data_spectrum(dataset, max_windows=2, window="hann_y")
    _, both = data_spectrum(dataset, max_windows=2, window="hann")
    high = k >= 10
    # the jump at the wall spreads energy over every k without the window (E ~ k^-2)
    assert plain[high].sum() > 1e3 * rows_only[high].sum()
    assert plain[high].sum() > 1e3 * both[high].sum()
    # the wave keeps its energy (the window is rescaled) and its place, only broadened
    for spectrum in (rows_only, both):
        assert spectrum[4:7].sum() > 100 * spectrum[high].sum()
        assert spectrum[4:7].sum() == pytest.approx(float((wave**2).sum()), rel=0.2)
    assert not np.allclose(rows_only, both)


# -- configuration -----------------------------------------------------------------------------


def test_config_from_parameters_picks_the_dataset_window():
    params = {"max_windows": 8, "fit_range": {"data": [3, 12], "latent": [2, 6]},
              "window": {"navier_stokes": "none", "rayleigh_benard": "hann_y"}}
    cfg = SpectralConfig.from_params(params, "rayleigh_benard")
    assert cfg.window == "hann_y" and cfg.max_windows == 8 and cfg.high_band_cutoff is None
    assert SpectralConfig.from_params({**params, "window": "hann"}, "taxibj").window == "hann"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fit_range": {"latent": [2, 3]}}, r"spectral.fit_range.latent .* at least 3"),
        ({"fit_range": {"data": [12]}}, r"spectral.fit_range.data must be \[k_min, k_max\]"),
        ({"window": {"rayleigh_benard": "hann"}}, r"no window for dataset 'navier_stokes'"),
        ({"window": {"navier_stokes": "kaiser"}}, r"spectral.window.navier_stokes must be one"),
        ({"max_windows": 0}, r"spectral.max_windows must be a positive integer"),
        ({"high_band_cutoff": -1}, r"spectral.high_band_cutoff must be a positive number"),
        ({"split": "all"}, r"spectral.split must be train, val or test"),
        ({"fit_ranges": {}}, r"unknown key\(s\) \['fit_ranges'\]"),
    ],
)
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ConfigError, match=message):
        SpectralConfig.from_params(params, "navier_stokes")


def test_a_fit_range_outside_the_latent_grid_is_named():
    torch.manual_seed(0)
    model = build_model("st_alternet", **TINY)
    cfg = SpectralConfig(max_windows=2, batch_size=2, latent_fit_range=(20, 30))
    with pytest.raises(ConfigError, match=r"spectral.fit_range.latent = \[20, 30\].*k = 1 \.\. 11"):
        analyse_spectra(model, _tiny_dataset(2), cfg)
