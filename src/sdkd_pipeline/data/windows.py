"""A torch ``Dataset`` of (input, target) windows cut lazily from a tensor store.

``WindowDataset(store, "train")`` takes either the path of a Zarr store (written by
``store.write_store``) or an in-memory ``xarray.Dataset`` with the same content (e.g. read from
NetCDF on a machine without zarr). Items are ``(x, y)`` float32 tensors of shapes
``(T_in, C + F, H, W)`` and ``(T_out, C, H, W)`` holding normalized values, F the store's
forcing channels (``forcings.py``; none by default), which inputs carry after the fields and
targets never do; ``denormalize`` maps targets (or predictions) back to physical units.

Reading from Zarr: the store is opened lazily in each process that reads (so the dataset
pickles as a path and works with several DataLoader workers), directly through zarr rather
than xarray (xarray's per-item indexing machinery costs more than the read itself). zarr 3
spends about a millisecond per read call whatever its size, and a read decodes whole chunks
anyway, so each process keeps a bounded LRU cache of decoded chunks (``cache_mb``): windows
that overlap (stride < window length) and windows of the same trajectory are then served from
memory. ``__getitems__`` (used by the DataLoader for a whole batch) reads each chunk a batch
needs once, even with the cache disabled. For stores much larger than the cache,
``ChunkPoolSampler`` shuffles pool by pool of chunks so that each chunk is read about once per
epoch (per worker) instead of once per window.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from sdkd_pipeline.config_utils import check_value
from sdkd_pipeline.data.forcings import STATIC_VAR, TIME_VAR, forcing_frames, store_forcings
from sdkd_pipeline.data.store import check_store_dataset, open_store, store_location
from sdkd_pipeline.data.tensors import SPLIT_NAMES, WindowConfig, parse_splits, windows_in_ranges
from sdkd_pipeline.errors import ConfigError, DataError

ChunkKey = tuple[int, int]  # (trajectory, chunk index along time)


class WindowDataset(torch.utils.data.Dataset):
    """Windows of one split of a tensor store.

    ``t_in``, ``t_out`` and ``stride`` default to the store's; other values re-cut the split's
    ranges (windows still never cross a split, gap or segment boundary). ``cache_mb`` bounds the
    per-process cache of decoded Zarr chunks (0 disables it; unused for in-memory data).
    """

    def __init__(
        self,
        store: str | Path | xr.Dataset,
        split: str,
        t_in: int | None = None,
        t_out: int | None = None,
        stride: int | None = None,
        *,
        cache_mb: float = 256.0,
    ) -> None:
        if split not in SPLIT_NAMES:
            raise ConfigError(f"split {split!r} is unknown; use one of {', '.join(SPLIT_NAMES)}")
        if isinstance(store, xr.Dataset):
            ds = check_store_dataset(store, origin="in-memory tensor dataset")
            self.path: Path | str | None = None
            # one materialisation up front; windows are then numpy views of it
            self._memory: np.ndarray | None = np.ascontiguousarray(
                np.asarray(ds["fields"].values, dtype=np.float32)
            )
        else:
            self.path = store_location(store)  # a local Path, or an fsspec URL (str)
            ds = open_store(self.path, chunks=None)
            self._memory = None
        cache_mb = check_value("WindowDataset cache_mb", cache_mb, float, {"ge": 0})
        self.split = split
        attrs = ds.attrs
        window = WindowConfig(  # the store's window unless overridden; checked as a config
            attrs["t_in"] if t_in is None else t_in,
            attrs["t_out"] if t_out is None else t_out,
            attrs["stride"] if stride is None else stride,
            param_path="WindowDataset",
        )
        self.t_in, self.t_out, self.stride = (
            int(n) for n in (window.t_in, window.t_out, window.stride)
        )
        self.ranges = parse_splits(attrs["splits"])[split]
        self.windows = windows_in_ranges(self.ranges, self.t_in, self.t_out, self.stride)
        if len(self.windows) == 0:
            raise ConfigError(
                f"split {split!r} of {self.path or 'the in-memory dataset'} holds no window of "
                f"t_in + t_out = {self.t_in + self.t_out} frames (ranges {self.ranges})"
            )
        self.shape = tuple(int(s) for s in ds["fields"].shape)
        self.channels = [str(c) for c in ds["channel"].values]
        self.mean = torch.as_tensor(np.asarray(ds["mean"].values, dtype=np.float32))
        self.std = torch.as_tensor(np.asarray(ds["std"].values, dtype=np.float32))
        self.attrs = dict(attrs)
        self.coords = {name: np.asarray(ds[name].values) for name in ds.coords}
        # input-only channels (forcings.py), small enough to keep in memory
        self.forcing_channels = store_forcings(attrs)["channels"]
        self._forcing_time = (
            np.asarray(ds[TIME_VAR].values, dtype=np.float32) if TIME_VAR in ds else None
        )
        self._forcing_static = (
            np.asarray(ds[STATIC_VAR].values, dtype=np.float32) if STATIC_VAR in ds else None
        )
        self._chunk_time = _store_chunk_time(ds, self.shape[1])
        self._cache_bytes = int(cache_mb * 1024**2)
        self._reset_reader()

    @property
    def model_shape(self) -> dict[str, int]:
        """The keyword arguments ``build_model`` takes for this data: ``in_frames``,
        ``out_frames``, ``channels``, ``height``, ``width`` (what checkpoints record as
        ``shape``)."""
        _, _, channels, height, width = self.shape
        shape = {
            "in_frames": self.t_in,
            "out_frames": self.t_out,
            "channels": channels,
            "height": height,
            "width": width,
        }
        if self.forcing_channels:  # only then, so a checkpoint without forcings still matches
            shape["forcing_channels"] = len(self.forcing_channels)
        return shape

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """``(T_in, C + F, H, W)``: one input window, forcing channels included."""
        _, _, channels, height, width = self.shape
        return (self.t_in, channels + len(self.forcing_channels), height, width)

    def forcings(self, trajectory: int, start: int, stop: int) -> np.ndarray | None:
        """The forcing channels ``(stop - start, F, H, W)`` of frames ``[start, stop)`` of
        ``trajectory`` (any split: they are known in advance), or ``None`` without forcings."""
        if not self.forcing_channels:
            return None
        _, _, _, height, width = self.shape
        clock = None if self._forcing_time is None else self._forcing_time[trajectory, start:stop]
        return forcing_frames(clock, self._forcing_static, stop - start, height, width)

    # -- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        traj, t0 = (int(v) for v in self.windows[index])
        if self._memory is not None:
            block = self._memory[traj, t0 : t0 + self.t_in + self.t_out]
        elif self._cache_bytes == 0:
            block = self._read(traj, t0, t0 + self.t_in + self.t_out)  # one slice
        else:
            block = self._from_chunks(traj, t0, self._cached_chunk)
        return self._split_window(block, traj, t0)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A batch of items; each Zarr chunk the batch touches is read once."""
        if self._memory is not None:
            return [self[i] for i in indices]
        batch_chunks: dict[ChunkKey, np.ndarray] = {}

        def chunk(key: ChunkKey) -> np.ndarray:
            if key not in batch_chunks:
                batch_chunks[key] = self._cached_chunk(key)
            return batch_chunks[key]

        out = []
        for i in indices:
            traj, t0 = (int(v) for v in self.windows[i])
            out.append(self._split_window(self._from_chunks(traj, t0, chunk), traj, t0))
        return out

    def frames(self, trajectory: int, start: int, stop: int) -> np.ndarray:
        """Normalized frames ``[start, stop)`` of ``trajectory``, from any split of the store,
        as a float32 ``(stop - start, C, H, W)`` copy (read directly, bypassing the cache)."""
        n_traj, n_time = self.shape[:2]
        if not (0 <= trajectory < n_traj and 0 <= start <= stop <= n_time):
            raise DataError(
                f"frames({trajectory}, {start}, {stop}) is outside the store's "
                f"{n_traj} trajectories x {n_time} time steps"
            )
        if self._memory is not None:
            return np.array(self._memory[trajectory, start:stop], dtype=np.float32)
        return np.array(self._read(int(trajectory), int(start), int(stop)), dtype=np.float32)

    def _read(self, traj: int, start: int, stop: int) -> np.ndarray:
        """``fields[traj, start:stop]`` from the Zarr store; a chunk that cannot be read (cut
        short, corrupt) is a ``DataError`` naming the store, the variable and the chunk."""
        try:
            return np.asarray(self._array()[traj, start:stop])
        except Exception as exc:
            text = str(exc).strip().splitlines()
            reason = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
            ct = self._chunk_time
            first, last = start // ct * ct, min(-(-stop // ct) * ct, self.shape[1]) - 1
            raise DataError(
                f"{self.path}: variable 'fields', the chunk of trajectory {traj}, time steps "
                f"{first}..{last}, cannot be read ({reason}); the store is damaged: rebuild it "
                "with `kedro run --pipelines=data`"
            ) from None

    def _split_window(
        self, block: np.ndarray, traj: int, t0: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # copies: callers may modify the tensors in place without touching the cache/array
        inputs = np.array(block[: self.t_in], dtype=np.float32)
        extra = self.forcings(traj, t0, t0 + self.t_in)
        if extra is not None:  # input-only channels after the fields; never in the target
            inputs = np.concatenate([inputs, extra], axis=1)
        x = torch.from_numpy(inputs)
        y = torch.from_numpy(np.array(block[self.t_in :], dtype=np.float32))
        return x, y

    def _from_chunks(self, traj: int, t0: int, get_chunk: Any) -> np.ndarray:
        t1 = t0 + self.t_in + self.t_out
        ct = self._chunk_time
        first, last = t0 // ct, (t1 - 1) // ct
        if first == last:
            return get_chunk((traj, first))[t0 - first * ct : t1 - first * ct]
        pieces = [get_chunk((traj, c)) for c in range(first, last + 1)]
        return np.concatenate(pieces, axis=0)[t0 - first * ct : t1 - first * ct]

    def _cached_chunk(self, key: ChunkKey) -> np.ndarray:
        self._array()  # first: opening in a new process starts an empty cache
        cache = self._cache
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        traj, c = key
        ct = self._chunk_time
        data = self._read(traj, c * ct, (c + 1) * ct)
        if data.nbytes <= self._cache_bytes:
            cache[key] = data
            self._cached_bytes += data.nbytes
            while self._cached_bytes > self._cache_bytes:
                _, dropped = cache.popitem(last=False)
                self._cached_bytes -= dropped.nbytes
        return data

    def _array(self) -> Any:
        # (re)open in each process: a zarr handle from the parent is not valid after fork
        if self._zarr is None or self._pid != os.getpid():
            import zarr

            self._reset_reader()
            try:
                self._zarr = zarr.open(str(self.path), mode="r")["fields"]
            except Exception as exc:
                raise DataError(f"{self.path}: cannot read 'fields' ({exc})") from exc
            self._pid = os.getpid()
        return self._zarr

    def _reset_reader(self) -> None:
        self._zarr: Any = None
        self._pid: int | None = None
        self._cache: OrderedDict[ChunkKey, np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_zarr=None, _pid=None, _cache=OrderedDict(), _cached_bytes=0)
        return state

    # -- units -------------------------------------------------------------------------------

    def denormalize(self, tensor: torch.Tensor) -> torch.Tensor:
        """Physical values of a normalized ``(..., C, H, W)`` tensor (any device, float dtype)."""
        mean, std = self._stats_like(tensor)
        return tensor * std + mean

    def normalize(self, tensor: torch.Tensor) -> torch.Tensor:
        """Normalized values of a physical ``(..., C, H, W)`` tensor."""
        mean, std = self._stats_like(tensor)
        return (tensor - mean) / std

    def _stats_like(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_chan = len(self.channels)
        if tensor.ndim < 3 or tensor.shape[-3] != n_chan:
            raise DataError(
                f"expected a (..., C={n_chan}, H, W) tensor, got shape {tuple(tensor.shape)}"
            )
        dtype = tensor.dtype if tensor.is_floating_point() else torch.float32
        view = (n_chan, 1, 1)
        return (
            self.mean.to(tensor.device, dtype).view(view),
            self.std.to(tensor.device, dtype).view(view),
        )

    # -- description -------------------------------------------------------------------------

    def window_times(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Time coordinates of the input and target frames of window ``index``."""
        _, t0 = (int(v) for v in self.windows[index])
        time = self.coords["time"]
        return time[t0 : t0 + self.t_in], time[t0 + self.t_in : t0 + self.t_in + self.t_out]

    def __repr__(self) -> str:
        source = self.path if self.path is not None else "in-memory"
        return (
            f"WindowDataset({source}, split={self.split!r}, windows={len(self)}, "
            f"t_in={self.t_in}, t_out={self.t_out}, stride={self.stride}, "
            f"channels={self.channels})"
        )


def _store_chunk_time(ds: xr.Dataset, n_time: int) -> int:
    """Frames per Zarr chunk along time, from the opened variable's encoding."""
    chunks = ds["fields"].encoding.get("chunks") or ds["fields"].encoding.get("preferred_chunks")
    if isinstance(chunks, dict):
        return int(chunks.get("time", n_time))
    if chunks:
        return int(chunks[1])
    return n_time


class ChunkPoolSampler(torch.utils.data.Sampler[int]):
    """A shuffled window order that reads a Zarr store pool by pool of chunks.

    Chunks are shuffled and grouped into pools of ``pool_mb`` of decoded data (default: half
    the dataset's chunk cache, leaving room for the second chunk of windows that straddle
    two); the windows starting in a pool are shuffled and yielded before the next pool. Every
    epoch (each ``iter``) draws a new order from ``seed``. Compared with a full shuffle, a
    batch mixes windows from fewer chunks; with pools of many chunks the batches stay
    well mixed. Use it in place of ``shuffle=True`` when the store is much larger than the
    cache; for a store that fits the cache a full shuffle is as fast.
    """

    def __init__(self, dataset: WindowDataset, pool_mb: float | None = None, seed: int = 0):
        n_chan, n_y, n_x = dataset.shape[2:]
        chunk_bytes = dataset._chunk_time * n_chan * n_y * n_x * 4
        if pool_mb is None:
            pool_mb = dataset._cache_bytes / 2 / 1024**2
        pool_mb = check_value("ChunkPoolSampler pool_mb", pool_mb, float, {"ge": 0})
        self.pool_chunks = max(1, int(pool_mb * 1024**2 // chunk_bytes))
        first_chunk = dataset.windows[:, 1] // dataset._chunk_time
        keys = dataset.windows[:, 0] * (first_chunk.max() + 1) + first_chunk
        _, self._chunk_of_window = np.unique(keys, return_inverse=True)
        self._n_chunks = int(self._chunk_of_window.max()) + 1
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._chunk_of_window)

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        chunk_order = rng.permutation(self._n_chunks)
        pool_of_chunk = np.empty(self._n_chunks, dtype=np.int64)
        pool_of_chunk[chunk_order] = np.arange(self._n_chunks) // self.pool_chunks
        pool_of_window = pool_of_chunk[self._chunk_of_window]
        # sort by pool, random order inside each pool
        order = np.lexsort((rng.random(len(pool_of_window)), pool_of_window))
        return iter(order.tolist())
