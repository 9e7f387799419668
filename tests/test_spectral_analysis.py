"""Tests of the spectral analysis library ``sdkd_pipeline.spectral.analysis`` (no Kedro)."""

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
from sdkd_pipeline.spectral.analysis import (
    REFERENCE_SLOPES,
    SUMMARY_COLUMNS,
    SpectralConfig,
    analyse_spectra,
    band_share_text,
    band_shares,
    branch_check,
    data_spectrum,
    evenly_spaced_indices,
    latent_spectra,
    plot_spectra,
    share_bands,
    slope_summary,
    spectral_metrics,
    summary_rows,
    teacher_pass,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(
    in_frames=3,
    out_frames=3,
    channels=1,
    height=32,
    width=32,
    hidden=16,
    depth=1,
    heads=2,
    frame_hidden=8,
    spatial_layers=2,
)


def _shell_fields(n: int, size: int, shell_energy, seed: int = 0) -> torch.Tensor:
    """``n`` real fields ``(size, size)`` whose shell spectrum is ``E(k) ~ shell_energy(k)``:
    per-mode power ``shell_energy(|k|) / |k|`` (a shell holds ~2 pi k modes), random phases."""
    gen = torch.Generator().manual_seed(seed)
    ky = torch.fft.fftfreq(size, dtype=torch.float64) * size
    kx = torch.fft.rfftfreq(size, dtype=torch.float64) * size
    kmag = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    safe = kmag.clamp(min=1)
    amplitude = torch.where(kmag > 0, (shell_energy(safe) / safe).sqrt(), 0.0)
    phase = 2 * math.pi * torch.rand((n, *kmag.shape), generator=gen, dtype=torch.float64)
    return torch.fft.irfft2(amplitude * torch.exp(1j * phase), s=(size, size), norm="ortho")


def _power_law_fields(n: int, size: int, slope: float, seed: int = 0) -> torch.Tensor:
    """Fields with ``E(k) ~ k^slope``."""
    return _shell_fields(n, size, lambda k: k**slope, seed)


def _exponential_fields(n: int, size: int, scale: float = 2.0, seed: int = 0) -> torch.Tensor:
    """Fields with ``E(k) ~ exp(-k / scale)``: a laminar spectrum, no power law."""
    return _shell_fields(n, size, lambda k: torch.exp(-k / scale), seed)


def _wave(size: int, kx: int, ky: int) -> torch.Tensor:
    """A single Fourier mode cos(2 pi (kx x + ky y) / size), float64 (size, size)."""
    grid = torch.arange(size, dtype=torch.float64)
    return torch.cos(2 * math.pi * (kx * grid[None, :] + ky * grid[:, None]) / size)


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
    assert fit["power_law"] and fit["verdict"].startswith("power law: slope -")
    assert fit["slope"] == pytest.approx(-3.0, abs=0.1) and fit["slope"] == fit["raw_slope"]
    assert 0 < fit["slope_stderr"] < 0.1
    assert fit["r2"] > 0.98 and fit["exp_r2"] < fit["r2"]
    assert (fit["fit_k_min"], fit["fit_k_max"], fit["n_points"]) == (4.0, 40.0, 37)


def test_k_minus_3_field_is_a_power_law_over_the_default_data_range():
    k, E = radial_energy_spectrum(_power_law_fields(4, 64, -3.0))
    fit = slope_summary(k, E, (3, 12))
    assert fit["power_law"], fit["verdict"]
    assert fit["slope"] == pytest.approx(-3.0, abs=0.15)
    assert fit["r2"] >= 0.95 and fit["exp_r2"] < fit["r2"] - 0.01


def test_exponential_spectrum_is_no_power_law_but_keeps_the_raw_fit():
    k, E = radial_energy_spectrum(_exponential_fields(4, 64, scale=2.0))
    fit = slope_summary(k, E, (3, 12))
    # over k = 3..12 the power law alone fits an exponential with r^2 near 0.95 (0.96 for an
    # exact exponential): the comparison with the exponential decides
    assert fit["r2"] > 0.9
    assert not fit["power_law"]
    assert fit["verdict"].startswith("no power law: exponential decay fits better (r^2 ")
    assert fit["slope"] is None and fit["slope_stderr"] is None
    assert math.isfinite(fit["raw_slope"]) and fit["raw_slope"] < -3  # kept for the record
    assert fit["exp_rate"] == pytest.approx(-0.5, abs=0.05)
    assert fit["exp_r2"] > 0.98
    # with no margin to beat, an r^2 threshold of 0.5 does not rescue it either
    assert not slope_summary(k, E, (3, 12), min_r2=0.5)["power_law"]


def test_a_poor_fit_is_no_power_law_below_min_r2():
    k = np.arange(33.0)
    E = np.zeros_like(k)
    E[1:] = k[1:] ** -3.0 * np.where(k[1:] % 2 == 0, 4.0, 1.0)  # a zigzag about k^-3
    fit = slope_summary(k, E, (3, 12))
    assert not fit["power_law"] and fit["slope"] is None
    assert fit["verdict"] == f"no power law (r^2 {fit['r2']:.3f} < 0.95)"
    assert fit["r2"] < 0.95 and fit["exp_r2"] < fit["r2"]
    assert slope_summary(k, E, (3, 12), min_r2=0.7)["power_law"]


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
        "conv branch (Z_h) carries more high-k energy than attention (Z_l)"
    )
    assert "0.0" in check["verdict"] and "centroid" in check["verdict"]

    swapped = branch_check(high=smooth, low=rough, cutoff=4.0)
    assert not swapped["conv_is_high_pass"]
    assert swapped["verdict"].startswith(
        "attention (Z_l) carries more high-k energy than conv branch (Z_h)"
    )
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
    cfg = SpectralConfig(
        max_windows=4, batch_size=2, data_fit_range=(3, 12), latent_fit_range=(2, 6)
    )
    summary, figure = analyse_spectra(model, _tiny_dataset(), cfg, title="tiny")
    text = json.dumps(summary, allow_nan=False)  # plain, finite JSON
    assert "kolmogorov" not in text.lower()
    assert summary["reference_slopes"] == {"k^-5/3": pytest.approx(-5 / 3), "k^-3": -3.0}
    # the teacher's extra latent "state" is not analysed by default
    assert set(summary["spectra"]) == {"data", "high", "low", "fused"}
    for name, entry in summary["spectra"].items():
        assert math.isfinite(entry["raw_slope"]) and math.isfinite(entry["raw_slope_stderr"])
        if entry["power_law"]:
            assert entry["slope"] == entry["raw_slope"]
        else:  # white noise data, random latents: no law is claimed where there is none
            assert entry["slope"] is None and entry["verdict"].startswith("no power law")
        expected = (3.0, 12.0) if name == "data" else (2.0, 6.0)
        assert (entry["fit_k_min"], entry["fit_k_max"]) == expected
    assert summary["branch_check"]["verdict"]
    assert summary["n_windows"] == 4
    shares = summary["band_shares"]
    assert set(shares["data"]) == {"low", "mid", "high", "mean_square"}  # no distill cutoff
    assert shares["distill_cutoff_k"] is None

    rows = summary_rows({"dataset": "d", "teacher": "t", **summary})
    assert [r["latent"] for r in rows] == ["data", "high", "low", "fused", "teacher_error"]
    assert all(set(r) == set(SUMMARY_COLUMNS) for r in rows)
    metrics = spectral_metrics(summary)
    assert {
        "power_law_data",
        "raw_slope_data",
        "r2_data",
        "exp_r2_data",
        "centroid_low",
        "conv_is_high_pass",
        "share_high_data",
        "share_low_teacher_error",
        "teacher_error_mse",
    } <= set(metrics)
    for name, entry in summary["spectra"].items():
        assert ("slope_" + name in metrics) == entry["power_law"]
    assert len(figure.axes) == 2


