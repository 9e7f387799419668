"""Reader of FNO's published Navier-Stokes ``.mat`` files (MATLAB v5 and v7.3 / HDF5).

FNO's arrays are (n, x, y, t) (meshgrid 'ij'), so ``read_fno_mat`` transposes them to the raw
contract's (..., y, x); with that, the files and the generator describe the same physics
(mirroring x and y would flip the sign of the vorticity).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import xarray as xr

from sdkd_pipeline.config_utils import check_value
from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.sources.navier_stokes.config import (
    CHANNEL_LONG_NAMES,
    CHANNEL_UNITS,
    CHANNELS,
    DATASET_NAME,
    RAW_DIR,
)
from sdkd_pipeline.data.sources.navier_stokes.spectral import grid
from sdkd_pipeline.errors import DataError, MissingRawDataError

_VISCOSITY_IN_NAME = re.compile(r"V(\d+(?:\.\d+)?e-?\d+)", re.IGNORECASE)


def read_fno_mat(
    path: str | Path,
    viscosity: float | None = None,
    *,
    include_initial_state: bool = False,
    max_trajectories: int | None = None,
) -> xr.Dataset:
    """Read an FNO Navier-Stokes ``.mat`` file into the raw contract.

    Two layouts: scipy-readable MATLAB v5 (``NavierStokes_V1e-5_N1200_T20.mat``: ``a`` (N, 64,
    64), ``u`` (N, 64, 64, T), optional ``t``) and MATLAB v7.3 = HDF5 (``ns_V1e-3_N5000_T50.mat``,
    read with h5py; MATLAB stores column-major, so the axes come reversed). FNO's arrays are
    (n, x, y, t); they are transposed to (trajectory, time, channel, y, x). Times are ``t`` if
    the file has it, else 1..T (FNO records after every time unit). ``viscosity`` (> 0) is
    recorded in the attributes; ``None`` takes the value in the file name (``V1e-5``), and a
    file named otherwise records "unknown" (attribute ``viscosity_from`` says which).
    ``include_initial_state`` prepends ``a`` at t = 0.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingRawDataError(
            f"{path}: FNO Navier-Stokes file not found. Put FNO's .mat file (e.g. "
            f"NavierStokes_V1e-5_N1200_T20.mat or ns_V1e-3_N5000_T50.mat) in {RAW_DIR}/ and "
            "point navier_stokes.source.fno_mat.path at it, or use "
            "navier_stokes.source.kind: generate, which needs no file"
        )
    viscosity = check_value(
        "navier_stokes.source.fno_mat.viscosity",
        viscosity,
        float | None,
        {"gt": 0, "note": "null takes it from the file name, e.g. V1e-3"},
        lenient=True,
    )
    max_trajectories = check_value(
        "navier_stokes.source.fno_mat.max_trajectories",
        max_trajectories,
        int | None,
        {"ge": 1},
        lenient=True,
    )
    import h5py  # lazy: only the v7.3 layout needs it

    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError:
        is_hdf5 = False
    if is_hdf5:
        arrays, layout = _read_mat_v73(path, max_trajectories), "matlab_v7.3_hdf5"
    else:
        arrays, layout = _read_mat_v5(path, max_trajectories), "matlab_v5_scipy"
    u = arrays["u"]
    if u.ndim != 4:
        raise DataError(
            f"{path}: 'u' has {u.ndim} dims {tuple(u.shape)}; expected 4, (trajectory, x, y, "
            "time) as in FNO's files"
        )
    n_traj, nx, ny, nt = u.shape
    _check_finite(u, "u", path)
    fields_ = np.transpose(u, (0, 3, 2, 1))[:, :, None]  # (n, t, 1, y, x)
    if "t" in arrays and arrays["t"].size == nt:
        times = np.asarray(arrays["t"], dtype=np.float64).reshape(-1)
    else:
        times = np.arange(1, nt + 1, dtype=np.float64)
    if include_initial_state:
        a = arrays.get("a")
        if a is None:
            raise DataError(f"{path}: include_initial_state needs the variable 'a', not found")
        if a.shape != (n_traj, nx, ny):
            raise DataError(
                f"{path}: 'a' has shape {tuple(a.shape)}, expected {(n_traj, nx, ny)} to match 'u'"
            )
        _check_finite(a, "a", path)
        fields_ = np.concatenate([np.transpose(a, (0, 2, 1))[:, None, None], fields_], axis=1)
        times = np.concatenate([[0.0], times])
    viscosity, viscosity_from = _viscosity(path, viscosity)
    attrs = {
        "file": str(path),
        "layout": layout,
        "viscosity": "unknown" if viscosity is None else float(viscosity),
        "viscosity_from": viscosity_from,
        "include_initial_state": int(include_initial_state),
        "axes_in_file": "(n, x, y, t) after reversing MATLAB v7.3 axes"
        if is_hdf5
        else "(n, x, y, t)",
    }
    return make_raw(
        fields_.astype(np.float32, copy=False),
        dataset=DATASET_NAME,
        source=str(path),
        channels=CHANNELS,
        time=times,
        y=grid(ny),
        x=grid(nx),
        attrs=attrs,
        long_names=CHANNEL_LONG_NAMES,
        units=CHANNEL_UNITS,
    )


def _viscosity(path: Path, given: float | None) -> tuple[float | None, str]:
    """The viscosity to record and where it came from: the parameter, the ``V1e-x`` in the
    file name, or nowhere (``None``, "unknown")."""
    if given is not None:
        return float(given), "parameter"
    match = _VISCOSITY_IN_NAME.search(path.name)
    return (float(match.group(1)), "file name") if match else (None, "unknown")


def _check_finite(array: np.ndarray, name: str, path: Path) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: {int(bad.sum())} NaN/Inf value(s) in '{name}' (first at index {first})"
        )


def _read_mat_v5(path: Path, max_trajectories: int | None) -> dict[str, np.ndarray]:
    import scipy.io

    try:
        contents = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, MatReadError...
        raise DataError(
            f"{path}: not a readable MATLAB file (truncated or corrupt?): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    names = sorted(k for k in contents if not k.startswith("__"))
    if "u" not in contents:
        raise DataError(f"{path}: no variable 'u' (found {names}); expected FNO's (N,64,64,T) 'u'")
    arrays = {k: np.asarray(contents[k]) for k in ("u", "a", "t") if k in contents}
    if max_trajectories is not None:
        for key in ("u", "a"):
            if key in arrays and arrays[key].ndim >= 1:
                arrays[key] = arrays[key][:max_trajectories]
    return arrays


def _read_mat_v73(path: Path, max_trajectories: int | None) -> dict[str, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names = sorted(f.keys())
            if "u" not in f or not isinstance(f["u"], h5py.Dataset):
                raise DataError(
                    f"{path}: no variable 'u' (found {names}); expected FNO's 'u' stored as "
                    "(T, 64, 64, N) in MATLAB v7.3"
                )
            arrays = {}
            for key in ("u", "a", "t"):
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    continue
                dset = f[key]
                # MATLAB writes column-major: the trajectory axis is the LAST one on disk, so a
                # subset is a slice of it, read before reversing the axes.
                if max_trajectories is not None and key in ("u", "a") and dset.ndim >= 2:
                    data = dset[..., :max_trajectories]
                else:
                    data = dset[()]
                arrays[key] = np.transpose(np.asarray(data))
    except DataError:
        raise
    except Exception as exc:  # h5py raises OSError/KeyError/RuntimeError on damaged files
        raise DataError(
            f"{path}: not a readable MATLAB v7.3 (HDF5) file (truncated or corrupt?): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    return arrays
