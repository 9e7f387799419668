"""Fourier Neural Operator (FNO) teacher: lifting, Fourier layers, projection.

A teacher of another family than ST-AlterNet and SimVP (Li et al., ICLR 2021, "Fourier Neural
Operator for Parametric PDEs"; written here, with the layer design of the neuraloperator
project as a reference, not its code):

- Input (B, T_in, C, H, W): time folded into channels (B, T_in*C, H, W) as in SimVP, plus two
  channels of grid coordinates y = i/H, x = j/W (``grid_features``, as FNO's ``get_grid``);
  a 1x1 conv lifts them to ``hidden`` channels v_0.
- ``depth`` Fourier layers at the full grid resolution (no down-sampling):

      low  = K v = irfft2( R . P_m(rfft2(v)) )    spectral path: global, truncated to the modes
      high = W v                                   local path: 1x1 conv (``local_kernel`` = 1,
                                                   FNO's pointwise W) or a k x k conv, with bias
      fused = low + high
      v'   = GELU(fused)       (the last layer has no activation, as in FNO)

  P_m keeps the Fourier coefficients with |k_y| < m_y and 0 <= k_x < m_x (``modes`` =
  [m_y, m_x]) of the real FFT over (H, W); R is a learned complex (C_in x C_out) matrix per
  kept mode. The kept box is symmetric in k_y, so the k_x = 0 column of R . P_m(.) can be
  made Hermitian (averaged with its conjugate mirror): the inverse transform is then the
  real part of the truncated inverse DFT on every FFT backend, not what a backend does with a
  non-Hermitian input. A grid keeps at most (n + 1) // 2 modes per axis (the Nyquist row and
  column are never used): modes larger than the built grid are clipped there (the weights are
  sized to the clipped modes, a warning says so), and a smaller grid at run time uses the
  central part of the weights (the operator is resolution-invariant: FFTs normalised as
  torch's default, 1/(H W) on the inverse).
- Projection: 1x1 conv ``hidden`` -> ``projection_hidden``, GELU, 1x1 conv -> T_out*C channels.

The spectral path runs in float32 (autocast off): torch's FFTs take no bfloat16 and half only
for powers of two on CUDA. The complex products are real matrix products of the stacked real
and imaginary parts, so ``count_flops`` counts them (8 real FLOPs per complex multiply-add); the
FFTs are counted by ``models.complexity``'s FFT formulas.

Latents (the last Fourier layer, full resolution, ``hidden`` channels): ``low`` = K v (the
truncated spectral path), ``high`` = W v (the local path), ``fused`` = their sum, which is the
layer's output and so also ``state`` (what the projection reads; the last layer has no
activation). Each is (B, hidden, H, W).
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from sdkd_pipeline.config_utils import list_param, one_or_list, param
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.models.config import ModelConfig
from sdkd_pipeline.models.layers import ForecastModel

logger = logging.getLogger(__name__)


def _mode_pair(value: object) -> list[object]:
    """``modes`` as a pair: one value (``--params teacher.fno.modes=8``) is both axes, and the
    command line's list spelling ``12+8`` (Kedro splits ``--params`` at commas) is a pair."""
    if isinstance(value, str):
        value = [int(v) if v.lstrip("-").isdigit() else v for v in list_param(value)]
    values = one_or_list(value)
    return values * 2 if len(values) == 1 else values


@dataclasses.dataclass(frozen=True)
class FNOConfig(ModelConfig):
    """Hyperparameters. Defaults (the paper size): 9.1 M parameters at NS 64x64, 10 -> 10."""

    hidden: int = param(64, gt=0)  # channels of the Fourier layers (the latent width)
    # modes kept per axis, [m_y, m_x] (one value: both): |k_y| < m_y, 0 <= k_x < m_x
    modes: tuple[int, ...] = param((12, 12), gt=0, convert=_mode_pair)
    depth: int = param(4, gt=0)  # Fourier layers
    projection_hidden: int = param(128, gt=0)  # hidden width of the projection
    local_kernel: int = param(1, gt=0)  # kernel of the local path W (1: FNO's pointwise)
    grid_features: bool = True  # append the (y, x) grid coordinates to the input

    def validate(self, param_path: str) -> None:
        if len(self.modes) != 2:
            raise ConfigError(
                f"{param_path}.modes must be one positive integer (both axes) or a pair "
                f"[modes_y, modes_x], got {list(self.modes)}"
            )
        if self.local_kernel % 2 == 0:
            raise ConfigError(
                f"{param_path}.local_kernel must be odd (the local path keeps the grid), "
                f"got {self.local_kernel}"
            )

    @property
    def mode_pair(self) -> tuple[int, int]:
        """The requested modes as (m_y, m_x)."""
        return (self.modes[0], self.modes[-1])


