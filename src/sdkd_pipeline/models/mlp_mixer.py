"""MLP-Mixer student: patch embedding, Mixer blocks, linear un-patching.

Input (B, T_in, C, H, W) is viewed as (B, T_in*C, H, W) and cut into ``patch`` x ``patch``
patches embedded to ``hidden`` channels (a strided conv), giving an h x w token grid. Each of
``depth`` blocks mixes tokens, then channels, each pre-normalised with a residual.

Token mixing is axial: one MLP mixes along the grid's rows and another along its columns
(summed), instead of one MLP over all h*w tokens. Why: a full token MLP has (h*w)^2 weights,
about 1 M per block on the 128x128 TaxiBJ+ grid at patch 4, which would break the student's
parameter budget; axial mixing costs h^2 + w^2 and still reaches every token within a block.
Like any MLP-Mixer the token MLPs are sized for the grid the model is built for
(``height`` x ``width``, padded to a multiple of ``patch``); other grids are rejected.

A LayerNorm and a linear layer map each token to T_out*C*patch^2 values, pixel shuffle puts
them back on the grid, and a 3x3 conv smooths the patch seams. ``bottleneck`` is the token grid
after the last block, (B, hidden, h, w).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sdkd_pipeline.config_utils import param
from sdkd_pipeline.errors import DataError
from sdkd_pipeline.models.config import ModelConfig
from sdkd_pipeline.models.layers import ChannelMLP, ForecastModel


@dataclasses.dataclass(frozen=True)
class MLPMixerConfig(ModelConfig):
    hidden: int = param(64, gt=0)  # token width (the latent width)
    depth: int = param(8, gt=0)  # Mixer blocks
    patch: int = param(4, gt=0)  # patch size; the token grid is H, W / patch
    token_mlp_ratio: float = param(2.0, gt=0)  # hidden size / axis length of the axial token MLPs
    channel_mlp_ratio: float = param(4.0, gt=0)  # hidden size / hidden of the channel MLP


class AxialTokenMixer(nn.Module):
    """Token mixing on a (B, h, w, D) grid: an MLP along h plus an MLP along w."""

    def __init__(self, height: int, width: int, ratio: float) -> None:
        super().__init__()
        self.along_height = ChannelMLP(height, max(1, int(round(height * ratio))))
        self.along_width = ChannelMLP(width, max(1, int(round(width * ratio))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed_w = self.along_width(x.permute(0, 1, 3, 2)).permute(0, 1, 3, 2)
        mixed_h = self.along_height(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return mixed_w + mixed_h


class MixerBlock(nn.Module):
    def __init__(
        self, dim: int, height: int, width: int, token_ratio: float, channel_ratio: float
    ) -> None:
        super().__init__()
        self.norm_tokens = nn.LayerNorm(dim)
        self.tokens = AxialTokenMixer(height, width, token_ratio)
        self.norm_channels = nn.LayerNorm(dim)
        self.channels = ChannelMLP(dim, int(round(dim * channel_ratio)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.tokens(self.norm_tokens(x))
        return x + self.channels(self.norm_channels(x))


class MLPMixer(ForecastModel):
    latent_names = ("bottleneck",)

    def __init__(
        self,
        *,
        in_frames: int,
        out_frames: int,
        channels: int,
        height: int,
        width: int,
        config: MLPMixerConfig | None = None,
        forcing_channels: int = 0,
    ) -> None:
        config = config or MLPMixerConfig()
        super().__init__(
            in_frames=in_frames,
            out_frames=out_frames,
            channels=channels,
            height=height,
            width=width,
            forcing_channels=forcing_channels,
            latent_channels=config.hidden,
            downsample_factor=config.patch,
        )
        self.config = config
        p = config.patch
        self.grid = (-(-height // p), -(-width // p))
        self.embed = nn.Conv2d(in_frames * self.in_channels, config.hidden, p, stride=p)
        self.blocks = nn.Sequential(
            *[
                MixerBlock(
                    config.hidden, *self.grid, config.token_mlp_ratio, config.channel_mlp_ratio
                )
                for _ in range(config.depth)
            ]
        )
        self.norm_out = nn.LayerNorm(config.hidden)
        self.unpatch = nn.Linear(config.hidden, out_frames * channels * p * p)
        self.shuffle = nn.PixelShuffle(p)
        self.refine = nn.Conv2d(out_frames * channels, out_frames * channels, 3, padding=1)

    def _check_input(self, x: torch.Tensor) -> None:
        super()._check_input(x)
        grid = (-(-x.shape[-2] // self.config.patch), -(-x.shape[-1] // self.config.patch))
        if grid != self.grid:
            raise DataError(
                f"MLPMixer was built for a {self.height}x{self.width} grid (tokens "
                f"{self.grid[0]}x{self.grid[1]}); got input {tuple(x.shape)}: build it with "
                f"this grid's height and width"
            )

    def _forward_padded(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, frames, in_channels, height, width = x.shape
        tokens = self.embed(x.reshape(batch, frames * in_channels, height, width))
        tokens = self.blocks(tokens.permute(0, 2, 3, 1))  # (B, h, w, D)
        bottleneck = tokens.permute(0, 3, 1, 2)
        patches = self.unpatch(self.norm_out(tokens)).permute(0, 3, 1, 2)
        y = self.refine(self.shuffle(patches))
        return (
            y.reshape(batch, self.out_frames, self.channels, height, width),
            {"bottleneck": bottleneck},
        )
