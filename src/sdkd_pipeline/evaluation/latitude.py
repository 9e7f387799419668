"""WeatherBench's latitude weights of a lat/lon grid's rows (the latitude-weighted MSE and
RMSE of ``metrics``, whose docstring defines them). Imports only numpy and torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sdkd_pipeline.errors import DataError

__all__ = ["latitude_weights"]


def latitude_weights(latitudes: Any, height: int | None = None) -> np.ndarray:
    """WeatherBench's latitude weights of the grid rows: float64 ``(H,)``,
    ``cos(lat_h) / mean_h' cos(lat_h')``, which average to 1.

    ``latitudes`` are in degrees, one per row (``height`` rows when given). A ``DataError``
    says what is wrong with them: not numbers, not 1-D, not one per row, NaN/Inf, outside
    [-90, 90], or every row at a pole (no weight left to normalize by).
    """
    try:
        lat = np.asarray(
            latitudes.detach().cpu() if isinstance(latitudes, torch.Tensor) else latitudes,
            dtype=np.float64,
        )
    except (TypeError, ValueError) as exc:
        raise DataError(f"latitudes must be numbers (degrees), got {latitudes!r}") from exc
    if lat.ndim != 1 or lat.size == 0:
        raise DataError(f"latitudes must be 1-D, one latitude per grid row, got shape {lat.shape}")
    if height is not None and lat.size != height:
        raise DataError(
            f"latitudes must give one latitude per grid row (H = {height}), got {lat.size}"
        )
    finite = np.isfinite(lat)
    if not finite.all():
        raise DataError(
            f"latitudes contain {int((~finite).sum())} NaN/Inf value(s) out of {lat.size} "
            f"(rows {np.flatnonzero(~finite)[:5].tolist()}...)"
        )
    outside = np.abs(lat) > 90
    if outside.any():
        raise DataError(
            f"latitudes must lie within [-90, 90] degrees, got {int(outside.sum())} outside "
            f"(from {lat.min():g} to {lat.max():g}; radians or a longitude axis?)"
        )
    cos = np.cos(np.deg2rad(lat))
    if not cos.mean() > 1e-12:
        raise DataError("latitudes are all at a pole (+-90): every row has weight cos(lat) = 0")
    return cos / cos.mean()
