"""ST-AlterNet teacher: conv encoder, alternating local/global latent blocks, conv decoder.

Layout (our choices where METHOD.md leaves room):

- Encoder: each input frame goes through the same SimVP-style conv stack (``spatial_layers``
  Conv-GroupNorm-SiLU layers, stride 2 on every second one, width ``frame_hidden``); the T_in
  frame maps are then folded into channels and a 1x1 conv embeds them to ``hidden`` channels.
  Temporal mixing thus happens in the latent blocks, which see all frames at once. A fixed 2-D
  sine-cosine position code is added so attention knows where tokens are, on any grid.
- Latent block (``depth`` of them), on the latent map Z (B, D, h, w), pre-normalised:

      N    = LayerNorm(Z)
      Z_h  = GELU(Conv3x3(N))                       conv branch: local, high-pass
      Z_l  = MHSA(N) = softmax(Q K^T / sqrt(d)) V    attention over the h*w tokens: global
      F    = LayerNorm(Z_h + Z_l)                    the fused latent of METHOD.md
      Z    = Z + F                                  residual, so deep stacks train
      Z    = Z + MLP(LayerNorm(Z))                  token-wise MLP (ratio ``mlp_ratio``)

- Decoder: a 1x1 conv maps D channels to T_out x ``frame_hidden``; each output frame is decoded
  by the mirror of the encoder (pixel-shuffle up-sampling) with a skip from the first encoder
  layer (mapped from T_in to T_out frames when they differ).

``forward_features`` returns the last block's ``high`` (Z_h), ``low`` (Z_l) and ``fused`` (F),
each as (B, hidden, h, w) with h, w = padded H, W / 2**(spatial_layers / 2).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from sdkd_pipeline.config_utils import param
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.models.config import ModelConfig
from sdkd_pipeline.models.layers import (
    ChannelMLP,
    ForecastModel,
    FrameDecoder,
    FrameEncoder,
    TemporalSkip,
    sincos_position_2d,
)


@dataclasses.dataclass(frozen=True)
class STAlterNetConfig(ModelConfig):
    """Hyperparameters. Defaults give ~11 M parameters at NS 10 -> 10 (like SimVP's)."""

    hidden: int = param(256, gt=0)  # latent width D (channels of Z, Z_h, Z_l)
    depth: int = param(8, gt=0)  # number of latent blocks
    heads: int = param(8, gt=0)  # attention heads; hidden % heads == 0
    mlp_ratio: float = param(4.0, gt=0)  # MLP width / hidden
    frame_hidden: int = param(32, gt=0, multiple_of=2)  # per-frame encoder/decoder width
    # encoder layers; down-sampling 2**(spatial_layers / 2)
    spatial_layers: int = param(4, gt=0, multiple_of=2)
    conv_kernel: int = param(3, gt=0)  # kernel of the conv branch (odd)

    def validate(self, param_path: str) -> None:
        if self.hidden % self.heads:
            raise ConfigError(
                f"{param_path}.heads ({self.heads}) must divide {param_path}.hidden ({self.hidden})"
            )
        if self.hidden % 4:
            raise ConfigError(
                f"{param_path}.hidden must be a multiple of 4 (2-D position code), "
                f"got {self.hidden}"
            )
        if self.conv_kernel % 2 == 0:
            raise ConfigError(f"{param_path}.conv_kernel must be odd, got {self.conv_kernel}")


class SpatialSelfAttention(nn.Module):
    """Multi-head self-attention over the h*w tokens of a (B, N, D) sequence."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, dim = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, length, 3, self.heads, dim // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        # softmax(Q K^T / sqrt(d)) V; the fused kernel picks flash/efficient paths on GPU.
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.proj(attended.transpose(1, 2).reshape(batch, length, dim))


class AlterBlock(nn.Module):
    """One latent block: parallel conv (Z_h) and attention (Z_l) branches, LayerNorm fusion."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, conv_kernel: int) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, conv_kernel, padding=conv_kernel // 2)
        self.conv_act = nn.GELU()
        self.attention = SpatialSelfAttention(dim, heads)
        self.norm_fuse = nn.LayerNorm(dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = ChannelMLP(dim, int(round(dim * mlp_ratio)))

    def forward(
        self, tokens: torch.Tensor, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, h*w, D) -> (tokens, Z_h, Z_l, fused), all (B, h*w, D)."""
        batch, length, dim = tokens.shape
        normed = self.norm_in(tokens)
        grid = normed.transpose(1, 2).reshape(batch, dim, height, width)
        high = self.conv_act(self.conv(grid)).flatten(2).transpose(1, 2)
        low = self.attention(normed)
        fused = self.norm_fuse(high + low)
        tokens = tokens + fused
        tokens = tokens + self.mlp(self.norm_mlp(tokens))
        return tokens, high, low, fused


class STAlterNet(ForecastModel):
    """ST-AlterNet teacher (see the module docstring for the layout)."""

    latent_names = ("high", "low", "fused", "state")

    def __init__(
        self,
        *,
        in_frames: int,
        out_frames: int,
        channels: int,
        height: int,
        width: int,
        config: STAlterNetConfig | None = None,
        forcing_channels: int = 0,
    ) -> None:
        config = config or STAlterNetConfig()
        super().__init__(
            in_frames=in_frames,
            out_frames=out_frames,
            channels=channels,
            height=height,
            width=width,
            forcing_channels=forcing_channels,
            latent_channels=config.hidden,
            downsample_factor=2 ** (config.spatial_layers // 2),
        )
        self.config = config
        hs = config.frame_hidden
        self.encoder = FrameEncoder(self.in_channels, hs, config.spatial_layers)
        self.embed = nn.Conv2d(in_frames * hs, config.hidden, 1)
        self.blocks = nn.ModuleList(
            [
                AlterBlock(config.hidden, config.heads, config.mlp_ratio, config.conv_kernel)
                for _ in range(config.depth)
            ]
        )
        self.norm_out = nn.LayerNorm(config.hidden)
        self.unembed = nn.Conv2d(config.hidden, out_frames * hs, 1)
        self.skip = TemporalSkip(in_frames, out_frames, hs)
        self.decoder = FrameDecoder(hs, channels, config.spatial_layers)

    def _forward_padded(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, frames, in_channels, height, width = x.shape
        latent, first = self.encoder(x.reshape(batch * frames, in_channels, height, width))
        h, w = latent.shape[-2:]
        z = self.embed(latent.reshape(batch, frames * latent.shape[1], h, w))
        tokens = z.flatten(2).transpose(1, 2)
        tokens = tokens + sincos_position_2d(
            h, w, tokens.shape[-1], device=tokens.device, dtype=tokens.dtype
        )
        high = low = fused = tokens
        for block in self.blocks:
            tokens, high, low, fused = block(tokens, h, w)
        z = self.norm_out(tokens).transpose(1, 2).reshape(batch, -1, h, w)
        hid = self.unembed(z).reshape(batch * self.out_frames, -1, h, w)
        y = self.decoder(hid, self.skip(first, batch))
        y = y.reshape(batch, self.out_frames, self.channels, height, width)

        def as_map(t: torch.Tensor) -> torch.Tensor:
            return t.transpose(1, 2).reshape(batch, -1, h, w)

        # ``state``: the token map after the last block's residuals (before the output norm)
        return y, {
            "high": as_map(high),
            "low": as_map(low),
            "fused": as_map(fused),
            "state": as_map(tokens),
        }
