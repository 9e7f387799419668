"""Tests of the orthogonal wavelet bands per region, ``sdkd_pipeline.spectral.WaveletSplit``.

Tested like the global bands (test_spectral.py): energies sum to the total (per region too),
band and region parts are orthogonal and sum to the field, reconstruction is perfect, on square
and rectangular grids and grids that are not powers of two; plus the filters themselves, a
Haar step by hand, the grid rule for levels and tiles, autograd, precision and CUDA.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral import WaveletSplit
from sdkd_pipeline.spectral.wavelet import (
    WAVELETS,
    analysis_matrix,
    daubechies_filter,
    max_levels,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (height, width, tiles): square, rectangular, tall, not powers of two, uneven tile counts
GRIDS = [
    (32, 32, 4),
    (16, 32, (2, 4)),
    (64, 48, 1),
    (24, 40, (3, 5)),
    (12, 20, 2),
]


def _randn(*shape: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# -- the filters -------------------------------------------------------------------------------


@pytest.mark.parametrize("wavelet", list(WAVELETS))
def test_filters_are_orthonormal_with_vanishing_moments(wavelet):
    h = daubechies_filter(wavelet)
    p = WAVELETS[wavelet]
    assert len(h) == 2 * p
    assert h.sum() == pytest.approx(math.sqrt(2), abs=1e-14)
    for shift in range(p):  # orthonormal to its even shifts
        assert np.dot(h[: len(h) - 2 * shift], h[2 * shift :]) == pytest.approx(
            float(shift == 0), abs=1e-14
        )
    g = np.array([(-1) ** m * h[len(h) - 1 - m] for m in range(len(h))])
    m = np.arange(len(h), dtype=float)
    for moment in range(p):  # the high-pass filter kills polynomials of degree < p
        assert abs((g * m**moment).sum()) < 1e-9 * max(1.0, (m**moment).max())


def test_haar_and_db2_match_their_closed_forms():
    np.testing.assert_allclose(daubechies_filter("haar"), [2**-0.5, 2**-0.5], atol=1e-16)
    s3 = math.sqrt(3)
    db2 = np.array([1 + s3, 3 + s3, 3 - s3, 1 - s3]) / (4 * math.sqrt(2))
    np.testing.assert_allclose(daubechies_filter("db2"), db2, atol=1e-15)


@pytest.mark.parametrize("wavelet", list(WAVELETS))
@pytest.mark.parametrize("n", [2, 4, 6, 8, 12, 32])
def test_periodized_analysis_matrix_is_orthogonal(wavelet, n):
    # also where the filter is longer than the axis (db4 on n = 2, 4, 6): it wraps around
    matrix = analysis_matrix(n, wavelet)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(n), atol=1e-13)


def test_one_haar_level_by_hand():
    split = WaveletSplit(2, 2, levels=1)
    a, b, c, d = 1.0, 2.0, 4.0, 8.0
    approx, details = split.transform(torch.tensor([[a, b], [c, d]], dtype=torch.float64))
    assert approx.item() == pytest.approx((a + b + c + d) / 2)
    # (LH, HL, HH): a difference across columns, across rows, and the checkerboard
    expected = [(a - b + c - d) / 2, (a + b - c - d) / 2, (a - b - c + d) / 2]
    assert details.flatten().tolist() == pytest.approx(expected)


# -- energies, orthogonality, reconstruction --------------------------------------------------


@pytest.mark.parametrize("wavelet", ["haar", "db2", "db4"])
@pytest.mark.parametrize("height,width,tiles", GRIDS)
def test_energies_sum_to_the_total_overall_per_band_and_per_region(height, width, tiles, wavelet):
    split = WaveletSplit(height, width, tiles=tiles, wavelet=wavelet)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        x = _randn(3, 2, height, width, seed=1, dtype=dtype)
        cells = split.region_band_energy(x)
        assert cells.shape == (3, 2, split.n_regions, split.n_bands) and cells.dtype == dtype
        total = x.double().square().sum((-2, -1))
        torch.testing.assert_close(cells.double().sum((-2, -1)), total, rtol=rtol, atol=0)
        torch.testing.assert_close(split.band_energy(x).double().sum(-1), total, rtol=rtol, atol=0)
        # per region: the energies of its bands are the energy of its coefficients
        coefficients = split.transform(x.double())
        for region in range(split.n_regions):
            own = sum(
                (c * split._region_mask(tuple(c.shape[-2:]), region, c.device)).square().sum()
                for c in coefficients
            )
            torch.testing.assert_close(cells[..., region, :].double().sum(), own, rtol=rtol, atol=0)
    assert (cells >= 0).all()


@pytest.mark.parametrize("height,width,tiles", GRIDS)
def test_haar_region_energies_are_the_energies_of_the_tiles(height, width, tiles):
    split = WaveletSplit(height, width, tiles=tiles)
    x = _randn(2, height, width, seed=2)
    cells = split.region_band_energy(x).sum(-1)  # (2, regions)
    for region in range(split.n_regions):
        rows, cols = split.tile(region)
        torch.testing.assert_close(
            cells[:, region], x[:, rows, cols].square().sum((-2, -1)), rtol=1e-12, atol=0
        )


@pytest.mark.parametrize("wavelet", ["haar", "db3"])
@pytest.mark.parametrize("height,width,tiles", GRIDS)
def test_band_and_region_parts_are_orthogonal_and_sum_to_the_field(height, width, tiles, wavelet):
    split = WaveletSplit(height, width, tiles=tiles, wavelet=wavelet)
    x = _randn(height, width, seed=3)
    scale = x.square().sum()
    parts = split.split(x)
    assert len(parts) == split.n_bands
    torch.testing.assert_close(sum(parts), x, rtol=0, atol=1e-12)
    for i in range(len(parts)):
        # each part's energy is its band's energy; distinct parts are orthogonal
        torch.testing.assert_close(
            parts[i].square().sum(), split.band_energy(x)[i], rtol=1e-10, atol=0
        )
        for j in range(i):
            assert abs(float((parts[i] * parts[j]).sum())) < 1e-12 * float(scale)
    cells = [
        split.filter(x, band, region)
        for band in range(split.n_bands)
        for region in range(split.n_regions)
    ]
    torch.testing.assert_close(sum(cells), x, rtol=0, atol=1e-12)
    stacked = torch.stack(cells).flatten(1)
    gram = stacked @ stacked.T
    off_diagonal = gram - torch.diag(torch.diag(gram))
    assert float(off_diagonal.abs().max()) < 1e-12 * float(scale)
    expected = split.region_band_energy(x).T.flatten()  # band-major like ``cells``
    torch.testing.assert_close(torch.diag(gram), expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("wavelet", list(WAVELETS))
@pytest.mark.parametrize("height,width,tiles", GRIDS)
def test_perfect_reconstruction(height, width, tiles, wavelet):
    split = WaveletSplit(height, width, tiles=tiles, wavelet=wavelet)
    x = _randn(2, 3, height, width, seed=4)
    coefficients = split.transform(x)
    assert [tuple(c.shape[-2:]) for c in coefficients] == [
        (height >> split.levels, width >> split.levels)
    ] + [(height >> j, width >> j) for j in range(split.levels, 0, -1)]
    torch.testing.assert_close(split.inverse(coefficients), x, rtol=0, atol=1e-12)
    x32 = x.float()
    torch.testing.assert_close(split.inverse(split.transform(x32)), x32, rtol=0, atol=2e-5)


def test_a_detail_inside_one_tile_stays_in_that_region_and_band():
    split = WaveletSplit(32, 32, levels=3, tiles=4)
    x = torch.zeros(32, 32, dtype=torch.float64)
    x[8:16:2, 16:24] = 1.0  # row stripes of period 2 inside tile (row 1, column 2)
    x[9:16:2, 16:24] = -1.0
    cells = split.region_band_energy(x)
    region = 1 * 4 + 2
    assert split.tile(region) == (slice(8, 16), slice(16, 24))
    assert cells[region, -1] == pytest.approx(float(x.square().sum()))  # the finest band only
    assert float(cells.sum()) == pytest.approx(float(cells[region, -1]))


def test_a_smooth_field_lies_in_the_coarse_bands_more_so_with_a_longer_filter():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    field = torch.sin(2 * math.pi * x / 64) * torch.cos(2 * math.pi * y / 64)  # one cycle
    shares = {
        w: WaveletSplit(64, 64, tiles=1, wavelet=w).band_energy(field) / field.square().sum()
        for w in ("haar", "db4")
    }
    assert shares["db4"][:4].sum() > 0.9998 and shares["db4"][-1] < 1e-6
    # Haar's steps leak a smooth field into the fine scales; db4 (4 vanishing moments) not
    assert shares["haar"][-1] > 1e3 * shares["db4"][-1]


# -- MSE split, autograd, precision, devices --------------------------------------------------


def test_band_mse_splits_the_mse_and_its_gradient():
    split = WaveletSplit(16, 24, tiles=(2, 3), wavelet="db2")
    a = _randn(4, 2, 16, 24, seed=5, dtype=torch.float32).requires_grad_(True)
    b = _randn(4, 2, 16, 24, seed=6, dtype=torch.float32)
    cells = split.region_band_mse(a, b)
    assert cells.shape == (6, split.n_bands)
    torch.testing.assert_close(cells.sum(), F.mse_loss(a, b), rtol=1e-6, atol=0)
    torch.testing.assert_close(split.band_mse(a, b), cells.sum(0), rtol=1e-6, atol=0)
    per_sample = split.band_mse_per_sample(a, b)
    torch.testing.assert_close(per_sample.mean(0), split.band_mse(a, b), rtol=1e-5, atol=0)
    cells.sum().backward()
    reference = a.detach().clone().requires_grad_(True)
    F.mse_loss(reference, b).backward()
    torch.testing.assert_close(a.grad, reference.grad, rtol=1e-4, atol=1e-8)


def test_bf16_autocast_returns_float32():
    split = WaveletSplit(32, 32, tiles=4)
    a = _randn(2, 32, 32, seed=7, dtype=torch.float32).requires_grad_(True)
    b = _randn(2, 32, 32, seed=8, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prediction = F.linear(a, torch.eye(32))
        assert prediction.dtype == torch.bfloat16
        cells = split.region_band_mse(prediction, b)
        energy = split.region_band_energy(prediction)
    assert cells.dtype == energy.dtype == torch.float32
    torch.testing.assert_close(cells.sum(), F.mse_loss(prediction.float(), b), rtol=1e-5, atol=0)
    cells.sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    split = WaveletSplit(48, 64, tiles=(3, 4), wavelet="db2")
    a = _randn(2, 3, 48, 64, seed=9, dtype=torch.float32)
    b = _randn(2, 3, 48, 64, seed=10, dtype=torch.float32)
    cpu = split.region_band_mse(a, b)
    assert split.to("cuda") is split and split.device.type == "cuda"
    cuda = split.region_band_mse(a.cuda(), b.cuda())
    assert cuda.is_cuda and cuda.dtype == torch.float32
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-4, atol=1e-7)
    x = a.cuda()
    torch.testing.assert_close(split.inverse(split.transform(x)), x, rtol=0, atol=2e-5)


# -- the grid rule -----------------------------------------------------------------------------


def test_levels_allowed_by_the_grid():
    assert max_levels(32, 32, 4) == 3  # 8x8 tiles: 8 = 2^3
    assert max_levels(16, 32, 4) == 2  # RBC's 16 rows in 4 tiles of 4
    assert max_levels(64, 64, 1) == 6
    assert max_levels(24, 40, (3, 5)) == 3
    assert max_levels(30, 30, 1) == 1  # 15 is odd after one level
    assert max_levels(30, 30, 2) == 0  # 15x15 tiles
    assert max_levels(30, 32, 4) == 0  # 4 tiles do not cut 30 rows
    split = WaveletSplit(32, 32, tiles=4)  # levels=None: the most allowed
    assert (split.levels, split.n_bands, split.n_regions) == (3, 4, 16)
    assert WaveletSplit(32, 32, levels=2, tiles=4).n_bands == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"height": 32, "width": 32, "levels": 4, "tiles": 4},
            r"cfg\.levels = 4: a 32x32 grid in 4x4 tiles of 8x8 cells allows at most 3 "
            r"level\(s\).*set it to 3 or less, or to auto",
        ),
        (
            {"height": 30, "width": 32, "tiles": 4},
            r"cfg\.tiles: 4x4 tiles do not cut a 30x32 grid into equal tiles",
        ),
        ({"height": 30, "width": 30, "tiles": 2}, r"cfg\.tiles: .*allows no wavelet level"),
        ({"height": 32, "width": 32, "levels": 0}, r"cfg\.levels must be an integer >= 1"),
        ({"height": 32, "width": 32, "tiles": (2, 2, 2)}, r"cfg\.tiles must be a positive"),
        ({"height": 32, "width": 32, "wavelet": "db9"}, r"cfg\.wavelet must be one of"),
    ],
)
def test_a_grid_that_does_not_fit_names_the_parameter_and_the_allowed_levels(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WaveletSplit(**kwargs, param_path="cfg")


def test_bad_fields_raise():
    split = WaveletSplit(16, 16, tiles=2)
    with pytest.raises(ValueError, match="16, 16"):
        split.transform(torch.zeros(2, 16, 17))
    with pytest.raises(ValueError, match="equal shapes"):
        split.band_mse(torch.zeros(16, 16), torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="band 9 out of range"):
        split.filter(torch.zeros(16, 16), 9)
    with pytest.raises(ValueError, match="region 4 out of range"):
        split.filter(torch.zeros(16, 16), 0, region=4)
