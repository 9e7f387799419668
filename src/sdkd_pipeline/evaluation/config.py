"""The ``evaluate`` parameters: ``EvaluationConfig`` read and checked from
``conf/base/parameters_evaluate.yml``, and the choices they are checked against.

Imports only numpy (and the baselines' names), so it runs without Kedro, MLflow, Zarr or Dask.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.evaluation.baselines import BASELINE_NAMES

__all__ = ["EXPORT_FORMATS", "TEACHER_MIN_RATIO", "EvaluationConfig"]

EXPORT_FORMATS = ("torchscript", "onnx")
TEACHER_MIN_RATIO = 1.5


@dataclass(frozen=True)
class EvaluationConfig:
    """The ``evaluate`` parameters (see ``conf/base/parameters_evaluate.yml``)."""

    batch_size: int = 16
    threads: int = 1
    repeats: int = 5
    warmup: int = 1
    batch_sizes: tuple[int, ...] = (1, 32)
    panel_windows: tuple[int, ...] = (0,)
    panel_step: int = -1
    device: str = "auto"
    cuda_latency: bool = True
    max_seconds: float | None = 2.0
    exported_formats: tuple[str, ...] = EXPORT_FORMATS
    exported_teachers: bool = False
    baselines: tuple[str, ...] = BASELINE_NAMES
    teacher_min_ratio: float = TEACHER_MIN_RATIO

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> EvaluationConfig:
        """Read and check the ``evaluate`` parameters: a bad value raises a ``ConfigError``
        naming it. Long because it checks every parameter in turn, each next to its default."""
        params = dict(params or {})
        latency = dict(params.get("latency") or {})
        panels = dict(params.get("panels") or {})

        def positive(value: Any, name: str, minimum: int = 1) -> int:
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < minimum
            ):
                raise ConfigError(
                    f"parameter evaluate.{name} must be an integer >= {minimum}, got {value!r}"
                )
            return int(value)

        sizes = latency.get("batch_sizes", [1, 32])
        sizes = [sizes] if isinstance(sizes, int) else list(sizes)
        if not sizes:
            raise ConfigError("parameter evaluate.latency.batch_sizes must not be empty")
        windows = panels.get("windows", [0])
        windows = [windows] if isinstance(windows, int) else list(windows or [])
        step = panels.get("step", -1)
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ConfigError(f"parameter evaluate.panels.step must be an integer, got {step!r}")
        exported = params.get("exported_latency", {})
        if exported is None or exported is False:
            exported = {"formats": []}
        if not isinstance(exported, Mapping):
            raise ConfigError(
                "parameter evaluate.exported_latency must be a mapping such as "
                f"{{formats: [torchscript, onnx]}}, got {exported!r}"
            )
        formats = exported.get("formats", list(EXPORT_FORMATS))
        formats = [formats] if isinstance(formats, str) else list(formats or [])
        unknown = [f for f in formats if f not in EXPORT_FORMATS]
        if unknown:
            raise ConfigError(
                f"parameter evaluate.exported_latency.formats: unknown format(s) "
                f"{unknown}; choose from {list(EXPORT_FORMATS)} ([] disables)"
            )
        max_seconds = latency.get("max_seconds", 2.0)
        if max_seconds is not None and (
            isinstance(max_seconds, bool)
            or not isinstance(max_seconds, (int, float))
            or not max_seconds > 0
        ):
            raise ConfigError(
                "parameter evaluate.latency.max_seconds must be a positive number "
                f"or null, got {max_seconds!r}"
            )
        teachers = exported.get("teachers", False)
        if not isinstance(teachers, bool):
            raise ConfigError(
                "parameter evaluate.exported_latency.teachers must be true or "
                f"false, got {teachers!r}"
            )
        names = params.get("baselines", list(BASELINE_NAMES))
        names = [names] if isinstance(names, str) else list(names or [])
        unknown = [n for n in names if n not in BASELINE_NAMES]
        if unknown:
            raise ConfigError(
                f"parameter evaluate.baselines: unknown baseline(s) {unknown}; choose from "
                f"{list(BASELINE_NAMES)} ([] disables)"
            )
        check = params.get("teacher_check") or {}
        if not isinstance(check, Mapping):
            raise ConfigError(
                "parameter evaluate.teacher_check must be a mapping such as {min_ratio: 1.5}, "
                f"got {check!r}"
            )
        ratio = check.get("min_ratio", TEACHER_MIN_RATIO)
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float))
            or not math.isfinite(ratio)
            or ratio < 1
        ):
            raise ConfigError(
                "parameter evaluate.teacher_check.min_ratio must be a number >= 1 (how many "
                f"times lower than a student's `none` MSE a teacher's must be), got {ratio!r}"
            )
        return cls(
            batch_size=positive(params.get("batch_size", 16), "batch_size"),
            threads=positive(latency.get("threads", 1), "latency.threads"),
            repeats=positive(latency.get("repeats", 5), "latency.repeats"),
            warmup=positive(latency.get("warmup", 1), "latency.warmup", 0),
            batch_sizes=tuple(positive(b, "latency.batch_sizes") for b in sizes),
            panel_windows=tuple(positive(w, "panels.windows", 0) for w in windows),
            panel_step=int(step),
            device=str(params.get("device", "auto")),
            cuda_latency=bool(latency.get("cuda", True)),
            max_seconds=None if max_seconds is None else float(max_seconds),
            exported_formats=tuple(f for f in EXPORT_FORMATS if f in formats),
            exported_teachers=teachers,
            baselines=tuple(n for n in BASELINE_NAMES if n in names),
            teacher_min_ratio=float(ratio),
        )
