"""CF metadata of a store's channels: the ``long_name`` and ``units`` of each physical field.

Every source writes two auxiliary coordinates along ``channel``, ``channel_long_name`` and
``channel_units`` (CF's ``long_name`` and ``units`` of the channel's physical values, before
normalization); plots and tables read them through ``channel_metadata`` and ``axis_label``.
A store written before they existed gets the channel's name and ``units`` "unknown".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LONG_NAME = "channel_long_name"
UNITS = "channel_units"
UNKNOWN_UNITS = "unknown"


def with_channel_metadata(
    ds: Any, long_names: Sequence[str] | Mapping[str, str], units: Sequence[str] | Mapping[str, str]
) -> Any:
    """``ds`` (an ``xarray.Dataset`` with a ``channel`` coordinate) with the two coordinates set;
    mappings are looked up by channel name, sequences taken in channel order."""
    channels = [str(c) for c in ds["channel"].values]

    def values(given: Sequence[str] | Mapping[str, str], what: str) -> list[str]:
        if isinstance(given, Mapping):
            missing = [c for c in channels if c not in given]
            if missing:
                raise ValueError(f"{what}: no entry for channel(s) {missing}")
            return [str(given[c]) for c in channels]
        out = [str(v) for v in given]
        if len(out) != len(channels):
            raise ValueError(f"{what}: {len(out)} values for {len(channels)} channels")
        return out

    ds = ds.assign_coords(
        {
            LONG_NAME: ("channel", values(long_names, LONG_NAME)),
            UNITS: ("channel", values(units, UNITS)),
        }
    )
    ds[LONG_NAME].attrs["long_name"] = "long name of the channel's physical field"
    ds[UNITS].attrs["long_name"] = "units of the channel's physical field (CF)"
    return ds


_UNIT_SPELLINGS = {"~": "1", "dimensionless": "1", "(0 - 1)": "1", "0-1": "1", "(0-1)": "1"}


def cf_units(text: Any) -> str:
    """A units string in CF / UDUNITS spelling: ``m s**-1`` (ECMWF, cfgrib) -> ``m s-1``,
    ``m^2 s^-2`` -> ``m2 s-2``, ``(0 - 1)`` or ``~`` -> ``1``; empty or missing -> "unknown"."""
    units = " ".join(str(text if text is not None else "").split())
    if not units:
        return UNKNOWN_UNITS
    if units in _UNIT_SPELLINGS:
        return _UNIT_SPELLINGS[units]
    return units.replace("**", "").replace("^", "")


def channel_metadata(ds: Any) -> dict[str, dict[str, str]]:
    """``{channel: {"long_name": ..., "units": ...}}`` of a store (or raw dataset)."""
    channels = [str(c) for c in ds["channel"].values]
    coords = getattr(ds, "coords", {})
    names = [str(v) for v in coords[LONG_NAME].values] if LONG_NAME in coords else channels
    units = (
        [str(v) for v in coords[UNITS].values]
        if UNITS in coords
        else [UNKNOWN_UNITS] * len(channels)
    )
    return {c: {"long_name": n, "units": u} for c, n, u in zip(channels, names, units, strict=True)}


def axis_label(meta: Mapping[str, str], quantity: str | None = None, power: int = 1) -> str:
    """An axis label such as ``"MSE of relative vorticity [(s-1)²]"``: ``quantity`` of the
    field named by ``meta`` (one entry of ``channel_metadata``), its units raised to
    ``power``."""
    name = meta.get("long_name") or "field"
    units = meta.get("units") or UNKNOWN_UNITS
    head = f"{quantity} of {name}" if quantity else name
    if units in ("1", ""):
        return head + " [dimensionless]"
    if units == UNKNOWN_UNITS:
        return head + " [units unknown]"
    if power == 1:
        return f"{head} [{units}]"
    # a bare symbol ("K", "m") takes the power directly; "s-1", "m s-1", "1/s" need brackets
    grouped = units if units.isalpha() else f"({units})"
    return f"{head} [{grouped}{ {2: '²', 3: '³'}.get(power, f'^{power}') }]"
