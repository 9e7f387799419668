"""Reference forecasters without learning: persistence and climatology.

They are ``torch.nn.Module`` s with the models' interface, ``forward(x) -> (B, T_out, C, H, W)``
in normalized units, so the evaluation pass, its latency timing and its metrics treat them
like any model. Imports only numpy and torch (the window dataset is used through its
attributes), so it runs without Kedro, MLflow, Zarr or Dask.

- ``Persistence``: the last input frame repeated over the ``T_out`` forecast steps.
- ``Climatology``: the mean field (per channel and pixel) of the **training split's frames**:
  every frame lying in one of the store's training ranges ``[trajectory, t0, t1)``, counted
  once (not once per window that contains it). Where the store's ``time`` coordinate holds
  datetimes (weather, traffic), one mean per *time of day* (the seconds since midnight: the
  hour of day for hourly data, the half-hour slot for TaxiBJ), and the forecast for each lead
  time is the mean of the training frames at the time of day of that target frame. Without a
  datetime coordinate (simulations, TaxiBJ+ samples), the plain mean field.

The climatology's forecast depends on *which* window is predicted, which ``x`` does not say.
``Climatology.fit(windows)`` therefore builds, for the split ``windows`` holds (the test split
in the evaluation), a lookup ``window index -> one mean per target frame``, and
``forward(x, window_index=...)`` takes the indices of the batch's windows in that split; the
evaluation passes them to every module whose ``uses_window_index`` is true. Without
``window_index`` it forecasts the all-times mean (the same cost: what latency timing measures).
A target frame whose time of day never occurs in the training split gets the all-times mean
too (``unmatched_targets`` counts them).
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
    "Climatology",
    "Persistence",
    "build_baselines",
    "time_of_day",
    "training_runs",
]

BASELINE_ROLE = "baseline"
BASELINE_METHOD = "baseline"
BASELINE_NAMES = ("persistence", "climatology")
# frames read and summed at once while fitting the climatology
READ_BYTES = 64 * 1024**2


class Persistence(torch.nn.Module):
    """The last input frame, repeated over ``t_out`` forecast steps."""

    uses_window_index = False

    def __init__(self, t_out: int) -> None:
        super().__init__()
        if isinstance(t_out, bool) or int(t_out) != t_out or t_out < 1:
            raise ConfigError(f"Persistence t_out must be a positive integer, got {t_out!r}")
        self.t_out = int(t_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:].expand(-1, self.t_out, -1, -1, -1).contiguous()

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
    """The training split's mean field, per time of day where the store has datetimes.

    ``means`` is ``(1 + S, C, H, W)``: row 0 the mean of all training frames, rows 1..S one
    per time of day in ``slots`` (seconds since midnight, ascending; empty without datetimes).
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
        train_frames: int = 0,
        split: str | None = None,
        unmatched_targets: int = 0,
    ) -> None:
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float32)
        lookup = torch.as_tensor(lookup, dtype=torch.long)
        if means.ndim != 4 or lookup.ndim != 2 or len(means) != 1 + len(slots):
            raise DataError(
                f"Climatology needs means (1 + {len(slots)} slots, C, H, W) and lookup "
                f"(windows, T_out), got {tuple(means.shape)} and {tuple(lookup.shape)}"
            )
        if lookup.numel() and not (0 <= int(lookup.min()) and int(lookup.max()) < len(means)):
            raise DataError("Climatology lookup points outside its means")
        self.register_buffer("means", means)
        self.register_buffer("lookup", lookup)
        self.slots = tuple(int(s) for s in slots)
        self.t_out = int(lookup.shape[1])
        self.train_frames = int(train_frames)
        self.split = split
        self.unmatched_targets = int(unmatched_targets)

    @property
    def by_time_of_day(self) -> bool:
        return bool(self.slots)

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
        if self.by_time_of_day:
            definition = (
                f"mean of the {self.train_frames} training frames per time of day "
                f"({len(self.slots)} slots), at each target frame's time of day"
            )
        else:
            definition = f"mean field of the {self.train_frames} training frames"
        return {
            "kind": "climatology",
            "definition": definition,
            "by_time_of_day": self.by_time_of_day,
            "slots": len(self.slots),
            "train_frames": self.train_frames,
            "unmatched_targets": self.unmatched_targets,
        }

    @classmethod
    def fit(cls, windows: Any, *, train_split: str = "train") -> Climatology:
        """Fit on the ``train_split`` frames of the store ``windows`` (a ``WindowDataset``) was
        cut from, with a lookup for the windows of ``windows``' own split.

        Uses ``windows.attrs['splits']``, ``windows.coords['time']``, ``windows.shape``,
        ``windows.windows`` (each window's ``(trajectory, t0)``), ``t_in``, ``t_out`` and
        ``windows.frames(trajectory, start, stop)``. Sums in float64.
        """
        splits = _splits(windows)
        if not splits.get(train_split):
            raise DataError(f"climatology: the store has no {train_split!r} split ranges")
        n_traj, n_time, n_chan, n_y, n_x = (int(s) for s in windows.shape)
        tod = time_of_day(getattr(windows, "coords", {}).get("time"))
        runs = training_runs(splits[train_split], n_traj, n_time)
        slots = np.array([], dtype=np.int64)
        if tod is not None:
            in_train = np.zeros(n_time, dtype=bool)
            for _, a, b in runs:
                in_train[a:b] = True
            slots = np.unique(tod[in_train & (tod >= 0)])
        sums = np.zeros((1 + len(slots), n_chan, n_y, n_x), dtype=np.float64)
        counts = np.zeros(1 + len(slots), dtype=np.int64)
        step = max(1, READ_BYTES // (n_chan * n_y * n_x * 8))
        for traj, a, b in runs:
            for start in range(a, b, step):
                stop = min(b, start + step)
                block = np.asarray(windows.frames(traj, start, stop), dtype=np.float64)
                sums[0] += block.sum(axis=0)
                counts[0] += stop - start
                if tod is None:
                    continue
                rows = _rows(slots, tod[start:stop])
                for row in np.unique(rows[rows > 0]):
                    chosen = rows == row
                    sums[row] += block[chosen].sum(axis=0)
                    counts[row] += int(chosen.sum())
        if counts[0] == 0:
            raise DataError(f"climatology: the {train_split!r} split holds no frame")
        means = sums / counts[:, None, None, None]
        starts = np.asarray(windows.windows, dtype=np.int64).reshape(-1, 2)[:, 1]
        targets = starts[:, None] + int(windows.t_in) + np.arange(int(windows.t_out))
        if tod is None:
            lookup = np.zeros(targets.shape, dtype=np.int64)
        else:
            lookup = _rows(slots, tod[targets])
        return cls(
            torch.from_numpy(means.astype(np.float32)),
            torch.from_numpy(lookup),
            slots=slots.tolist(),
            train_frames=int(counts[0]),
            split=getattr(windows, "split", None),
            unmatched_targets=int((lookup == 0).sum()) if tod is not None else 0,
        )


def _rows(slots: np.ndarray, tod: np.ndarray) -> np.ndarray:
    """Row of ``means`` for each time of day: 1 + its slot, 0 (the all-times mean) when it is
    not a training slot."""
    if len(slots) == 0:
        return np.zeros(np.shape(tod), dtype=np.int64)
    position = np.searchsorted(slots, tod).clip(max=len(slots) - 1)
    return np.where(slots[position] == tod, position + 1, 0).astype(np.int64)


def build_baselines(
    windows: Any, names: Sequence[str] = BASELINE_NAMES
) -> dict[str, torch.nn.Module]:
    """``{name: module}`` for each baseline in ``names`` (``persistence``, ``climatology``),
    for the windows of ``windows`` (a ``WindowDataset``; the climatology from the training
    split of the same store)."""
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown:
        raise ConfigError(
            f"parameter evaluate.baselines: unknown baseline(s) {unknown}; choose from "
            f"{list(BASELINE_NAMES)} ([] disables)"
        )
    out: dict[str, torch.nn.Module] = {}
    for name in BASELINE_NAMES:
        if name not in names:
            continue
        out[name] = (
            Persistence(int(windows.t_out)) if name == "persistence" else Climatology.fit(windows)
        )
    return out
