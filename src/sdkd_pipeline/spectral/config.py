"""Settings of the spectral analysis: ``SpectralConfig``, the ``spectral`` parameters resolved
and validated for one dataset (errors name the parameter), and the windows it knows.

Imports the config loader only (no numpy, torch, Kedro or MLflow).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sdkd_pipeline import config_utils
from sdkd_pipeline.config_utils import check_value, param
from sdkd_pipeline.errors import ConfigError

__all__ = ["WINDOWS", "SpectralConfig"]

WINDOWS = ("none", "hann", "hann_y")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def _window_name(value: Any) -> Any:
    """``window``'s spellings: null or false is ``none``, any case."""
    if value is None or value is False:
        return "none"
    return value.lower() if isinstance(value, str) else value


@dataclass(frozen=True)
class SpectralConfig:
    """Settings of one analysis (the ``spectral`` parameters resolved for one dataset), read by
    ``config_utils.from_params``.

    ``distill_cutoff`` is the distillation's band cutoff ``distill.cutoff.k`` (None: no share
    above it is reported)."""

    split: str = param("test", choices=("train", "val", "test"))
    max_windows: int = param(64, ge=1)
    batch_size: int = param(16, ge=1)
    data_fit_range: tuple[float, float] = param((3.0, 12.0), gt=0, key="fit_range.data")
    latent_fit_range: tuple[float, float] = param((2.0, 6.0), gt=0, key="fit_range.latent")
    min_r2: float = param(0.95, gt=0, le=1)
    exponential_r2_margin: float = param(0.01, ge=0, lt=1)
    # None: half the latent grid's largest shell
    high_band_cutoff: float | None = param(None, gt=0)
    window: str = param("none", choices=WINDOWS, convert=_window_name)
    device: str = "auto"
    distill_cutoff: float | None = param(None, gt=0)

    @classmethod
    def from_params(
        cls,
        params: Mapping[str, Any] | None,
        dataset: str,
        param_path: str = "spectral",
        *,
        distill_cutoff: Any = None,
    ) -> SpectralConfig:
        """Read and check the ``spectral`` parameters; ``window`` is a mapping dataset -> window
        (or one window for all). ``distill_cutoff``: ``distill.cutoff.k`` or None (not a
        ``spectral`` parameter). Errors name the parameter."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        fixed: dict[str, Any] = {
            "distill_cutoff": check_value(
                "distill.cutoff.k", distill_cutoff, float | None, fields["distill_cutoff"].metadata
            )
        }
        if isinstance(params, Mapping) and isinstance(params.get("window"), Mapping):
            # one window per dataset: this dataset's, checked under its own key
            params = dict(params)
            windows = params.pop("window")
            where = f"{param_path}.window"
            if dataset not in windows:
                raise ConfigError(
                    f"{where} names no window for dataset {dataset!r}; add "
                    f"{where}.{dataset}: one of {list(WINDOWS)}"
                )
            meta = fields["window"].metadata
            fixed["window"] = check_value(
                f"{where}.{dataset}", meta["convert"](windows[dataset]), str, meta
            )
        return config_utils.from_params(cls, params, param_path, **fixed)

    def validate(self, param_path: str) -> None:
        for key, fit_range in (
            ("fit_range.data", self.data_fit_range),
            ("fit_range.latent", self.latent_fit_range),
        ):
            if len(fit_range) != 2:
                raise ConfigError(
                    f"{param_path}.{key} must be [k_min, k_max], got {list(fit_range)!r}"
                )
            k_min, k_max = fit_range
            # radial shells are the integers (times the latent's scale, 1 without padding)
            n_shells = math.floor(k_max) - math.ceil(k_min) + 1
            if n_shells < 3:
                raise ConfigError(
                    f"{param_path}.{key} = [{k_min:g}, {k_max:g}] holds {max(n_shells, 0)} "
                    "integer wavenumber(s); a slope fit needs at least 3"
                )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_fit_range"] = list(self.data_fit_range)
        out["latent_fit_range"] = list(self.latent_fit_range)
        return out
