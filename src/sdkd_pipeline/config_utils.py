"""Reading dataclass configs from parameter mappings, with errors that name the parameter."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from sdkd_pipeline.errors import ConfigError


def known_keys(cls: type, params: Mapping[str, Any] | None, prefix: str) -> dict[str, Any]:
    """``params`` as a dict, after checking every key is a field of dataclass ``cls``; an
    unknown key is a ``ConfigError`` naming ``<prefix>.<key>`` and the allowed keys."""
    params = dict(params or {})
    allowed = {f.name for f in fields(cls)} - {"param_path"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]}: unknown parameter (allowed: {', '.join(sorted(allowed))})"
        )
    return params


def list_param(value: Any) -> list[str]:
    """A list parameter, also when given on the command line: Kedro splits ``--params`` at
    commas, so lists are written ``navier_stokes+weatherbench`` (also ``|``, ``;``, spaces)."""
    if isinstance(value, str):
        return [n for n in re.split(r"[\s,;|+\[\]]+", value) if n]
    return [str(v) for v in value]
