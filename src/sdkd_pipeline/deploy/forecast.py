"""Forecast from a data file with an exported model or a checkpoint.

``predict(model, input, output)`` reads an input window from a Zarr store (raw store or this
project's tensor store) or a NetCDF file of the raw layout, runs the model
(``runtime.load_exported``) and writes the de-normalized forecast with the input's coordinates
(NetCDF, or Zarr for a ``.zarr`` path), atomically.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sdkd_pipeline.atomic import atomic_path
from sdkd_pipeline.deploy.checkpoint import Checkpoint
from sdkd_pipeline.deploy.runtime import load_exported
from sdkd_pipeline.errors import DataError


def _open_input(path: Path) -> Any:
    import xarray as xr

    if not path.exists():
        raise DataError(f"{path}: input file not found")
    if path.is_dir():
        if not ((path / "zarr.json").is_file() or (path / ".zgroup").is_file()):
            raise DataError(f"{path}: a directory but not a Zarr store (no zarr.json or .zgroup)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return xr.open_zarr(path, chunks=None, consolidated=None)
        except Exception as exc:
            raise DataError(f"{path}: cannot be opened as a Zarr store ({exc})") from exc
    try:
        return xr.open_dataset(path)
    except Exception as exc:
        raise DataError(f"{path}: cannot be opened as NetCDF ({exc})") from exc


def _is_tensor_store(ds: Any) -> bool:
    return (
        "mean" in ds.data_vars
        and "std" in ds.data_vars
        and ("format_version" in ds.attrs or "normalization" in ds.attrs)
    )


def _regular_step(values: np.ndarray) -> Any:
    """The constant step of a 1-D coordinate, or ``None`` when it is not regularly spaced."""
    if values.ndim != 1 or values.size < 2:
        return None
    if not (
        np.issubdtype(values.dtype, np.number)
        or np.issubdtype(values.dtype, np.datetime64)
        or np.issubdtype(values.dtype, np.timedelta64)
    ):
        return None
    steps = np.diff(values)
    step = steps[0]
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all() or step == 0:
            return None
        ok = np.allclose(steps, step, rtol=1e-6, atol=1e-9 * max(abs(float(step)), 1e-300))
    else:
        ok = bool(np.all(steps == step)) and step != step * 0
    return step if ok else None


def _attr(value: Any) -> Any:
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    return json.dumps(value, default=str) if not isinstance(value, np.datetime64) else str(value)


def _input_field(ds: Any, input_path: Path, variable: str, meta: Mapping[str, Any]) -> Any:
    """``ds[variable]`` as ``(trajectory, time, channel, y, x)``, checked against the model's
    channels and grid (``DataError`` naming ``input_path`` when it does not fit)."""
    shape = meta["shape"]
    n_chan, height, width = int(shape["channels"]), int(shape["height"]), int(shape["width"])
    if variable not in ds.data_vars:
        raise DataError(
            f"{input_path}: no variable {variable!r} (found "
            f"{sorted(map(str, ds.data_vars))}); pass --variable"
        )
    field = ds[variable]
    dims = tuple(map(str, field.dims))
    if dims == ("time", "channel", "y", "x"):
        field = field.expand_dims("trajectory")
    elif dims != ("trajectory", "time", "channel", "y", "x"):
        raise DataError(
            f"{input_path}: {variable!r} has dims {dims}, expected (trajectory, "
            "time, channel, y, x) or (time, channel, y, x)"
        )
    _, _, c_file, h_file, w_file = (int(s) for s in field.shape)
    names = [str(c) for c in ds["channel"].values] if "channel" in ds.coords else None
    if c_file != n_chan:
        raise DataError(
            f"{input_path}: {variable!r} has {c_file} channel(s) "
            f"{names or ''}, the model expects {n_chan} {meta['channels']}"
        )
    if names is not None and names != list(meta["channels"]):
        raise DataError(
            f"{input_path}: channels {names} do not match the model's {meta['channels']}"
        )
    if (h_file, w_file) != (height, width):
        raise DataError(
            f"{input_path}: grid (y, x) = ({h_file}, {w_file}) does not match "
            f"the model's ({height}, {width})"
        )
    return field


def _with_forcings(
    x: np.ndarray, ds: Any, meta: Mapping[str, Any], input_path: Path, start: int, end: int
) -> np.ndarray:
    """``x`` with the model's forcing channels appended, computed from the input file's time
    and lat / lon coordinates as the tensor store computed them (unchanged for a model
    without forcings)."""
    if not int(meta["shape"].get("forcing_channels", 0)):
        return x
    forcings = meta.get("forcings") or {}
    from sdkd_pipeline.data.forcings import forcing_inputs

    extra, names = forcing_inputs(
        forcings.get("declared", []), ds, slice(start, end + 1), str(input_path)
    )
    if names != list(forcings.get("channels", [])):
        raise DataError(
            f"{input_path}: forcing channels {names} do not match the model's "
            f"{forcings.get('channels')}"
        )
    return np.concatenate([x, extra[None]], axis=2)


def _window_bounds(
    field: Any, input_path: Path, t_in: int, trajectory: int, time_index: int | None
) -> tuple[int, int, int]:
    """``(trajectory, start, end)`` of the ``t_in`` frames of ``trajectory`` ending at
    ``time_index`` (inclusive; negative counts from the end; ``None``: the last frame)."""
    n_traj, n_time = int(field.shape[0]), int(field.shape[1])
    if not -n_traj <= int(trajectory) < n_traj:
        raise DataError(
            f"{input_path}: trajectory {trajectory} out of range (the file holds {n_traj})"
        )
    traj = int(trajectory) % n_traj
    if n_time < t_in:
        raise DataError(f"{input_path}: {n_time} time step(s), the model needs T_in = {t_in}")
    end = n_time - 1 if time_index is None else int(time_index)
    if not -n_time <= end < n_time:
        raise DataError(f"{input_path}: time index {time_index} out of range (0..{n_time - 1})")
    end %= n_time
    start = end - t_in + 1
    if start < 0:
        raise DataError(
            f"{input_path}: time index {end} gives only {end + 1} step(s) up to and including it, "
            f"the model needs T_in = {t_in}"
        )
    return traj, start, end


def _input_window(field: Any, input_path: Path, traj: int, start: int, end: int) -> np.ndarray:
    """The window's values as float64 ``(T_in, C, H, W)``; ``DataError`` on NaN/Inf."""
    window = np.asarray(
        field.isel(trajectory=traj, time=slice(start, end + 1)).values, dtype=np.float64
    )
    bad = ~np.isfinite(window)
    if bad.any():
        first = np.argwhere(bad)[0]
        raise DataError(
            f"{input_path}: {int(bad.sum())} NaN/Inf value(s) in the input "
            f"window (time steps {start}..{end}; first at time step "
            f"{start + int(first[0])}, channel {int(first[1])})"
        )
    return window


