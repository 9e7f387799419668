"""Typed model configs built from plain mappings (YAML parameters), with errors that name keys.

Every model has a dataclass config whose fields are its hyperparameters. ``config_from_mapping``
turns a mapping (e.g. ``params["teacher"]["st_alternet"]``) into that dataclass, rejecting
unknown keys and values of the wrong type with a ``ConfigError`` that names the full parameter
path (``teacher.st_alternet.hidden``), then runs the config's own ``validate``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from sdkd_pipeline.errors import ConfigError

ConfigT = TypeVar("ConfigT", bound="ModelConfig")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of the model configs: subclasses add fields and override ``validate``."""

    def validate(self, prefix: str) -> None:
        """Raise ``ConfigError`` naming ``{prefix}.{field}`` for a value the model cannot use."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def require_positive(prefix: str, name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{prefix}.{name} must be > 0, got {value!r}")


def require_even(prefix: str, name: str, value: int) -> None:
    if value % 2:
        raise ConfigError(f"{prefix}.{name} must be even, got {value!r}")


def _coerce(value: Any, expected: Any, where: str) -> Any:
    # bool is an int subclass; a YAML `true` where a width belongs is a mistake, not a 1.
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {expected!r} for {where}")


def config_from_mapping(
    config_cls: type[ConfigT], values: Mapping[str, Any], prefix: str
) -> ConfigT:
    """Build and validate ``config_cls`` from ``values``; errors name ``{prefix}.{key}``."""
    names = [field.name for field in dataclasses.fields(config_cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]} is not a parameter of this model; "
            f"known parameters: {', '.join(names)}"
        )
    hints = typing.get_type_hints(config_cls)
    kwargs = {key: _coerce(value, hints[key], f"{prefix}.{key}") for key, value in values.items()}
    config = config_cls(**kwargs)
    config.validate(prefix)
    return config
