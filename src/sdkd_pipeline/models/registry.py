"""Build any model from its name and a plain config mapping.

    model = build_model("st_alternet", in_frames=10, out_frames=10, channels=1,
                        height=64, width=64, hidden=64, depth=4)

Unknown names, unknown keys and bad values raise ``ConfigError`` naming the parameter as it
appears in the parameters files, ``{role}.{name}.{key}`` (e.g. ``teacher.st_alternet.hidden``);
pass ``param_path`` when the config lives elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdkd_pipeline.config_utils import check_value
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.models.config import ModelConfig
from sdkd_pipeline.models.fno import FNO, FNOConfig
from sdkd_pipeline.models.layers import ForecastModel
from sdkd_pipeline.models.mlp_mixer import MLPMixer, MLPMixerConfig
from sdkd_pipeline.models.resnet import ResNet, ResNetConfig
from sdkd_pipeline.models.simvp import SimVP, SimVPConfig
from sdkd_pipeline.models.st_alternet import STAlterNet, STAlterNetConfig
from sdkd_pipeline.models.unet import UNet, UNetConfig


@dataclass(frozen=True)
class ModelSpec:
    model_cls: type[ForecastModel]
    config_cls: type[ModelConfig]
    role: str


_SPECS: dict[str, ModelSpec] = {
    "st_alternet": ModelSpec(STAlterNet, STAlterNetConfig, "teacher"),
    "simvp": ModelSpec(SimVP, SimVPConfig, "teacher"),
    "fno": ModelSpec(FNO, FNOConfig, "teacher"),
    "unet": ModelSpec(UNet, UNetConfig, "student"),
    "resnet": ModelSpec(ResNet, ResNetConfig, "student"),
    "mlp_mixer": ModelSpec(MLPMixer, MLPMixerConfig, "student"),
}

MODEL_ROLES: dict[str, str] = {name: spec.role for name, spec in _SPECS.items()}


def list_models(role: str | None = None) -> list[str]:
    """Registered model names, optionally only those of ``role`` ("teacher" or "student")."""
    if role is not None and role not in set(MODEL_ROLES.values()):
        raise ConfigError(f"role {role!r} is unknown; use teacher or student")
    return [name for name, r in MODEL_ROLES.items() if role is None or r == role]


def _spec(name: str, param_path: str) -> ModelSpec:
    if name not in _SPECS:
        raise ConfigError(
            f"{param_path}: model {name!r} is unknown; registered models: {', '.join(_SPECS)}"
        )
    return _SPECS[name]


def resolve_config(name: str, *, param_path: str | None = None, **cfg: Any) -> ModelConfig:
    """The validated config of model ``name``: its defaults updated by ``cfg``."""
    spec = _spec(name, param_path or "model")
    return spec.config_cls.from_params(cfg, param_path or f"{spec.role}.{name}")


def default_config(name: str) -> dict[str, Any]:
    """The default hyperparameters of model ``name``, as a plain dict."""
    return _spec(name, "model").config_cls().to_dict()


def build_model(
    name: str,
    *,
    in_frames: int,
    out_frames: int,
    channels: int,
    height: int,
    width: int,
    forcing_channels: int = 0,
    param_path: str | None = None,
    **cfg: Any,
) -> ForecastModel:
    """Build model ``name`` for (in_frames, channels, height, width) -> out_frames;
    ``forcing_channels`` input-only channels follow the ``channels`` in its input.

    ``cfg`` overrides the model's config defaults (see ``default_config(name)``); the model's
    resolved config is ``model.config``.
    """
    shape = {
        key: check_value(key, value, int, {"gt": 0})
        for key, value in (
            ("in_frames", in_frames),
            ("out_frames", out_frames),
            ("channels", channels),
            ("height", height),
            ("width", width),
        )
    }
    forcing = check_value("forcing_channels", forcing_channels, int, {"ge": 0})
    if forcing:
        shape["forcing_channels"] = forcing
    config = resolve_config(name, param_path=param_path, **cfg)
    return _SPECS[name].model_cls(config=config, **shape)


def model_from_checkpoint(checkpoint: Mapping[str, Any]) -> ForecastModel:
    """The trained model a checkpoint of the training node holds (its ``model``, ``shape``,
    ``model_config`` and ``state_dict``), in eval mode."""
    model = build_model(
        checkpoint["model"], **dict(checkpoint["shape"]), **dict(checkpoint["model_config"])
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
