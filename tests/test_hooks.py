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


def test_run_times_hook_writes_stage_and_node_seconds(tmp_path):
    import json
    import time
    from types import SimpleNamespace

    from sdkd_pipeline.hooks import RUN_TIMES, RunTimesHook

    hook = RunTimesHook()
    hook.before_pipeline_run({}, None, None)
    for name, tags, pause in (
        ("acquire_raw", {"data", "navier_stokes"}, 0.02),
        ("train_teacher", {"teacher", "navier_stokes", "simvp"}, 0.05),
        ("tabulate", set(), 0.0),
    ):
        node = SimpleNamespace(name=name, tags=tags)
        hook.before_node_run(node)
        time.sleep(pause)
        hook.after_node_run(node)
    hook.after_pipeline_run(
        {"project_path": str(tmp_path), "env": "smoke", "pipeline_names": ["__default__"]}
    )
    (report,) = json.loads((tmp_path / RUN_TIMES).read_text())["runs"]
    assert set(report["stages"]) == {"data", "teacher", "other"}
    assert report["stages"]["teacher"] >= 0.05 and report["seconds"] >= 0.07
    assert [n["node"] for n in report["nodes"]][0] == "train_teacher"  # slowest first
    assert report["env"] == "smoke" and not list(tmp_path.rglob("*.tmp-*"))

    # a second run (e.g. --pipelines=distill after a full run) adds its record, the full
    # run's stays
    hook.before_pipeline_run({}, None, None)
    node = SimpleNamespace(name="distill_unet_with_sdkd", tags={"distill"})
    hook.before_node_run(node)
    hook.after_node_run(node)
    hook.after_pipeline_run({"project_path": str(tmp_path), "pipeline_names": ["distill"]})
    runs = json.loads((tmp_path / RUN_TIMES).read_text())["runs"]
    assert [r["pipeline"] for r in runs] == [["__default__"], ["distill"]]
    assert set(runs[0]["stages"]) == {"data", "teacher", "other"}


def test_run_times_keep_an_old_single_record_and_survive_a_damaged_file(tmp_path):
    import json

    from sdkd_pipeline.hooks import RUN_TIMES, previous_run_times

    path = tmp_path / RUN_TIMES
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"seconds": 3.0, "stages": {}, "nodes": []}))
    assert previous_run_times(path) == [{"seconds": 3.0, "stages": {}, "nodes": []}]
    path.write_text("{not json")
    assert previous_run_times(path) == []


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"scheduler": "lokal"}, r"^parameter dask\.scheduler: unknown value 'lokal'"),
        ({"schedular": "local"}, r"^parameter dask\.schedular: unknown parameter \(allowed: "),
    ],
)
def test_a_dask_typo_names_the_parameter(cfg, message):
    from sdkd_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        start_dask_client(cfg)