def test_figure_has_fitted_and_reference_lines():
    fields = _power_law_fields(2, 64, -3.0)
    spectra = {
        "data": radial_energy_spectrum(fields),
        "high": radial_energy_spectrum(_power_law_fields(2, 16, -3.0, seed=1)),
    }
    fits = {
        "data": slope_summary(*spectra["data"], (3, 12)),
        "high": slope_summary(*spectra["high"], (2, 6)),
    }
    assert fits["data"]["power_law"] and fits["high"]["power_law"]
    figure = plot_spectra(spectra, fits, cutoff=5.5)
    for axes, name in zip(figure.axes, ("data", "high"), strict=True):
        gids = {line.get_gid() for line in axes.get_lines()}
        assert {f"reference_{ref}" for ref in REFERENCE_SLOPES} | {f"fit_{name}"} <= gids
        labels = [line.get_label() for line in axes.get_lines()]
        assert any("fit: slope" in label for label in labels)
        assert not any("no power law" in label for label in labels)
        assert axes.get_xscale() == "log" and axes.get_yscale() == "log"
    # the reference lines start at the fit's start
    data_axes = figure.axes[0]
    reference = next(li for li in data_axes.get_lines() if li.get_gid() == "reference_k^-3")
    k0, e0 = reference.get_xdata()[0], reference.get_ydata()[0]
    assert k0 == pytest.approx(3.0)
    assert e0 == pytest.approx(math.exp(fits["data"]["intercept"]) * 3.0 ** fits["data"]["slope"])


