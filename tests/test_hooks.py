"""The Dask hook: a LocalCluster by default, an existing scheduler by address."""

from __future__ import annotations

import dask
import dask.array as da
import pytest

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.hooks import start_dask_client


def test_local_cluster_computes():
    client, cluster = start_dask_client({"scheduler": "local", "n_workers": 1})
    try:
        assert client.status == "running"
        assert float(da.ones((100, 100), chunks=10).sum().compute()) == 10000.0
        assert len(client.scheduler_info()["workers"]) == 1
    finally:
        client.close()
        cluster.close()


def test_scheduler_address_connects_to_an_existing_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        client, own = start_dask_client({"scheduler": cluster.scheduler_address})
        try:
            assert own is None  # we did not start it, we must not stop it
            assert client.scheduler.address == cluster.scheduler_address
        finally:
            client.close()


def test_synchronous_scheduler_needs_no_cluster():
    client, cluster = start_dask_client({"scheduler": "synchronous"})
    assert client is None and cluster is None
    assert dask.config.get("scheduler") == "synchronous"
    dask.config.set(scheduler=None)


def test_unknown_scheduler_names_the_parameter():
    with pytest.raises(ConfigError, match=r"dask\.scheduler"):
        start_dask_client({"scheduler": "kubernetes"})
