"""WeatherBench / ERA5 readers: WB1 yearly NetCDF, WB2 Zarr and Copernicus GRIB / NetCDF.

Three on-disk layouts are read into the same contract:

- ``wb1_netcdf``: WeatherBench 1, one NetCDF per variable and year,
  ``{root}/{variable}/{variable}_{YYYY}_{resolution}.nc``, dims (time, [level,] lat, lon),
  short variable names inside the file (``t2m``, ``z``, ``t``), hourly.
- ``wb2_zarr``: WeatherBench 2 / ERA5 Zarr, dims (time, [level,] longitude, latitude), long
  variable names (``2m_temperature``), 6-hourly, 13 pressure levels.
- ``era5``: a GRIB (read through cfgrib) or NetCDF file from the Copernicus store.

Whatever the layout, channels get one naming scheme: the ERA5 short name, followed by the
pressure level in hPa for 3-D variables (``t2m``, ``z500``, ``t850``); latitude is sorted
ascending and longitude ascending, so every source yields the same grid orientation. ``lat``
sits on ``y`` and ``lon`` on ``x`` (``y``/``x`` hold the same degrees).

Irregular time steps (a missing hour, two files with a gap between them) are not an error:
the ``segment`` coordinate starts a new id after every step that differs from the most common
one, so no training window spans a gap. Duplicated time stamps are an error.

Zarr, dask and cfgrib are imported lazily: this module imports with numpy/xarray alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.sources.weatherbench.config import (
    DATASET_NAME,
    DEFAULT_RAW_DIR,
    DOWNLOAD_COMMAND,
    ERA5_ATTRIBUTION,
    VariableRequest,
    channel_metadata_of,
    channel_name,
    resolve_variable,
)
from sdkd_pipeline.errors import ConfigError, DataError, MissingRawDataError

# Dimension names used by the different writers -> ours.
_DIM_ALIASES = {
    "latitude": "lat",
    "longitude": "lon",
    "valid_time": "time",
    "pressure_level": "level",
    "isobaricInhPa": "level",
    "plev": "level",
}
_SPATIAL_DIMS = ("lat", "lon")


# ----------------------------------------------------------------------------- WB1


log = logging.getLogger(__name__)


def wb1_file_path(root: str | Path, request: VariableRequest, year: int, resolution: str) -> Path:
    """The yearly file of one variable, e.g. ``2m_temperature/2m_temperature_1979_5.625deg.nc``.

    WB1's single-level directories name their files with the level unit
    (``geopotential_500/geopotential_500hPa_1979_5.625deg.nc``): matched by a glob.
    """
    folder = Path(root) / request.directory
    exact = folder / f"{request.directory}_{year}_{resolution}.nc"
    if exact.exists() or not folder.is_dir():
        return exact
    matches = sorted(folder.glob(f"{request.directory}*_{year}_{resolution}.nc"))
    return matches[0] if len(matches) == 1 else exact


def read_weatherbench1(
    root: str | Path,
    variables: Sequence[str],
    years: Iterable[int],
    levels: Sequence[int] | None = None,
    *,
    resolution: str = "5.625deg",
    progress: bool = True,
) -> xr.Dataset:
    """Read WB1 yearly NetCDF files of ``variables`` for ``years`` into one trajectory."""
    from tqdm.auto import tqdm

    root = Path(root)
    requests = [resolve_variable(v) for v in variables]
    years = sorted(int(y) for y in years)
    if not years:
        raise ConfigError("weatherbench.years: empty")
    paths = {
        (r.requested, y): wb1_file_path(root, r, y, resolution) for r in requests for y in years
    }
    _check_wb1_files(paths, requests, root, resolution)

    channels: list[str] = []
    per_channel: list[np.ndarray] = []
    meta: dict[str, tuple[str, str]] = {}
    time_ref: np.ndarray | None = None
    grid: tuple[np.ndarray, np.ndarray] | None = None
    with tqdm(
        total=len(paths), desc="WeatherBench 1 files", disable=None if progress else True
    ) as bar:
        for request in requests:
            blocks: dict[str, list[np.ndarray]] = {}
            times = []
            for year in years:
                path = paths[(request.requested, year)]
                ds = _open_netcdf(path)
                try:
                    std = _standardise(ds, path)
                    named = _select_variable(std, request, levels, path)
                    arrays = _load_checked(named, path)
                finally:
                    ds.close()
                lat, lon = arrays.pop("__lat__"), arrays.pop("__lon__")
                for name, value in arrays.pop("__meta__").items():
                    meta.setdefault(name, value)  # the first year's file describes the channel
                if grid is None:
                    grid = (lat, lon)
                elif not _same_grid(grid, (lat, lon)):
                    raise DataError(
                        f"{path}: its lat/lon grid ({lat.size}x{lon.size}) differs from the "
                        "other files'; all variables and years must share one grid"
                    )
                times.append(arrays.pop("__time__"))
                for name, values in arrays.items():
                    blocks.setdefault(name, []).append(values)
                bar.update(1)
            var_time = np.concatenate(times)
            if time_ref is None:
                time_ref = var_time
            elif not np.array_equal(time_ref, var_time):
                raise DataError(
                    f"{root / request.directory}: time axis ({var_time.size} steps) differs from "
                    f"that of {requests[0].directory} ({time_ref.size} steps) for the same years"
                )
            for name, parts in blocks.items():
                channels.append(name)
                per_channel.append(np.concatenate(parts, axis=0))

    files = [str(p) for p in paths.values()]
    return _assemble(
        per_channel,
        channels,
        time_ref,
        grid,
        meta=meta,
        source=str(root),
        files=files,
        extra_attrs={
            "format": "wb1_netcdf",
            "resolution": resolution,
            "years": ",".join(str(y) for y in years),
        },
    )


def _check_wb1_files(
    paths: dict[tuple[str, int], Path],
    requests: list[VariableRequest],
    root: Path,
    resolution: str,
) -> None:
    """``MissingRawDataError`` naming the download command when a yearly file is absent."""
    missing = {key: p for key, p in paths.items() if not p.exists()}
    if missing:
        without = sorted(
            {r.directory for r in requests if any(k[0] == r.requested for k in missing)}
        )
        commands = DOWNLOAD_COMMAND.format(variable=" ".join(without), resolution=resolution)
        first = next(iter(missing.values()))
        raise MissingRawDataError(
            f"WeatherBench 1 files missing ({len(missing)} of {len(paths)}), e.g. {first}. "
            f"They go under {root}/<variable>/<variable>_<year>_{resolution}.nc "
            f"(default root {DEFAULT_RAW_DIR}/). Download them with: {commands}"
        )


def _same_grid(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return all(x.shape == y.shape and np.allclose(x, y) for x, y in zip(a, b, strict=True))


def _open_netcdf(path: Path) -> xr.Dataset:
    try:
        return xr.open_dataset(path, cache=False)
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unreadable file
        raise DataError(
            f"{path}: cannot be read as NetCDF ({type(exc).__name__}: {exc}); the file is "
            "truncated or corrupt - delete it and download it again"
        ) from exc


# ----------------------------------------------------------------------------- WB2


def read_weatherbench2_zarr(
    path: str | Path,
    variables: Sequence[str],
    levels: Sequence[int] | None = None,
    time_slice: tuple[str, str] | None = None,
) -> xr.Dataset:
    """Read a WeatherBench 2 / ERA5 Zarr store (local path, or a URL xarray can open).

    ``time_slice`` = (start, end), inclusive, selects before anything is loaded, so a
    multi-decade store costs only what is selected.
    """
    try:
        import zarr  # noqa: F401 - xarray's zarr engine needs it
    except ImportError:
        raise ConfigError(
            "weatherbench.format: wb2_zarr needs the zarr package (pip install zarr)"
        ) from None
    is_remote = "://" in str(path)
    if not is_remote and not Path(path).exists():
        raise MissingRawDataError(
            f"WeatherBench 2 Zarr store not found: {path}. Put it under "
            f"{DEFAULT_RAW_DIR}/ (e.g. copy gs://weatherbench2/datasets/era5/"
            "1959-2023_01_10-6h-64x32_equiangular_conservative.zarr with gsutil -m cp -r, "
            "selecting the variables you need), or point weatherbench.path at it"
        )
    try:
        ds = xr.open_zarr(path, chunks=None)
    except Exception as exc:  # noqa: BLE001
        raise DataError(
            f"{path}: cannot be opened as a Zarr store ({type(exc).__name__}: {exc})"
        ) from exc
    return _read_opened(ds, Path(str(path)), variables, levels, time_slice, {"format": "wb2_zarr"})


# ----------------------------------------------------------------------------- ERA5


def read_era5(
    path: str | Path,
    variables: Sequence[str] | None = None,
    levels: Sequence[int] | None = None,
    *,
    time_slice: tuple[str, str] | None = None,
) -> xr.Dataset:
    """Read an ERA5 file from the Copernicus store: GRIB (``.grib``/``.grb``/``.grib2``, via
    cfgrib) or NetCDF. ``variables=None`` takes every data variable in the file."""
    path = Path(path)
    if not path.exists():
        raise MissingRawDataError(
            f"ERA5 file not found: {path}. Download it from the Copernicus Climate Data Store "
            "(reanalysis-era5-single-levels or -pressure-levels, GRIB or NetCDF) and put it "
            f"under {DEFAULT_RAW_DIR}/, then set weatherbench.path to it"
        )
    is_grib = path.suffix.lower() in {".grib", ".grb", ".grib2", ".grb2"}
    ds = _open_grib(path) if is_grib else _open_netcdf(path)
    attrs = {"format": "era5", "file_format": "grib" if is_grib else "netcdf"}
    return _read_opened(ds, path, variables, levels, time_slice, attrs)


def _read_opened(
    ds: xr.Dataset,
    path: Path,
    variables: Sequence[str] | None,
    levels: Sequence[int] | None,
    time_slice: tuple[str, str] | None,
    attrs: dict,
) -> xr.Dataset:
    """Select, check and assemble the variables of one opened file or store (closes ``ds``).
    ``variables=None`` takes every data variable."""
    try:
        std = _standardise(ds, path)
        if time_slice is not None:
            std = std.sel(time=slice(*time_slice))
        if variables is None:
            variables = [str(v) for v in std.data_vars]
        named = {}
        for request in (resolve_variable(v) for v in variables):
            named.update(_select_variable(std, request, levels, path))
        arrays = _load_checked(named, path)
    finally:
        ds.close()
    time = arrays.pop("__time__")
    _warn_if_cut_short(np.asarray(time), path, time_slice)
    grid = (arrays.pop("__lat__"), arrays.pop("__lon__"))
    meta = arrays.pop("__meta__")
    return _assemble(
        list(arrays.values()),
        list(arrays),
        time,
        grid,
        meta=meta,
        source=str(path),
        files=[str(path)],
        extra_attrs=attrs,
    )


def _warn_if_cut_short(time: np.ndarray, path: Path, time_slice: tuple[str, str] | None) -> None:
    """Warn when frames seem missing at the end: the series stops before the requested
    ``time_slice`` end, or a file that starts a month (as Copernicus monthly requests do) stops
    before that month's last step. A file cut at a message boundary reads without an error
    (every message left is whole), so only its time axis shows the loss."""
    if time.size < 2 or not np.issubdtype(time.dtype, np.datetime64):
        return
    step = np.median(np.diff(time))
    last = time[-1]
    if time_slice is not None:
        end = np.datetime64(str(time_slice[1]))
        if last + step <= end:
            missing = int((end - last) // step)
            log.warning(
                "%s: the series ends at %s, %d step(s) of %s before the requested time_slice "
                "end %s: the file holds less than asked for (cut short? download it again)",
                path,
                last,
                missing,
                step,
                end,
            )
        return
    first = time[0].astype("datetime64[h]")
    month = first.astype("datetime64[M]")
    if first != month.astype("datetime64[h]"):
        return  # not a whole-month request
    month_end = (month + 1).astype(last.dtype) - step
    months = int((last.astype("datetime64[M]") - month).astype(int)) + 1
    if last < month_end and months == 1:
        expected = int((month_end - time[0]) // step) + 1
        log.warning(
            "%s: %d of the %d %s steps of %s (ends at %s): the file looks cut short (download "
            "it again), or set time_slice to the range you mean to use",
            path,
            time.size,
            expected,
            step,
            month,
            last,
        )


def _open_grib(path: Path) -> xr.Dataset:
    try:
        import cfgrib  # noqa: F401 - registers xarray's cfgrib engine
    except ImportError:
        raise ConfigError(
            "weatherbench.format: era5 GRIB files need cfgrib and eccodes "
            "(pip install cfgrib eccodes)"
        ) from None
    # indexpath='' keeps cfgrib from writing a .idx next to a possibly read-only input;
    # errors='raise' turns a truncated message into an error instead of a silently short series.
    kwargs = {"indexpath": "", "errors": "raise"}
    try:
        return xr.open_dataset(path, engine="cfgrib", backend_kwargs=kwargs, cache=False)
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ == "DatasetBuildError":
            # Several typeOfLevel / step combinations in one file: cfgrib splits them.
            return _open_grib_split(path, kwargs)
        raise DataError(
            f"{path}: cannot be read as GRIB ({type(exc).__name__}: {exc}); the file is "
            "truncated or corrupt - download it again"
        ) from exc


def _open_grib_split(path: Path, kwargs: dict) -> xr.Dataset:
    import cfgrib

    try:
        parts = cfgrib.open_datasets(str(path), backend_kwargs=kwargs, cache=False)
        return xr.merge(parts, compat="override", join="exact")
    except Exception as exc:  # noqa: BLE001
        raise DataError(
            f"{path}: its GRIB messages do not form one grid and time axis "
            f"({type(exc).__name__}: {exc}); request one level type per file"
        ) from exc


# ----------------------------------------------------------------------------- shared


def _standardise(ds: xr.Dataset, path) -> xr.Dataset:
    """Rename dims to (time, level, lat, lon); use valid time rather than forecast reference."""
    if "valid_time" in ds.coords and "valid_time" not in ds.dims and "time" in ds.dims:
        valid = ds["valid_time"]
        if valid.dims == ("time",):
            ds = ds.drop_vars("valid_time").assign_coords(time=("time", valid.values))
    renames = {old: new for old, new in _DIM_ALIASES.items() if old in ds.dims or old in ds.coords}
    # Drop a clashing non-dimension coordinate before renaming (e.g. a scalar 'time' in a
    # new-style CDS NetCDF whose time dim is 'valid_time').
    clashes = [
        new
        for old, new in renames.items()
        if new in ds.variables and new not in ds.dims and old in ds.dims
    ]
    ds = ds.drop_vars(clashes).rename(renames)
    for dim in ("time", *_SPATIAL_DIMS):
        if dim not in ds.dims:
            raise DataError(
                f"{path}: no '{dim}' dimension (found dims {sorted(ds.dims)}); expected "
                "(time, [level,] lat/latitude, lon/longitude)"
            )
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise DataError(f"{path}: 'time' is not decoded as dates (dtype {ds['time'].dtype})")
    return ds


def _select_variable(
    ds: xr.Dataset, request: VariableRequest, levels: Sequence[int] | None, path
) -> dict[str, xr.DataArray]:
    """Return {channel name: DataArray (time, lat, lon)} for one requested variable."""
    candidates = [request.short, request.long, request.requested]
    name = next((c for c in candidates if c in ds.data_vars), None)
    if name is None:
        raise DataError(
            f"{path}: variable {request.requested!r} not found (looked for "
            f"{sorted(set(candidates))}); the file holds {sorted(map(str, ds.data_vars))}"
        )
    da = ds[name]
    allowed = {"time", "level", *_SPATIAL_DIMS}
    extra = [d for d in da.dims if d not in allowed]
    if extra or not {"time", *_SPATIAL_DIMS} <= set(da.dims):
        hint = (
            " (a 'step' dim means accumulated/forecast fields; request an analysed, "
            "instantaneous variable)"
            if "step" in extra
            else ""
        )
        raise DataError(
            f"{path}: variable {name!r} has dims {da.dims}, expected (time, [level,] lat, lon)"
            + hint
        )
    if "level" not in da.dims:
        # Surface field; or one pressure level only: a WB1 single-level directory
        # (geopotential_500) or a file whose level is a scalar coordinate.
        level = request.fixed_level
        if level is None and "level" in da.coords and da["level"].ndim == 0:
            level = float(da["level"])
        if levels is not None and level is not None and float(level) not in map(float, levels):
            raise DataError(
                f"{path}: holds {name!r} only at {_fmt_level(level)} hPa, not at the requested "
                f"levels {list(levels)}"
            )
        return {
            channel_name(request.short, level): _described(
                da.transpose("time", *_SPATIAL_DIMS), request.short, level
            )
        }
    available = [float(v) for v in np.atleast_1d(da["level"].values)]
    wanted = [float(v) for v in levels] if levels is not None else available
    if request.fixed_level is not None:
        wanted = [float(request.fixed_level)]
    absent = [w for w in wanted if w not in available]
    if absent:
        raise DataError(
            f"{path}: level(s) {[_fmt_level(a) for a in absent]} hPa of {name!r} not in the "
            f"file; it holds levels {[_fmt_level(a) for a in available]}"
        )
    return {
        channel_name(request.short, lev): _described(
            da.sel(level=lev).transpose("time", *_SPATIAL_DIMS), request.short, lev
        )
        for lev in wanted
    }


_META_ATTR = "_sdkd_channel_metadata"


def _described(da: xr.DataArray, short: str, level: float | None) -> xr.DataArray:
    """``da`` carrying its channel's ``(long_name, units)`` (from its own attributes) along to
    ``_load_checked``."""
    return da.assign_attrs({_META_ATTR: channel_metadata_of(short, level, da.attrs)})


def _fmt_level(level: float) -> int | float:
    return int(level) if float(level).is_integer() else level


def _load_checked(named: dict[str, xr.DataArray], path) -> dict[str, np.ndarray]:
    """Load each channel (sorted lat/lon ascending), check finiteness, name the file on error.

    Also returns the time axis and grid under ``__time__``, ``__lat__`` and ``__lon__``, and
    ``{channel: (long_name, units)}`` under ``__meta__``.
    """
    out: dict[str, Any] = {}
    first = next(iter(named.values()))
    lat_order = np.argsort(first["lat"].values, kind="stable")
    lon_order = np.argsort(first["lon"].values, kind="stable")
    for channel, da in named.items():
        try:
            values = np.asarray(da.values, dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - a truncated file often fails only here
            raise DataError(
                f"{path}: reading {channel} failed ({type(exc).__name__}: {exc}); the file is "
                "truncated or corrupt - delete it and download it again"
            ) from exc
        values = values[:, lat_order][:, :, lon_order]
        finite = np.isfinite(values)
        if not finite.all():
            bad_t = int(np.argwhere(~finite.all(axis=(1, 2)))[0, 0])
            raise DataError(
                f"{path}: {int((~finite).sum())} NaN/Inf value(s) in {channel} (first at time "
                f"{np.datetime_as_string(da['time'].values[bad_t], unit='m')}); fill or drop "
                "them before converting"
            )
        out[channel] = values
    out["__meta__"] = {channel: da.attrs[_META_ATTR] for channel, da in named.items()}
    out["__time__"] = first["time"].values.astype("datetime64[ns]")
    out["__lat__"] = first["lat"].values[lat_order].astype(np.float64)
    out["__lon__"] = first["lon"].values[lon_order].astype(np.float64)
    return out


def _assemble(
    per_channel: list[np.ndarray],
    channels: list[str],
    time: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
    *,
    meta: dict[str, tuple[str, str]],
    source: str,
    files: list[str],
    extra_attrs: dict,
) -> xr.Dataset:
    """Sort time, reject duplicates, mark gaps as segments and wrap in the raw contract, with
    each channel's ``(long_name, units)`` from ``meta``."""
    if not channels:
        raise DataError(f"{source}: no variable selected")
    if time.size == 0:
        raise DataError(f"{source}: no time step selected (check weatherbench.time_slice)")
    order = np.argsort(time, kind="stable")
    time = time[order]
    steps = np.diff(time)
    if np.any(steps == np.timedelta64(0, "ns")):
        dup = time[1:][steps == np.timedelta64(0, "ns")][0]
        raise DataError(
            f"{source}: time stamp {np.datetime_as_string(dup, unit='m')} appears more than "
            "once; remove the overlapping file or steps"
        )
    fields = np.stack([c[order] for c in per_channel], axis=1)[np.newaxis]
    if steps.size:
        values, counts = np.unique(steps, return_counts=True)
        step = values[np.argmax(counts)]
        segment = np.concatenate([[0], np.cumsum(steps != step)])
        step_seconds = float(step / np.timedelta64(1, "s"))
    else:
        segment, step_seconds = np.zeros(1, dtype=np.int64), 0.0
    lat, lon = grid
    attrs = {
        "files": ";".join(files),
        "variables": ",".join(channels),
        "time_step_seconds": step_seconds,
        "n_segments": int(segment[-1]) + 1,
        "attribution": ERA5_ATTRIBUTION,
        **extra_attrs,
    }
    return make_raw(
        fields,
        dataset=DATASET_NAME,
        source=source,
        channels=channels,
        time=time,
        y=lat,
        x=lon,
        segment=segment,
        extra_coords={"lat": ("y", lat), "lon": ("x", lon)},
        attrs=attrs,
        long_names={c: meta[c][0] for c in channels},
        units={c: meta[c][1] for c in channels},
    )
