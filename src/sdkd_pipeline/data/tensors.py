"""Raw dataset -> normalized, split, windowable tensor dataset (the Zarr store's content).

The store holds the whole normalized field once; samples are *windows* (T_in input frames
followed by T_out target frames) cut lazily when read. A split is a list of half-open time ranges
``(trajectory, t0, t1)``; a window belongs to a split when it lies completely inside one of its
ranges, so windows never cross splits, the gap between single-series splits, or a segment
boundary (missing time slots).

- Several trajectories (simulations, sample collections): whole trajectories per split.
- One trajectory (a long observed series): contiguous ``train | gap | val | gap | test`` ranges,
  the gap being at least one window so that no target frame of one split is an input frame of
  the next.

Normalization statistics (per-channel mean and std) come from the training ranges only.
Dask is needed here (imported lazily); reading windows back (``windows.py``) does not need it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np
import xarray as xr

from sdkd_pipeline.config_utils import check_fields, check_value, from_params, param
from sdkd_pipeline.data.forcings import forcing_variables
from sdkd_pipeline.data.raw import segments_of, validate_raw
from sdkd_pipeline.errors import ConfigError, DataError

FORMAT_VERSION = 1
SPLIT_NAMES = ("train", "val", "test")
# Target uncompressed chunk size when ``chunk_time`` is not given: Zarr's guidance is chunks of
# at least ~1 MB (per-chunk overhead dominates below that), while a random-access reader wants
# chunks not much larger than a few windows (a window read decodes its whole chunk).
TARGET_CHUNK_BYTES = 2 * 1024**2
NORMALIZATION_NOTE = (
    "fields = (raw - mean[channel]) / std[channel]; mean and std per channel over every "
    "(trajectory, time, y, x) value of the training split ranges only, population std (ddof=0), "
    "accumulated in float64 and stored as float32"
)

Range = tuple[int, int, int]


def _is_count(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _param_path_field() -> Any:
    """The ``param_path`` field of a config: where it was read from, not a parameter."""
    return field(default=None, compare=False, repr=False, metadata={"internal": True})


@dataclass(frozen=True)
class WindowConfig:
    """Frames per sample: ``t_in`` inputs then ``t_out`` targets; window starts ``stride`` apart.

    ``param_path`` is the dotted parameter path used in error messages (e.g.
    ``navier_stokes.window``); left ``None`` it becomes ``<dataset>.window``.
    """

    t_in: int = param(ge=1)
    t_out: int = param(ge=1)
    stride: int = param(1, ge=1)
    param_path: str | None = _param_path_field()

    def __post_init__(self) -> None:
        check_fields(self, self.param_path or "window")

    @property
    def length(self) -> int:
        """Frames one window spans."""
        return self.t_in + self.t_out

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, param_path: str = "window"
    ) -> WindowConfig:
        """Build from a parameters mapping; errors name ``<param_path>.<key>``."""
        return from_params(cls, params, param_path)

    from_dict = from_params


_SIZE = "a fraction, or a count of trajectories or time steps"


@dataclass(frozen=True)
class SplitConfig:
    """Train / val / test sizes: fractions summing to 1, or integer counts.

    Counts are trajectories when the data has several trajectories (e.g. TaxiBJ+ 3555/444/445)
    and time steps when it is a single series; counts may leave a remainder unused (at the end),
    fractions use everything. ``gap`` (single series only) is the number of time steps dropped
    between consecutive splits: ``None`` means one window (``t_in + t_out``), which is also the
    minimum. ``shuffle_trajectories`` assigns trajectories to splits in a random order drawn from
    ``seed`` instead of in order.
    """

    # an int is a count, a float a fraction (a union keeps each value's own type)
    train: int | float = param(0.75, ge=0, note=_SIZE)
    val: int | float = param(0.125, ge=0, note=_SIZE)
    test: int | float = param(0.125, ge=0, note=_SIZE)
    gap: int | None = None  # at least one window: checked where the window is known
    shuffle_trajectories: bool = False
    seed: int = param(0, ge=0)
    param_path: str | None = _param_path_field()

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, param_path: str = "split"
    ) -> SplitConfig:
        """Build from a parameters mapping; errors name ``<param_path>.<key>``."""
        return from_params(cls, params, param_path)

    from_dict = from_params

    def validate(self, param_path: str) -> None:
        """The per-field checks, then: fractions sum to 1, or all three sizes are counts."""
        check_fields(self, param_path)
        if self.kind() == "fraction":
            sizes = self.sizes()
            total = float(sum(sizes.values()))
            if not math.isclose(total, 1.0, abs_tol=1e-6):
                listed = ", ".join(f"{k}={v}" for k, v in sizes.items())
                raise ConfigError(
                    f"{param_path}: fractions must sum to 1, got {listed} (sum {total:g}); or "
                    "give integer counts for all three"
                )

    def sizes(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in SPLIT_NAMES}

    def kind(self) -> str:
        """``count`` when all three sizes are integers, else ``fraction``."""
        return "count" if all(_is_count(v) for v in self.sizes().values()) else "fraction"


@dataclass(frozen=True)
class StoreConfig:
    """The ``<dataset>.store`` parameters: ``chunk_time`` frames per Zarr chunk (None: about
    ``TARGET_CHUNK_BYTES`` a chunk, see ``default_chunk_time``)."""

    chunk_time: int | None = param(None, ge=1)

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, param_path: str = "store"
    ) -> StoreConfig:
        """Build from a parameters mapping; errors name ``<param_path>.<key>``."""
        return from_params(cls, params, param_path)


# --------------------------------------------------------------------------------------------
# splitting


def split_ranges(
    raw: xr.Dataset, split: SplitConfig, window: WindowConfig
) -> dict[str, list[Range]]:
    """Half-open time ranges ``(trajectory, t0, t1)`` of each split, cut at segment boundaries.

    Raises ``ConfigError`` naming the parameter when the window does not fit the data, the sizes
    are malformed, the single-series gap is shorter than a window, or a split would hold no
    complete window.
    """
    dataset = str(raw.attrs.get("dataset", "dataset"))
    split_path = split.param_path or f"{dataset}.split"
    window_path = window.param_path or f"{dataset}.window"
    n_traj, n_time = int(raw.sizes["trajectory"]), int(raw.sizes["time"])
    length = window.length
    if length > n_time:
        raise ConfigError(
            f"{window_path}.t_in + {window_path}.t_out = {window.t_in} + {window.t_out} = "
            f"{length} frames: the window is longer than the series ({n_time} time steps)"
        )
    kind, sizes = _check_sizes(split, split_path)
    if n_traj > 1:
        uncut = _split_trajectories(n_traj, n_time, kind, sizes, split, split_path)
    else:
        uncut = _split_single_series(n_time, kind, sizes, split, split_path, length)
    segments = segments_of(raw)
    ranges = {
        name: [piece for r in rs for piece in _cut_at_segments(r, segments)]
        for name, rs in uncut.items()
    }
    for name in SPLIT_NAMES:
        n_windows = len(windows_in_ranges(ranges[name], window.t_in, window.t_out, window.stride))
        if n_windows == 0:
            raise ConfigError(
                _empty_split_message(name, uncut[name], ranges[name], split_path, window, n_traj)
            )
    return ranges


def _check_sizes(split: SplitConfig, where: str) -> tuple[str, dict[str, float | int]]:
    split.validate(where)  # also a split built in code, named where the dataset is known
    return split.kind(), split.sizes()


def _split_trajectories(
    n_traj: int, n_time: int, kind: str, sizes: dict, split: SplitConfig, where: str
) -> dict[str, list[Range]]:
    if kind == "count":
        counts = {k: int(v) for k, v in sizes.items()}
        if sum(counts.values()) > n_traj:
            raise ConfigError(
                f"{where}: counts train={counts['train']}, val={counts['val']}, "
                f"test={counts['test']} need {sum(counts.values())} trajectories, the data has "
                f"{n_traj}"
            )
    else:
        counts = {"train": round(sizes["train"] * n_traj), "val": round(sizes["val"] * n_traj)}
        counts["test"] = n_traj - counts["train"] - counts["val"]
    order = np.arange(n_traj)
    if split.shuffle_trajectories:
        order = np.random.default_rng(split.seed).permutation(n_traj)
    out: dict[str, list[Range]] = {}
    start = 0
    for name in SPLIT_NAMES:
        chosen = np.sort(order[start : start + max(counts[name], 0)])
        start += max(counts[name], 0)
        out[name] = [(int(t), 0, n_time) for t in chosen]
    return out


def _split_single_series(
    n_time: int, kind: str, sizes: dict, split: SplitConfig, where: str, length: int
) -> dict[str, list[Range]]:
    gap = length if split.gap is None else split.gap
    if not _is_count(gap) or gap < length:
        raise ConfigError(
            f"{where}.gap = {split.gap!r}: must be an integer of at least one window "
            f"(t_in + t_out = {length} time steps), so no target frame of one split is an input "
            "frame of the next"
        )
    usable = n_time - 2 * gap
    if kind == "count":
        steps = {k: int(v) for k, v in sizes.items()}
        if sum(steps.values()) > usable:
            raise ConfigError(
                f"{where}: counts train={steps['train']}, val={steps['val']}, "
                f"test={steps['test']} plus two gaps of {gap} need "
                f"{sum(steps.values()) + 2 * gap} time steps, the series has {n_time}"
            )
    else:
        usable = max(usable, 0)
        steps = {"train": int(sizes["train"] * usable), "val": int(sizes["val"] * usable)}
        steps["test"] = usable - steps["train"] - steps["val"]
        short = [k for k, v in steps.items() if v < length]
        if short:
            raise ConfigError(_too_short_message(n_time, length, gap, sizes, steps, short, where))
    t0_train = 0
    t0_val = steps["train"] + gap
    t0_test = t0_val + steps["val"] + gap
    return {
        "train": [(0, t0_train, t0_train + steps["train"])],
        "val": [(0, t0_val, t0_val + steps["val"])],
        "test": [(0, t0_test, t0_test + steps["test"])],
    }


def _too_short_message(
    n_time: int, length: int, gap: int, sizes: dict, steps: dict, short: list, where: str
) -> str:
    """Why one series cannot be split (its length, the gap, the rule) and settings that fit."""
    smallest = min(float(v) for v in sizes.values() if float(v) > 0) if sizes else 0.0
    # the longest window L whose splits all hold one when the gaps are L too:
    # smallest * (n_time - 2 L) >= L
    fit = int(smallest * n_time / (1 + 2 * smallest)) if smallest else 0
    half = fit // 2
    propose = (
        f"windows of at most {fit} frames, e.g. t_in = t_out = {half}"
        if half >= 1
        else "a longer series (or several trajectories)"
    )
    return (
        f"{where}: one series of {n_time} time steps cannot be split into train / val / test "
        f"({', '.join(f'{k} {v}' for k, v in steps.items())} steps): each split needs at least "
        f"one window of t_in + t_out = {length} steps, with gaps of {gap} between the splits, "
        f"i.e. at least {3 * length + 2 * gap} steps here ({', '.join(short)} too short). "
        f"Settings that fit: {propose} (the window sets the default gap), or split sizes as "
        "counts"
    )


def _cut_at_segments(r: Range, segments: np.ndarray) -> list[Range]:
    traj, t0, t1 = r
    if t1 <= t0:
        return []
    seg = segments[t0:t1]
    cuts = np.flatnonzero(np.diff(seg) != 0) + 1 + t0
    bounds = [t0, *cuts.tolist(), t1]
    return [(traj, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _empty_split_message(
    name: str,
    uncut: list[Range],
    cut: list[Range],
    where: str,
    window: WindowConfig,
    n_traj: int,
) -> str:
    need = f"one window needs t_in + t_out = {window.length} consecutive time steps"
    if n_traj > 1:
        return (
            f"{where}.{name}: the '{name}' split gets {len(uncut)} of {n_traj} trajectories; {need}"
        )
    steps = sum(t1 - t0 for _, t0, t1 in uncut)
    longest = max((t1 - t0 for _, t0, t1 in cut), default=0)
    where_gaps = f" in {len(cut)} gap-free pieces, the longest {longest}" if len(cut) > 1 else ""
    return (
        f"{where}.{name}: the '{name}' split has {steps} time steps{where_gaps}, so no complete "
        f"window; {need}"
    )


def windows_in_ranges(
    ranges: list[Range] | list[list[int]], t_in: int, t_out: int, stride: int = 1
) -> np.ndarray:
    """All window starts as an int64 array of ``(trajectory, t_start)`` rows.

    Starts run from each range's ``t0`` in steps of ``stride``; a window covers
    ``[t_start, t_start + t_in + t_out)`` and lies completely inside its range.
    """
    length = int(t_in) + int(t_out)
    rows = []
    for traj, t0, t1 in ranges:
        starts = np.arange(int(t0), int(t1) - length + 1, int(stride), dtype=np.int64)
        rows.append(np.stack([np.full_like(starts, int(traj)), starts], axis=1))
    if not rows:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(rows, axis=0)


def parse_splits(value: str | dict) -> dict[str, list[Range]]:
    """The ``splits`` attribute (JSON) as ``{split: [(trajectory, t0, t1), ...]}``."""
    raw = json.loads(value) if isinstance(value, str) else value
    return {name: [tuple(int(v) for v in r) for r in rs] for name, rs in raw.items()}


# --------------------------------------------------------------------------------------------
# the tensor dataset


def default_chunk_time(n_time: int, frame_bytes: int, window_length: int) -> int:
    """Frames per chunk: about ``TARGET_CHUNK_BYTES`` per chunk, at least one window, at most
    the whole time axis."""
    by_size = max(1, TARGET_CHUNK_BYTES // max(frame_bytes, 1))
    return int(min(n_time, max(by_size, window_length)))


def build_tensor_dataset(
    raw: xr.Dataset,
    *,
    split: SplitConfig,
    window: WindowConfig,
    chunk_time: int | None = None,
    forcings: tuple[str, ...] = (),
) -> xr.Dataset:
    """Validate ``raw``, split it, and return the lazily normalized store content.

    ``forcings`` (see ``forcings.py``) adds the declared input-only channels, computed from the
    coordinates, as ``forcing_time`` / ``forcing_static`` beside ``fields``.

    ``fields`` is a dask array chunked ``(1, chunk_time, C, H, W)``; nothing is materialised
    except the training statistics (one dask reduction) and the finite check of
    ``validate_raw``. Without dask (a bare GPU machine) the same is computed in memory with
    numpy. Raises ``DataError`` when a channel is constant over the training split.
    """
    try:
        import dask.array as da
    except ImportError:  # in memory: fine for data that fits, which is all a bare box holds
        da = None

    raw = validate_raw(raw)
    dataset = str(raw.attrs.get("dataset", "dataset"))
    ranges = split_ranges(raw, split, window)
    n_traj, n_time, n_chan, n_y, n_x = (int(s) for s in raw["fields"].shape)
    if chunk_time is None:
        chunk_time = default_chunk_time(n_time, n_chan * n_y * n_x * 4, window.length)
    else:
        check_value(f"{dataset}.store.chunk_time", chunk_time, int, {"ge": 1})
    chunk_time = min(int(chunk_time), n_time)
    chunks = (1, chunk_time, n_chan, n_y, n_x)

    data = raw["fields"].data
    if da is None:
        data = np.asarray(data)
    else:
        data = data.rechunk(chunks) if isinstance(data, da.Array) else da.from_array(data, chunks)

    mean, std = _training_statistics(data, ranges["train"])
    channels = [str(c) for c in raw["channel"].values]
    bad = [c for c, s in zip(channels, std, strict=True) if not (s > 0 and math.isfinite(s))]
    if bad:
        raise DataError(
            f"{raw.attrs.get('source', dataset)}: channel(s) {', '.join(map(repr, bad))} are "
            "constant over the training split (std 0), so they cannot be normalized"
        )
    shape = (1, 1, n_chan, 1, 1)
    normalized = ((data - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)

    out = xr.Dataset(coords=raw.coords)
    if da is not None:
        normalized = normalized.rechunk(chunks)
    out["fields"] = (("trajectory", "time", "channel", "y", "x"), normalized)
    out["mean"] = ("channel", mean.astype(np.float32))
    out["std"] = ("channel", std.astype(np.float32))
    extra = forcing_variables(raw, tuple(forcings), f"{dataset}.forcings")
    out = out.merge(extra)
    out.attrs.update(raw.attrs)
    out.attrs.update(extra.attrs)
    split_method = "trajectory" if n_traj > 1 else "time"
    out.attrs.update(
        {
            "t_in": window.t_in,
            "t_out": window.t_out,
            "stride": window.stride,
            "split_method": split_method,
            "splits": json.dumps({k: [list(r) for r in v] for k, v in ranges.items()}),
            "normalization": NORMALIZATION_NOTE,
            "format_version": FORMAT_VERSION,
        }
    )
    if split_method == "time":
        out.attrs["split_gap"] = window.length if split.gap is None else int(split.gap)
    return out


def _training_statistics(data: Any, train: list[Range]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std over the training ranges (float64, one pass)."""
    if isinstance(data, np.ndarray):
        values = np.concatenate([data[traj, t0:t1] for traj, t0, t1 in train if t1 > t0])
        values = values.astype(np.float64)
        return values.mean(axis=(0, 2, 3)), values.std(axis=(0, 2, 3))
    import dask
    import dask.array as da

    pieces = [data[traj, t0:t1] for traj, t0, t1 in train if t1 > t0]
    values = da.concatenate(pieces, axis=0).astype(np.float64)  # (time, channel, y, x)
    # dask's std merges per-chunk central moments, which stays accurate when |mean| >> std
    mean, std = dask.compute(values.mean(axis=(0, 2, 3)), values.std(axis=(0, 2, 3)))
    return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
