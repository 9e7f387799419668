"""WeatherBench / ERA5 names and configuration: variables, channels and ``WeatherBenchConfig``.

``resolve_variable`` maps a requested variable (long ERA5 / CDS name, short name, or a WB1
single-level directory such as ``geopotential_500``) to the names each layout uses, and
``channel_name`` gives the one naming scheme of the channels (``t2m``, ``z500``, ``t850``).
``WeatherBenchConfig.from_params`` reads the options of a ``weatherbench.source.<format>`` reader
with the one config loader (``config_utils.from_params``). The WeatherBench 1
archive's address, resolutions and variables live here too, shared by reader and downloader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdkd_pipeline.config_utils import from_params, param
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
# CF long_name and units of each short name (ECMWF's parameter database, units in CF spelling),
# used where a file's variable lacks its own ``long_name`` / ``units`` attributes.
ERA5_METADATA: dict[str, tuple[str, str]] = {
    "t2m": ("2 metre temperature", "K"),
    "d2m": ("2 metre dewpoint temperature", "K"),
    "u10": ("10 metre U wind component", "m s-1"),
    "v10": ("10 metre V wind component", "m s-1"),
    "msl": ("Mean sea level pressure", "Pa"),
    "sp": ("Surface pressure", "Pa"),
    "sst": ("Sea surface temperature", "K"),
    "tp": ("Total precipitation", "m"),
    "tcc": ("Total cloud cover", "1"),
    "tisr": ("TOA incident solar radiation", "J m-2"),
    "z": ("Geopotential", "m2 s-2"),
    "t": ("Temperature", "K"),
    "u": ("U component of wind", "m s-1"),
    "v": ("V component of wind", "m s-1"),
    "w": ("Vertical velocity", "Pa s-1"),
    "q": ("Specific humidity", "kg kg-1"),
    "r": ("Relative humidity", "%"),
    "vo": ("Vorticity (relative)", "s-1"),
    "pv": ("Potential vorticity", "K m2 kg-1 s-1"),
}

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


def channel_metadata_of(
    short: str, level: float | None, attrs: Mapping[str, Any]
) -> tuple[str, str]:
    """``(long_name, units)`` of a channel: the file variable's own ``long_name`` and ``units``
    attributes (units in CF spelling, ``m s**-1`` -> ``m s-1``), else ``ERA5_METADATA``, else
    the short name and "unknown"; a pressure level is added to the long name."""
    from sdkd_pipeline.data.cf import UNKNOWN_UNITS, cf_units

    known_name, known_units = ERA5_METADATA.get(short, (short, UNKNOWN_UNITS))
    long_name = str(attrs.get("long_name") or attrs.get("standard_name") or known_name).strip()
    units = cf_units(attrs.get("units"))
    if units == UNKNOWN_UNITS:
        units = known_units
    if level is not None:
        long_name = f"{long_name} at {int(level) if float(level).is_integer() else level} hPa"
    return long_name, units


def channel_name(short: str, level: float | None) -> str:
    """``t2m`` for a surface variable, ``z500`` for geopotential at 500 hPa."""
    if level is None:
        return short
    return f"{short}{int(level) if float(level).is_integer() else level}"


# ----------------------------------------------------------------------------- config


def _listed(value: Any) -> Any:
    """One value for a list of one (``variables: t2m``, ``levels: 500``); null stays null."""
    if value is None or isinstance(value, list | tuple):
        return value
    return [value]


def _years(value: Any) -> Any:
    """``{start, end}`` (inclusive) as the list of years; one year as a list of one. Anything
    else is left for the type check to refuse."""
    if isinstance(value, Mapping):
        start, end = value.get("start"), value.get("end")
        if (
            set(value) == {"start", "end"}
            and all(isinstance(y, int) and not isinstance(y, bool) for y in (start, end))
            and start <= end
        ):
            return list(range(start, end + 1))
        return value
    return _listed(value)


@dataclass
class WeatherBenchConfig:
    """Options of the WeatherBench / ERA5 readers (``weatherbench.source.<format>``).

    ``format`` picks the layout; ``root`` (wb1_netcdf) or ``path`` (wb2_zarr, era5) the input;
    ``variables`` long or short names (None = every variable in an era5 file); ``levels`` hPa
    for 3-D variables (None = every level in the file); ``years`` for wb1 (a list, or
    ``{start, end}`` inclusive); ``time_slice`` [start, end] ISO dates for wb2/era5.
    """

    format: str = param(choices=FORMATS)
    variables: list[str] | None = param(None, convert=_listed)
    levels: list[int] | None = param(None, convert=_listed)
    root: str = str(DEFAULT_RAW_DIR)
    path: str | None = None
    years: list[int] | None = param(
        None, convert=_years, note="a list of years, or {start: Y0, end: Y1} with Y0 <= Y1"
    )
    resolution: str = "5.625deg"
    time_slice: list[Any] | None = None
    progress: bool = True

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, param_path: str = "weatherbench"
    ) -> WeatherBenchConfig:
        """Build from the reader's options; errors name ``<param_path>.<key>``."""
        if isinstance(params, Mapping) and "format" not in params:
            raise ConfigError(
                f"{param_path}.format: required parameter missing (one of "
                f"{', '.join(repr(f) for f in FORMATS)})"
            )
        return from_params(cls, params, param_path)

    from_dict = from_params

    def validate(self, param_path: str) -> None:
        """What the types do not say: non-empty lists, and what each format needs."""
        for name in ("variables", "levels", "years"):
            if getattr(self, name) == []:
                raise ConfigError(f"{param_path}.{name}: an empty list (give at least one)")
        if self.time_slice is not None and len(self.time_slice) != 2:
            raise ConfigError(
                f"{param_path}.time_slice: expected [start, end], got {self.time_slice!r}"
            )
        if self.format == "wb1_netcdf":
            if self.variables is None:
                raise ConfigError(f"{param_path}.variables: required for format wb1_netcdf")
            if self.years is None:
                raise ConfigError(f"{param_path}.years: required for format wb1_netcdf")
        elif self.path is None:
            raise ConfigError(f"{param_path}.path: required for format {self.format}")
        if self.format == "wb2_zarr" and self.variables is None:
            raise ConfigError(f"{param_path}.variables: required for format wb2_zarr")
