"""Building blocks shared by the models, and the base class that fixes their interface.

Every model maps ``(B, T_in, C, H, W)`` to ``(B, T_out, C, H, W)`` for any grid: the input is
padded (edge replication, so no artificial zero wall enters the field) up to a multiple of the
model's down-sampling factor and the output is cropped back. Latent features are returned as
spatial maps ``(B, C_lat, h, w)`` on the padded grid's latent resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sdkd_pipeline.errors import DataError


class ForecastModel(nn.Module):
    """Base class: input checks, padding to the down-sampling factor, cropping back.

    Subclasses implement ``_forward_padded(x) -> (y, features)`` on inputs whose H and W are
    multiples of ``downsample_factor``, and set ``latent_channels`` and ``latent_names``.
    """

    latent_names: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        in_frames: int,
        out_frames: int,
        channels: int,
        height: int,
        width: int,
        latent_channels: int,
        downsample_factor: int,
        forcing_channels: int = 0,
    ) -> None:
        super().__init__()
        self.in_frames = in_frames
        self.out_frames = out_frames
        self.channels = channels
        # input-only channels after the forecast channels (data/forcings.py): inputs have
        # channels + forcing_channels, predictions channels
        self.forcing_channels = int(forcing_channels)
        self.in_channels = channels + self.forcing_channels
        self.height = height
        self.width = width
        self.latent_channels = latent_channels
        self.downsample_factor = downsample_factor

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # latents through forward's keyword, so a DDP-wrapped model still syncs gradients
        # (DDP hooks only forward) when a distillation loss needs the student's bottleneck
        y, features = self.forward_features(x)
        return (y, features) if return_features else y

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Prediction ``(B, T_out, C, H, W)`` and the named latents, each ``(B, C_lat, h, w)``."""
        self._check_input(x)
        batch, _, _, height, width = x.shape
        padded = pad_to_multiple(x, self.downsample_factor)
        y, features = self._forward_padded(padded)
        y = y[..., :height, :width]
        if self.residual:  # the change from the last input frame (ModelConfig.residual)
            y = y + x[:, -1:, : self.channels]
        return y, features

    @property
    def residual(self) -> bool:
        return bool(self.config.residual)

    def _forward_padded(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_frames or x.shape[2] != self.in_channels:
            what = f"C={self.channels}"
            if self.forcing_channels:
                what = f"C={self.in_channels}: {self.channels} + {self.forcing_channels} forcings"
            raise DataError(
                f"{type(self).__name__} expects input of shape (B, T_in={self.in_frames}, "
                f"{what}, H, W), got {tuple(x.shape)}"
            )


def pad_to_multiple(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Pad the last two dims of a (B, T, C, H, W) tensor up to multiples of ``factor``."""
    height, width = x.shape[-2:]
    pad_h = (-height) % factor
    pad_w = (-width) % factor
    if pad_h == 0 and pad_w == 0:
        return x
    batch, frames, channels = x.shape[:3]
    # replicate-padding takes 4-D input with a 4-element pad; fold time into the batch.
    flat = F.pad(
        x.reshape(batch * frames, channels, height, width), (0, pad_w, 0, pad_h), mode="replicate"
    )
    return flat.reshape(batch, frames, channels, height + pad_h, width + pad_w)


def group_count(channels: int, preferred: int = 8) -> int:
    """Largest group count <= ``preferred`` that divides ``channels`` (for GroupNorm)."""
    for groups in range(min(preferred, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


class ConvNormAct(nn.Module):
    """Conv -> GroupNorm -> SiLU, optionally strided (down) or pixel-shuffled (up by 2).

    This is SimVP's ``ConvSC`` layer; GroupNorm keeps it independent of the batch size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        downsample: bool = False,
        upsample: bool = False,
        norm_groups: int = 2,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2
        if upsample:
            self.conv: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels * 4, kernel_size, padding=padding),
                nn.PixelShuffle(2),
            )
        else:
            self.conv = nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=2 if downsample else 1,
                padding=padding,
            )
        self.norm = nn.GroupNorm(group_count(out_channels, norm_groups), out_channels)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


def _stride_pattern(layers: int) -> list[bool]:
    # SimVP's rule: stride 2 on every second layer (layers 2, 4, ...).
    return [index % 2 == 1 for index in range(layers)]


class FrameEncoder(nn.Module):
    """Per-frame conv encoder (shared over time); returns the latent and the first layer's map."""

    def __init__(self, in_channels: int, hidden: int, layers: int) -> None:
        super().__init__()
        strides = _stride_pattern(layers)
        self.layers = nn.ModuleList(
            [
                ConvNormAct(in_channels if index == 0 else hidden, hidden, downsample=down)
                for index, down in enumerate(strides)
            ]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.layers[0](x)
        latent = first
        for layer in self.layers[1:]:
            latent = layer(latent)
        return latent, first


class FrameDecoder(nn.Module):
    """Mirror of ``FrameEncoder``; the skip map is added before the last layer (as in SimVP)."""

    def __init__(self, hidden: int, out_channels: int, layers: int) -> None:
        super().__init__()
        ups = list(reversed(_stride_pattern(layers)))
        self.layers = nn.ModuleList([ConvNormAct(hidden, hidden, upsample=up) for up in ups])
        self.readout = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, latent: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            latent = layer(latent)
        return self.readout(self.layers[-1](latent + skip))


class TemporalSkip(nn.Module):
    """Maps the first encoder layer's per-frame maps from T_in to T_out frames.

    SimVP adds frame t's encoder map to output frame t, which only works for T_in == T_out; for
    T_in != T_out a 1x1 conv over the time-folded channels learns the mapping instead.
    """

    def __init__(self, in_frames: int, out_frames: int, hidden: int) -> None:
        super().__init__()
        self.in_frames, self.out_frames, self.hidden = in_frames, out_frames, hidden
        self.proj = (
            nn.Identity()
            if in_frames == out_frames
            else nn.Conv2d(in_frames * hidden, out_frames * hidden, 1)
        )

    def forward(self, skip: torch.Tensor, batch: int) -> torch.Tensor:
        height, width = skip.shape[-2:]
        folded = skip.reshape(batch, self.in_frames * self.hidden, height, width)
        return self.proj(folded).reshape(batch * self.out_frames, self.hidden, height, width)


class ChannelMLP(nn.Module):
    """Linear -> GELU -> Linear on the last axis."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def sincos_position_2d(
    height: int, width: int, dim: int, *, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Fixed 2-D sine-cosine position code of shape (height * width, dim), dim % 4 == 0.

    Parameter-free, so attention knows where tokens are on any grid size.
    """
    quarter = dim // 4
    freq = torch.exp(
        -math.log(10000.0) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter
    )
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None] * freq
    xs = torch.arange(width, device=device, dtype=torch.float32)[:, None] * freq
    code_y = torch.cat([ys.sin(), ys.cos()], dim=1)[:, None, :].expand(height, width, 2 * quarter)
    code_x = torch.cat([xs.sin(), xs.cos()], dim=1)[None, :, :].expand(height, width, 2 * quarter)
    return torch.cat([code_y, code_x], dim=-1).reshape(height * width, dim).to(dtype)
