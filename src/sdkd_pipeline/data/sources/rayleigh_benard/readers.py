"""The Well's ``rayleigh_benard`` files: their names and URLs, and the HDF5 reader.

``read_the_well_rbc`` reads The Well's ``rayleigh_benard`` HDF5 files (x: 512 horizontal,
y: 128 vertical, kept as stored; attribute ``grid_y`` says whether they are uniform) into the
raw contract, in the generator's channel order, and ``download_the_well_rbc`` fetches them.
The server's listing cannot be read offline, so the file names are built from the dataset's
published parameter grid (35 files per split, one per (Rayleigh, Prandtl) pair); pass ``files``
to choose a subset or to override the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sdkd_pipeline.config_utils import check_value
from sdkd_pipeline.data.cluster import sources_client
from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.sources.rayleigh_benard.config import (
    CHANNEL_LONG_NAMES,
    CHANNEL_UNITS,
    CHANNELS,
    DATASET_NAME,
    RAW_DIR,
    THE_WELL_PARAM_PREFIX,
    describe_vertical_grid,
)
from sdkd_pipeline.errors import ConfigError, DataError, MissingRawDataError

# --------------------------------------------------------------------------------------------
# The Well: file names, URLs
# --------------------------------------------------------------------------------------------

THE_WELL_BASE_URL = "https://sdsc-users.flatironinstitute.org/~polymathic/data/the_well"
THE_WELL_SPLITS = ("train", "valid", "test")
# The published parameter grid; every split holds one file per (Rayleigh, Prandtl) pair, with
# the same names (different trajectories), so splits must live in separate folders.
THE_WELL_RBC_RAYLEIGH = ("1e6", "1e7", "1e8", "1e9", "1e10")
THE_WELL_RBC_PRANDTL = ("1e-1", "2e-1", "5e-1", "1", "2", "5", "10")
# The fields the files hold, in the channel order of both RBC sources (``config.CHANNELS``).
THE_WELL_RBC_FIELDS = CHANNELS


def the_well_rbc_file_names() -> list[str]:
    """The 35 file names of one split of The Well's ``rayleigh_benard`` (built, not listed)."""
    return [
        f"rayleigh_benard_Rayleigh_{ra}_Prandtl_{pr}.hdf5"
        for ra in THE_WELL_RBC_RAYLEIGH
        for pr in THE_WELL_RBC_PRANDTL
    ]


def the_well_rbc_urls(
    split: str = "train",
    files: Sequence[str] | None = None,
    base_url: str = THE_WELL_BASE_URL,
) -> list[str]:
    """URLs ``{base_url}/datasets/rayleigh_benard/data/{split}/{file}`` (The Well's layout).

    ``files`` defaults to all 35 files of the grid (``the_well_rbc_file_names``); each is ~8 GB
    in ``train`` (40 trajectories x 200 steps x 4 fields x 512 x 128 float32).
    """
    if split not in THE_WELL_SPLITS:
        raise ConfigError(
            f"{THE_WELL_PARAM_PREFIX}.split = {split!r}: must be one of {THE_WELL_SPLITS}"
        )
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{THE_WELL_PARAM_PREFIX}.base_url = {base_url!r}: must be an http(s) URL"
        )
    names = the_well_rbc_file_names() if files is None else list(files)
    if not names:
        raise ConfigError(f"{THE_WELL_PARAM_PREFIX}.files: empty list, name at least one file")
    for name in names:
        if (
            not isinstance(name, str)
            or "/" in name
            or "\\" in name
            or name.startswith(".")
            or not name.endswith((".hdf5", ".h5"))
        ):
            raise ConfigError(
                f"{THE_WELL_PARAM_PREFIX}.files: {name!r} is not a plain .hdf5/.h5 file name "
                f"(e.g. {the_well_rbc_file_names()[0]!r})"
            )
    root = base_url.rstrip("/")
    return [f"{root}/datasets/{DATASET_NAME}/data/{split}/{name}" for name in names]


# --------------------------------------------------------------------------------------------
# The Well: reader
# --------------------------------------------------------------------------------------------


