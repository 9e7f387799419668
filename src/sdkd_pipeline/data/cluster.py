"""Running the data sources on a Dask cluster, so the client ships small graphs.

Without this, a source (solver or reader) runs in the client and its result, tens of MiB of
numpy arrays, is embedded in the graph that normalizes and writes it. When sources run on the
cluster (``sources_client`` returns a client), the heavy work happens on the workers and the
data stay there; the client holds a dask-backed raw dataset whose graph names the workers'
results by key:

- ``run_on_cluster(client, source, ...)``: the whole source call as one task (readers, the
  Rayleigh-Benard solver, whose trajectories share one CFL-chosen time step and so stay
  together); its fields are then cut into (trajectory, time-chunk) pieces on that worker.
- sources that split their own work: the Navier-Stokes generator (one task per batch of
  trajectories), The Well's reader and TaxiBJ+'s (one read task per block of the files).

Solver tasks run with the client's torch thread count, so their fields are bitwise those of
the eager run (CPU FFTs and reductions split their sums by thread).

Whether sources run on the cluster is the dask config value ``sdkd.sources_on_cluster``
(``dask.sources_on_cluster`` in ``parameters_data.yml``): ``auto`` (default) when a distributed
client is active and its scheduler is not in this process (a LocalCluster with
``processes: false`` shares the client's memory, so nothing would be shipped anyway), ``true``
whenever a client is active, ``false`` never. Dask and distributed are imported lazily.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from sdkd_pipeline.errors import ConfigError

CONFIG_KEY = "sdkd.sources_on_cluster"


def set_sources_on_cluster(value: Any, param_path: str = "dask.sources_on_cluster") -> None:
    """Check ``value`` (``auto``, ``true`` or ``false``) and set it in the dask config."""
    import dask

    if value is None:
        value = "auto"
    if isinstance(value, str):
        value = {"auto": "auto", "true": True, "false": False}.get(value.lower(), value)
    if not (value == "auto" or isinstance(value, bool)):
        raise ConfigError(f"parameter {param_path}: {value!r} is not one of auto, true, false")
    dask.config.set({CONFIG_KEY: value})


def sources_client() -> Any:
    """The distributed client the sources should run on, or ``None`` (see the module
    docstring)."""
    if "distributed" not in sys.modules:  # no client can exist: skip importing it
        return None
    import dask
    from distributed import default_client

    setting = dask.config.get(CONFIG_KEY, "auto")
    if setting is False:
        return None
    try:
        client = default_client()
    except ValueError:  # no client
        return None
    if dask.config.get("scheduler", None) in ("synchronous", "sync", "threads", "processes"):
        return None  # a local scheduler was chosen over the client
    if setting == "auto" and str(client.scheduler.address).startswith("inproc://"):
        return None
    return client


def _call_here(
    source: Callable[..., xr.Dataset], args: tuple, kwargs: dict, torch_threads: int
) -> xr.Dataset:
    """On the worker: run the source with dask's local scheduler and the client's torch
    thread count (a solver's CPU FFTs and reductions are bitwise those of the eager run only
    with the same count), and return it in memory."""
    import dask
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        with dask.config.set(scheduler="synchronous"):
            return source(*args, **kwargs).load()
    finally:
        torch.set_num_threads(before)


def _skeleton(ds: xr.Dataset) -> tuple[xr.Dataset, tuple[int, ...], dict]:
    """On the worker: everything but the fields' values (coordinates, attributes), for the
    client."""
    fields = ds["fields"]
    return ds.drop_vars("fields"), tuple(int(n) for n in fields.shape), dict(fields.attrs)


def _piece(ds: xr.Dataset, traj: int, t0: int, t1: int) -> np.ndarray:
    return np.asarray(ds["fields"].values[traj : traj + 1, t0:t1])


def run_on_cluster(
    client: Any, source: Callable[..., xr.Dataset], *args: Any, **kwargs: Any
) -> xr.Dataset:
    """``source(*args, **kwargs)`` run as one task on the cluster, as a raw dataset whose
    ``fields`` are a dask array over the worker's result, in pieces of one trajectory and
    about ``tensors.TARGET_CHUNK_BYTES`` along time. The source's error, if any, is raised
    here with its own type and message."""
    import dask
    import dask.array as da
    import torch

    from sdkd_pipeline.data.raw import RAW_DIMS, validate_raw
    from sdkd_pipeline.data.tensors import default_chunk_time

    threads = torch.get_num_threads()
    result = client.submit(_call_here, source, args, kwargs, threads, pure=False)
    skeleton, shape, field_attrs = client.submit(_skeleton, result, pure=False).result()
    n_traj, n_time = shape[:2]
    frame_bytes = int(np.prod(shape[2:])) * 4
    step = default_chunk_time(n_time, frame_bytes, 1)
    rows = []
    for traj in range(n_traj):
        row = []
        for t0 in range(0, n_time, step):
            t1 = min(t0 + step, n_time)
            block = dask.delayed(_piece, pure=True)(result, traj, t0, t1)
            row.append(da.from_delayed(block, (1, t1 - t0, *shape[2:]), dtype=np.float32))
        rows.append(da.concatenate(row, axis=1))
    fields = da.concatenate(rows, axis=0)
    raw = skeleton.assign(fields=(RAW_DIMS, fields, field_attrs))
    raw.attrs = dict(skeleton.attrs)
    return validate_raw(raw, check_finite=False)  # scanned by make_raw on the worker


def blocks_array(
    read: Callable[..., np.ndarray],
    blocks: list[tuple[Any, ...]],
    block_shapes: list[tuple[int, ...]],
    axis: int = 0,
) -> Any:
    """A dask array of ``read(*block)`` per block, joined along ``axis``: each block is read
    by a task (on a worker, where the files must be visible), so the graph holds only the
    block arguments (file paths, index ranges), never the data."""
    import dask
    import dask.array as da

    parts = [
        da.from_delayed(dask.delayed(read, pure=True)(*block), shape, dtype=np.float32)
        for block, shape in zip(blocks, block_shapes, strict=True)
    ]
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=axis)
