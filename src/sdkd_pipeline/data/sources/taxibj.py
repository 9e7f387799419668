"""TaxiBJ and TaxiBJ+ taxi inflow/outflow grids as raw datasets.

TaxiBJ (dataset ``taxibj``): DeepST's ``BJ{13,14,15,16}_M32x32_T30_InOut.h5`` files (Zhang et
al., AAAI 2017). Each holds ``data`` (N, 2, 32, 32), channel 0 the inflow and 1 the outflow of
each cell during a 30-minute slot, and ``date`` (N,) byte strings ``b'YYYYMMDDSS'`` where SS is
the slot of the day, 01..48 (slot 01 starts at 00:00). The four files are concatenated into
one series sorted by time. The series has gaps (missing slots, whole missing days, and months
between the four collection periods): the ``segment`` coordinate starts a new id after every
gap so that no window spans one. Unsorted input is sorted; a time stamp present twice with
identical grids is kept once (counted in ``n_duplicates_dropped``); present twice with different
grids it is a :class:`DataError` naming the file(s). The holiday and meteorology files are not
read.

TaxiBJ+ (dataset ``taxibj_plus``): the fine-grained 128x128 Beijing grid (Liang et al., WWW
2021) as the SDKD authors' group distributes it, ``X_c.npy`` (inputs) and ``Y.npy`` (targets),
each (N, 24, 128, 128) = 12 frames x 2 channels. The files come without a reader, so the
interleaving of the 24 planes is our reading: frame-major, ``(t0 in, t0 out, t1 in, ...)``, i.e.
``reshape(N, 12, 2, H, W)``, the layout numpy produces when (N, 12, 2, H, W) sequences are
flattened for a channels-first CNN; ``channel_layout: channel_major`` reads ``(2, 12)`` instead.
Each sample becomes one trajectory of 24 frames (12 inputs then 12 targets); ``time`` is the
frame index. No public download is known: the user supplies the files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sdkd_pipeline.config_utils import from_params, param
from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.errors import ConfigError, DataError, MissingRawDataError

CHANNELS = ["inflow", "outflow"]
# CF metadata (data/cf.py): counts of taxis, so units "1"; TaxiBJ's slots are 30 minutes, and
# TaxiBJ+ comes without a stated slot length.
TAXIBJ_LONG_NAMES = [
    "taxis entering the cell per 30-minute slot (inflow count)",
    "taxis leaving the cell per 30-minute slot (outflow count)",
]
TAXIBJ_PLUS_LONG_NAMES = [
    "taxis entering the cell per time slot (inflow count)",
    "taxis leaving the cell per time slot (outflow count)",
]
COUNT_UNITS = ["1", "1"]
SLOTS_PER_DAY = 48
SLOT = np.timedelta64(30, "m")
TAXIBJ_FILE_GLOB = "BJ*_M32x32_T30_InOut.h5"
DEFAULT_TAXIBJ_DIR = Path("data/01_raw/taxibj")
DEFAULT_TAXIBJ_PLUS_DIR = Path("data/01_raw/taxibj_plus")
# The SDKD group's split of the 4444 TaxiBJ+ samples (train/val/test, in file order).
TAXIBJ_PLUS_SPLIT_COUNTS = {"train": 3555, "val": 444, "test": 445}
CHANNEL_LAYOUTS = ("frame_major", "channel_major")
_DATE_PATTERN = re.compile(rb"^\d{10}$")


# ----------------------------------------------------------------------------- TaxiBJ


def parse_taxibj_dates(raw_dates: Sequence[bytes | str], origin: str | Path) -> np.ndarray:
    """``b'2013070101'`` -> 2013-07-01T00:00 (slot SS starts at (SS-1) * 30 min)."""
    encoded = [d.encode() if isinstance(d, str) else bytes(d) for d in raw_dates]
    bad = next((d for d in encoded if not _DATE_PATTERN.match(d)), None)
    if bad is not None:
        raise DataError(
            f"{origin}: 'date' entry {bad!r} is not of the form YYYYMMDDSS "
            "(date then 30-minute slot 01..48)"
        )
    slots = np.array([int(d[8:10]) for d in encoded], dtype=np.int64)
    out_of_range = np.flatnonzero((slots < 1) | (slots > SLOTS_PER_DAY))
    if out_of_range.size:
        first = encoded[out_of_range[0]]
        raise DataError(
            f"{origin}: {out_of_range.size} 'date' entries have a slot outside 01..48, "
            f"first {first!r} (entry {out_of_range[0]})"
        )
    day_strings = [f"{d[:4].decode()}-{d[4:6].decode()}-{d[6:8].decode()}" for d in encoded]
    try:
        days = np.array(day_strings, dtype="datetime64[D]")
    except ValueError as exc:
        raise DataError(f"{origin}: a 'date' entry is not a calendar date ({exc})") from exc
    return days.astype("datetime64[ns]") + (slots - 1) * SLOT.astype("timedelta64[ns]")


def _read_taxibj_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in ("data", "date") if k not in h5]
            if missing:
                raise DataError(
                    f"{path}: no {missing} dataset; a DeepST TaxiBJ file holds 'data' "
                    f"(N, 2, 32, 32) and 'date' (N,), this one holds {sorted(h5.keys())}"
                )
            data_set, date_set = h5["data"], h5["date"]
            if data_set.ndim != 4 or data_set.shape[1] != len(CHANNELS):
                raise DataError(
                    f"{path}: 'data' has shape {data_set.shape}, expected (N, 2, H, W) "
                    "(inflow, outflow)"
                )
            if date_set.shape != (data_set.shape[0],):
                raise DataError(
                    f"{path}: 'date' has shape {date_set.shape} but 'data' has "
                    f"{data_set.shape[0]} time slots"
                )
            data = np.asarray(data_set[()], dtype=np.float32)
            raw_dates = date_set[()]
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any h5py failure means an unreadable file
        raise DataError(
            f"{path}: cannot be read as HDF5 ({type(exc).__name__}: {exc}); the file is "
            "truncated or corrupt"
        ) from exc
    times = parse_taxibj_dates(raw_dates, path)
    if not np.isfinite(data).all():
        bad = int(np.argwhere(~np.isfinite(data).all(axis=(1, 2, 3)))[0, 0])
        raise DataError(f"{path}: NaN/Inf in 'data' (first at slot {raw_dates[bad]!r})")
    return times, data


def read_taxibj(paths: str | Path | Sequence[str | Path]) -> xr.Dataset:
    """Read DeepST TaxiBJ files (or a folder holding them) into one segmented series."""
    files = _resolve_taxibj_files(paths)
    times_parts, data_parts, origin_parts = [], [], []
    grid_shape = None
    for index, path in enumerate(files):
        times, data = _read_taxibj_file(path)
        if grid_shape is None:
            grid_shape = data.shape[2:]
        elif data.shape[2:] != grid_shape:
            raise DataError(f"{path}: grid {data.shape[2:]} differs from {files[0]}'s {grid_shape}")
        times_parts.append(times)
        data_parts.append(data)
        origin_parts.append(np.full(times.size, index))
    times = np.concatenate(times_parts)
    data = np.concatenate(data_parts)
    origin = np.concatenate(origin_parts)

    order = np.argsort(times, kind="stable")
    was_sorted = bool(np.all(order == np.arange(order.size)))
    times, data, origin = times[order], data[order], origin[order]
    keep = np.ones(times.size, dtype=bool)
    repeated = np.flatnonzero(np.diff(times) == np.timedelta64(0, "ns")) + 1
    for i in repeated:
        # Compare with the kept entry of the same time stamp (runs of more than two included).
        first = i - 1
        while not keep[first]:
            first -= 1
        if not np.array_equal(data[first], data[i]):
            where = sorted({str(files[origin[first]]), str(files[origin[i]])})
            raise DataError(
                f"{' and '.join(where)}: time slot "
                f"{np.datetime_as_string(times[i], unit='m')} appears twice with different "
                "flows; remove one of the entries"
            )
        keep[i] = False
    times, data = times[keep], data[keep]

    steps = np.diff(times)
    segment = np.concatenate([[0], np.cumsum(steps != SLOT.astype("timedelta64[ns]"))])
    missing_slots = int(((steps // SLOT.astype("timedelta64[ns]")) - 1).clip(min=0).sum())
    n_y, n_x = data.shape[2:]
    return make_raw(
        data[np.newaxis],
        dataset="taxibj",
        source=str(files[0].parent),
        channels=CHANNELS,
        time=times,
        y=np.arange(n_y, dtype=np.float64),
        x=np.arange(n_x, dtype=np.float64),
        segment=segment,
        attrs={
            "files": ";".join(str(p) for p in files),
            "time_step_seconds": 1800.0,
            "n_segments": int(segment[-1]) + 1,
            "n_missing_slots": missing_slots,
            "n_duplicates_dropped": int((~keep).sum()),
            "input_was_sorted": int(was_sorted),
            "channel_note": "data[:, 0] inflow, data[:, 1] outflow, per DeepST",
        },
        long_names=TAXIBJ_LONG_NAMES,
        units=COUNT_UNITS,
    )


def _resolve_taxibj_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(paths, str | Path):
        folder = Path(paths)
        if folder.is_dir() or folder.suffix.lower() not in {".h5", ".hdf5"}:
            found = sorted(folder.glob(TAXIBJ_FILE_GLOB)) if folder.is_dir() else []
            if not found:
                raise MissingRawDataError(_taxibj_missing_message(folder))
            return found
        paths = [folder]
    files = [Path(p) for p in paths]
    if not files:
        raise MissingRawDataError(_taxibj_missing_message(DEFAULT_TAXIBJ_DIR))
    absent = [p for p in files if not p.is_file()]
    if absent:
        raise MissingRawDataError(
            f"TaxiBJ file(s) not found: {[str(p) for p in absent]}. "
            + _taxibj_missing_message(absent[0].parent)
        )
    return files


def _taxibj_missing_message(folder: Path) -> str:
    return (
        f"No TaxiBJ files in {folder}. The user supplies the files: put "
        f"{TAXIBJ_FILE_GLOB} (DeepST's BJ13..BJ16 files) into {DEFAULT_TAXIBJ_DIR}/ "
        "(or set taxibj.dir). The holiday and meteorology files are not needed."
    )


# ----------------------------------------------------------------------------- TaxiBJ+


def read_taxibj_plus(
    source: str | Path | Sequence[str | Path],
    *,
    channel_layout: str = "frame_major",
    lazy: bool | None = None,
) -> xr.Dataset:
    """Read ``X_c.npy`` and ``Y.npy`` (a folder holding both, or the two paths in that order).

    ``lazy`` (default: when dask is importable) returns a dask-backed dataset whose blocks
    (~64 MB) are read from the memory-mapped files by their tasks, so the ~7 GB per file of the
    full set is never copied into memory at once, and a cluster's workers read the files.
    """
    if channel_layout not in CHANNEL_LAYOUTS:
        raise ConfigError(
            f"taxibj_plus.channel_layout: {channel_layout!r} is not one of {list(CHANNEL_LAYOUTS)}"
        )
    x_path, y_path = _resolve_taxibj_plus_files(source)
    inputs, targets = _load_npy(x_path), _load_npy(y_path)
    for path, arr in ((x_path, inputs), (y_path, targets)):
        if arr.ndim != 4 or arr.shape[1] % len(CHANNELS) or arr.shape[1] == 0:
            raise DataError(
                f"{path}: shape {arr.shape}, expected (N, frames*2, H, W), e.g. (N, 24, 128, 128)"
            )
        if not np.issubdtype(arr.dtype, np.number):
            raise DataError(f"{path}: dtype {arr.dtype} is not numeric")
    if inputs.shape[0] != targets.shape[0]:
        raise DataError(
            f"{x_path} has {inputs.shape[0]} samples but {y_path} has {targets.shape[0]}; "
            "they must pair one to one"
        )
    if inputs.shape[2:] != targets.shape[2:]:
        raise DataError(
            f"{x_path} grid {inputs.shape[2:]} differs from {y_path} grid {targets.shape[2:]}"
        )
    if inputs.shape[1] != targets.shape[1]:
        # the distributed set pairs 12 input frames with 12 target frames (24 planes each); a
        # short file would otherwise surface later as a window that does not fit the series
        n_x, n_t = inputs.shape[1], targets.shape[1]
        raise DataError(
            f"{y_path}: {n_t} planes ({n_t // len(CHANNELS)} frames of {len(CHANNELS)} "
            f"channels) but {x_path} has {n_x} ({n_x // len(CHANNELS)} frames); TaxiBJ+ pairs "
            "as many target frames as input frames (24 planes each): the file is incomplete "
            "or not the TaxiBJ+ target file"
        )
    x_frames = _split_frames(inputs, channel_layout)
    y_frames = _split_frames(targets, channel_layout)
    if lazy is None:
        lazy = _dask_available()
    if lazy:
        fields = _lazy_fields([(x_path, x_frames), (y_path, y_frames)], channel_layout)
    else:
        fields = np.concatenate([x_frames, y_frames], axis=1)
    n, n_in = inputs.shape[0], x_frames.shape[1]
    n_out = y_frames.shape[1]
    n_y, n_x = inputs.shape[2:]
    attrs = {
        "files": f"{x_path};{y_path}",
        "n_input_frames": n_in,
        "n_output_frames": n_out,
        "channel_layout": channel_layout,
        "time_note": "frame index within a sample: inputs 0..T_in-1 then targets",
    }
    if n == sum(TAXIBJ_PLUS_SPLIT_COUNTS.values()):
        # The group's split, trajectories in file order (the split code uses counts).
        attrs.update({f"split_count_{k}": v for k, v in TAXIBJ_PLUS_SPLIT_COUNTS.items()})
    return make_raw(
        fields,
        dataset="taxibj_plus",
        source=str(x_path.parent),
        channels=CHANNELS,
        time=np.arange(n_in + n_out, dtype=np.float64),
        y=np.arange(n_y, dtype=np.float64),
        x=np.arange(n_x, dtype=np.float64),
        attrs=attrs,
        long_names=TAXIBJ_PLUS_LONG_NAMES,
        units=COUNT_UNITS,
    )


def _split_frames(arr: np.ndarray, channel_layout: str) -> np.ndarray:
    """(N, frames*2, H, W) -> (N, frames, 2, H, W), a view (no copy of a memory map)."""
    n, planes, n_y, n_x = arr.shape
    n_frames = planes // len(CHANNELS)
    if channel_layout == "frame_major":
        return arr.reshape(n, n_frames, len(CHANNELS), n_y, n_x)
    return arr.reshape(n, len(CHANNELS), n_frames, n_y, n_x).transpose(0, 2, 1, 3, 4)


def _lazy_fields(files: list[tuple[Path, np.ndarray]], channel_layout: str) -> Any:
    """The inputs' then the targets' frames as one dask array, joined along time, in blocks
    of ~64 MB read by tasks that map the file themselves: a graph (shipped to a cluster)
    holds file names and sample ranges, not the memory-mapped data."""
    import dask.array as da

    from sdkd_pipeline.data.cluster import blocks_array

    n = files[0][1].shape[0]
    step = max(1, 64 * 1024**2 // max(1, files[0][1][0].nbytes))
    spans = [(a, min(a + step, n)) for a in range(0, n, step)]
    return da.concatenate(
        [
            blocks_array(
                _read_frames,
                [(str(path), a, b, channel_layout) for a, b in spans],
                [(b - a, *frames.shape[1:]) for a, b in spans],
            )
            for path, frames in files
        ],
        axis=1,
    )


def _read_frames(path: str, start: int, stop: int, channel_layout: str) -> np.ndarray:
    """Samples ``start:stop`` of one file as float32 (n, frames, 2, H, W) (a lazy block)."""
    block = _split_frames(_load_npy(Path(path))[start:stop], channel_layout)
    return np.asarray(block, dtype=np.float32)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a short or foreign file fails in many ways
        raise DataError(
            f"{path}: cannot be read as a .npy array ({type(exc).__name__}: {exc}); the file "
            "is truncated or not a numpy array file"
        ) from exc


def _dask_available() -> bool:
    try:
        import dask.array  # noqa: F401
    except ImportError:
        return False
    return True


def _resolve_taxibj_plus_files(source: str | Path | Sequence[str | Path]) -> tuple[Path, Path]:
    if isinstance(source, str | Path):
        folder = Path(source)
        pair = (folder / "X_c.npy", folder / "Y.npy")
    else:
        if len(source) != 2:
            raise ConfigError(
                f"taxibj_plus.files: expected the two paths [X_c.npy, Y.npy], got {source!r}"
            )
        pair = (Path(source[0]), Path(source[1]))
    absent = [str(p) for p in pair if not p.is_file()]
    if absent:
        raise MissingRawDataError(
            f"TaxiBJ+ file(s) not found: {absent}. The user supplies the files: put X_c.npy "
            f"and Y.npy (each (N, 24, 128, 128)) into {DEFAULT_TAXIBJ_PLUS_DIR}/ (or set "
            "taxibj_plus.dir). No public download of TaxiBJ+ is known; ask the authors of "
            "Liang et al. (WWW 2021) or of the SDKD paper for the files."
        )
    return pair


# ----------------------------------------------------------------------------- entry point


@dataclass
class TaxiBJSourceConfig:
    """The reader options under ``taxibj.source.deepst_h5`` / ``taxibj_plus.source.arrays``.

    ``dir``: folder with the files; ``files``: explicit paths instead (TaxiBJ: any number of
    BJ*.h5; TaxiBJ+: [X_c.npy, Y.npy]); ``channel_layout`` (TaxiBJ+ only): how the 24 planes
    interleave frames and channels.
    """

    dir: str | None = None
    files: list[str] | None = None
    channel_layout: str = param("frame_major", choices=CHANNEL_LAYOUTS)

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, param_path: str = "taxibj"
    ) -> TaxiBJSourceConfig:
        """Build from the reader's options; errors name ``<param_path>.<key>``."""
        return from_params(cls, params, param_path)

    def validate(self, param_path: str) -> None:
        if self.files == []:
            raise ConfigError(f"{param_path}.files: an empty list (give the paths, or use dir)")