def _missing_well_files(what: str) -> MissingRawDataError:
    return MissingRawDataError(
        f"{what}: put The Well's rayleigh_benard HDF5 files "
        f"({the_well_rbc_file_names()[0]}, ...) in {RAW_DIR}/ (any sub-folders, e.g. "
        f"{RAW_DIR}/train/), or download them with "
        f"`python -m sdkd_pipeline.data.sources.rayleigh_benard --split train "
        f"--files {the_well_rbc_file_names()[0]}` (~8 GB per train file); "
        f"or set {DATASET_NAME}.source.kind: generate_free_slip to use the built-in solver"
    )


def _expand_well_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise _missing_well_files(f"{THE_WELL_PARAM_PREFIX}.paths is empty")
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix in (".hdf5", ".h5") and q.is_file())
            if not found:
                raise _missing_well_files(f"{p} holds no .hdf5/.h5 file")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise _missing_well_files(f"{p} does not exist")
    return files


@dataclass
class _WellFileInfo:
    path: Path
    n_traj: int
    time: np.ndarray
    x: np.ndarray
    y: np.ndarray
    rayleigh: float
    prandtl: float


def _scalar(h5: Any, name: str) -> float:
    """Rayleigh / Prandtl from ``scalars/<name>``, else the root attribute, else NaN."""
    if "scalars" in h5 and name in h5["scalars"]:
        return float(np.asarray(h5["scalars"][name][()]).reshape(-1)[0])
    if name in h5.attrs:
        return float(np.asarray(h5.attrs[name]).reshape(-1)[0])
    return float("nan")


def _inspect_well_file(path: Path, fields_wanted: Sequence[str]) -> _WellFileInfo:
    """Open one file and check the layout; DataError naming the file if anything is off."""
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(
            f"{path}: not a readable HDF5 file ({exc}); a truncated or corrupt download? "
            "Delete it and download it again"
        ) from None
    with h5:
        for group in ("dimensions/time", "dimensions/x", "dimensions/y"):
            if group not in h5:
                raise DataError(f"{path}: missing '{group}' (not a The Well file?)")
        spatial = h5["dimensions"].attrs.get("spatial_dims")
        if spatial is not None:
            names = [s.decode() if isinstance(s, bytes) else str(s) for s in spatial]
            if names != ["x", "y"]:
                raise DataError(f"{path}: spatial_dims {names}, expected ['x', 'y']")
        time = np.asarray(h5["dimensions/time"][()], dtype=np.float64)
        if time.ndim == 2:  # sample-varying time: every trajectory must share it
            if not np.allclose(time, time[:1]):
                raise DataError(f"{path}: trajectories have different time grids")
            time = time[0]
        x = np.asarray(h5["dimensions/x"][()], dtype=np.float64).reshape(-1)
        y = np.asarray(h5["dimensions/y"][()], dtype=np.float64).reshape(-1)
        n_t, nx, ny = time.size, x.size, y.size
        n_traj = None
        for name in fields_wanted:
            key = "t1_fields/velocity" if name.startswith("velocity_") else f"t0_fields/{name}"
            if key not in h5:
                raise DataError(f"{path}: missing '{key}' (needed for field '{name}')")
            ds = h5[key]
            tail = (nx, ny, 2) if key.startswith("t1") else (nx, ny)
            if ds.ndim != 2 + len(tail) or tuple(ds.shape[1:]) != (n_t, *tail):
                raise DataError(
                    f"{path}: '{key}' has shape {ds.shape}, expected "
                    f"(n_trajectories, {n_t}, {', '.join(map(str, tail))}) from dimensions "
                    "time, x, y"
                )
            if n_traj is None:
                n_traj = int(ds.shape[0])
            elif ds.shape[0] != n_traj:
                raise DataError(f"{path}: fields disagree on the number of trajectories")
        if not n_traj:
            raise DataError(f"{path}: no trajectories")
        for name, values in (("time", time), ("x", x), ("y", y)):
            if not np.isfinite(values).all():
                raise DataError(f"{path}: NaN/Inf in dimensions/{name}")
        return _WellFileInfo(
            path, n_traj, time, x, y, _scalar(h5, "Rayleigh"), _scalar(h5, "Prandtl")
        )


