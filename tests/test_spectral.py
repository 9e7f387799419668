"""Tests of the wavenumber bands and radial spectra in ``sdkd_pipeline.spectral``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral import (
    BandSplit,
    ExponentialFit,
    PowerLawFit,
    detrend_and_window,
    energy_fraction_cutoff,
    fit_exponential,
    fit_power_law,
    high_band_fraction,
    radial_energy_spectrum,
    radial_wavenumber,
    rfft_weights,
    spectral_centroid,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GRIDS = [(64, 64), (32, 32), (32, 128), (33, 49), (17, 16)]


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sinusoid(height: int, width: int, *, cycles_x: int = 0, cycles_y: int = 0) -> torch.Tensor:
    """cos(2 pi (cycles_x x / W + cycles_y y / H) + 0.3), float64 (H, W)."""
    y = torch.arange(height, dtype=torch.float64)[:, None]
    x = torch.arange(width, dtype=torch.float64)[None, :]
    return torch.cos(2 * math.pi * (cycles_x * x / width + cycles_y * y / height) + 0.3)


# -- grid quantities ---------------------------------------------------------------------------


def test_radial_wavenumber_and_weights():
    kmag = radial_wavenumber(8, 8)
    assert kmag.shape == (8, 5) and kmag.dtype == torch.float32
    assert kmag[0, 3] == 3 and kmag[3, 4] == 5 and kmag[-3, 4] == 5  # integer on square grids
    # Rectangular: one cycle over the 32 rows of a 32x128 grid is 4 cycles per 128 cells.
    assert radial_wavenumber(32, 128)[1, 0] == pytest.approx(4.0)
    assert rfft_weights(8, 8).tolist() == [1, 2, 2, 2, 1]
    assert rfft_weights(7, 7).tolist() == [1, 2, 2, 2]


# -- Parseval, complementarity, reconstruction -------------------------------------------------


@pytest.mark.parametrize("height,width", GRIDS)
def test_band_energy_parseval_float64(height, width):
    split = BandSplit.two_band(height, width, 3.5)
    x = torch.randn(2, 3, height, width, dtype=torch.float64, generator=_generator())
    energy = split.band_energy(x)
    assert energy.shape == (2, 3, 2) and energy.dtype == torch.float64
    total = x.pow(2).sum((-2, -1))
    torch.testing.assert_close(energy.sum(-1), total, rtol=1e-10, atol=0)
    assert (energy > 0).all()


@pytest.mark.parametrize("height,width", GRIDS)
def test_masks_complementary(height, width):
    split = BandSplit.log_spaced(height, width) if min(height, width) >= 32 else None
    split = split or BandSplit(height, width, [2.0, 4.5])
    masks = split.masks
    assert masks.dtype == torch.bool
    assert masks.shape == (split.n_bands, height, width // 2 + 1)
    assert (masks.sum(0) == 1).all()
    assert masks[0, 0, 0]  # the mean is in the low band
    assert masks.flatten(1).any(1).all()  # no empty band


@pytest.mark.parametrize("height,width", GRIDS)
def test_filter_bands_sum_to_field(height, width):
    split = BandSplit(height, width, [2.0, 4.5])
    x64 = torch.randn(2, height, width, dtype=torch.float64, generator=_generator(1))
    parts = [split.filter(x64, band) for band in range(split.n_bands)]
    assert all(p.shape == x64.shape and p.dtype == torch.float64 for p in parts)
    torch.testing.assert_close(sum(parts), x64, rtol=0, atol=1e-12)
    torch.testing.assert_close(sum(split.split(x64)), x64, rtol=0, atol=1e-12)
    # Each filtered part carries exactly its band's energy.
    energies = torch.stack([p.pow(2).sum((-2, -1)) for p in parts], -1)
    torch.testing.assert_close(energies, split.band_energy(x64), rtol=1e-10, atol=1e-12)

    x32 = x64.float()
    torch.testing.assert_close(sum(split.split(x32)), x32, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(split.filter(x32, -1), split.filter(x32, 2))


def test_band_mse_sums_to_mse_loss():
    split = BandSplit.log_spaced(32, 48)
    a = torch.randn(4, 2, 3, 32, 48, generator=_generator(2))
    b = torch.randn(4, 2, 3, 32, 48, generator=_generator(3))
    bands = split.band_mse(a, b)
    assert bands.shape == (3,) and bands.dtype == torch.float32
    torch.testing.assert_close(bands.sum(), F.mse_loss(a, b), rtol=1e-5, atol=0)

    per_sample = split.band_mse_per_sample(a, b)
    assert per_sample.shape == (4, 3)
    expected = (a - b).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(per_sample.sum(1), expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(per_sample.mean(0), bands, rtol=1e-5, atol=1e-7)

    # Single fields (H, W) and batches without extra dims (B, H, W) work too.
    torch.testing.assert_close(
        split.band_mse(a[0, 0, 0], b[0, 0, 0]).sum(), F.mse_loss(a[0, 0, 0], b[0, 0, 0])
    )
    flat = split.band_mse_per_sample(a[:, 0, 0], b[:, 0, 0])
    torch.testing.assert_close(flat.sum(1), (a - b)[:, 0, 0].pow(2).mean((1, 2)))


def test_band_mse_zero_iff_equal():
    split = BandSplit.log_spaced(64, 64)
    a = torch.randn(2, 64, 64, dtype=torch.float64, generator=_generator(4))
    assert (split.band_mse(a, a) == 0).all()

    noise = torch.randn(2, 64, 64, dtype=torch.float64, generator=_generator(5))
    b = a + split.filter(noise, 1)  # differs only in the mid band
    bands = split.band_mse(a, b)
    assert bands[1] > 0
    assert bands[0] < 1e-12 * bands[1] and bands[2] < 1e-12 * bands[1]


# -- sinusoids land where they should ----------------------------------------------------------


def test_sinusoid_in_its_band_and_shell():
    split = BandSplit(64, 64, [3.0, 10.0])
    x = _sinusoid(64, 64, cycles_x=5)
    energy = split.band_energy(x)
    assert energy[1] == pytest.approx(x.pow(2).sum().item(), rel=1e-12)
    assert energy[0] < 1e-20 and energy[2] < 1e-20

    k, E = radial_energy_spectrum(x)
    assert isinstance(k, np.ndarray) and k.dtype == np.float64 and E.shape == k.shape
    assert k[5] == 5 and E[5] == pytest.approx(x.pow(2).sum().item(), rel=1e-12)
    assert np.delete(E, 5).max() < 1e-20
    # Shell 3 exactly on the cutoff belongs to the band below it.
    assert split.band_energy(_sinusoid(64, 64, cycles_y=3))[0] > 1


def test_sinusoid_on_rectangular_grid_uses_common_units():
    # Two cycles over the 32 rows of a 32x128 grid: 8 cycles per 128 cells.
    x = _sinusoid(32, 128, cycles_y=2)
    k, E = radial_energy_spectrum(x)
    assert E.argmax() == 8 and E[8] == pytest.approx(E.sum(), rel=1e-12)
    energy = BandSplit(32, 128, [7.5, 8.5]).band_energy(x)
    assert energy[1] == pytest.approx(energy.sum().item(), rel=1e-12)


# -- autograd and precision --------------------------------------------------------------------


def test_gradients_flow():
    split = BandSplit.two_band(16, 24, 3.0)
    a = torch.randn(2, 16, 24, generator=_generator(6), requires_grad=True)
    b = torch.randn(2, 16, 24, generator=_generator(7))
    split.band_mse(a, b).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    # The MSE's gradient is recovered exactly, since the bands sum to the MSE.
    a_ref = a.detach().clone().requires_grad_(True)
    F.mse_loss(a_ref, b).backward()
    torch.testing.assert_close(a.grad, a_ref.grad, rtol=1e-4, atol=1e-7)

    c = torch.zeros(1, 16, 24, requires_grad=True)  # |X| = 0: no NaN from abs()
    split.band_energy(c).sum().backward()
    assert torch.isfinite(c.grad).all()


def test_bf16_autocast_returns_float32():
    split = BandSplit.log_spaced(32, 32)
    a = torch.randn(2, 32, 32, generator=_generator(8), requires_grad=True)
    b = torch.randn(2, 32, 32, generator=_generator(9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prediction = torch.nn.functional.linear(a, torch.eye(32))  # a bf16 model output
        assert prediction.dtype == torch.bfloat16
        bands = split.band_mse(prediction, b)
        energy = split.band_energy(prediction)
        filtered = split.filter(prediction, 0)
    assert bands.dtype == energy.dtype == filtered.dtype == torch.float32
    torch.testing.assert_close(bands.sum(), F.mse_loss(prediction.float(), b), rtol=1e-5, atol=0)
    bands.sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_to_device_returns_self():
    split = BandSplit.two_band(8, 8, 2.0)
    assert split.to("cpu") is split and split.masks.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    split = BandSplit.log_spaced(48, 64).to("cuda")
    a = torch.randn(2, 3, 48, 64, generator=_generator(10))
    b = torch.randn(2, 3, 48, 64, generator=_generator(11))
    cpu = split.band_mse(a, b)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        cuda = split.band_mse(a.cuda().bfloat16(), b.cuda().bfloat16())
    assert cuda.dtype == torch.float32 and split.masks.is_cuda
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=2e-2, atol=1e-3)


# -- construction ------------------------------------------------------------------------------


def test_log_spaced_bands():
    split = BandSplit.log_spaced(64, 64)
    assert split.n_bands == 3 and len(split.cutoffs) == 2
    assert 1 < split.cutoffs[0] < split.cutoffs[1] < split.k_max
    assert split.k_max == pytest.approx(32 * math.sqrt(2))
    # Edges 1, k_max^(1/3), k_max^(2/3), k_max (log-spaced like The Well's bins).
    assert split.cutoffs[0] == pytest.approx(split.k_max ** (1 / 3))
    assert BandSplit.log_spaced(64, 64, n_bands=5).n_bands == 5


@pytest.mark.parametrize(
    "cutoffs,match",
    [
        ([0.0], "positive"),
        ([-1.0], "positive"),
        ([float("nan")], "positive"),
        ([5.0, 3.0], "strictly increasing"),
        ([4.0, 4.0], "strictly increasing"),
        ([46.0], "largest wavenumber"),
        ([32 * math.sqrt(2)], "largest wavenumber"),
        ([32 * math.sqrt(2) * (1 - 1e-12)], "highest band empty"),
        ([], "at least one"),
        ([3.1, 3.11], "empty"),
    ],
)
def test_bad_cutoffs_raise(cutoffs, match):
    with pytest.raises(ConfigError, match=match):
        BandSplit(64, 64, cutoffs)


def test_bad_inputs_raise():
    split = BandSplit.two_band(16, 16, 3.0)
    with pytest.raises(ValueError, match="16, 16"):
        split.band_energy(torch.zeros(2, 16, 17))
    with pytest.raises(ValueError, match="equal shapes"):
        split.band_mse(torch.zeros(16, 16), torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="out of range"):
        split.filter(torch.zeros(16, 16), 2)
    with pytest.raises(ConfigError, match="n_bands"):
        BandSplit.log_spaced(16, 16, n_bands=1)


# -- radial spectra ----------------------------------------------------------------------------


@pytest.mark.parametrize("height,width", GRIDS)
def test_radial_spectrum_parseval(height, width):
    x = torch.randn(3, 2, height, width, generator=_generator(12))
    k, E = radial_energy_spectrum(x)
    total = x.double().pow(2).sum((-2, -1)).mean().item()
    assert E.sum() == pytest.approx(total, rel=1e-10)
    assert k[-1] == round(float(radial_wavenumber(height, width).double().max()))


def test_radial_spectrum_reduce_dims_and_numpy():
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 20))
    k, E = radial_energy_spectrum(x, reduce_dims=(0,))
    assert E.shape == (3, k.size)
    k_all, E_all = radial_energy_spectrum(x)
    np.testing.assert_allclose(E.mean(0), E_all, rtol=1e-12)
    # Spatial dims need not be last.
    _, E_moved = radial_energy_spectrum(np.moveaxis(x, 2, 0), spatial_dims=(0, -1))
    np.testing.assert_allclose(E_moved, E_all, rtol=1e-12)


def test_detrend_and_window_removes_a_ramp():
    ramp = torch.linspace(0, 5, 32, dtype=torch.float64)[:, None].expand(32, 32)
    assert detrend_and_window(ramp, dims=(0,)).abs().max() < 1e-12
    x = np.random.default_rng(1).standard_normal((32, 32))
    out = detrend_and_window(x, dims=(-2,))
    assert isinstance(out, np.ndarray) and out.shape == x.shape
    assert np.abs(out[0]).max() < 1e-12  # the periodic Hann window is zero at the first row


# -- spectrum statistics -----------------------------------------------------------------------


def test_fit_power_law_exact_and_noisy():
    k = np.arange(0, 65, dtype=np.float64)
    E = np.zeros_like(k)
    E[1:] = 7.0 * k[1:] ** -3.0
    fit = fit_power_law(k, E, 3, 20)
    assert isinstance(fit, PowerLawFit) and fit.n_points == 18
    assert fit.slope == pytest.approx(-3.0, abs=1e-12)
    assert fit.intercept == pytest.approx(math.log(7.0), abs=1e-10)
    assert fit.slope_stderr < 1e-10 and fit.r2 == pytest.approx(1.0)
    np.testing.assert_allclose(fit.predict(k[3:21]), E[3:21], rtol=1e-10)

    noisy = E * np.exp(np.random.default_rng(2).normal(0, 0.2, k.size))
    noisy_fit = fit_power_law(k, noisy, 2, 40)
    assert 0 < noisy_fit.slope_stderr < 0.1
    assert abs(noisy_fit.slope + 3.0) < 4 * noisy_fit.slope_stderr


def test_fit_power_law_too_few_points():
    k = np.arange(10.0)
    E = np.zeros(10)
    E[1:] = k[1:] ** -2.0
    E[4] = 0.0  # a zero shell is skipped, not logged
    with pytest.raises(ValueError, match=r"3 <= k <= 5.*got 2"):
        fit_power_law(k, E, 3, 5)


def test_fit_exponential_against_the_power_law_over_the_same_shells():
    k = np.arange(0, 33, dtype=np.float64)
    laminar = np.exp(1.0 - k / 2.0)
    fit = fit_exponential(k, laminar, 3, 12)
    assert isinstance(fit, ExponentialFit) and fit.n_points == 10
    assert fit.rate == pytest.approx(-0.5, abs=1e-12)
    assert fit.intercept == pytest.approx(1.0, abs=1e-10)
    assert fit.r2 == pytest.approx(1.0) and fit.rate_stderr < 1e-10
    np.testing.assert_allclose(fit.predict(k[3:13]), laminar[3:13], rtol=1e-10)
    # over a short range a power law fits an exponential well too, only less well
    assert 0.95 < fit_power_law(k, laminar, 3, 12).r2 < 0.97

    power = np.zeros_like(k)
    power[1:] = k[1:] ** -3.0
    assert 0.95 < fit_exponential(k, power, 3, 12).r2 < fit_power_law(k, power, 3, 12).r2
    with pytest.raises(ValueError, match=r"exponential fit over 3 <= k <= 4 needs at least 3"):
        fit_exponential(k, power, 3, 4)


def test_energy_fraction_cutoff():
    k = np.arange(6.0)
    E = np.array([0.0, 4.0, 3.0, 2.0, 1.0, 0.0])  # total 10
    assert energy_fraction_cutoff(k, E, 0.4) == 1  # shells 0..1 hold exactly 40 %
    assert energy_fraction_cutoff(k, E, 0.5) == 2
    assert energy_fraction_cutoff(k, E, 0.9) == 3
    assert energy_fraction_cutoff(k, E, 0.95) == 4
    # The mean counts toward the cumulative sum unless left out.
    with_mean = E + np.array([10.0, 0, 0, 0, 0, 0])
    assert energy_fraction_cutoff(k, with_mean, 0.5) == 1
    assert energy_fraction_cutoff(k, with_mean, 0.5, include_mean=False) == 2
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="fraction"):
            energy_fraction_cutoff(k, E, bad)


def test_centroid_and_high_band_fraction():
    k = np.arange(10.0)
    single = np.zeros(10)
    single[[0, 6]] = [100.0, 2.0]  # the mean is ignored
    assert spectral_centroid(k, single) == 6.0
    assert high_band_fraction(k, single, 5.5) == 1.0
    assert high_band_fraction(k, single, 6.0) == 0.0

    two = np.zeros(10)
    two[[2, 8]] = [3.0, 1.0]
    assert spectral_centroid(k, two) == pytest.approx((2 * 3 + 8 * 1) / 4)
    assert high_band_fraction(k, two, 4) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no energy"):
        spectral_centroid(k, np.eye(10)[0])
