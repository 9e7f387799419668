"""Sources on a Dask cluster (``data/cluster.py``): the solvers' batches and the readers run as
tasks, the client's graph stays small, and the values are bitwise those of the eager run."""

from __future__ import annotations

import cloudpickle
import numpy as np
import pytest
import xarray as xr

from sdkd_pipeline.data.cluster import CONFIG_KEY, set_sources_on_cluster, sources_client
from sdkd_pipeline.data.sources import load_raw
from sdkd_pipeline.data.store import open_store, write_store
from sdkd_pipeline.errors import ConfigError, MissingRawDataError
from sdkd_pipeline.pipelines.data.nodes import acquire_raw
from tests.data.test_rayleigh_benard import write_well_file
from tests.data.test_taxibj import _plus_sequences, _write_plus
from tests.data.test_weatherbench import GRIB_SAMPLE

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MiB = 1024**2
# 16 trajectories x 20 frames of 32^2 float32: 1.3 MB of fields, so a graph that embeds them
# is over 1 MiB and one that names the workers' results is far below
NS = dict(
    n_trajectories=16,
    resolution=32,
    record_resolution=32,
    viscosity=1e-3,
    dt=None,
    t_final=20.0,
    record_every=1.0,
    batch_size=4,
    device="cpu",
)
RBC = dict(
    nx=16,
    nz=8,
    rayleigh=5e3,
    t_spinup=0.0,
    t_final=2.0,
    record_interval=0.5,
    n_trajectories=3,
    device="cpu",
)
# what differs between two runs of the same source: timings, not results
TIMING_ATTRS = ("generation_seconds", "wall_time_s")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def on_cluster(client):
    """Sources run on the in-process cluster (``auto`` would keep them here)."""
    with dask.config.set({CONFIG_KEY: True}):
        assert sources_client() is client
        yield client


@pytest.fixture
def here(client):
    with dask.config.set({CONFIG_KEY: False}):
        assert sources_client() is None
        yield


def _graph_bytes(raw: xr.Dataset) -> int:
    """Size of the graph the client sends to compute (e.g. write) the raw fields."""
    return len(cloudpickle.dumps(dict(raw["fields"].data.__dask_graph__())))


def _assert_same_raw(lazy: xr.Dataset, eager: xr.Dataset) -> None:
    assert lazy["fields"].chunks is not None  # dask-backed: computed on the cluster
    np.testing.assert_array_equal(lazy["fields"].values, eager["fields"].values)  # bitwise
    assert lazy["fields"].dtype == eager["fields"].dtype == np.float32
    xr.testing.assert_identical(
        lazy.drop_vars("fields").drop_attrs(deep=False),
        eager.drop_vars("fields").drop_attrs(deep=False),
    )
    strip = {k: v for k, v in eager.attrs.items() if k not in TIMING_ATTRS}
    assert {k: v for k, v in lazy.attrs.items() if k not in TIMING_ATTRS} == strip


def test_when_sources_run_on_the_cluster(client):
    with dask.config.set({CONFIG_KEY: "auto"}):
        assert sources_client() is None  # an in-process scheduler: nothing would be shipped
    with dask.config.set({CONFIG_KEY: True, "scheduler": "synchronous"}):
        assert sources_client() is None  # a local scheduler chosen over the client
    set_sources_on_cluster("true")
    try:
        assert dask.config.get(CONFIG_KEY) is True
    finally:
        set_sources_on_cluster(None)
    assert dask.config.get(CONFIG_KEY) == "auto"


@pytest.mark.bad_input
def test_a_bad_sources_on_cluster_value_names_the_parameter():
    from sdkd_pipeline.hooks import start_dask_client

    with pytest.raises(ConfigError, match=r"^parameter dask\.sources_on_cluster: 'sometimes' "):
        start_dask_client({"scheduler": "synchronous", "sources_on_cluster": "sometimes"})


