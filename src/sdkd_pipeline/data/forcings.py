"""Forcings: input channels known in advance (clock and position), never predicted.

WeatherBench models take, beside the forecast variables, fields that are known for any time
and place without forecasting them: the time of day and of year, and where each grid point
lies. A dataset declares them in its config (``<dataset>.forcings``, a list of the names
below; empty by default); the tensor store then holds them beside ``fields``, with their own
coordinates, and every model (teachers and students alike) gets them as extra input channels
after the forecast channels. Targets, losses and metrics never include them.

Declared name -> channels (all dimensionless, float32):

- ``hour_of_day`` -> ``hour_sin``, ``hour_cos``: sin and cos of 2 pi s / 86400, s the frame's
  seconds since midnight (UTC, the time coordinate's clock).
- ``day_of_year`` -> ``doy_sin``, ``doy_cos``: sin and cos of 2 pi (d - 1 + s / 86400) / D,
  d the day of year (1 on 1 January) and D the days of that year (365 or 366).
- ``latitude`` -> ``lat``: the grid's latitude standardized over the grid's rows (zero mean,
  unit std; ``sin(lat)`` would be near constant over a regional box).
- ``longitude`` -> ``lon`` (standardized like ``lat``) on a regional grid; ``lon_sin``,
  ``lon_cos`` on a grid that spans all longitudes (its spacing times its columns >= 359 deg),
  where the sin and cos keep the periodic seam smooth.

Store layout: ``forcing_time (trajectory, time, time_forcing)`` for the clock channels and
``forcing_static (static_forcing, y, x)`` for the position channels, each with the channel
names as coordinate; the attribute ``forcings`` (JSON) lists the declared names and the input
channel order (clock channels first, then position channels). A store without forcings has
neither variable. The clock needs a datetime ``time`` coordinate, the position fields ``lat``
/ ``lon`` coordinates along ``y`` / ``x`` (or ``latitude`` / ``longitude``); a dataset
without them gets a ``ConfigError`` naming ``<dataset>.forcings``.

Imports only numpy and xarray.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import xarray as xr

from sdkd_pipeline.errors import ConfigError, DataError

TIME_FORCINGS = {"hour_of_day": ("hour_sin", "hour_cos"), "day_of_year": ("doy_sin", "doy_cos")}
STATIC_FORCINGS = ("latitude", "longitude")
FORCING_NAMES = (*TIME_FORCINGS, *STATIC_FORCINGS)
TIME_VAR, STATIC_VAR = "forcing_time", "forcing_static"
TIME_DIM, STATIC_DIM = "time_forcing", "static_forcing"
SECONDS_PER_DAY = 86400.0
# the keys of the store's ``forcings`` attribute
INFO_KEYS = ("declared", "channels", "time_channels", "static_channels")


def check_forcings(value: Any, param_path: str) -> tuple[str, ...]:
    """The declared forcings (a list of ``FORCING_NAMES``, each once; null: none)."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(
            f"parameter {param_path}: expected a list of forcings (some of "
            f"{', '.join(FORCING_NAMES)}), got {value!r}"
        )
    names = list(value)
    unknown = [n for n in names if n not in FORCING_NAMES]
    if unknown:
        raise ConfigError(
            f"parameter {param_path}: unknown forcing(s) {', '.join(map(repr, unknown))}; "
            f"use some of {', '.join(FORCING_NAMES)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter {param_path}: a forcing is listed twice in {names}")
    return tuple(names)


def clock_channels(times: Any, names: Iterable[str]) -> tuple[np.ndarray, list[str]]:
    """``(len(times), K)`` float32 clock channels of datetimes ``times`` for the declared
    ``names`` (the ``TIME_FORCINGS`` among them), and their channel names."""
    times = np.asarray(times).astype("datetime64[s]")
    day = times.astype("datetime64[D]")
    seconds = (times - day).astype(np.float64)
    year = day.astype("datetime64[Y]")
    doy = (day - year).astype(np.float64)  # 0 on 1 January
    days_in_year = ((year + 1).astype("datetime64[D]") - year.astype("datetime64[D]")).astype(
        np.float64
    )
    phases = {
        "hour_of_day": 2 * np.pi * seconds / SECONDS_PER_DAY,
        "day_of_year": 2 * np.pi * (doy + seconds / SECONDS_PER_DAY) / days_in_year,
    }
    columns, channel_names = [], []
    for name in names:
        if name in TIME_FORCINGS:
            columns += [np.sin(phases[name]), np.cos(phases[name])]
            channel_names += list(TIME_FORCINGS[name])
    out = np.stack(columns, axis=-1) if columns else np.zeros((len(times), 0))
    return out.astype(np.float32), channel_names


