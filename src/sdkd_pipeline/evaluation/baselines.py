"""Reference forecasters without learning: persistence and climatology.

They are ``torch.nn.Module`` s with the models' interface, ``forward(x) -> (B, T_out, C, H, W)``
in normalized units, so the evaluation pass, its latency timing and its metrics treat them
like any model. Imports only numpy and torch (the window dataset is used through its
attributes), so it runs without Kedro, MLflow, Zarr or Dask.

- ``Persistence``: the last input frame repeated over the ``T_out`` forecast steps.
- ``Climatology``: the mean field (per channel and pixel) of the **training split's frames**:
  every frame lying in one of the store's training ranges ``[trajectory, t0, t1)``, counted
  once (not once per window that contains it). Where the store's ``time`` coordinate holds
  datetimes (weather, traffic), one mean per *slot*, and the forecast for each lead time is the
  mean of the training frames in the slot of that target frame. The slots
  (``evaluate.climatology``, ``CLIMATOLOGY_MODES``):

  - ``time_of_day``: one per time of day (the seconds since midnight: the hour of day for
    hourly data, the half-hour slot for TaxiBJ);
  - ``day_of_year``: one per (day of year, time of day), as WeatherBench's climatology (without
    its smoothing window). The day of year is the day's place in a non-leap year (1..365):
    **Feb 29 shares Feb 28's day** (59), so Mar 1 is day 60 in every year;
  - ``auto`` (the default): ``day_of_year`` when the training split fills every (day of year,
    time of day) slot, for each of the 365 days and each time of day it holds, with at least
    ``AUTO_MIN_FRAMES`` (2) frames, i.e. about two years of training data; otherwise
    ``time_of_day`` (a one-month ERA5 sample, a year of traffic).

  Without a datetime coordinate (simulations, TaxiBJ+ samples), whatever the mode, the plain
  mean field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError, DataError

__all__ = [
    "BASELINE_METHOD",
    "BASELINE_NAMES",
    "BASELINE_ROLE",
    "CLIMATOLOGY_MODES",
    "Climatology",
    "Persistence",
    "build_baselines",
    "climatology_mode",
    "day_of_year",
    "time_of_day",
    "training_runs",
]

BASELINE_ROLE = "baseline"
BASELINE_METHOD = "baseline"
BASELINE_NAMES = ("persistence", "climatology")
# evaluate.climatology: which slots the climatology averages over (module docstring)
CLIMATOLOGY_MODES = ("auto", "time_of_day", "day_of_year")
# auto picks day_of_year when every (day of year, time of day) slot has this many training frames
AUTO_MIN_FRAMES = 2
DAYS_PER_YEAR = 365
SECONDS_PER_DAY = 86400
# frames read and summed at once while fitting the climatology
READ_BYTES = 64 * 1024**2


class Persistence(torch.nn.Module):
    """The last input frame, repeated over ``t_out`` forecast steps: its first ``channels``
    channels (the forecast variables; forcing channels follow them in the input), all of
    them when ``channels`` is ``None``."""

    uses_window_index = False

    def __init__(self, t_out: int, channels: int | None = None) -> None:
        super().__init__()
        if isinstance(t_out, bool) or int(t_out) != t_out or t_out < 1:
            raise ConfigError(f"Persistence t_out must be a positive integer, got {t_out!r}")
        if channels is not None and (isinstance(channels, bool) or int(channels) < 1):
            raise ConfigError(f"Persistence channels must be a positive integer, got {channels!r}")
        self.t_out = int(t_out)
        self.channels = None if channels is None else int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x[:, -1:] if self.channels is None else x[:, -1:, : self.channels]
        return last.expand(-1, self.t_out, -1, -1, -1).contiguous()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "persistence",
            "definition": f"the last input frame, repeated over the {self.t_out} forecast steps",
        }


def time_of_day(times: Any) -> np.ndarray | None:
    """Seconds since midnight of each datetime in ``times`` (int64, -1 for NaT), or ``None``
    when ``times`` holds no datetimes (simulation time, frame indices)."""
    times = np.asarray(times)
    if not np.issubdtype(times.dtype, np.datetime64):
        return None
    seconds = times.astype("datetime64[s]")
    out = (seconds - seconds.astype("datetime64[D]")).astype(np.int64)
    out[np.isnat(times)] = -1
    return out


def day_of_year(times: Any) -> np.ndarray | None:
    """Day of year of each datetime in ``times`` as its place in a non-leap year, 1..365 (int64,
    -1 for NaT): Feb 29 is day 59, as Feb 28, and every later day of a leap year moves back one,
    so a calendar date has the same day in every year. ``None`` when ``times`` holds no
    datetimes."""
    times = np.asarray(times)
    if not np.issubdtype(times.dtype, np.datetime64):
        return None
    days = times.astype("datetime64[D]")
    years = times.astype("datetime64[Y]")
    out = (days - years.astype("datetime64[D]")).astype(np.int64) + 1  # 1..366
    year = years.astype(np.int64) + 1970
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    out = np.where(leap & (out >= 60), out - 1, out)
    out[np.isnat(times)] = -1
    return out


def climatology_mode(value: Any) -> str:
    """``value`` checked against ``CLIMATOLOGY_MODES``; a ``ConfigError`` naming
    ``evaluate.climatology`` otherwise."""
    if not isinstance(value, str) or value not in CLIMATOLOGY_MODES:
        raise ConfigError(
            f"parameter evaluate.climatology must be one of {list(CLIMATOLOGY_MODES)}, "
            f"got {value!r}"
        )
    return value


def training_runs(
    ranges: Iterable[Sequence[int]], n_trajectories: int, n_time: int
) -> list[tuple[int, int, int]]:
    """The frames of ``ranges`` as disjoint ``(trajectory, t0, t1)`` runs (overlapping ranges
    merged, so every frame appears once)."""
    mask = np.zeros((n_trajectories, n_time), dtype=bool)
    for traj, t0, t1 in ranges:
        mask[int(traj), max(int(t0), 0) : min(int(t1), n_time)] = True
    runs = []
    for traj in range(n_trajectories):
        edges = np.diff(np.concatenate([[0], mask[traj].astype(np.int8), [0]]))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        runs += [(traj, int(a), int(b)) for a, b in zip(starts, stops, strict=True)]
    return runs


def _splits(windows: Any) -> dict[str, list[tuple[int, int, int]]]:
    attrs = getattr(windows, "attrs", {}) or {}
    if "splits" not in attrs:
        raise DataError("climatology: the tensor store has no 'splits' attribute")
    raw = attrs["splits"]
    raw = json.loads(raw) if isinstance(raw, str) else raw
    return {name: [tuple(int(v) for v in r) for r in rs] for name, rs in raw.items()}


class Climatology(torch.nn.Module):
    """The training split's mean field, per slot (time of day, or day of year and time of day)
    where the store has datetimes.

    ``means`` is ``(1 + S + D, C, H, W)``: row 0 the mean of all training frames, rows 1..S one
    per time of day in ``slots`` (seconds since midnight, ascending; empty without datetimes),
    rows S+1..S+D (``day_of_year`` mode) one per ``(day of year, seconds)`` in ``day_slots``:
    those of the training slots that a target frame of the fitted split falls in (ascending).
    ``lookup`` is ``(N, T_out)``: the row forecast for each target frame of each of the ``N``
    windows of the split the module was fitted for. Build it with ``Climatology.fit``.
    """

    uses_window_index = True

    def __init__(
        self,
        means: torch.Tensor,
        lookup: torch.Tensor,
        *,
        slots: Sequence[int] = (),
        day_slots: Sequence[tuple[int, int]] = (),
        mode: str | None = None,
        requested: str | None = None,
        train_frames: int = 0,
        train_day_slots: int = 0,
        slot_frames: tuple[int, int] | None = None,
        split: str | None = None,
        unmatched_targets: int = 0,
        time_of_day_fallbacks: int = 0,
    ) -> None:
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float32)
        lookup = torch.as_tensor(lookup, dtype=torch.long)
        rows = 1 + len(slots) + len(day_slots)
        if means.ndim != 4 or lookup.ndim != 2 or len(means) != rows:
            raise DataError(
                f"Climatology needs means (1 + {len(slots)} + {len(day_slots)} slots, C, H, W) "
                f"and lookup (windows, T_out), got {tuple(means.shape)} and "
                f"{tuple(lookup.shape)}"
            )
        if lookup.numel() and not (0 <= int(lookup.min()) and int(lookup.max()) < len(means)):
            raise DataError("Climatology lookup points outside its means")
        if mode is None:
            mode = "day_of_year" if day_slots else "time_of_day" if slots else "mean_field"
        if mode not in ("mean_field", "time_of_day", "day_of_year"):
            raise DataError(
                f"Climatology mode must be mean_field, time_of_day or day_of_year, got {mode!r}"
            )
        self.register_buffer("means", means)
        self.register_buffer("lookup", lookup)
        self.slots = tuple(int(s) for s in slots)
        self.day_slots = tuple((int(d), int(s)) for d, s in day_slots)
        self.mode = mode
        self.requested = requested or mode
        self.t_out = int(lookup.shape[1])
        self.train_frames = int(train_frames)
        self.train_day_slots = int(train_day_slots)
        self.slot_frames = None if slot_frames is None else tuple(int(n) for n in slot_frames)
        self.split = split
        self.unmatched_targets = int(unmatched_targets)
        self.time_of_day_fallbacks = int(time_of_day_fallbacks)

    @property
    def by_time_of_day(self) -> bool:
        return bool(self.slots)

    @property
    def by_day_of_year(self) -> bool:
        return self.mode == "day_of_year"

    def forward(self, x: torch.Tensor, window_index: Any = None) -> torch.Tensor:
        """``(B, T_out, C, H, W)``: the mean for each target frame of windows ``window_index``
        (``B`` indices into the split fitted for); without it the all-times mean."""
        batch = int(x.shape[0])
        if window_index is None:
            rows = self.lookup.new_zeros((batch, self.t_out))
        else:
            index = torch.as_tensor(window_index, dtype=torch.long).reshape(-1)
            if len(index) != batch:
                raise DataError(f"Climatology: {len(index)} window indices for a batch of {batch}")
            if len(index) and not (0 <= int(index.min()) and int(index.max()) < len(self.lookup)):
                raise DataError(
                    f"Climatology: window index outside the {len(self.lookup)} windows of "
                    f"the {self.split or 'fitted'} split"
                )
            rows = self.lookup[index.to(self.lookup.device)]
        return self.means[rows].to(x.dtype)

    def describe(self) -> dict[str, Any]:
        frames = ""
        if self.slot_frames is not None:
            low, high = self.slot_frames
            frames = f", {low} frames each" if low == high else f", {low}-{high} frames each"
        chosen = " (chosen by evaluate.climatology: auto)" if self.requested == "auto" else ""
        if self.mode == "day_of_year":
            definition = (
                f"mean of the {self.train_frames} training frames per day of year and time of "
                f"day ({self.train_day_slots} slots{frames}; Feb 29 shares Feb 28's){chosen}, "
                f"at each target frame's day and time of day; a slot without training frames "
                f"takes the time-of-day mean ({self.time_of_day_fallbacks} target frames)"
            )
        elif self.mode == "time_of_day":
            definition = (
                f"mean of the {self.train_frames} training frames per time of day "
                f"({len(self.slots)} slots{frames}){chosen}, at each target frame's time of day"
            )
        else:
            definition = f"mean field of the {self.train_frames} training frames"
        return {
            "kind": "climatology",
            "definition": definition,
            "mode": self.mode,
            "requested": self.requested,
            "by_time_of_day": self.by_time_of_day,
            "slots": len(self.slots),
            "day_slots": self.train_day_slots,
            "slot_frames": list(self.slot_frames) if self.slot_frames is not None else None,
            "train_frames": self.train_frames,
            "time_of_day_fallbacks": self.time_of_day_fallbacks,
            "unmatched_targets": self.unmatched_targets,
        }

    @classmethod
    def fit(cls, windows: Any, *, train_split: str = "train", mode: str = "auto") -> Climatology:
        """Fit on the ``train_split`` frames of the store ``windows`` (a ``WindowDataset``) was
        cut from, with a lookup for the windows of ``windows``' own split; ``mode`` one of
        ``CLIMATOLOGY_MODES`` (module docstring).

        Uses ``windows.attrs['splits']``, ``windows.coords['time']``, ``windows.shape``,
        ``windows.windows`` (each window's ``(trajectory, t0)``), ``t_in``, ``t_out`` and
        ``windows.frames(trajectory, start, stop)``. Sums in float64. In ``day_of_year`` mode
        only the slots some target frame falls in are summed and kept.
        """
        requested = climatology_mode(mode)
        splits = _splits(windows)
        if not splits.get(train_split):
            raise DataError(f"climatology: the store has no {train_split!r} split ranges")
        n_traj, n_time, n_chan, n_y, n_x = (int(s) for s in windows.shape)
        times = getattr(windows, "coords", {}).get("time")
        tod = time_of_day(times)
        runs = training_runs(splits[train_split], n_traj, n_time)
        starts = np.asarray(windows.windows, dtype=np.int64).reshape(-1, 2)[:, 1]
        targets = starts[:, None] + int(windows.t_in) + np.arange(int(windows.t_out))
        slots = needed = np.array([], dtype=np.int64)
        key = None
        chosen, train_day_slots, slot_frames = "mean_field", 0, None
        if tod is not None:
            # every training frame's time index, once per (trajectory, time)
            frames = np.concatenate(
                [np.arange(a, b, dtype=np.int64) for _, a, b in runs] or [np.array([], int)]
            )
            frames = frames[tod[frames] >= 0]
            slots, tod_counts = np.unique(tod[frames], return_counts=True)
            key = np.where(tod >= 0, day_of_year(times) * SECONDS_PER_DAY + tod, -1)
            day_keys, day_counts = np.unique(key[frames], return_counts=True)
            chosen = requested
            if requested == "auto":
                full = len(day_keys) == DAYS_PER_YEAR * len(slots) and len(day_keys) > 0
                enough = full and int(day_counts.min()) >= AUTO_MIN_FRAMES
                chosen = "day_of_year" if enough else "time_of_day"
            if chosen == "day_of_year":
                needed = np.intersect1d(key[targets], day_keys)
                train_day_slots = len(day_keys)
                if len(day_keys):
                    slot_frames = (int(day_counts.min()), int(day_counts.max()))
            elif len(slots):
                slot_frames = (int(tod_counts.min()), int(tod_counts.max()))
        n_rows = 1 + len(slots) + len(needed)
        sums = np.zeros((n_rows, n_chan, n_y, n_x), dtype=np.float64)
        counts = np.zeros(n_rows, dtype=np.int64)
        step = max(1, READ_BYTES // (n_chan * n_y * n_x * 8))
        for traj, a, b in runs:
            for start in range(a, b, step):
                stop = min(b, start + step)
                block = np.asarray(windows.frames(traj, start, stop), dtype=np.float64)
                sums[0] += block.sum(axis=0)
                counts[0] += stop - start
                if tod is None:
                    continue
                _accumulate(sums, counts, _rows(slots, tod[start:stop]), block)
                if len(needed):
                    day_rows = _rows(needed, key[start:stop])
                    _accumulate(
                        sums, counts, np.where(day_rows > 0, day_rows + len(slots), 0), block
                    )
        if counts[0] == 0:
            raise DataError(f"climatology: the {train_split!r} split holds no frame")
        means = sums / counts[:, None, None, None]
        lookup = np.zeros(targets.shape, dtype=np.int64)
        fallbacks = 0
        if tod is not None:
            lookup = _rows(slots, tod[targets])
            if chosen == "day_of_year":
                day_rows = _rows(needed, key[targets])
                fallbacks = int(((day_rows == 0) & (lookup > 0)).sum())
                lookup = np.where(day_rows > 0, day_rows + len(slots), lookup)
        day_slots = [(int(k) // SECONDS_PER_DAY, int(k) % SECONDS_PER_DAY) for k in needed]
        return cls(
            torch.from_numpy(means.astype(np.float32)),
            torch.from_numpy(lookup),
            slots=slots.tolist(),
            day_slots=day_slots,
            mode=chosen,
            requested=requested,
            train_frames=int(counts[0]),
            train_day_slots=train_day_slots,
            slot_frames=slot_frames,
            split=getattr(windows, "split", None),
            unmatched_targets=int((lookup == 0).sum()) if tod is not None else 0,
            time_of_day_fallbacks=fallbacks,
        )


def _accumulate(sums: np.ndarray, counts: np.ndarray, rows: np.ndarray, block: np.ndarray) -> None:
    """Add each frame of ``block`` to ``sums[row]`` (and one to ``counts[row]``) of its row in
    ``rows``; rows of 0 are skipped (row 0, the all-times sum, is added separately)."""
    chosen = np.flatnonzero(rows > 0)
    if not len(chosen):
        return
    order = chosen[np.argsort(rows[chosen], kind="stable")]
    unique, first, n = np.unique(rows[order], return_index=True, return_counts=True)
    sums[unique] += np.add.reduceat(block[order], first, axis=0)
    counts[unique] += n


def _rows(slots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """1 + the position of each of ``values`` in ``slots`` (sorted), 0 where it is not one of
    them (NaT's -1 never is)."""
    if len(slots) == 0:
        return np.zeros(np.shape(values), dtype=np.int64)
    position = np.searchsorted(slots, values).clip(max=len(slots) - 1)
    return np.where(slots[position] == values, position + 1, 0).astype(np.int64)


def build_baselines(
    windows: Any, names: Sequence[str] = BASELINE_NAMES, *, climatology: str = "auto"
) -> dict[str, torch.nn.Module]:
    """``{name: module}`` for each baseline in ``names`` (``persistence``, ``climatology``),
    for the windows of ``windows`` (a ``WindowDataset``; the climatology from the training
    split of the same store, its slots chosen by ``climatology``: ``evaluate.climatology``, one
    of ``CLIMATOLOGY_MODES``)."""
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown:
        raise ConfigError(
            f"parameter evaluate.baselines: unknown baseline(s) {unknown}; choose from "
            f"{list(BASELINE_NAMES)} ([] disables)"
        )
    climatology = climatology_mode(climatology)
    out: dict[str, torch.nn.Module] = {}
    for name in BASELINE_NAMES:
        if name not in names:
            continue
        out[name] = (
            Persistence(int(windows.t_out), len(windows.channels))
            if name == "persistence"
            else Climatology.fit(windows, mode=climatology)
        )
    return out
