"""U-Net student: frames folded into channels, a small encoder-decoder with skips.

Input (B, T_in, C, H, W) is viewed as (B, T_in*C, H, W). ``levels`` max-pool down-samplings
lead to the bottleneck (``hidden`` channels at H, W / 2**levels), each level a double
Conv-GroupNorm-SiLU; the decoder up-samples with 2x2 transposed convs and concatenates the
encoder maps. A 1x1 conv emits T_out*C channels. ``forward_features`` returns the bottleneck
as ``bottleneck`` (B, hidden, h, w).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sdkd_pipeline.config_utils import param
from sdkd_pipeline.models.config import ModelConfig
from sdkd_pipeline.models.layers import ConvNormAct, ForecastModel


@dataclasses.dataclass(frozen=True)
class UNetConfig(ModelConfig):
    hidden: int = param(64, gt=0)  # bottleneck width (the latent width; 25 % of the teachers' 256)
    # width at full resolution; doubles per level, capped at hidden
    base_width: int = param(32, gt=0)
    levels: int = param(2, gt=0)  # down-samplings; the bottleneck is at H, W / 2**levels


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvNormAct(in_channels, out_channels, norm_groups=8),
            ConvNormAct(out_channels, out_channels, norm_groups=8),
        )


class UNet(ForecastModel):
    latent_names = ("bottleneck",)

    def __init__(
        self,
        *,
        in_frames: int,
        out_frames: int,
        channels: int,
        height: int,
        width: int,
        config: UNetConfig | None = None,
        forcing_channels: int = 0,
    ) -> None:
        config = config or UNetConfig()
        super().__init__(
            in_frames=in_frames,
            out_frames=out_frames,
            channels=channels,
            height=height,
            width=width,
            forcing_channels=forcing_channels,
            latent_channels=config.hidden,
            downsample_factor=2**config.levels,
        )
        self.config = config
        widths = [
            min(config.base_width * 2**level, config.hidden) for level in range(config.levels)
        ]
        self.down = nn.ModuleList()
        previous = in_frames * self.in_channels
        for level_width in widths:
            self.down.append(DoubleConv(previous, level_width))
            previous = level_width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(previous, config.hidden)
        self.up = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        previous = config.hidden
        for level_width in reversed(widths):
            self.up.append(nn.ConvTranspose2d(previous, level_width, 2, stride=2))
            self.up_convs.append(DoubleConv(2 * level_width, level_width))
            previous = level_width
        self.head = nn.Conv2d(previous, out_frames * channels, 1)

    def _forward_padded(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, frames, in_channels, height, width = x.shape
        z = x.reshape(batch, frames * in_channels, height, width)
        skips = []
        for block in self.down:
            z = block(z)
            skips.append(z)
            z = self.pool(z)
        bottleneck = self.bottleneck(z)
        z = bottleneck
        for up, block, skip in zip(self.up, self.up_convs, reversed(skips), strict=True):
            z = block(torch.cat([up(z), skip], dim=1))
        y = self.head(z).reshape(batch, self.out_frames, self.channels, height, width)
        return y, {"bottleneck": bottleneck}