def _read_well_block(
    info: _WellFileInfo, fields_wanted: Sequence[str], traj: slice, time: slice
) -> np.ndarray:
    """(traj, time, channel, y, x) float32 from one file; the file stores (..., x, y)."""
    import h5py

    try:
        with h5py.File(info.path, "r") as h5:
            parts = []
            velocity = None
            for name in fields_wanted:
                if name.startswith("velocity_"):
                    if velocity is None:
                        velocity = h5["t1_fields/velocity"][traj, time]
                    parts.append(velocity[..., 0 if name == "velocity_x" else 1])
                else:
                    parts.append(h5[f"t0_fields/{name}"][traj, time])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(
            f"{info.path}: reading failed ({exc}); a truncated or corrupt file? "
            "Delete it and download it again"
        ) from None
    block = np.stack(parts, axis=2).astype(np.float32, copy=False)
    return np.ascontiguousarray(block.transpose(0, 1, 2, 4, 3))  # (.., x, y) -> (.., y, x)


class _WellLazyArray:
    """Array-like over several files for ``dask.array.from_array``; opens files per read."""

    def __init__(
        self, infos: list[_WellFileInfo], fields_wanted: Sequence[str], n_per_file: list[int]
    ) -> None:
        self.infos, self.fields_wanted, self.n_per_file = infos, list(fields_wanted), n_per_file
        self.offsets = np.cumsum([0] + n_per_file)
        first = infos[0]
        self.shape = (
            int(self.offsets[-1]),
            first.time.size,
            len(fields_wanted),
            first.y.size,
            first.x.size,
        )
        self.dtype = np.dtype(np.float32)
        self.ndim = 5

    def __getitem__(self, key: tuple) -> np.ndarray:
        key = key + (slice(None),) * (5 - len(key))
        trajs = range(*key[0].indices(self.shape[0]))
        t_sl = key[1]
        blocks = []
        for f, info in enumerate(self.infos):
            lo, hi = self.offsets[f], self.offsets[f + 1]
            local = [i - lo for i in trajs if lo <= i < hi]
            if local:
                sl = slice(local[0], local[-1] + 1)
                blocks.append(_read_well_block(info, self.fields_wanted, sl, t_sl))
        out = np.concatenate(blocks, axis=0)
        return out[:, :, key[2], key[3], key[4]]


def _check_same_grids(infos: list[_WellFileInfo]) -> None:
    """``DataError`` unless every file shares the first one's time, x and y grids."""
    ref = infos[0]
    for info in infos[1:]:
        for name in ("time", "x", "y"):
            a, b = getattr(ref, name), getattr(info, name)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-6, atol=1e-9):
                raise DataError(
                    f"{info.path}: its '{name}' grid ({b.size} values) differs from that of "
                    f"{ref.path} ({a.size} values); read files of one resolution and time grid "
                    "together"
                )


def _read_well_eager(
    infos: list[_WellFileInfo], fields_wanted: Sequence[str], n_per_file: list[int]
) -> np.ndarray:
    """Every kept trajectory in memory, (trajectory, time, channel, y, x), checked finite."""
    ref = infos[0]
    data = np.empty(
        (sum(n_per_file), ref.time.size, len(fields_wanted), ref.y.size, ref.x.size),
        dtype=np.float32,
    )
    start = 0
    for info, n in zip(infos, n_per_file, strict=True):
        for i in range(n):  # one trajectory at a time keeps peak memory near the output
            block = _read_well_block(info, fields_wanted, slice(i, i + 1), slice(None))
            if not np.isfinite(block).all():
                bad = [
                    f for c, f in enumerate(fields_wanted) if not np.isfinite(block[:, :, c]).all()
                ]
                raise DataError(f"{info.path}: NaN/Inf in trajectory {i}, field(s) {bad}")
            data[start + i] = block[0]
        start += n
    return data


