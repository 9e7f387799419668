"""The raw-dataset contract shared by every source module.

Every source (a solver or a file reader) returns an ``xarray.Dataset`` with:

- data variable ``fields``: float32, dims ``(trajectory, time, channel, y, x)``. A single long
  series (weather, traffic) has one trajectory. Values are physical (not normalized).
- coordinate ``channel``: the channel names (str), e.g. ``["vorticity"]`` or
  ``["buoyancy", "velocity_x", "velocity_y"]``.
- coordinate ``time``: 1-D, shared by all trajectories; physical time (float) for simulations,
  ``datetime64`` for observed series.
- coordinates ``y`` and ``x``: 1-D grid positions. Weather also carries ``lat`` (dim y) and
  ``lon`` (dim x); ``y``/``x`` may equal them.
- coordinates ``channel_long_name`` and ``channel_units`` (str, dim channel): the CF
  ``long_name`` and ``units`` of each channel's physical values (``data/cf.py``; every source
  sets them through ``make_raw(..., long_names=, units=)``; a dataset without them is still
  valid, and ``cf.channel_metadata`` falls back to the channel name and "unknown").
- optional coordinate ``segment`` (int, dim time): ids of contiguous stretches of the time axis.
  A window never spans two segments (TaxiBJ's missing slots start a new segment). Absent means
  one segment.
- attrs: ``dataset`` (registry name), ``source`` (file path or ``generated:<solver>``), and any
  provenance (solver parameters, file names) as plain str/int/float values.

``validate_raw`` checks all of that, and NaN/Inf, and names the origin in its errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from sdkd_pipeline.data.cf import LONG_NAME, UNITS, with_channel_metadata
from sdkd_pipeline.errors import DataError

RAW_DIMS = ("trajectory", "time", "channel", "y", "x")


def make_raw(
    fields: np.ndarray,
    *,
    dataset: str,
    source: str,
    channels: list[str],
    time: np.ndarray,
    y: np.ndarray | None = None,
    x: np.ndarray | None = None,
    segment: np.ndarray | None = None,
    extra_coords: dict | None = None,
    attrs: dict | None = None,
    long_names: Sequence[str] | Mapping[str, str] | None = None,
    units: Sequence[str] | Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Wrap an array of shape (trajectory, time, channel, y, x) in the raw-dataset contract.

    ``long_names`` and ``units`` (per channel, in channel order or by channel name) become the
    ``channel_long_name`` / ``channel_units`` coordinates; give both or neither."""
    fields = np.asarray(fields) if not hasattr(fields, "dask") else fields
    if fields.ndim != 5:
        raise DataError(
            f"{source}: expected fields of shape (trajectory, time, channel, y, x), "
            f"got {fields.ndim} dims {tuple(fields.shape)}"
        )
    n_traj, n_t, n_c, n_y, n_x = fields.shape
    coords: dict = {
        "channel": ("channel", [str(c) for c in channels]),
        "time": ("time", np.asarray(time)),
        "y": ("y", np.arange(n_y, dtype=np.float64) if y is None else np.asarray(y)),
        "x": ("x", np.arange(n_x, dtype=np.float64) if x is None else np.asarray(x)),
        "trajectory": ("trajectory", np.arange(n_traj)),
    }
    if segment is not None:
        coords["segment"] = ("time", np.asarray(segment, dtype=np.int64))
    if extra_coords:
        coords.update(extra_coords)
    ds = xr.Dataset({"fields": (RAW_DIMS, fields.astype(np.float32, copy=False))}, coords=coords)
    ds.attrs.update({"dataset": dataset, "source": source, **(attrs or {})})
    if (long_names is None) != (units is None):
        raise ValueError("make_raw: give both long_names and units, or neither")
    if long_names is not None:
        ds = with_channel_metadata(ds, long_names, units)
    return validate_raw(ds, origin=source)


def validate_raw(
    ds: xr.Dataset, origin: str | None = None, check_finite: bool = True
) -> xr.Dataset:
    """Check a raw dataset against the contract; raise ``DataError`` naming ``origin`` if not.

    ``check_finite`` scans the values for NaN/Inf (computes a dask-backed array once).
    """
    origin = origin or ds.attrs.get("source", "<raw dataset>")
    if "fields" not in ds.data_vars:
        raise DataError(f"{origin}: no 'fields' variable (found {sorted(ds.data_vars)})")
    f = ds["fields"]
    if tuple(f.dims) != RAW_DIMS:
        raise DataError(f"{origin}: 'fields' has dims {tuple(f.dims)}, expected {RAW_DIMS}")
    for name in ("channel", "time", "y", "x"):
        if name not in ds.coords:
            raise DataError(f"{origin}: missing coordinate '{name}'")
    if ds.sizes["channel"] != len(ds["channel"]):
        raise DataError(f"{origin}: channel coordinate does not match the channel axis")
    meta = [name for name in (LONG_NAME, UNITS) if name in ds.coords]
    if meta and (len(meta) != 2 or any(ds[name].dims != ("channel",) for name in meta)):
        raise DataError(
            f"{origin}: coordinates {LONG_NAME} and {UNITS} go together, both along 'channel' "
            f"(found {[(n, ds[n].dims) for n in meta]})"
        )
    if any(ds.sizes[d] == 0 for d in RAW_DIMS):
        raise DataError(f"{origin}: 'fields' is empty, shape {tuple(f.shape)}")
    if "segment" in ds.coords:
        seg = np.asarray(ds["segment"].values)
        if seg.shape != (ds.sizes["time"],) or np.any(np.diff(seg) < 0):
            raise DataError(f"{origin}: 'segment' must be non-decreasing along time")
    if f.dtype != np.float32:
        raise DataError(f"{origin}: 'fields' must be float32, got {f.dtype}")
    for key in ("dataset", "source"):
        if key not in ds.attrs:
            raise DataError(f"{origin}: missing attribute '{key}'")
    if check_finite:
        bad = (~np.isfinite(f)).sum()
        n_bad = int(bad.compute() if hasattr(bad, "compute") else bad)
        if n_bad:
            where = _first_nonfinite(f)
            raise DataError(
                f"{origin}: {n_bad} NaN/Inf value(s) in 'fields' (first at {where}); "
                "clean or mask the file before converting it"
            )
    return ds


def _first_nonfinite(f: xr.DataArray) -> dict:
    """Locate the first non-finite value per (trajectory, time) for the error message."""
    bad_tt = (~np.isfinite(f)).any(dim=("channel", "y", "x")).values
    ti, tt = np.argwhere(bad_tt)[0]
    return {"trajectory": int(ti), "time": str(f["time"].values[tt])}


def segments_of(ds: xr.Dataset) -> np.ndarray:
    """Segment id per time step (all zeros when the dataset has no gaps)."""
    if "segment" in ds.coords:
        return np.asarray(ds["segment"].values, dtype=np.int64)
    return np.zeros(ds.sizes["time"], dtype=np.int64)
