"""WeatherBench / ERA5 reanalysis fields as a raw dataset (one trajectory, datetime64 time).

The package holds the source's entry points, defined here: ``read_weatherbench`` (the
``weatherbench.source`` kinds ``wb1_netcdf``, ``wb2_zarr`` and ``era5``),
``download_weatherbench1`` (the ``weatherbench.download.wb1`` step, with ``wb1_archive_url``)
and ``main``, the download command line (``python -m sdkd_pipeline.data.sources.weatherbench``,
through ``__main__``); and it re-exports the public names of its modules: ``config`` (variable
names, channel names, the WB1 archive's constants and ``WeatherBenchConfig``) and ``readers``
(one reader per on-disk layout, all into the same contract). Zarr, dask and cfgrib are imported
lazily: the package imports with numpy/xarray alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from sdkd_pipeline.data.download.extract import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_RATIO,
)
from sdkd_pipeline.data.sources.weatherbench.config import (
    DATASET_NAME,
    DEFAULT_RAW_DIR,
    DOWNLOAD_COMMAND,
    ERA5_ATTRIBUTION,
    ERA5_METADATA,
    FORMATS,
    LONG_TO_SHORT,
    SHORT_TO_LONG,
    WB1_BASE_URL,
    WB1_RESOLUTIONS,
    WB1_VARIABLES,
    VariableRequest,
    WeatherBenchConfig,
    channel_name,
    resolve_variable,
)
from sdkd_pipeline.data.sources.weatherbench.readers import (
    read_era5,
    read_weatherbench1,
    read_weatherbench2_zarr,
    wb1_file_path,
)
from sdkd_pipeline.errors import ConfigError, DownloadError

log = logging.getLogger(__name__)


def read_weatherbench(cfg: dict, param_path: str = "weatherbench") -> xr.Dataset:
    """Entry point: read the layout named by ``cfg['format']`` into the raw contract; errors
    name ``<param_path>.<option>`` (``load_raw`` passes ``weatherbench.source.<format>``)."""
    conf = WeatherBenchConfig.from_params(cfg, param_path)
    if conf.format == "wb1_netcdf":
        return read_weatherbench1(
            conf.root,
            conf.variables,
            conf.years,
            conf.levels,
            resolution=conf.resolution,
            progress=conf.progress,
        )
    time_slice = tuple(conf.time_slice) if conf.time_slice is not None else None
    if conf.format == "wb2_zarr":
        return read_weatherbench2_zarr(conf.path, conf.variables, conf.levels, time_slice)
    return read_era5(conf.path, conf.variables, conf.levels, time_slice=time_slice)


# ----------------------------------------------------------------------------- download


def wb1_archive_url(
    variable: str, resolution: str = "5.625deg", base_url: str = WB1_BASE_URL
) -> str:
    """URL of the zip holding every year of one WB1 variable at one resolution."""
    from urllib.parse import quote

    folder = quote(f"/{resolution}/{variable}", safe="")
    return f"{base_url}?path={folder}&files={quote(f'{variable}_{resolution}.zip')}"


def download_weatherbench1(
    variable: str,
    dest_dir: str | Path = DEFAULT_RAW_DIR,
    resolution: str = "5.625deg",
    base_url: str = WB1_BASE_URL,
    progress: bool = True,
    keep_archive: bool = False,
    max_expansion_ratio: float | None = DEFAULT_MAX_RATIO,
    max_expanded_bytes: int | None = DEFAULT_MAX_BYTES,
    max_members: int | None = DEFAULT_MAX_MEMBERS,
) -> list[Path]:
    """Download one WB1 variable and unpack its yearly NetCDF files into
    ``{dest_dir}/{variable}/``. Returns the NetCDF paths.

    The archive is unpacked into a temporary folder beside the target and the files moved in
    only once extraction succeeded, so a failed download leaves no partial variable folder.
    An archive already on disk is reused only if it is a zip; one that is not (a download cut
    short, an HTML page served instead) is downloaded again, and an archive that is rejected
    (not a zip, unsafe members, past the extraction limits ``max_expansion_ratio`` /
    ``max_expanded_bytes`` / ``max_members``) is deleted, so a rerun after a fix starts clean.
    """
    import zipfile

    from sdkd_pipeline.data.download import download_file, extract_archive

    if variable not in WB1_VARIABLES:
        raise ConfigError(
            f"weatherbench.download.variable: {variable!r} is not a WeatherBench 1 variable; "
            f"choose one of {list(WB1_VARIABLES)}"
        )
    if resolution not in WB1_RESOLUTIONS:
        raise ConfigError(
            f"weatherbench.download.resolution: {resolution!r} is not one of {list(WB1_RESOLUTIONS)}"
        )
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    archive = dest_dir / f"{variable}_{resolution}.zip"
    target = dest_dir / variable
    url = wb1_archive_url(variable, resolution, base_url)
    if archive.exists() and not zipfile.is_zipfile(archive):
        log.warning(
            "%s: not a zip archive (an earlier download was cut short or rejected); "
            "downloading it again from %s",
            archive,
            url,
        )
        archive.unlink()
    if not archive.exists():
        download_file(url, archive, progress=progress)
    staging = Path(tempfile.mkdtemp(prefix=f".{variable}.", dir=dest_dir))
    try:
        try:
            extracted = extract_archive(
                archive,
                staging,
                progress=progress,
                max_bytes=max_expanded_bytes,
                max_ratio=max_expansion_ratio,
                max_members=max_members,
            )
        except DownloadError as exc:
            hint = _served_html(archive)
            archive.unlink(missing_ok=True)
            raise DownloadError(
                f"{exc}{hint}; the rejected archive from {url} was deleted "
                "(check weatherbench.download.wb1.base_url, then rerun)"
            ) from None
        netcdf = sorted(Path(p) for p in extracted if str(p).endswith(".nc"))
        if not netcdf:
            archive.unlink(missing_ok=True)
            raise DownloadError(
                f"{archive}: the archive from {url} holds no NetCDF files "
                f"(found {[Path(p).name for p in extracted][:5]})"
            )
        target.mkdir(parents=True, exist_ok=True)
        moved = []
        for path in netcdf:
            final = target / path.name
            os.replace(path, final)
            moved.append(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return moved


def _served_html(archive: Path) -> str:
    """A hint when the file is a web page instead of the archive (a wrong base URL, a login
    page): judged from its first bytes, read before the file is deleted."""
    try:
        with open(archive, "rb") as handle:
            head = handle.read(512).lstrip().lower()
    except OSError:
        return ""
    html = head.startswith((b"<!doctype html", b"<html", b"<?xml"))
    return " (the server sent a web page, not the archive: the URL may be wrong)" if html else ""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sdkd_pipeline.data.sources.weatherbench 2m_temperature --dest ...``"""
    parser = argparse.ArgumentParser(
        prog="python -m sdkd_pipeline.data.sources.weatherbench",
        description="Download WeatherBench 1 variables (yearly NetCDF) from the TUM server.",
    )
    parser.add_argument(
        "variables",
        nargs="+",
        choices=WB1_VARIABLES,
        metavar="VARIABLE",
        help=f"one or more of: {', '.join(WB1_VARIABLES)}",
    )
    parser.add_argument("--dest", default=str(DEFAULT_RAW_DIR))
    parser.add_argument("--resolution", default="5.625deg", choices=WB1_RESOLUTIONS)
    parser.add_argument("--base-url", default=WB1_BASE_URL)
    parser.add_argument("--keep-archive", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    for variable in args.variables:
        files = download_weatherbench1(
            variable,
            args.dest,
            args.resolution,
            args.base_url,
            progress=not args.no_progress,
            keep_archive=args.keep_archive,
        )
        print(f"{variable}: {len(files)} files in {Path(args.dest) / variable}")
    return 0


__all__ = [
    "DATASET_NAME",
    "DEFAULT_RAW_DIR",
    "DOWNLOAD_COMMAND",
    "ERA5_ATTRIBUTION",
    "ERA5_METADATA",
    "FORMATS",
    "LONG_TO_SHORT",
    "SHORT_TO_LONG",
    "WB1_BASE_URL",
    "WB1_RESOLUTIONS",
    "WB1_VARIABLES",
    "VariableRequest",
    "WeatherBenchConfig",
    "channel_name",
    "download_weatherbench1",
    "main",
    "read_era5",
    "read_weatherbench",
    "read_weatherbench1",
    "read_weatherbench2_zarr",
    "resolve_variable",
    "wb1_archive_url",
    "wb1_file_path",
]