def read_taxibj_source(cfg: dict, which: str, param_path: str | None = None) -> xr.Dataset:
    """Entry point for ``which`` = ``taxibj`` or ``taxibj_plus``; errors name
    ``<param_path>.<option>`` (``load_raw`` passes ``<which>.source.<kind>``; default ``which``)."""
    if which not in ("taxibj", "taxibj_plus"):
        raise ConfigError(
            f"read_taxibj_source: unknown dataset {which!r}; use taxibj or taxibj_plus"
        )
    param_path = param_path or which
    conf = TaxiBJSourceConfig.from_params(cfg, param_path)
    if which == "taxibj":
        if conf.channel_layout != "frame_major":
            raise ConfigError(f"{param_path}.channel_layout: only applies to taxibj_plus")
        if conf.files is not None:
            return read_taxibj(conf.files)
        return read_taxibj(conf.dir or DEFAULT_TAXIBJ_DIR)
    if conf.files is not None and len(conf.files) != 2:
        raise ConfigError(
            f"{param_path}.files: expected the two paths [X_c.npy, Y.npy], got {conf.files!r}"
        )
    source = conf.files if conf.files is not None else (conf.dir or DEFAULT_TAXIBJ_PLUS_DIR)
    return read_taxibj_plus(source, channel_layout=conf.channel_layout)
