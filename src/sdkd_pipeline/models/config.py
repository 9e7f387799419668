"""Typed model configs built from plain mappings (YAML parameters), with errors that name keys.

Every model has a dataclass config whose fields are its hyperparameters, with their bounds as
``param(...)`` metadata. ``ModelConfig.from_params`` turns a mapping (e.g.
``params["teacher"]["st_alternet"]``) into that dataclass with the one config loader
(``sdkd_pipeline.config_utils.from_params``): unknown keys and values of the wrong type or out
of bounds are a ``ConfigError`` that names the full parameter path
(``teacher.st_alternet.hidden``); then the config's own ``validate`` checks what involves
several fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from sdkd_pipeline import config_utils

ConfigT = TypeVar("ConfigT", bound="ModelConfig")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of the model configs: subclasses add fields and override ``validate``.

    ``residual`` (every model): the network forecasts the change from the last input frame,
    ``y = x[:, -1] + f(x)`` (per forecast step; forcing channels excluded), instead of ``y``
    itself; off by default. On short weather series this is what lets a model start from
    persistence instead of learning the field's level from few samples.
    """

    residual: bool = False

    def validate(self, param_path: str) -> None:
        """Raise ``ConfigError`` naming ``{param_path}.{field}`` for what the fields' own
        bounds cannot say (a rule involving several fields, a bound with a reason)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(
        cls: type[ConfigT], params: Mapping[str, Any] | None, param_path: str = "model"
    ) -> ConfigT:
        """Build and validate this config from ``params``; errors name ``{param_path}.{key}``."""
        return config_utils.from_params(cls, params, param_path)