def test_figure_draws_no_slope_line_for_an_exponential_spectrum():
    spectra = {
        "data": radial_energy_spectrum(_exponential_fields(2, 64)),
        "high": radial_energy_spectrum(_power_law_fields(2, 16, -3.0, seed=1)),
    }
    fits = {
        "data": slope_summary(*spectra["data"], (3, 12)),
        "high": slope_summary(*spectra["high"], (2, 6)),
    }
    assert not fits["data"]["power_law"] and fits["high"]["power_law"]
    data_axes, latent_axes = plot_spectra(spectra, fits).axes
    lines = data_axes.get_lines()
    # the spectrum and the two references, no fitted line
    assert sorted(str(line.get_gid()) for line in lines) == [
        "reference_k^-3",
        "reference_k^-5/3",
        "spectrum_data",
    ]
    labels = [line.get_label() for line in lines]
    assert not any("slope" in label for label in labels)
    assert "data: no power law: exponential decay fits better" in labels[0]
    legend = [text.get_text() for text in data_axes.get_legend().get_texts()]
    assert any("no power law" in text for text in legend)
    # the references start on the measured spectrum at the fit range's start
    reference = next(li for li in lines if li.get_gid() == "reference_k^-3")
    k, E = spectra["data"]
    assert reference.get_xdata()[0] == pytest.approx(3.0)
    assert reference.get_ydata()[0] == pytest.approx(E[3])
    # the latent panel still has its power-law line
    assert "fit_high" in {line.get_gid() for line in latent_axes.get_lines()}


# -- band shares: which scales are worth aligning ----------------------------------------------


def test_band_shares_sum_to_one_and_place_a_single_wavenumber():
    bands = share_bands(64, 64)  # the evaluation's bands: cutoffs 3.56 and 12.7 on 64x64
    assert bands.cutoffs == pytest.approx((45.25 ** (1 / 3), 45.25 ** (2 / 3)), rel=1e-3)
    shares = band_shares(_power_law_fields(3, 64, -3.0), cutoff=4)
    assert shares["low"] + shares["mid"] + shares["high"] == pytest.approx(1.0, abs=1e-12)
    assert 0 < shares["high"] < shares["mid"] < shares["low"]
    assert 0 < shares["above_cutoff"] < 1
    for (kx, ky), band in {
        (2, 0): "low",
        (3, 1): "low",
        (3, 2): "mid",
        (5, 5): "mid",
        (0, 12): "mid",
        (20, 0): "high",
        (10, 10): "high",
    }.items():
        single = band_shares(_wave(64, kx, ky)[None], cutoff=4)
        assert single[band] == pytest.approx(1.0, abs=1e-12), (kx, ky, single)
        assert single["above_cutoff"] == pytest.approx(float(math.hypot(kx, ky) > 4), abs=1e-12)
        assert single["mean_square"] == pytest.approx(0.5)
    assert band_shares(torch.zeros(2, 64, 64))["low"] is None  # no energy, no shares


