"""FNO teacher: its spectral convolution against a direct truncated DFT, the whole forward
against a hand composition, its latents, mode clipping, parameter and FLOP counts, errors."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.models import FNO, build_model, count_flops, count_parameters, resolve_config
from sdkd_pipeline.models.complexity import fft_flops
from sdkd_pipeline.models.fno import SpectralConv2d, max_modes

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]


def _dft(n: int) -> np.ndarray:
    """The forward DFT matrix exp(-2 pi i j k / n) (symmetric)."""
    j = np.arange(n)
    return np.exp(-2j * np.pi * np.outer(j, j) / n)


def direct_spectral_conv(x: np.ndarray, weight: np.ndarray, modes: tuple[int, int]) -> np.ndarray:
    """K x by hand in float64. ``x`` (B, C, H, W); ``weight`` (2 m_y - 1, m_x, C, O, 2) with
    k_y = -(m_y - 1) .. m_y - 1 along its first axis; ``modes`` the layer's (m_y, m_x), clipped
    here to the grid's (n + 1) // 2. The 2-D DFT with explicit matrices, R(k) times it on
    |k_y| < m_y, 0 <= k_x < m_x, and the inverse as the real part of the truncated inverse DFT
    in which each k_x > 0 also stands for its conjugate -k_x (weight 2)."""
    _, _, height, width = x.shape
    m_y, m_x = min(modes[0], (height + 1) // 2), min(modes[1], (width + 1) // 2)
    f_h, f_w = _dft(height), _dft(width)
    spectrum = f_h @ x.astype(np.float64) @ f_w  # X[k_y, k_x] = sum_n,m x e^{-2 pi i (.)}
    r = weight[..., 0].astype(np.float64) + 1j * weight[..., 1].astype(np.float64)
    centre = weight.shape[0] // 2
    kept = np.zeros(x.shape[:1] + (r.shape[-1], height, width), dtype=complex)
    for ky in range(-(m_y - 1), m_y):
        for kx in range(m_x):
            product = spectrum[:, :, ky % height, kx] @ r[centre + ky, kx]
            kept[:, :, ky % height, kx] = product * (1.0 if kx == 0 else 2.0)
    return np.real(np.conj(f_h) @ kept @ np.conj(f_w)) / (height * width)


@pytest.mark.parametrize(
    ("height", "width", "modes"),
    [
        (6, 8, (3, 2)),  # even, rectangular
        (7, 5, (3, 2)),  # odd, rectangular
        (9, 9, (5, 5)),  # odd, every mode the grid has
        (5, 12, (2, 6)),  # k_x up to the largest below Nyquist
        (4, 6, (8, 8)),  # weights for more modes than the grid has: the central ones are used
    ],
)
def test_spectral_conv_equals_a_direct_truncated_dft(height, width, modes):
    torch.manual_seed(0)
    layer = SpectralConv2d(3, 2, modes)
    x = torch.randn(2, 3, height, width)
    with torch.no_grad():
        out = layer(x)
    expected = direct_spectral_conv(x.numpy(), layer.weight.detach().numpy(), modes)
    assert out.shape == (2, 2, height, width) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=0)
    assert np.abs(expected).max() > 0.1  # not a comparison of two zeros


def _gelu(a: np.ndarray) -> np.ndarray:
    return nn.functional.gelu(torch.from_numpy(a)).numpy()


def _conv(conv: nn.Conv2d, v: np.ndarray) -> np.ndarray:
    """A conv layer by hand (any odd kernel, zero padding), float64."""
    w = conv.weight.detach().double().numpy()
    pad = w.shape[-1] // 2
    _, _, height, width = v.shape
    padded = np.pad(v, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((v.shape[0], w.shape[0], height, width))
    for dy in range(w.shape[-2]):
        for dx in range(w.shape[-1]):
            window = padded[:, :, dy : dy + height, dx : dx + width]
            out += np.einsum("oi,bihw->bohw", w[:, :, dy, dx], window)
    return out + conv.bias.detach().double().numpy()[None, :, None, None]


@pytest.mark.parametrize("local_kernel", [1, 3])
def test_fno_forward_equals_its_hand_composition_on_an_odd_rectangular_grid(local_kernel):
    """Lifting of the time-folded frames and grid coordinates, Fourier layers GELU(K v + W v)
    (none after the last), projection: each step by hand, the spectral one as a direct DFT."""
    torch.manual_seed(1)
    frames, out_frames, channels, height, width = 2, 3, 2, 7, 9
    model = build_model(
        "fno",
        in_frames=frames,
        out_frames=out_frames,
        channels=channels,
        height=height,
        width=width,
        hidden=4,
        modes=[3, 4],
        depth=3,
        projection_hidden=5,
        local_kernel=local_kernel,
    ).eval()
    x = torch.randn(2, frames, channels, height, width)
    with torch.no_grad():
        y, features = model.forward_features(x)

    v = x.double().numpy().reshape(2, frames * channels, height, width)
    ys, xs = np.meshgrid(np.arange(height) / height, np.arange(width) / width, indexing="ij")
    grid = np.broadcast_to(np.stack([ys, xs]), (2, 2, height, width))
    v = _conv(model.lifting, np.concatenate([v, grid], axis=1))
    for index, layer in enumerate(model.layers):
        low = direct_spectral_conv(v, layer.spectral.weight.detach().numpy(), (3, 4))
        high = _conv(layer.local, v)
        v = low + high if index == len(model.layers) - 1 else _gelu(low + high)
    first, _, last = model.projection
    expected = _conv(last, _gelu(_conv(first, v)))
    expected = expected.reshape(2, out_frames, channels, height, width)
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(features["low"].numpy(), low, atol=1e-5, rtol=0)
    np.testing.assert_allclose(features["high"].numpy(), high, atol=1e-5, rtol=0)
    np.testing.assert_allclose(features["fused"].numpy(), low + high, atol=1e-5, rtol=0)


def _tiny(height: int = 12, width: int = 10, **cfg) -> FNO:
    torch.manual_seed(0)
    settings = {"hidden": 6, "modes": [3, 3], "depth": 2, "projection_hidden": 8, **cfg}
    return build_model(
        "fno", in_frames=3, out_frames=2, channels=1, height=height, width=width, **settings
    )


def test_fused_is_the_sum_of_the_paths_and_what_the_projection_reads():
    model = _tiny().eval()
    seen = {}
    model.projection.register_forward_pre_hook(lambda m, inputs: seen.update(v=inputs[0]))
    x = torch.randn(2, 3, 1, 12, 10)
    with torch.no_grad():
        y, features = model.forward_features(x)
        again = model.projection(features["fused"]).reshape(y.shape)
    assert set(features) == {"high", "low", "fused", "state"} == set(model.latent_names)
    assert torch.equal(features["fused"], seen["v"])  # the very tensor forward projects
    assert torch.equal(features["state"], features["fused"])
    torch.testing.assert_close(features["fused"], features["low"] + features["high"])
    torch.testing.assert_close(again, y)
    torch.testing.assert_close(model(x), y)
    for latent in features.values():
        assert latent.shape == (2, model.latent_channels, 12, 10)


def _energy_outside(field: torch.Tensor, m_y: int, m_x: int) -> float:
    """Share of the energy of (B, C, H, W) maps (less their means) outside |k_y| < m_y,
    |k_x| < m_x."""
    field = field.double() - field.double().mean((-2, -1), keepdim=True)
    power = torch.fft.fft2(field).abs().square()
    k_y = torch.fft.fftfreq(field.shape[-2], 1 / field.shape[-2]).abs()[:, None]
    k_x = torch.fft.fftfreq(field.shape[-1], 1 / field.shape[-1]).abs()[None, :]
    outside = (k_y >= m_y) | (k_x >= m_x)
    return float(power[..., outside].sum() / power.sum())


def test_the_spectral_path_is_band_limited_and_the_local_path_is_not():
    model = _tiny(height=16, width=16, modes=[4, 3]).eval()
    with torch.no_grad():
        _, features = model.forward_features(torch.randn(3, 3, 1, 16, 16))
    assert _energy_outside(features["low"], 4, 3) < 1e-12
    assert _energy_outside(features["high"], 4, 3) > 0.1


def test_modes_are_clipped_to_the_grid(caplog):
    with caplog.at_level(logging.WARNING, logger="sdkd_pipeline.models.fno"):
        model = _tiny(height=8, width=6, modes=12)
    assert max_modes(8, 6) == (4, 3) and model.modes == (4, 3)
    assert "modes [12, 12] clipped to [4, 3] on the 8x6 grid" in caplog.text
    spectral = model.layers[0].spectral
    assert spectral.weight.shape == (7, 3, 6, 6, 2)
    assert model.config.modes == (12, 12)  # the config keeps what was asked
    # a smaller grid at run time uses the central weights; a larger one leaves the rest zero
    x = torch.randn(1, 6, 5, 4)
    with torch.no_grad():
        small = spectral(x)
    expected = direct_spectral_conv(x.numpy(), spectral.weight.detach().numpy(), (4, 3))
    np.testing.assert_allclose(small.numpy(), expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        large = spectral(torch.randn(1, 6, 16, 16))
    assert _energy_outside(large, 4, 3) < 1e-12
    assert model(torch.randn(1, 3, 1, 16, 16)).shape == (1, 2, 1, 16, 16)


def test_gradients_reach_every_parameter():
    model = _tiny()
    y, features = model.forward_features(torch.randn(2, 3, 1, 12, 10))
    (y.square().mean() + features["low"].square().mean()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_bf16_autocast_keeps_the_spectral_path_in_float32():
    model = _tiny().eval()
    x = torch.randn(2, 3, 1, 12, 10)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, features = model.forward_features(x)
    assert features["low"].dtype == torch.float32
    assert torch.isfinite(y).all()
    assert (y.float() - reference).abs().max() < 0.05 * reference.abs().max()


def test_the_registry_builds_it_from_parameters_and_the_config_files():
    model = _tiny(modes=[3, 2])
    assert isinstance(model, FNO) and model.modes == (3, 2)
    assert model.config.to_dict()["modes"] == (3, 2)
    # ``--params teacher.fno.modes=5`` gives one integer: both axes; ``=12+8`` a pair
    assert resolve_config("fno", modes=5).modes == (5, 5)
    assert resolve_config("fno", modes="12+8").modes == (12, 8)
    for env, grid, frames in (("smoke", 32, 3), ("base", 32, 5), ("paper", 64, 10)):
        params = yaml.safe_load((REPO / "conf" / env / "parameters_teacher.yml").read_text())
        cfg = params["teacher"]["fno"]
        built = build_model(
            "fno", in_frames=frames, out_frames=frames, channels=1, height=grid, width=grid, **cfg
        )
        assert isinstance(built, FNO)
    # the paper env spells out the registry defaults
    assert resolve_config("fno", **cfg) == resolve_config("fno")


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"modes": [4, 4, 4]}, r"^teacher\.fno\.modes must be one positive integer .*\[4, 4, 4\]"),
        ({"modes": [4, 0]}, r"^teacher\.fno\.modes\[1\] must be > 0, got 0$"),
        ({"local_kernel": 2}, r"^teacher\.fno\.local_kernel must be odd .*got 2$"),
        ({"modes": "8+x"}, r"^teacher\.fno\.modes\[1\] must be an integer, got 'x'$"),
    ],
    ids=["three_modes", "zero_mode", "even_local_kernel", "not_a_number"],
)
def test_bad_fno_parameters_are_named(cfg, message):
    with pytest.raises(ConfigError, match=message):
        _tiny(**cfg)


def _fft_cost(n: int, signals: int, per_point: float) -> int:
    return int(round(per_point * n * math.log2(n) * signals)) if n > 1 else 0


def test_parameter_and_flop_counts_match_a_hand_count():
    frames, out_frames, height, width = 2, 2, 8, 6
    c, p, (m_y, m_x), k = 4, 5, (3, 2), 3
    model = build_model(
        "fno",
        in_frames=frames,
        out_frames=out_frames,
        channels=1,
        height=height,
        width=width,
        hidden=c,
        modes=[m_y, m_x],
        depth=2,
        projection_hidden=p,
        local_kernel=k,
    )
    lifting = (frames + 2) * c + c
    spectral = (2 * m_y - 1) * m_x * c * c * 2  # a complex C x C matrix per kept mode
    local = c * c * k * k + c
    projection = c * p + p + p * out_frames + out_frames
    assert count_parameters(model) == lifting + 2 * (spectral + local) + projection

    cells = height * width
    per_layer = (
        _fft_cost(width, c * height, 2.5)  # rfft along W
        + _fft_cost(height, c * m_x, 5.0)  # fft along H of the kept columns
        + 8 * c * c * (2 * m_y - 1) * m_x  # complex products: 4 real multiply-adds each
        + _fft_cost(height, c * m_x, 5.0)  # ifft along H
        + _fft_cost(width, c * height, 2.5)  # irfft along W
        + 2 * c * c * k * k * cells  # local conv (bias not counted)
    )
    flops = 2 * (frames + 2) * c * cells + 2 * per_layer + 2 * (c * p + p * out_frames) * cells
    assert count_flops(model, (frames, 1, height, width)) == flops
    # per sample; an FFT count of a length that is no power of two is rounded per call
    assert abs(count_flops(model, (3, frames, 1, height, width)) - flops) <= 8


def test_count_flops_counts_ffts():
    class Spectra(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x):
            half = torch.fft.rfft2(x.flatten(1, 2) * self.scale)  # (B, T*C, 16, 7)
            return torch.fft.ifft(half, dim=-2).abs()

    # rfft2 of 3 maps of 16x12 points, then 3 * 7 complex transforms of 16 points
    expected = _fft_cost(16 * 12, 3, 2.5) + _fft_cost(16, 3 * 7, 5.0)
    assert count_flops(Spectra(), (3, 1, 16, 12)) == expected
    assert fft_flops((4, 1), (1,), real=False) == 0  # a transform of one point is free