def _forecast_coords(
    ds: Any, meta: Mapping[str, Any], start: int, end: int, t_out: int
) -> tuple[dict[str, Any], np.ndarray, str]:
    """The forecast's coordinates, the input window's times and a note on the time axis."""
    times = np.asarray(ds["time"].values) if "time" in ds.coords else None
    step = _regular_step(times) if times is not None else None
    lead = np.arange(1, t_out + 1)
    if step is not None:
        out_time = times[end] + step * lead
        time_note = "input time coordinate extrapolated with its step"
    else:
        out_time = lead
        time_note = "lead steps after the input window (input time not regularly spaced)"
    coords: dict[str, Any] = {
        "time": ("time", out_time),
        "lead": ("time", lead),
        "channel": ("channel", np.asarray(list(meta["channels"]), dtype=object)),
    }
    for name, coord in ds.coords.items():
        if name in ("y", "x") or (coord.dims and set(coord.dims) <= {"y", "x"}):
            coords[str(name)] = (coord.dims, np.asarray(coord.values))
    window_times = times[start : end + 1] if times is not None else np.arange(start, end + 1)
    return coords, window_times, time_note


def predict(
    model_path_or_checkpoint: str | Path | Checkpoint,
    input_path: str | Path,
    output_path: str | Path,
    *,
    time_index: int | None = None,
    trajectory: int = 0,
    variable: str = "fields",
    overwrite: bool = False,
    trust_torchscript: bool = False,
) -> Path:
    """Forecast the ``T_out`` frames after an input window and write them in physical units.

    The window is the ``T_in`` frames of ``trajectory`` ending at ``time_index`` (inclusive;
    negative counts from the end; default the last frame). The input is a Zarr store or a
    NetCDF file with ``variable`` of dims ``(trajectory, time, channel, y, x)`` (or without
    ``trajectory``): a raw store holds physical values (normalized here with the checkpoint's
    mean/std); this project's tensor store holds values normalized with its own ``mean``/``std``
    (mapped back to physical and re-normalized with the checkpoint's, a no-op when equal).
    The output (NetCDF; Zarr when the path ends in ``.zarr``; written atomically) holds
    ``forecast`` ``(time, channel, y, x)`` with the channel names, the input's y/x (and other
    coordinates on y/x such as lat/lon), ``time`` the next ``T_out`` values of a regularly
    spaced input time coordinate (else integer lead steps) and ``lead`` (1..T_out).
    Returns the output path. Bad input raises ``DataError`` naming the file; nothing is written.
    The output may not be (or lie inside, or contain) the input or the model file, and an
    existing output is replaced only with ``overwrite``. A TorchScript model runs the code it
    holds when loaded: it is refused unless ``trust_torchscript`` (see ``load_exported``).
    """
    import xarray as xr

    input_path = Path(input_path)
    output_path = Path(output_path)
    model_path = None if isinstance(model_path_or_checkpoint, Mapping) else model_path_or_checkpoint
    _check_output(output_path, input_path, model_path, overwrite)
    model, meta = load_exported(model_path_or_checkpoint, trust_torchscript=trust_torchscript)
    shape = meta["shape"]
    t_in, t_out = int(shape["in_frames"]), int(shape["out_frames"])
    n_chan = int(shape["channels"])

    ds = _open_input(input_path)
    try:
        field = _input_field(ds, input_path, variable, meta)
        traj, start, end = _window_bounds(field, input_path, t_in, trajectory, time_index)
        window = _input_window(field, input_path, traj, start, end)
        c_shape = (1, n_chan, 1, 1)
        mean = np.asarray(meta["mean"], dtype=np.float64).reshape(c_shape)
        std = np.asarray(meta["std"], dtype=np.float64).reshape(c_shape)
        normalized_input = _is_tensor_store(ds)
        if normalized_input:
            s_mean = np.asarray(ds["mean"].values, dtype=np.float64).reshape(c_shape)
            s_std = np.asarray(ds["std"].values, dtype=np.float64).reshape(c_shape)
            window = window * s_std + s_mean
        x = ((window - mean) / std).astype(np.float32)[None]
        x = _with_forcings(x, ds, meta, input_path, start, end)
        y = model(x)[0].astype(np.float64) * std + mean
        coords, window_times, time_note = _forecast_coords(ds, meta, start, end, t_out)
        attrs = {
            "model": meta.get("model"),
            "method": meta.get("method"),
            "dataset": meta.get("dataset"),
            "role": meta.get("role"),
            "model_file": str(model_path_or_checkpoint)
            if not isinstance(model_path_or_checkpoint, Mapping)
            else "checkpoint",
            "model_format": model.format,
            "source_file": str(input_path),
            "source_variable": variable,
            "input_normalized": int(normalized_input),
            "trajectory": traj,
            "time_index": end,
            "input_time_indices": f"{start}..{end}",
            "input_times": json.dumps([str(t) for t in window_times]),
            "input_time_start": str(window_times[0]),
            "input_time_end": str(window_times[-1]),
            "time_coordinate": time_note,
            "units_note": "physical units (de-normalized with the model's mean/std)",
        }
        attrs = {k: _attr(v) for k, v in attrs.items() if v is not None}
        forecast = xr.DataArray(
            y.astype(np.float32), dims=("time", "channel", "y", "x"), coords=coords, name="forecast"
        )
        out = forecast.to_dataset()
        out.attrs.update(attrs)
    finally:
        ds.close()
    _write_atomic(out, output_path)
    return output_path


