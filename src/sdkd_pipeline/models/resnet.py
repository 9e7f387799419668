"""ResNet student: strided conv stem, residual blocks at low resolution, pixel-shuffle decoder.

Input (B, T_in, C, H, W) is viewed as (B, T_in*C, H, W). A full-resolution conv (``base_width``)
and ``downsample_steps`` stride-2 convs reach ``hidden`` channels at H, W / 2**steps, where
``depth`` basic residual blocks (conv-GN-SiLU-conv-GN + identity) run; their output is the
``bottleneck`` (B, hidden, h, w). Pixel-shuffle up-sampling and a 3x3 refinement conv bring
it back, and a 1x1 conv emits T_out*C channels.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sdkd_pipeline.config_utils import param
from sdkd_pipeline.models.config import ModelConfig
from sdkd_pipeline.models.layers import ConvNormAct, ForecastModel, group_count


@dataclasses.dataclass(frozen=True)
class ResNetConfig(ModelConfig):
    hidden: int = param(64, gt=0)  # width of the residual blocks (the latent width)
    base_width: int = param(32, gt=0)  # width at full resolution
    depth: int = param(6, gt=0)  # residual blocks
    downsample_steps: int = param(2, gt=0)  # stride-2 convs before the blocks


class BasicBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        groups = group_count(channels)
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels),
        )
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class ResNet(ForecastModel):
    latent_names = ("bottleneck",)

    def __init__(
        self,
        *,
        in_frames: int,
        out_frames: int,
        channels: int,
        height: int,
        width: int,
        config: ResNetConfig | None = None,
        forcing_channels: int = 0,
    ) -> None:
        config = config or ResNetConfig()
        super().__init__(
            in_frames=in_frames,
            out_frames=out_frames,
            channels=channels,
            height=height,
            width=width,
            forcing_channels=forcing_channels,
            latent_channels=config.hidden,
            downsample_factor=2**config.downsample_steps,
        )
        self.config = config
        stem: list[nn.Module] = [
            ConvNormAct(in_frames * self.in_channels, config.base_width, norm_groups=8)
        ]
        previous = config.base_width
        for _ in range(config.downsample_steps):
            stem.append(ConvNormAct(previous, config.hidden, downsample=True, norm_groups=8))
            previous = config.hidden
        self.stem = nn.Sequential(*stem)
        self.blocks = nn.Sequential(*[BasicBlock(config.hidden) for _ in range(config.depth)])
        up: list[nn.Module] = []
        for step in range(config.downsample_steps):
            out = config.base_width if step == config.downsample_steps - 1 else config.hidden
            up.append(ConvNormAct(previous, out, upsample=True, norm_groups=8))
            previous = out
        up.append(ConvNormAct(previous, previous, norm_groups=8))
        self.decoder = nn.Sequential(*up)
        self.head = nn.Conv2d(previous, out_frames * channels, 1)

    def _forward_padded(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, frames, in_channels, height, width = x.shape
        bottleneck = self.blocks(self.stem(x.reshape(batch, frames * in_channels, height, width)))
        y = self.head(self.decoder(bottleneck))
        return (
            y.reshape(batch, self.out_frames, self.channels, height, width),
            {"bottleneck": bottleneck},
        )
