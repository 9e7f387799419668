"""Forecasting models: three teachers (ST-AlterNet, SimVP v2, FNO) and three students (U-Net,
ResNet, MLP-Mixer), built by name through ``build_model``.

All map (B, T_in, C, H, W) -> (B, T_out, C, H, W) on any grid and expose latents through
``forward_features(x) -> (y, {name: (B, latent_channels, h, w)})``: teachers ``high``, ``low``,
``fused``; students ``bottleneck``.
"""

from sdkd_pipeline.models.checkpoint import Checkpoint
from sdkd_pipeline.models.complexity import count_flops, count_parameters
from sdkd_pipeline.models.fno import FNO, FNOConfig
from sdkd_pipeline.models.layers import ForecastModel
from sdkd_pipeline.models.mlp_mixer import MLPMixer, MLPMixerConfig
from sdkd_pipeline.models.registry import (
    MODEL_ROLES,
    build_model,
    default_config,
    list_models,
    model_from_checkpoint,
    resolve_config,
)
from sdkd_pipeline.models.resnet import ResNet, ResNetConfig
from sdkd_pipeline.models.simvp import SimVP, SimVPConfig
from sdkd_pipeline.models.st_alternet import STAlterNet, STAlterNetConfig
from sdkd_pipeline.models.unet import UNet, UNetConfig

__all__ = [
    "MODEL_ROLES",
    "FNO",
    "Checkpoint",
    "FNOConfig",
    "ForecastModel",
    "MLPMixer",
    "MLPMixerConfig",
    "ResNet",
    "ResNetConfig",
    "STAlterNet",
    "STAlterNetConfig",
    "SimVP",
    "SimVPConfig",
    "UNet",
    "UNetConfig",
    "build_model",
    "count_flops",
    "count_parameters",
    "default_config",
    "list_models",
    "model_from_checkpoint",
    "resolve_config",
]