def _standardized(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    std = values.std()
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


def _axis_coord(raw: xr.Dataset, dim: str, names: tuple[str, ...]) -> np.ndarray | None:
    for name in names:
        if name in raw.coords and raw[name].dims == (dim,):
            return np.asarray(raw[name].values, dtype=np.float64)
    return None


def position_channels(
    lat: np.ndarray, lon: np.ndarray, names: Iterable[str]
) -> tuple[np.ndarray, list[str]]:
    """``(K, H, W)`` float32 position channels of a grid with row latitudes ``lat`` and column
    longitudes ``lon`` (degrees), for the declared ``names``, and their channel names."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    fields, channel_names = [], []
    for name in names:
        if name == "latitude":
            fields.append(_standardized(grid_lat))
            channel_names.append("lat")
        elif name == "longitude":
            spacing = float(np.median(np.abs(np.diff(lon)))) if len(lon) > 1 else 0.0
            if spacing * len(lon) >= 359.0:  # a global grid: periodic in longitude
                fields += [np.sin(np.deg2rad(grid_lon)), np.cos(np.deg2rad(grid_lon))]
                channel_names += ["lon_sin", "lon_cos"]
            else:
                fields.append(_standardized(grid_lon))
                channel_names.append("lon")
    shape = (len(fields), len(lat), len(lon))
    out = np.stack(fields) if fields else np.zeros(shape)
    return out.astype(np.float32), channel_names


def forcing_variables(raw: xr.Dataset, names: tuple[str, ...], param_path: str) -> xr.Dataset:
    """The store variables (and ``forcings`` attribute) of the declared forcings of ``raw``;
    an empty dataset without forcings. Raises ``ConfigError`` naming ``param_path`` when the
    data lack the coordinates a forcing needs."""
    out = xr.Dataset()
    if not names:
        return out
    clock = [n for n in names if n in TIME_FORCINGS]
    static = [n for n in names if n in STATIC_FORCINGS]
    time_names: list[str] = []
    static_names: list[str] = []
    if clock:
        times = np.asarray(raw["time"].values)
        if not np.issubdtype(times.dtype, np.datetime64):
            raise ConfigError(
                f"parameter {param_path}: {', '.join(clock)} need datetimes on the time "
                f"coordinate, but this dataset's time is {times.dtype} (simulation time); "
                "remove them"
            )
        if np.isnat(times).any():
            raise DataError(f"{param_path}: the time coordinate holds NaT")
        values, time_names = clock_channels(times, clock)
        n_traj = raw.sizes.get("trajectory", 1)
        out[TIME_VAR] = (
            ("trajectory", "time", TIME_DIM),
            np.broadcast_to(values, (n_traj, *values.shape)).copy(),
        )
        out = out.assign_coords({TIME_DIM: time_names})
    if static:
        lat = _axis_coord(raw, "y", ("lat", "latitude"))
        lon = _axis_coord(raw, "x", ("lon", "longitude"))
        lacking = [
            n
            for n, c in (("latitude", lat), ("longitude", lon))
            if n in static and (c is None or not np.isfinite(c).all())
        ]
        if lacking:
            raise ConfigError(
                f"parameter {param_path}: {', '.join(lacking)} need finite lat / lon "
                "coordinates along y / x, which this dataset lacks; remove them"
            )
        n_y, n_x = raw.sizes["y"], raw.sizes["x"]
        values, static_names = position_channels(
            lat if lat is not None else np.zeros(n_y),
            lon if lon is not None else np.zeros(n_x),
            static,
        )
        out[STATIC_VAR] = ((STATIC_DIM, "y", "x"), values)
        out = out.assign_coords({STATIC_DIM: static_names})
    out.attrs["forcings"] = json.dumps(
        {
            "declared": list(names),
            "channels": time_names + static_names,
            "time_channels": time_names,
            "static_channels": static_names,
        }
    )
    return out


def store_forcings(attrs: dict[str, Any]) -> dict[str, list[str]]:
    """The ``forcings`` attribute of a store (declared names and channel order); empty lists
    for a store without forcings."""
    raw = attrs.get("forcings")
    info = (json.loads(raw) if isinstance(raw, str) else dict(raw)) if raw else {}
    return {k: [str(v) for v in info.get(k, [])] for k in INFO_KEYS}


def forcing_frames(
    time_values: np.ndarray | None,
    static_values: np.ndarray | None,
    n_time: int,
    height: int,
    width: int,
) -> np.ndarray | None:
    """``(n_time, F, H, W)`` float32 forcing channels of ``n_time`` frames: the clock channels
    ``time_values (n_time, K)`` broadcast over the grid, then the position channels
    ``static_values (S, H, W)`` repeated per frame; ``None`` when there are none."""
    parts = []
    if time_values is not None and time_values.shape[-1]:
        if len(time_values) != n_time:
            raise DataError(f"forcing_frames: {len(time_values)} clock rows for {n_time} frames")
        parts.append(
            np.broadcast_to(time_values[:, :, None, None], (*time_values.shape, height, width))
        )
    if static_values is not None and len(static_values):
        parts.append(np.broadcast_to(static_values[None], (n_time, *static_values.shape)))
    if not parts:
        return None
    return np.concatenate(parts, axis=1).astype(np.float32)


def forcing_inputs(
    declared: Iterable[str], ds: xr.Dataset, time_slice: slice, where: str
) -> tuple[np.ndarray, list[str]]:
    """``(T, F, H, W)`` forcing channels of frames ``time_slice`` of ``ds`` (a raw, tensor or
    predict-input dataset with the store's coordinates) for the ``declared`` forcings, and
    their names: what a model trained with forcings takes beside the fields. Raises
    ``DataError`` naming ``where`` when ``ds`` lacks the coordinates they need."""
    declared = tuple(declared)
    try:
        frame = forcing_variables(ds.isel(time=time_slice), declared, f"{where}: forcings")
    except ConfigError as exc:
        raise DataError(str(exc).replace("parameter ", "", 1)) from None
    info = store_forcings(frame.attrs)
    n_time = len(range(*time_slice.indices(ds.sizes["time"])))
    clock = frame[TIME_VAR].values[0] if TIME_VAR in frame else None
    static = frame[STATIC_VAR].values if STATIC_VAR in frame else None
    out = forcing_frames(clock, static, n_time, ds.sizes["y"], ds.sizes["x"])
    if out is None:
        raise DataError(f"{where}: no forcing channels for {list(declared)}")
    return out, info["channels"]