def read_the_well_rbc(
    paths: str | Path | Sequence[str | Path] = RAW_DIR,
    fields: Sequence[str] = THE_WELL_RBC_FIELDS,
    *,
    trajectories_per_file: int | None = None,
    lazy: bool | None = None,
) -> xr.Dataset:
    """Read The Well ``rayleigh_benard`` HDF5 files into the raw contract.

    ``paths``: files and/or folders (searched recursively for .hdf5/.h5). Files are joined along
    trajectory; they must share time, x and y, else ``DataError``. Each file stores
    ``t0_fields/{buoyancy,pressure}`` as (n_traj, n_t, x=512, y=128) and ``t1_fields/velocity``
    as (..., 2) with components (x, y); they are transposed to (y, x) so that rows are the
    vertical. The y coordinate keeps the file's values; attribute ``grid_y`` says whether they
    are uniform. Channels come in the generator's order (``config.CHANNELS``: buoyancy,
    velocity_x, velocity_y, pressure) whatever the order of ``fields``.
    ``trajectories_per_file`` keeps the first n trajectories of each file (a train file holds
    ~8 GB); ``lazy`` returns a dask-backed dataset read on demand, block by block (needs dask;
    ``None``: lazy when sources run on a Dask cluster, ``data/cluster.py``, so the workers read
    the files).
    Per-trajectory coordinates: ``rayleigh``, ``prandtl``, ``source_file``, ``file_trajectory``.
    """
    given = [fields] if isinstance(fields, str) else list(fields)
    unknown = [f for f in given if f not in THE_WELL_RBC_FIELDS]
    if not given or unknown or len(set(given)) != len(given):
        raise ConfigError(
            f"{THE_WELL_PARAM_PREFIX}.fields = {given!r}: choose distinct names "
            f"among {list(THE_WELL_RBC_FIELDS)}"
        )
    fields_wanted = [f for f in THE_WELL_RBC_FIELDS if f in given]
    trajectories_per_file = check_value(
        f"{THE_WELL_PARAM_PREFIX}.trajectories_per_file",
        trajectories_per_file,
        int | None,
        {"ge": 1},
        lenient=True,
    )
    files = _expand_well_paths(paths)
    infos = [_inspect_well_file(p, fields_wanted) for p in files]
    ref = infos[0]
    _check_same_grids(infos)
    n_per_file = [
        info.n_traj if trajectories_per_file is None else min(info.n_traj, trajectories_per_file)
        for info in infos
    ]
    if lazy is None:
        lazy = sources_client() is not None
    if lazy:
        import dask.array as da

        lazy_array = _WellLazyArray(infos, fields_wanted, n_per_file)
        data = da.from_array(
            lazy_array,
            chunks=(1, min(20, ref.time.size), len(fields_wanted), -1, -1),
            asarray=True,
            fancy=False,
        )
    else:
        data = _read_well_eager(infos, fields_wanted, n_per_file)

    traj_file = np.concatenate(
        [[str(info.path.name)] * n for info, n in zip(infos, n_per_file, strict=True)]
    )
    extra = {
        "rayleigh": ("trajectory", np.repeat([i.rayleigh for i in infos], n_per_file)),
        "prandtl": ("trajectory", np.repeat([i.prandtl for i in infos], n_per_file)),
        "source_file": ("trajectory", traj_file.astype(str)),
        "file_trajectory": ("trajectory", np.concatenate([np.arange(n) for n in n_per_file])),
    }
    source = str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} files)"
    return make_raw(
        data,
        dataset=DATASET_NAME,
        source=source,
        channels=fields_wanted,
        time=ref.time,
        y=ref.y,
        x=ref.x,
        extra_coords=extra,
        attrs={
            "origin": "The Well rayleigh_benard (Dedalus, no-slip walls)",
            "files": ", ".join(str(p) for p in files),
            "grid_y": describe_vertical_grid(ref.y) + " (the file's dimensions/y, as stored)",
            "buoyancy_definition": "The Well's buoyancy b, b(z=0)=delta_b0, b(z=1)=0",
        },
        long_names=CHANNEL_LONG_NAMES,
        units=CHANNEL_UNITS,
    )