def max_modes(height: int, width: int) -> tuple[int, int]:
    """The most modes a ``height x width`` grid keeps per axis: (n + 1) // 2 (|k| < n / 2)."""
    return ((height + 1) // 2, (width + 1) // 2)


class SpectralConv2d(nn.Module):
    """K v = irfft2(R . P_m(rfft2(v))), with R complex per kept mode (see the module docstring).

    ``weight`` is real, (2 m_y - 1, m_x, C_in, C_out, 2): the first axis runs over
    k_y = -(m_y - 1) .. m_y - 1 (centred, so a smaller grid's modes use its central slice), the
    second over k_x = 0 .. m_x - 1, the last holds the real and imaginary parts. The transforms
    are separable and only the kept columns go through the transform along H: rfft along W,
    keep k_x < m_x, fft along H; after the product, ifft along H, irfft along W (zero-padding
    the columns k_x >= m_x).
    """

    def __init__(self, in_channels: int, out_channels: int, modes: tuple[int, int]) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.modes = (int(modes[0]), int(modes[1]))
        m_y, m_x = self.modes
        # each real part ~ N(0, 1 / (C_in + C_out)): E|R|^2 = 2 / (C_in + C_out), as in
        # neuraloperator's default (Glorot-like) initialisation
        std = (1.0 / (in_channels + out_channels)) ** 0.5
        self.weight = nn.Parameter(
            torch.randn(2 * m_y - 1, m_x, in_channels, out_channels, 2) * std
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W), in float32 (float64 for a float64 input)."""
        height, width = x.shape[-2:]
        grid_y, grid_x = max_modes(height, width)
        m_y, m_x = min(self.modes[0], grid_y), min(self.modes[1], grid_x)
        centre = self.modes[0] - 1
        with torch.autocast(device_type=x.device.type, enabled=False):
            work = x if x.dtype in (torch.float32, torch.float64) else x.float()
            columns = torch.fft.rfft(work, dim=-1)[..., :m_x]  # (B, C, H, m_x)
            spectrum = torch.fft.fft(columns, dim=-2)
            # the kept box, rows ordered k_y = -(m_y - 1) .. m_y - 1
            kept = torch.cat([spectrum[:, :, height - (m_y - 1) :], spectrum[:, :, :m_y]], dim=2)
            weight = self.weight[centre - (m_y - 1) : centre + m_y, :m_x].to(work.dtype)
            real, imag = self._multiply(kept, weight)
            # Hermitian k_x = 0 column: Z(k_y) <- (Z(k_y) + conj(Z(-k_y))) / 2, so the inverse
            # is real on every backend (the real part of the truncated inverse DFT)
            col_re = 0.5 * (real[..., :1] + real[..., :1].flip(2))
            col_im = 0.5 * (imag[..., :1] - imag[..., :1].flip(2))
            out = torch.complex(
                torch.cat([col_re, real[..., 1:]], dim=3), torch.cat([col_im, imag[..., 1:]], dim=3)
            )
            gap = out.new_zeros(x.shape[0], self.out_channels, height - (2 * m_y - 1), m_x)
            rows = torch.cat([out[:, :, m_y - 1 :], gap, out[:, :, : m_y - 1]], dim=2)
            return torch.fft.irfft(torch.fft.ifft(rows, dim=-2), n=width, dim=-1)

    @staticmethod
    def _multiply(kept: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-mode complex matrix products sum_i x_i R_io as one batched real product of
        [x_re, x_im] with [R_re, R_im] (4 real products per complex multiply-add: the 8 real
        FLOPs the FLOP counter sees), returning (Re, Im), each (B, C_out, ky, kx)."""
        batch, channels, rows, cols = kept.shape
        x = torch.view_as_real(kept).permute(2, 3, 0, 4, 1)  # (ky, kx, B, 2, C_in)
        x = x.reshape(rows * cols, batch * 2, channels)
        w = weight.reshape(rows * cols, channels, -1)  # (ky kx, C_in, C_out * 2)
        product = torch.bmm(x, w).reshape(rows, cols, batch, 2, -1, 2)
        real = product[:, :, :, 0, :, 0] - product[:, :, :, 1, :, 1]
        imag = product[:, :, :, 0, :, 1] + product[:, :, :, 1, :, 0]
        return real.permute(2, 3, 0, 1), imag.permute(2, 3, 0, 1)


class FourierLayer(nn.Module):
    """v -> (act(K v + W v), K v, W v): the spectral path K and the local path W."""

    def __init__(
        self, channels: int, modes: tuple[int, int], local_kernel: int, activation: bool
    ) -> None:
        super().__init__()
        self.spectral = SpectralConv2d(channels, channels, modes)
        self.local = nn.Conv2d(channels, channels, local_kernel, padding=local_kernel // 2)
        self.act: nn.Module = nn.GELU() if activation else nn.Identity()

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low = self.spectral(v)
        high = self.local(v)
        return self.act(low + high), low, high


def grid_coordinates(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) coordinates y = i / H and x = j / W of a (B, C, H, W) map's grid."""
    batch, _, height, width = x.shape
    ys = torch.arange(height, device=x.device, dtype=x.dtype) / height
    xs = torch.arange(width, device=x.device, dtype=x.dtype) / width
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))
    return grid.expand(batch, 2, height, width)


