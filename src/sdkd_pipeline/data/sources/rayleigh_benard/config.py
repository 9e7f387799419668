"""Free-slip Rayleigh-Benard generator configuration: ``FreeSlipRBCConfig`` and its parsing.

``FreeSlipRBCConfig.from_params`` reads the ``rayleigh_benard.source.generate_free_slip``
parameters with the one config loader (``config_utils.from_params``: an unknown key or an
unusable value is a ``ConfigError`` naming ``<param_path>.<field>``). The dataset's names and default folder live here
too, shared by the solver's generator and The Well's reader.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdkd_pipeline.config_utils import check_fields, from_params, param
from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError

DATASET_NAME = "rayleigh_benard"
FREE_SLIP_SOURCE = "generated:rayleigh_benard_free_slip"
RAW_DIR = Path("data/01_raw/rayleigh_benard")
DEFAULT_PARAM_PREFIX = "rayleigh_benard.source.generate_free_slip"
THE_WELL_PARAM_PREFIX = "rayleigh_benard.source.the_well"
# The one channel order of both sources (generator and The Well's reader), whichever subset
# they hold: buoyancy first, then the velocity components (x horizontal, y vertical), pressure.
CHANNELS = ("buoyancy", "velocity_x", "velocity_y", "pressure")
# CF metadata (data/cf.py): both sources are nondimensional (free-fall units).
CHANNEL_LONG_NAMES = {
    "buoyancy": "buoyancy (nondimensional)",
    "velocity_x": "horizontal velocity (nondimensional)",
    "velocity_y": "vertical velocity (nondimensional)",
    "pressure": "pressure (nondimensional)",
}
CHANNEL_UNITS = dict.fromkeys(CHANNELS, "1")


def describe_vertical_grid(y: np.ndarray) -> str:
    """The ``grid_y`` attribute: whether the vertical coordinate is uniform, and its range."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.size < 2:
        return f"a single level at y = {y[0]:.6g}" if y.size else "empty"
    steps = np.diff(y)
    span = f"{y.size} points from {y[0]:.6g} to {y[-1]:.6g}"
    if np.allclose(steps, steps.mean(), rtol=1e-4, atol=0.0):
        return f"uniform, spacing {steps.mean():.6g}, {span}"
    return f"non-uniform, spacing {np.abs(steps).min():.6g} to {np.abs(steps).max():.6g}, {span}"


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

    rayleigh: float = param(1.0e5, gt=0)
    prandtl: float = param(1.0, gt=0)
    aspect_ratio: float = param(4.0, gt=0)  # Lx / Lz, Lz = 1
    nx: int = param(128, ge=8)  # horizontal grid points (output columns)
    nz: int = param(32, ge=4)  # vertical grid points (output rows, cell centres)
    dt: float = param(0.02, gt=0)  # largest time step; the CFL bound usually picks a smaller one
    cfl: float = param(0.4, gt=0)  # target Courant number (|u| dt/dx + |w| dt/dz); <= 1.5
    t_final: float = param(50.0, gt=0)
    t_spinup: float = param(10.0, ge=0)  # transient simulated but not recorded; <= t_final
    record_interval: float = param(0.25, gt=0)
    n_trajectories: int = param(8, ge=1)
    seed: int = param(0, ge=0)
    perturbation_amplitude: float = param(1.0e-3, ge=0)  # of the initial temperature noise
    include_pressure: bool = True
    device: str = "auto"  # auto (CUDA if available), cpu, cuda, cuda:1, ...
    # solver precision (the output is float32)
    dtype: str = param("float32", choices=("float32", "float64"))

    @property
    def n_frames(self) -> int:
        return int(math.floor((self.t_final - self.t_spinup) / self.record_interval + 1e-9)) + 1

    @property
    def record_times(self) -> np.ndarray:
        return self.t_spinup + self.record_interval * np.arange(self.n_frames)

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, param_path: str = DEFAULT_PARAM_PREFIX
    ) -> FreeSlipRBCConfig:
        """Build from a parameters mapping (e.g. YAML); errors name ``<param_path>.<key>``."""
        return from_params(cls, params, param_path)

    from_dict = from_params

    def validate(self, param_path: str = DEFAULT_PARAM_PREFIX) -> FreeSlipRBCConfig:
        """Raise ``ConfigError`` naming ``<param_path>.<field>`` for an unusable value: each
        field's type and bounds, then the rules beyond them."""
        check_fields(self, param_path)

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{param_path}.{name} = {getattr(self, name)!r}: {why}")

        if self.cfl > 1.5:
            raise bad("cfl", "must be <= 1.5 (AB2 advection is unstable beyond ~1)")
        if self.t_spinup > self.t_final:
            raise bad("t_spinup", f"must lie in [0, t_final={self.t_final}]")
        try:
            resolve_device(self.device)
        except (RuntimeError, ValueError) as exc:
            raise bad("device", f"is not usable here ({exc})") from None
        return self
