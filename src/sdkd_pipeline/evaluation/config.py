"""The ``evaluate`` parameters: ``EvaluationConfig`` read and checked from
``conf/base/parameters_evaluate.yml``, and the choices they are checked against.

Imports only the config loader (and the baselines' names and climatology modes, and the SSIM
conventions), so it runs without Kedro, MLflow, Zarr or Dask.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sdkd_pipeline import config_utils
from sdkd_pipeline.config_utils import one_or_list, param
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.evaluation.baselines import BASELINE_NAMES, CLIMATOLOGY_MODES
from sdkd_pipeline.evaluation.metrics import DEFAULT_SSIM_CONVENTION, SSIM_CONVENTIONS

__all__ = ["EXPORT_FORMATS", "LAT_WEIGHTED_CHOICES", "TEACHER_MIN_RATIO", "EvaluationConfig"]

EXPORT_FORMATS = ("torchscript", "onnx")
# evaluate.lat_weighted: auto = on where the store has a latitude coordinate along its rows
LAT_WEIGHTED_CHOICES = ("auto", True, False)
TEACHER_MIN_RATIO = 1.5


def _in_order_of(names: tuple[str, ...]) -> Callable[[Any], list[Any]]:
    """A list parameter of some of ``names`` (or one name, or null for none) in their order,
    each once; a list with another value is left for the check to name it."""

    def convert(value: Any) -> list[Any]:
        given = one_or_list(value)
        if all(isinstance(g, str) and g in names for g in given):
            return [n for n in names if n in given]
        return given

    return convert


@dataclass(frozen=True)
class EvaluationConfig:
    """The ``evaluate`` parameters (see ``conf/base/parameters_evaluate.yml``), read by
    ``config_utils.from_params``: ``key`` is a field's place in the nested YAML."""

    batch_size: int = param(16, ge=1)
    threads: int = param(1, ge=1, key="latency.threads")
    repeats: int = param(5, ge=1, key="latency.repeats")
    warmup: int = param(1, ge=0, key="latency.warmup")
    batch_sizes: tuple[int, ...] = param(
        (1, 32), ge=1, key="latency.batch_sizes", convert=one_or_list
    )
    panel_windows: tuple[int, ...] = param((0,), ge=0, key="panels.windows", convert=one_or_list)
    panel_step: int = param(-1, key="panels.step")
    device: str = "auto"
    cuda_latency: bool = param(True, key="latency.cuda")
    max_seconds: float | None = param(2.0, gt=0, key="latency.max_seconds")
    exported_formats: tuple[Literal[EXPORT_FORMATS], ...] = param(
        EXPORT_FORMATS,
        key="exported_latency.formats",
        convert=_in_order_of(EXPORT_FORMATS),
        note="[] disables",
    )
    exported_teachers: bool = param(False, key="exported_latency.teachers")
    baselines: tuple[Literal[BASELINE_NAMES], ...] = param(
        BASELINE_NAMES, convert=_in_order_of(BASELINE_NAMES), note="[] disables"
    )
    climatology: Literal[CLIMATOLOGY_MODES] = param(
        "auto",
        note="the climatology's slots: per time of day, per day of year and time of day, or "
        "auto (day_of_year when every such slot has >= 2 training frames)",
    )
    teacher_min_ratio: float = param(
        TEACHER_MIN_RATIO,
        ge=1,
        key="teacher_check.min_ratio",
        note="how many times lower than a student's `none` MSE a teacher's must be",
    )
    rollout: bool = param(True, key="rollout.enabled")
    rollout_factor: int = param(
        5, ge=2, key="rollout.factor", note="rollout horizon in multiples of T_out"
    )
    rollout_max_windows: int = param(32, ge=1, key="rollout.max_windows")
    ssim_convention: Literal[SSIM_CONVENTIONS] = param(
        DEFAULT_SSIM_CONVENTION,
        key="ssim.convention",
        note="skimage: OpenSTL's, as the paper's tables; torchmetrics: gaussian window, "
        "border included",
    )
    lat_weighted: Literal[LAT_WEIGHTED_CHOICES] = param(
        "auto",
        note="the cos(latitude)-weighted mse_lat and rmse_lat columns; auto: where the store "
        "has a latitude coordinate along its rows (lat/lon grids)",
    )

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, param_path: str = "evaluate"
    ) -> EvaluationConfig:
        """Read and check the ``evaluate`` parameters: an unknown key or a bad value raises a
        ``ConfigError`` naming it. ``exported_latency: null`` (or false) times no exports."""
        if isinstance(params, Mapping) and "exported_latency" in params:
            exported = params["exported_latency"]
            if exported is None or exported is False:
                params = {**params, "exported_latency": {"formats": []}}
        return config_utils.from_params(cls, params, param_path)

    def validate(self, param_path: str) -> None:
        if not self.batch_sizes:
            raise ConfigError(f"{param_path}.latency.batch_sizes must not be empty")