class FNO(ForecastModel):
    """FNO teacher (see the module docstring for the layout)."""

    latent_names = ("high", "low", "fused", "state")

    def __init__(
        self,
        *,
        in_frames: int,
        out_frames: int,
        channels: int,
        height: int,
        width: int,
        config: FNOConfig | None = None,
        forcing_channels: int = 0,
    ) -> None:
        config = config or FNOConfig()
        super().__init__(
            in_frames=in_frames,
            out_frames=out_frames,
            channels=channels,
            height=height,
            width=width,
            forcing_channels=forcing_channels,
            latent_channels=config.hidden,
            downsample_factor=1,
        )
        self.config = config
        requested = config.mode_pair
        limit = max_modes(height, width)
        self.modes = (min(requested[0], limit[0]), min(requested[1], limit[1]))
        if self.modes != requested:
            logger.warning(
                "fno: modes %s clipped to %s on the %dx%d grid (a grid keeps at most "
                "(n + 1) // 2 modes per axis)",
                list(requested),
                list(self.modes),
                height,
                width,
            )
        extra = 2 if config.grid_features else 0
        self.lifting = nn.Conv2d(in_frames * self.in_channels + extra, config.hidden, 1)
        self.layers = nn.ModuleList(
            [
                FourierLayer(
                    config.hidden, self.modes, config.local_kernel, index < config.depth - 1
                )
                for index in range(config.depth)
            ]
        )
        self.projection = nn.Sequential(
            nn.Conv2d(config.hidden, config.projection_hidden, 1),
            nn.GELU(),
            nn.Conv2d(config.projection_hidden, out_frames * channels, 1),
        )

    def _forward_padded(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, frames, in_channels, height, width = x.shape
        v = x.reshape(batch, frames * in_channels, height, width)
        if self.config.grid_features:
            v = torch.cat([v, grid_coordinates(v)], dim=1)
        v = self.lifting(v)
        low = high = v
        for layer in self.layers:
            v, low, high = layer(v)
        y = self.projection(v).reshape(batch, self.out_frames, self.channels, height, width)
        # the last layer has no activation: its output is low + high, the projection's input
        return y, {"high": high, "low": low, "fused": v, "state": v}