def test_navier_stokes_batches_are_tasks_bitwise_equal_and_the_graph_small(client):
    source = {"kind": "generate", "generate": NS}
    with dask.config.set({CONFIG_KEY: False}):
        eager = acquire_raw("navier_stokes", source, progress=False)
    with dask.config.set({CONFIG_KEY: True}):
        lazy = acquire_raw("navier_stokes", source, progress=False)
    assert _graph_bytes(eager) > MiB  # the eager path embeds the solved fields
    assert _graph_bytes(lazy) < MiB / 8  # the cluster path names the batches' results
    assert lazy.attrs["device_used"] == "cpu" and lazy.attrs["batch_size_used"] == 4
    _assert_same_raw(lazy, eager)


def test_a_blow_up_on_the_cluster_raises_as_here(on_cluster):
    unstable = dict(
        n_trajectories=2,
        resolution=32,
        record_resolution=16,
        viscosity=1e-5,
        dt=0.05,
        record_every=0.05,
        t_final=0.5,
        grf_sigma=30 * 7**1.5,
        dt_limit_factor=1e6,
        device="cpu",
    )
    with pytest.raises(ConfigError, match=r"navier_stokes\.source\.generate\.dt.*blew up"):
        load_raw("navier_stokes", {"kind": "generate", "generate": unstable}, progress=False)


def test_rayleigh_benard_runs_as_one_task_bitwise_equal(client, tmp_path):
    source = {"kind": "generate_free_slip", "generate_free_slip": RBC}
    with dask.config.set({CONFIG_KEY: False}):
        eager = load_raw("rayleigh_benard", source, progress=False)
    with dask.config.set({CONFIG_KEY: True}):
        lazy = load_raw("rayleigh_benard", source, progress=False)
        _assert_same_raw(lazy, eager)
        # and what the data pipeline writes from it reads back the same
        stored = open_store(write_store(lazy, tmp_path / "raw.zarr", kind="raw"), kind="raw")
    np.testing.assert_array_equal(stored["fields"].values, eager["fields"].values)


def test_readers_run_on_the_workers_bitwise_equal(client, tmp_path):
    grib = {"kind": "era5", "era5": {"path": str(GRIB_SAMPLE)}}
    write_well_file(tmp_path / "a.hdf5", n_traj=3)
    well = {"kind": "the_well", "the_well": {"paths": [str(tmp_path / "a.hdf5")]}}
    (tmp_path / "plus").mkdir()
    _write_plus(tmp_path / "plus", _plus_sequences(6, frames=3, size=8))
    plus = {"kind": "arrays", "arrays": {"dir": str(tmp_path / "plus")}}
    cases = [("weatherbench", grib), ("rayleigh_benard", well), ("taxibj_plus", plus)]
    with dask.config.set({CONFIG_KEY: False}):
        eager = {name: load_raw(name, source) for name, source in cases}
    with dask.config.set({CONFIG_KEY: True}):
        for name, source in cases:
            lazy = load_raw(name, source)
            _assert_same_raw(lazy, eager[name])
            # the graph names files and index ranges, never the data
            assert _graph_bytes(lazy) < eager[name]["fields"].nbytes / 4 + 64 * 1024


def test_a_readers_error_on_the_cluster_keeps_its_type_and_message(on_cluster, tmp_path):
    missing = tmp_path / "ns_V1e-3_N5000_T50.mat"
    with pytest.raises(MissingRawDataError, match=r"ns_V1e-3_N5000_T50\.mat: FNO Navier-Stokes"):
        load_raw("navier_stokes", {"kind": "fno_mat", "fno_mat": {"path": str(missing)}})
    with pytest.raises(ConfigError, match=r"^weatherbench\.source\.era5\.time_slice: expected"):
        load_raw("weatherbench", {"kind": "era5", "era5": {"path": "x.grib", "time_slice": [1]}})


def test_eager_here_when_sources_stay_in_the_client(here):
    raw = load_raw("rayleigh_benard", {"kind": "generate_free_slip", "generate_free_slip": RBC})
    assert isinstance(raw["fields"].data, np.ndarray)
