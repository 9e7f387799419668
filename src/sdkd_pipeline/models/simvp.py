"""SimVP v2 teacher with the gSTA (gated spatial attention) translator.

Follows the structure of OpenSTL's ``SimVP_Model(model_type="gSTA")`` (re-implemented, not
copied): a per-frame encoder of ``spatial_layers`` (N_S) Conv-GroupNorm-SiLU layers with
stride 2 on every second one; the T frame maps folded into T*frame_hidden channels; a
translator of ``depth`` (N_T) gSTA blocks, the first mapping T_in*frame_hidden -> hidden
(hid_T) channels and the last hidden -> T_out*frame_hidden; a decoder mirroring the encoder
with a skip from the first encoder layer. Defaults (hid_S=32, hid_T=256, N_S=4, N_T=8,
mlp_ratio=8) give ~11.4 M parameters at NS 10 -> 10, within OpenSTL's 10-13 M.

Parameter names: ``frame_hidden`` = hid_S, ``hidden`` = hid_T, ``spatial_layers`` = N_S,
``depth`` = N_T.

Differences from OpenSTL: T_in != T_out is supported (the translator's last reduction emits
T_out frames and the skip is mapped by a 1x1 conv); no stochastic depth (its drop_path
defaults to 0 for SimVP).

Latents (from the LAST gSTA block, which runs at ``hidden`` channels, before its reduction):
``low`` is the gated large-kernel spatial-attention branch (receptive field ``attention_kernel``,
smooth, low-pass), ``high`` is the MLP branch whose only spatial op is a 3x3 depth-wise conv
(local, high-pass), both as added to the residual stream (layer scale included), and ``fused``
is the block output x + low + high. Each is (B, hidden, h, w).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sdkd_pipeline.config_utils import param
from sdkd_pipeline.models.config import ModelConfig
from sdkd_pipeline.models.layers import ForecastModel, FrameDecoder, FrameEncoder, TemporalSkip


@dataclasses.dataclass(frozen=True)
class SimVPConfig(ModelConfig):
    """Hyperparameters (OpenSTL names in brackets)."""

    frame_hidden: int = param(32, gt=0, multiple_of=2)  # [hid_S] per-frame encoder/decoder width
    hidden: int = param(256, gt=0)  # [hid_T] translator width
    # [N_S] encoder layers; down-sampling 2**(N_S / 2)
    spatial_layers: int = param(4, gt=0, multiple_of=2)
    # [N_T] gSTA blocks
    depth: int = param(8, ge=2, note="the first and last gSTA blocks change width")
    mlp_ratio: float = param(8.0, gt=0)  # MLP width / channels in each gSTA block
    # receptive field of the large-kernel attention
    attention_kernel: int = param(
        21, ge=9, note="it is decomposed into a 5x5 and a dilated depth-wise conv"
    )
    layer_scale_init: float = param(1e-2, gt=0)


class LargeKernelAttention(nn.Module):
    """Gated large-kernel attention: depth-wise 5x5, depth-wise dilated conv, sigmoid gate.

    A K x K receptive field is decomposed (as in VAN / SimVP v2) into a 5x5 depth-wise conv and
    a (K // 3)-sized depth-wise conv with dilation 3, then a 1x1 conv gives value and gate.
    """

    def __init__(self, dim: int, kernel_size: int, dilation: int = 3) -> None:
        super().__init__()
        local = 2 * dilation - 1
        dilated = kernel_size // dilation
        dilated += dilated % 2 - 1  # odd kernel
        self.local = nn.Conv2d(dim, dim, local, padding=local // 2, groups=dim)
        self.dilated = nn.Conv2d(
            dim, dim, dilated, padding=dilation * (dilated - 1) // 2, groups=dim, dilation=dilation
        )
        self.value_gate = nn.Conv2d(dim, 2 * dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.value_gate(self.dilated(self.local(x))).chunk(2, dim=1)
        return torch.sigmoid(gate) * value


class SpatialAttention(nn.Module):
    """1x1 -> GELU -> gated large-kernel attention -> 1x1, with a shortcut."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.gating = LargeKernelAttention(dim, kernel_size)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj_out(self.gating(self.act(self.proj_in(x))))


class ConvMLP(nn.Module):
    """1x1 -> depth-wise 3x3 -> GELU -> 1x1 (SimVP's MixMlp)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.depthwise(self.fc1(x))))


class GSTABlock(nn.Module):
    """gSTA block: x + s1*Attn(BN(x)), then + s2*MLP(BN(.)); optional 1x1 width change."""

    def __init__(
        self, dim: int, out_dim: int, mlp_ratio: float, kernel_size: int, layer_scale_init: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attention = SpatialAttention(dim, kernel_size)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMLP(dim, int(round(dim * mlp_ratio)))
        self.scale1 = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init))
        self.scale2 = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init))
        self.reduction = nn.Identity() if dim == out_dim else nn.Conv2d(dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        low = self.scale1 * self.attention(self.norm1(x))
        x = x + low
        high = self.scale2 * self.mlp(self.norm2(x))
        fused = x + high
        # ``state``: the latent after both residuals, what the next block (or the decoder) reads
        return self.reduction(fused), {"high": high, "low": low, "fused": fused, "state": fused}


class SimVP(ForecastModel):
    """SimVP v2 (gSTA) teacher (see the module docstring)."""

    latent_names = ("high", "low", "fused", "state")

    def __init__(
        self,
        *,
        in_frames: int,
        out_frames: int,
        channels: int,
        height: int,
        width: int,
        config: SimVPConfig | None = None,
        forcing_channels: int = 0,
    ) -> None:
        config = config or SimVPConfig()
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
        widths = [in_frames * hs] + [config.hidden] * (config.depth - 1) + [out_frames * hs]
        # Block i runs at widths[i] and reduces to widths[i+1], except that the first block
        # runs at T_in*hid_S and the rest at hid_T, as in OpenSTL's MidMetaNet.
        self.translator = nn.ModuleList(
            [
                GSTABlock(
                    widths[i] if i == 0 else config.hidden,
                    widths[i + 1],
                    config.mlp_ratio,
                    config.attention_kernel,
                    config.layer_scale_init,
                )
                for i in range(config.depth)
            ]
        )
        self.skip = TemporalSkip(in_frames, out_frames, hs)
        self.decoder = FrameDecoder(hs, channels, config.spatial_layers)
        self.translator.apply(_init_weights)

    def _forward_padded(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, frames, in_channels, height, width = x.shape
        latent, first = self.encoder(x.reshape(batch * frames, in_channels, height, width))
        h, w = latent.shape[-2:]
        z = latent.reshape(batch, frames * latent.shape[1], h, w)
        features: dict[str, torch.Tensor] = {}
        for block in self.translator:
            z, features = block(z)
        hid = z.reshape(batch * self.out_frames, -1, h, w)
        y = self.decoder(hid, self.skip(first, batch))
        return y.reshape(batch, self.out_frames, self.channels, height, width), features


def _init_weights(module: nn.Module) -> None:
    # OpenSTL's gSTA init: conv weights ~ N(0, 2 / fan_out), zero bias.
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        fan_out //= module.groups
        nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