class _TruthPlusHighK(torch.nn.Module):
    """Predicts its input (the dataset has x == y) plus ``eps`` times a wave at |k| = 12 of a
    32x32 grid (the high band, above 8); its latents are the input."""

    latent_names = ("high", "low", "fused", "state")

    def __init__(self, eps: float = 0.1) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.eps = eps

    def forward_features(self, x):
        perturbation = self.eps * _wave(x.shape[-1], 12, 0).to(x.dtype)
        latent = x[:, 0]
        return x + perturbation, {name: latent for name in self.latent_names}


def test_teacher_error_shares_come_from_prediction_minus_truth():
    fields = _power_law_fields(6, 32, -3.0).float()[:, None, None]  # (N, T=1, C=1, 32, 32)
    dataset = TensorDataset(fields, fields)
    model = _TruthPlusHighK(eps=0.1)
    passed = teacher_pass(model, dataset, max_windows=6, batch_size=4, distill_cutoff=4)
    shares = passed["band_shares"]
    assert shares["bands"]["high"][0] == pytest.approx(8.0)  # 32x32: k_max 22.6, cutoffs 2.8, 8
    assert shares["distill_cutoff_k"] == 4
    error = shares["teacher_error"]
    assert error["high"] == pytest.approx(1.0, abs=1e-6)
    assert error["low"] < 1e-6 and error["mid"] < 1e-6
    assert error["above_cutoff"] == pytest.approx(1.0, abs=1e-6)
    assert error["mean_square"] == pytest.approx(0.1**2 / 2, rel=1e-4)  # the MSE
    # the truth's shares are the fields' own, not the error's
    assert shares["data"]["low"] == pytest.approx(band_shares(fields, cutoff=4)["low"], rel=1e-6)
    assert shares["data"]["low"] > shares["data"]["high"]
    assert set(passed["latents"]) == {"high", "low", "fused"}

    cfg = SpectralConfig(max_windows=6, batch_size=4, distill_cutoff=4.0)
    summary, _ = analyse_spectra(model, dataset, cfg)
    assert summary["band_shares"]["teacher_error"]["high"] == pytest.approx(1.0, abs=1e-6)
    metrics = spectral_metrics(summary)
    assert metrics["share_high_teacher_error"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["share_above_cutoff_teacher_error"] == pytest.approx(1.0, abs=1e-6)
    rows = {r["latent"]: r for r in summary_rows(summary)}
    assert rows["teacher_error"]["share_high"] == pytest.approx(1.0, abs=1e-6)
    assert rows["teacher_error"]["slope"] is None and rows["high"]["share_high"] is None
    assert rows["data"]["share_low"] == summary["band_shares"]["data"]["low"]
    line = band_share_text(summary["band_shares"])
    assert line.startswith("band shares low (k <= 2.83) / mid / high (k > 8):")
    assert "teacher error 0.000 / 0.000 / 1.000" in line
    assert "above distill cutoff k = 4: data" in line


def test_a_distill_cutoff_outside_the_grid_is_named():
    fields = torch.zeros(2, 1, 1, 32, 32)
    cfg = SpectralConfig(max_windows=2, distill_cutoff=40.0)
    with pytest.raises(ConfigError, match=r"distill.cutoff.k = 40 does not split the 32x32"):
        analyse_spectra(_TruthPlusHighK(), TensorDataset(fields, fields), cfg)


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
    params = {
        "max_windows": 8,
        "fit_range": {"data": [3, 12], "latent": [2, 6]},
        "window": {"navier_stokes": "none", "rayleigh_benard": "hann_y"},
    }
    cfg = SpectralConfig.from_params(params, "rayleigh_benard")
    assert cfg.window == "hann_y" and cfg.max_windows == 8 and cfg.high_band_cutoff is None
    assert (cfg.min_r2, cfg.exponential_r2_margin, cfg.distill_cutoff) == (0.95, 0.01, None)
    tuned = SpectralConfig.from_params(
        {**params, "min_r2": 0.9, "exponential_r2_margin": 0}, "rayleigh_benard", distill_cutoff=8
    )
    assert (tuned.min_r2, tuned.exponential_r2_margin, tuned.distill_cutoff) == (0.9, 0.0, 8.0)
    assert SpectralConfig.from_params({**params, "window": "hann"}, "taxibj").window == "hann"
    assert SpectralConfig.from_params({"window": "Hann_Y"}, "taxibj").window == "hann_y"
    assert SpectralConfig.from_params({"window": None}, "taxibj").window == "none"
    assert cfg.data_fit_range == (3.0, 12.0) and isinstance(cfg.data_fit_range[0], float)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fit_range": {"latent": [2, 3]}}, r"spectral.fit_range.latent .* at least 3"),
        ({"fit_range": {"data": [12]}}, r"spectral.fit_range.data must be \[k_min, k_max\]"),
        ({"window": {"rayleigh_benard": "hann"}}, r"no window for dataset 'navier_stokes'"),
        ({"window": {"navier_stokes": "kaiser"}}, r"spectral.window.navier_stokes must be one"),
        ({"fit_range": {"data": [0, 12]}}, r"spectral.fit_range.data\[0\] must be > 0"),
        ({"fit_range": {"k": [3, 12]}}, r"spectral.fit_range.k: unknown parameter \(allowed: da"),
        ({"window": "kaiser"}, r"spectral.window must be one of 'none', 'hann', 'hann_y'"),
        ({"max_windows": 0}, r"spectral.max_windows must be >= 1, got 0"),
        ({"batch_size": 2.5}, r"spectral.batch_size must be an integer, got 2.5"),
        ({"high_band_cutoff": -1}, r"spectral.high_band_cutoff must be > 0, got -1"),
        ({"split": "all"}, r"spectral.split must be one of 'train', 'val', 'test', got 'all'"),
        ({"fit_ranges": {}}, r"^spectral.fit_ranges: unknown parameter \(allowed: batch_size,"),
        ({"min_r2": 1.5}, r"spectral.min_r2 must be <= 1, got 1.5"),
        ({"min_r2": "high"}, r"spectral.min_r2 must be a number, got 'high'"),
        ({"exponential_r2_margin": -0.1}, r"spectral.exponential_r2_margin must be >= 0"),
        ({"exponential_r2_margin": 1}, r"spectral.exponential_r2_margin must be < 1"),
    ],
)
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ConfigError, match=message):
        SpectralConfig.from_params(params, "navier_stokes")


def test_a_bad_distill_cutoff_is_named():
    with pytest.raises(ConfigError, match=r"^distill.cutoff.k must be > 0, got -4"):
        SpectralConfig.from_params({}, "navier_stokes", distill_cutoff=-4)


def test_a_fit_range_outside_the_latent_grid_is_named():
    torch.manual_seed(0)
    model = build_model("st_alternet", **TINY)
    cfg = SpectralConfig(max_windows=2, batch_size=2, latent_fit_range=(20, 30))
    with pytest.raises(ConfigError, match=r"spectral.fit_range.latent = \[20, 30\].*k = 1 \.\. 11"):
        analyse_spectra(model, _tiny_dataset(2), cfg)
