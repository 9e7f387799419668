"""Free-slip Rayleigh-Benard generator configuration: ``FreeSlipRBCConfig`` and its parsing.

``FreeSlipRBCConfig.from_dict`` reads the ``rayleigh_benard.source.generate_free_slip``
parameters (YAML values coerced to the field types; an unknown key or an unusable value is a
``ConfigError`` naming ``<prefix>.<field>``). The dataset's names and default folder live here
too, shared by the solver's generator and The Well's reader.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import numpy as np

from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError

DATASET_NAME = "rayleigh_benard"
FREE_SLIP_SOURCE = "generated:rayleigh_benard_free_slip"
RAW_DIR = Path("data/01_raw/rayleigh_benard")
DEFAULT_PARAM_PREFIX = "rayleigh_benard.source.generate_free_slip"
THE_WELL_PARAM_PREFIX = "rayleigh_benard.source.the_well"


@dataclass(frozen=True)
class FreeSlipRBCConfig:
    """Parameters of the free-slip Rayleigh-Benard generator (free-fall units).

    The default (Ra = 1e5, Pr = 1, aspect 4, 128 x 32, float32) convects: plumes rise from the
    conduction state at t ~ 10, mix chaotically, and merge into large rolls by t ~ 50 (free-slip
    walls do not brake large rolls, so later the flow turns nearly steady). Like The Well, the
    data therefore covers the developing flow: the first ``t_spinup`` = 10 time units (invisible
    exponential growth of the noise) are simulated but not recorded, then frames every
    ``record_interval`` up to ``t_final`` inclusive (161 frames of 32 x 128). Measured on the
    shared 2-core machine: ~6 700 steps, ~1 min for 8 trajectories with one torch thread.
    At Ra = 1e6 use nz >= 64 (boundary layers ~ 1 / (2 Nu) ~ 0.025 need ~40 sine modes).
    """

    rayleigh: float = 1.0e5
    prandtl: float = 1.0
    aspect_ratio: float = 4.0  # Lx / Lz, Lz = 1
    nx: int = 128  # horizontal grid points (output columns)
    nz: int = 32  # vertical grid points (output rows, cell centres)
    dt: float = 0.02  # largest time step; the CFL bound usually picks a smaller one
    cfl: float = 0.4  # target Courant number (|u| dt/dx + |w| dt/dz)
    t_final: float = 50.0
    t_spinup: float = 10.0  # transient simulated but not recorded
    record_interval: float = 0.25
    n_trajectories: int = 8
    seed: int = 0
    perturbation_amplitude: float = 1.0e-3  # of the initial temperature noise
    include_pressure: bool = True
    device: str = "auto"  # auto (CUDA if available), cpu, cuda, cuda:1, ...
    dtype: str = "float32"  # float32 | float64 (solver precision; output is float32)

    @property
    def n_frames(self) -> int:
        return int(math.floor((self.t_final - self.t_spinup) / self.record_interval + 1e-9)) + 1

    @property
    def record_times(self) -> np.ndarray:
        return self.t_spinup + self.record_interval * np.arange(self.n_frames)

    @classmethod
    def from_dict(
        cls, params: Mapping[str, Any] | None, prefix: str = DEFAULT_PARAM_PREFIX
    ) -> FreeSlipRBCConfig:
        """Build from a parameters mapping (e.g. YAML); unknown keys are a ``ConfigError``."""
        params = dict(params or {})
        known = {f.name: f for f in dataclass_fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"{prefix}: unknown parameter(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in params.items():
            default = getattr(cls, name)
            values[name] = _coerce(value, type(default), f"{prefix}.{name}")
        cfg = cls(**values)
        cfg.validate(prefix)
        return cfg

    def validate(self, prefix: str = DEFAULT_PARAM_PREFIX) -> FreeSlipRBCConfig:
        """Raise ``ConfigError`` naming ``<prefix>.<field>`` for an unusable value."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{prefix}.{name} = {getattr(self, name)!r}: {why}")

        for name in (
            "rayleigh",
            "prandtl",
            "aspect_ratio",
            "dt",
            "cfl",
            "t_final",
            "record_interval",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise bad(name, "must be a finite number > 0")
        if self.cfl > 1.5:
            raise bad("cfl", "must be <= 1.5 (AB2 advection is unstable beyond ~1)")
        if not (math.isfinite(self.t_spinup) and 0 <= self.t_spinup <= self.t_final):
            raise bad("t_spinup", f"must lie in [0, t_final={self.t_final}]")
        if not (math.isfinite(self.perturbation_amplitude) and self.perturbation_amplitude >= 0):
            raise bad("perturbation_amplitude", "must be a finite number >= 0")
        if self.nx < 8:
            raise bad("nx", "must be an integer >= 8")
        if self.nz < 4:
            raise bad("nz", "must be an integer >= 4")
        if self.n_trajectories < 1:
            raise bad("n_trajectories", "must be an integer >= 1")
        if self.seed < 0:
            raise bad("seed", "must be an integer >= 0")
        if self.dtype not in ("float32", "float64"):
            raise bad("dtype", "must be 'float32' or 'float64'")
        try:
            resolve_device(self.device)
        except (RuntimeError, ValueError) as exc:
            raise bad("device", f"is not usable here ({exc})") from None
        return self


def _coerce(value: Any, kind: type, where: str) -> Any:
    """Convert a YAML value to the field's type, refusing silent surprises (bools as numbers)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r}: must be true or false")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {value!r}: must be a string")
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where} = {value!r}: must be a number")
    if kind is int:
        if isinstance(value, (int, np.integer)) or (
            isinstance(value, float) and value.is_integer()
        ):
            return int(value)
        raise ConfigError(f"{where} = {value!r}: must be an integer")
    try:
        return float(value)  # YAML reads "1e6" (no dot) as a string; accept it here
    except (TypeError, ValueError):
        raise ConfigError(f"{where} = {value!r}: must be a number") from None
