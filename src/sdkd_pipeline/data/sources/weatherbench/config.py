"""WeatherBench / ERA5 names and configuration: variables, channels and ``WeatherBenchConfig``.

``resolve_variable`` maps a requested variable (long ERA5 / CDS name, short name, or a WB1
single-level directory such as ``geopotential_500``) to the names each layout uses, and
``channel_name`` gives the one naming scheme of the channels (``t2m``, ``z500``, ``t850``).
``WeatherBenchConfig.from_dict`` checks the ``weatherbench`` parameters. The WeatherBench 1
archive's address, resolutions and variables live here too, shared by reader and downloader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sdkd_pipeline.config_utils import known_keys
from sdkd_pipeline.errors import ConfigError

DATASET_NAME = "weatherbench"
DEFAULT_RAW_DIR = Path("data/01_raw/weatherbench")
ERA5_ATTRIBUTION = (
    "Contains modified Copernicus Climate Change Service information; "
    "ERA5 reanalysis (Hersbach et al. 2020), WeatherBench (Rasp et al. 2020)"
)
FORMATS = ("wb1_netcdf", "wb2_zarr", "era5")

# WeatherBench 1 archive on the TUM data server (mediaTUM record 1524895). One zip per
# variable and resolution, holding the yearly NetCDF files.
WB1_BASE_URL = "https://dataserv.ub.tum.de/s/m1524895/download"
WB1_RESOLUTIONS = ("5.625deg", "2.8125deg", "1.40625deg")
WB1_VARIABLES = (
    "10m_u_component_of_wind",
    "10m_v_component_of_wind",
    "2m_temperature",
    "geopotential",
    "geopotential_500",
    "potential_vorticity",
    "relative_humidity",
    "specific_humidity",
    "temperature",
    "temperature_850",
    "toa_incident_solar_radiation",
    "total_cloud_cover",
    "total_precipitation",
    "u_component_of_wind",
    "v_component_of_wind",
    "vorticity",
)
DOWNLOAD_COMMAND = (
    "python -m sdkd_pipeline.data.sources.weatherbench {variable} "
    "--dest data/01_raw/weatherbench --resolution {resolution}"
)

# ERA5 / CDS long names (WB1 directory names, WB2 variable names) -> ERA5 short names (the
# names inside WB1 and Copernicus files, and the stem of our channel names).
LONG_TO_SHORT: dict[str, str] = {
    "2m_temperature": "t2m",
    "2m_dewpoint_temperature": "d2m",
    "10m_u_component_of_wind": "u10",
    "10m_v_component_of_wind": "v10",
    "mean_sea_level_pressure": "msl",
    "surface_pressure": "sp",
    "sea_surface_temperature": "sst",
    "total_precipitation": "tp",
    "total_cloud_cover": "tcc",
    "toa_incident_solar_radiation": "tisr",
    "geopotential": "z",
    "temperature": "t",
    "u_component_of_wind": "u",
    "v_component_of_wind": "v",
    "vertical_velocity": "w",
    "specific_humidity": "q",
    "relative_humidity": "r",
    "vorticity": "vo",
    "potential_vorticity": "pv",
}
SHORT_TO_LONG: dict[str, str] = {short: long for long, short in LONG_TO_SHORT.items()}

_SINGLE_LEVEL_NAME = re.compile(r"^(?P<base>.+)_(?P<level>\d+)(hPa)?$")


@dataclass(frozen=True)
class VariableRequest:
    """One requested variable, resolved to the names each layout uses.

    ``long`` names the WB1 directory and the WB2 variable; ``short`` is the name inside WB1 and
    Copernicus files; ``fixed_level`` is set for WB1's single-level directories such as
    ``geopotential_500`` (files holding only that level).
    """

    requested: str
    long: str
    short: str
    fixed_level: int | None = None

    @property
    def directory(self) -> str:
        return self.requested if self.fixed_level is not None else self.long


def resolve_variable(name: str) -> VariableRequest:
    """Accept a long name (``2m_temperature``), a short name (``t2m``) or a WB1 single-level
    directory name (``geopotential_500``)."""
    if name in LONG_TO_SHORT:
        return VariableRequest(name, name, LONG_TO_SHORT[name])
    if name in SHORT_TO_LONG:
        return VariableRequest(name, SHORT_TO_LONG[name], name)
    match = _SINGLE_LEVEL_NAME.match(name)
    if match and match["base"] in LONG_TO_SHORT:
        base = match["base"]
        return VariableRequest(name, base, LONG_TO_SHORT[base], int(match["level"]))
    # Unknown to the table: use it verbatim for both (lets users read any ERA5 variable).
    return VariableRequest(name, name, name)


def channel_name(short: str, level: float | None) -> str:
    """``t2m`` for a surface variable, ``z500`` for geopotential at 500 hPa."""
    if level is None:
        return short
    return f"{short}{int(level) if float(level).is_integer() else level}"


# ----------------------------------------------------------------------------- config


@dataclass
class WeatherBenchConfig:
    """Parameters under ``weatherbench`` in parameters_data.yml.

    ``format`` picks the layout; ``root`` (wb1_netcdf) or ``path`` (wb2_zarr, era5) the input;
    ``variables`` long or short names (None = every variable in an era5 file); ``levels`` hPa
    for 3-D variables (None = every level in the file); ``years`` for wb1 (a list, or
    ``{start, end}`` inclusive); ``time_slice`` [start, end] ISO dates for wb2/era5.
    """

    format: str
    variables: list[str] | None = None
    levels: list[int] | None = None
    root: str = str(DEFAULT_RAW_DIR)
    path: str | None = None
    years: list[int] | None = None
    resolution: str = "5.625deg"
    time_slice: list[str] | None = None
    progress: bool = True

    @classmethod
    def from_dict(cls, cfg: dict) -> WeatherBenchConfig:
        if not isinstance(cfg, dict):
            raise ConfigError(f"weatherbench: expected a mapping of parameters, got {cfg!r}")
        known_keys(cls, cfg, "weatherbench")
        if "format" not in cfg:
            raise ConfigError(f"weatherbench.format: missing; choose one of {list(FORMATS)}")
        conf = cls(**cfg)
        if conf.format not in FORMATS:
            raise ConfigError(
                f"weatherbench.format: unknown format {conf.format!r}; choose one of "
                f"{list(FORMATS)}"
            )
        if conf.variables is not None:
            if isinstance(conf.variables, str):
                conf.variables = [conf.variables]
            if not conf.variables or not all(isinstance(v, str) for v in conf.variables):
                raise ConfigError(
                    f"weatherbench.variables: expected a non-empty list of names, "
                    f"got {conf.variables!r}"
                )
        if conf.levels is not None:
            conf.levels = _as_int_list(conf.levels, "weatherbench.levels")
        conf.years = _parse_years(conf.years) if conf.years is not None else None
        if conf.time_slice is not None and (
            not isinstance(conf.time_slice, list | tuple) or len(conf.time_slice) != 2
        ):
            raise ConfigError(
                f"weatherbench.time_slice: expected [start, end], got {conf.time_slice!r}"
            )
        if conf.format == "wb1_netcdf":
            if conf.variables is None:
                raise ConfigError("weatherbench.variables: required for format wb1_netcdf")
            if conf.years is None:
                raise ConfigError("weatherbench.years: required for format wb1_netcdf")
        elif conf.path is None:
            raise ConfigError(f"weatherbench.path: required for format {conf.format}")
        if conf.format == "wb2_zarr" and conf.variables is None:
            raise ConfigError("weatherbench.variables: required for format wb2_zarr")
        return conf


def _as_int_list(value, param: str) -> list[int]:
    values = [value] if isinstance(value, int | float) else value
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{param}: expected a list of integers, got {value!r}") from None
    if not out:
        raise ConfigError(f"{param}: empty list")
    return out


def _parse_years(years) -> list[int]:
    if isinstance(years, dict):
        if set(years) != {"start", "end"}:
            raise ConfigError(
                f"weatherbench.years: expected a list or {{start, end}}, got {years!r}"
            )
        start, end = int(years["start"]), int(years["end"])
        if end < start:
            raise ConfigError(f"weatherbench.years: end {end} is before start {start}")
        return list(range(start, end + 1))
    return _as_int_list(years, "weatherbench.years")
