"""Settings of the spectral analysis: ``SpectralConfig``, the ``spectral`` parameters resolved
and validated for one dataset (errors name the parameter), and the windows it knows.

Imports numpy only (no torch, Kedro or MLflow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sdkd_pipeline.errors import ConfigError

__all__ = ["WINDOWS", "SpectralConfig"]

WINDOWS = ("none", "hann", "hann_y")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpectralConfig:
    """Settings of one analysis (the ``spectral`` parameters resolved for one dataset).

    ``distill_cutoff`` is the distillation's band cutoff ``distill.cutoff.k`` (None: no share
    above it is reported)."""

    split: str = "test"
    max_windows: int = 64
    batch_size: int = 16
    data_fit_range: tuple[float, float] = (3.0, 12.0)
    latent_fit_range: tuple[float, float] = (2.0, 6.0)
    min_r2: float = 0.95
    exponential_r2_margin: float = 0.01
    high_band_cutoff: float | None = None  # None: half the latent grid's largest shell
    window: str = "none"
    device: str = "auto"
    distill_cutoff: float | None = None

    @classmethod
    def from_params(
        cls,
        params: Mapping[str, Any] | None,
        dataset: str,
        prefix: str = "spectral",
        *,
        distill_cutoff: Any = None,
    ) -> SpectralConfig:
        """Validate the ``spectral`` parameters; ``window`` is a mapping dataset -> window (or
        one window for all). ``distill_cutoff``: ``distill.cutoff.k`` or None. Errors name the
        parameter."""
        params = dict(params or {})
        known = {
            "split",
            "max_windows",
            "batch_size",
            "fit_range",
            "min_r2",
            "exponential_r2_margin",
            "high_band_cutoff",
            "window",
            "device",
        }
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"parameter {prefix}: unknown key(s) {unknown}; known: {sorted(known)}"
            )
        defaults = cls()
        split = str(params.get("split", defaults.split))
        if split not in ("train", "val", "test"):
            raise ConfigError(f"parameter {prefix}.split must be train, val or test, got {split!r}")
        fit = dict(params.get("fit_range") or {})
        bad = sorted(set(fit) - {"data", "latent"})
        if bad:
            raise ConfigError(
                f"parameter {prefix}.fit_range: unknown key(s) {bad}; use data and latent"
            )
        cutoff = params.get("high_band_cutoff", defaults.high_band_cutoff)
        if cutoff is not None:
            cutoff = _positive_float(cutoff, f"{prefix}.high_band_cutoff")
        min_r2 = _positive_float(params.get("min_r2", defaults.min_r2), f"{prefix}.min_r2")
        if min_r2 > 1:
            raise ConfigError(f"parameter {prefix}.min_r2 must lie in (0, 1], got {min_r2:g}")
        margin = _fraction(
            params.get("exponential_r2_margin", defaults.exponential_r2_margin),
            f"{prefix}.exponential_r2_margin",
        )
        return cls(
            split=split,
            max_windows=_positive_int(
                params.get("max_windows", defaults.max_windows), f"{prefix}.max_windows"
            ),
            batch_size=_positive_int(
                params.get("batch_size", defaults.batch_size), f"{prefix}.batch_size"
            ),
            data_fit_range=_fit_range(
                fit.get("data", defaults.data_fit_range), f"{prefix}.fit_range.data"
            ),
            latent_fit_range=_fit_range(
                fit.get("latent", defaults.latent_fit_range), f"{prefix}.fit_range.latent"
            ),
            min_r2=min_r2,
            exponential_r2_margin=margin,
            high_band_cutoff=cutoff,
            window=_window_for(params.get("window", defaults.window), dataset, prefix),
            device=str(params.get("device", defaults.device)),
            distill_cutoff=(
                None
                if distill_cutoff is None
                else _positive_float(distill_cutoff, "distill.cutoff.k")
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_fit_range"] = list(self.data_fit_range)
        out["latent_fit_range"] = list(self.latent_fit_range)
        return out


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"parameter {name} must be a positive integer, got {value!r}")
    return int(value)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _positive_float(value: Any, name: str) -> float:
    number = _number(value)
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"parameter {name} must be a positive number, got {value!r}")
    return number


def _fraction(value: Any, name: str) -> float:
    number = _number(value)
    if not 0 <= number < 1:
        raise ConfigError(f"parameter {name} must be a number in [0, 1), got {value!r}")
    return number


def _fit_range(value: Any, name: str) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"parameter {name} must be [k_min, k_max], got {value!r}")
    k_min, k_max = (_positive_float(v, name) for v in value)
    # radial shells are the integers (times the latent's scale, 1 without padding)
    n_shells = math.floor(k_max) - math.ceil(k_min) + 1
    if n_shells < 3:
        raise ConfigError(
            f"parameter {name} = [{k_min:g}, {k_max:g}] holds {max(n_shells, 0)} integer "
            "wavenumber(s); a slope fit needs at least 3"
        )
    return k_min, k_max


def _window_for(value: Any, dataset: str, prefix: str) -> str:
    name = f"{prefix}.window"
    if isinstance(value, Mapping):
        if dataset not in value:
            raise ConfigError(
                f"parameter {name} names no window for dataset {dataset!r}; add "
                f"{name}.{dataset}: one of {list(WINDOWS)}"
            )
        value, name = value[dataset], f"{name}.{dataset}"
    window = "none" if value is None or value is False else str(value).lower()
    if window not in WINDOWS:
        raise ConfigError(f"parameter {name} must be one of {list(WINDOWS)}, got {value!r}")
    return window