def _overlaps(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are the same path, or one lies inside the other (links resolved)."""
    a, b = a.resolve(), b.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _check_output(output: Path, source: Path, model: str | Path | None, overwrite: bool) -> None:
    """Refuse an output that would destroy the input or the model, or an existing file or
    store without ``overwrite``; before anything is read or written."""
    for what, other in (("input", source), ("model", model)):
        if other is not None and _overlaps(output, Path(other)):
            raise DataError(
                f"{output}: the output would overwrite the {what} {other}; give another --output"
            )
    if output.exists() and not overwrite:
        raise DataError(
            f"{output}: exists; pass --overwrite (predict(..., overwrite=True)) to replace it, "
            "or give another --output"
        )


def _write_atomic(ds: Any, path: Path) -> None:
    zarr_out = path.suffix.lower() == ".zarr"
    if path.exists() and path.is_dir() and not zarr_out:
        raise DataError(f"{path}: is a directory; give a file name for the NetCDF output")
    if (
        path.exists()
        and zarr_out
        and not ((path / "zarr.json").is_file() or (path / ".zgroup").is_file())
    ):
        raise DataError(f"{path}: exists and is not a Zarr store; refusing to replace it")
    out = ds.copy()
    out["channel"] = out["channel"].astype(str)
    with atomic_path(path, suffix=".zarr" if zarr_out else "") as tmp:
        if zarr_out:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import zarr

                kwargs = {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}
                out.to_zarr(tmp, mode="w-", consolidated=True, **kwargs)
        else:
            out.to_netcdf(tmp)
