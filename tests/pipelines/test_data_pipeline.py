"""The data pipeline as users run it: real Kedro sessions on small configurations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from sdkd_pipeline.data.store import open_store
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.errors import ConfigError, MissingInputError, MissingRawDataError
from tests.pipelines.conftest import run_kedro


def test_era5_sample_goes_end_to_end(project):
    """The real ERA5 GRIB sample: raw file -> Zarr store -> windows that de-normalize to the file."""
    run_kedro(project, env="era5_sample", pipeline="data")

    store = open_store(project / "data/05_model_input/weatherbench.zarr")
    assert store["fields"].dtype == np.float32
    assert dict(store["fields"].sizes) == {
        "trajectory": 1,
        "time": 744,
        "channel": 1,
        "y": 33,
        "x": 49,
    }
    assert store.attrs["split_method"] == "time"
    # the env's forcings, input-only: beside the fields, not among their channels
    assert list(store["time_forcing"].values) == ["hour_sin", "hour_cos"]
    assert list(store["static_forcing"].values) == ["lat", "lon"]
    assert list(store["channel"].values) == ["t2m"]
    # chunked along time only
    chunks = store["fields"].data.chunks
    assert len(chunks[1]) > 1 and chunks[2:] == ((1,), (33,), (49,))

    grib = xr.open_dataset(
        project / "tests/fixtures/era5-2mt-2019-03-uk.grib",
        engine="cfgrib",
        backend_kwargs={"indexpath": ""},
    )["t2m"].sortby("latitude")
    truth = grib.values  # (time, lat, lon), lat ascending like the store

    # statistics from the training range only
    splits = json.loads(store.attrs["splits"])
    ((_, t0, t1),) = splits["train"]
    assert t0 == 0
    train = truth[t0:t1].astype(np.float64)
    assert float(store["mean"][0]) == pytest.approx(train.mean(), rel=1e-5)
    assert float(store["std"][0]) == pytest.approx(train.std(), rel=1e-4)
    assert abs(float(store["mean"][0]) - truth.mean()) > 1e-3  # the whole month differs

    # a test window de-normalizes to the file's values at the recorded times
    test = WindowDataset(project / "data/05_model_input/weatherbench.zarr", "test")
    assert len(test) > 0
    x, y = test[len(test) - 1]
    traj, start = test.windows[len(test) - 1]
    # inputs: t2m then its 4 forcing channels; targets: t2m only
    assert x.shape == (12, 1 + 4, 33, 49) and y.shape == (12, 1, 33, 49)
    np.testing.assert_allclose(
        test.denormalize(x[:, :1])[:, 0].numpy(), truth[start : start + 12], rtol=0, atol=1e-3
    )
    np.testing.assert_allclose(
        test.denormalize(y)[:, 0].numpy(), truth[start + 12 : start + 24], rtol=0, atol=1e-3
    )

    summary = json.loads((project / "data/08_reporting/weatherbench_data_summary.json").read_text())
    assert summary["channels"] == ["t2m"]
    assert min(summary["windows"].values()) > 0
    # gaps between splits are at least one window: no window crosses from one split to another
    ranges = sorted((t0, t1) for name in splits for _, t0, t1 in splits[name])
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert start - end >= 24


def test_generated_simulations_write_their_stores(project):
    """The default datasets (NS and RBC) on the smoke sizes: stores and summaries exist."""
    run_kedro(project, env="smoke", pipeline="data")
    for name, channels in (
        ("navier_stokes", ["vorticity"]),
        ("rayleigh_benard", None),
    ):
        store = open_store(project / f"data/05_model_input/{name}.zarr")
        assert store.attrs["split_method"] == "trajectory"
        if channels:
            assert [str(c) for c in store["channel"].values] == channels
        raw = open_store(project / f"data/02_intermediate/{name}_raw.zarr", kind="raw")
        assert raw["fields"].shape == store["fields"].shape
        for split in ("train", "val", "test"):
            assert len(WindowDataset(project / f"data/05_model_input/{name}.zarr", split)) > 0
        # normalized training data: mean ~0, std ~1 per channel
        splits = json.loads(store.attrs["splits"])
        train_traj = [traj for traj, _, _ in splits["train"]]
        train = store["fields"].isel(trajectory=train_traj).values
        np.testing.assert_allclose(train.mean(axis=(0, 1, 3, 4)), 0.0, atol=1e-4)
        np.testing.assert_allclose(train.std(axis=(0, 1, 3, 4)), 1.0, rtol=1e-3)


@pytest.mark.bad_input
def test_unknown_dataset_name_is_rejected(project):
    with pytest.raises(ConfigError, match=r"data\.datasets.*'mnist'"):
        run_kedro(project, env="smoke", pipeline="data", params={"data.datasets": "mnist"})
    assert not list((project / "data").rglob("*.zarr"))


@pytest.mark.bad_input
def test_enabled_dataset_without_files_says_where_they_go(project):
    """Reported before anything runs: the NS generation enabled beside it never starts."""
    with pytest.raises(MissingRawDataError, match=r"data/01_raw/taxibj"):
        run_kedro(
            project,
            env="smoke",
            pipeline="data",
            params={"data.datasets": "navier_stokes+taxibj"},
        )
    assert not list((project / "data").rglob("*.zarr"))


def _mlflow_statuses(project) -> list[str]:
    import mlflow

    db = project / "mlflow.db"
    if not db.exists():
        return []
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    return [
        r.info.status
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
    ]


@pytest.mark.parametrize(
    ("pipeline", "params", "error"),
    [
        (
            "data",
            {"data.datasets": "navier_stokes", "navier_stokes.source.kind": "genrate"},
            ConfigError,
        ),
        ("data", {"data.datasets": "navier_stokes+taxibj"}, MissingRawDataError),
        ("distill", {"data.datasets": "navier_stokes"}, MissingInputError),
    ],
)
def test_a_run_refused_by_a_preflight_check_leaves_no_finished_mlflow_run(
    project, pipeline, params, error
):
    with pytest.raises(error):
        run_kedro(project, env="smoke", pipeline=pipeline, params=params)
    # no run was started (the checks run before kedro-mlflow's hook); none may say FINISHED
    assert "FINISHED" not in _mlflow_statuses(project)
    assert "RUNNING" not in _mlflow_statuses(project)


@pytest.mark.bad_input
def test_negative_viscosity_names_the_parameter(project):
    with pytest.raises(ConfigError, match=r"navier_stokes\.source\.generate\.viscosity"):
        run_kedro(
            project,
            env="smoke",
            pipeline="data",
            params={
                "data.datasets": "navier_stokes",
                "navier_stokes.source.generate.viscosity": -1e-3,
            },
        )
    assert not list((project / "data").rglob("*.zarr"))


@pytest.mark.bad_input
def test_a_reader_option_typo_names_the_parameter_and_the_nearest_option(project):
    with pytest.raises(
        ConfigError,
        match=r"^navier_stokes\.source\.fno_mat\.viscocity: unknown parameter \(allowed: "
        r"include_initial_state, max_trajectories, path, viscosity\); did you mean 'viscosity'\?$",
    ):
        run_kedro(
            project,
            env="smoke",
            pipeline="data",
            params={
                "data.datasets": "navier_stokes",
                "navier_stokes.source.kind": "fno_mat",
                "navier_stokes.source.fno_mat.viscocity": 1e-3,
            },
        )
    assert not list((project / "data").rglob("*.zarr"))


def test_reader_options_are_checked_against_the_reader(tmp_path):
    from sdkd_pipeline.data.sources import load_raw

    with pytest.raises(
        ConfigError,
        match=r"^rayleigh_benard\.source\.the_well\.pathz: unknown parameter \(allowed: fields, "
        r"lazy, paths, trajectories_per_file\); did you mean 'paths'\?$",
    ):
        load_raw("rayleigh_benard", {"kind": "the_well", "the_well": {"pathz": str(tmp_path)}})
    with pytest.raises(
        ConfigError, match=r"^navier_stokes\.source\.fno_mat\.path: required parameter missing$"
    ):
        load_raw("navier_stokes", {"kind": "fno_mat", "fno_mat": {"viscosity": 1e-3}})
    # the readers' own configs name the full parameter path too (the loader's wording)
    with pytest.raises(
        ConfigError, match=r"^weatherbench\.source\.era5\.variabels: unknown parameter \(allowed:"
    ):
        load_raw("weatherbench", {"kind": "era5", "era5": {"path": "x", "variabels": ["t2m"]}})
    with pytest.raises(ConfigError, match=r"^weatherbench\.source\.wb2_zarr\.path: required for"):
        load_raw("weatherbench", {"kind": "wb2_zarr", "wb2_zarr": {"variables": "t2m"}})
    with pytest.raises(
        ConfigError, match=r"^taxibj_plus\.source\.arrays\.channel_layout must be one of "
    ):
        load_raw("taxibj_plus", {"kind": "arrays", "arrays": {"channel_layout": "12x2"}})
    with pytest.raises(ConfigError, match=r"^taxibj\.source\.deepst_h5\.folder: unknown param"):
        load_raw("taxibj", {"kind": "deepst_h5", "deepst_h5": {"folder": str(tmp_path)}})
    with pytest.raises(ConfigError, match=r"^navier_stokes\.source\.generate\.seed must be >= 0"):
        load_raw("navier_stokes", {"kind": "generate", "generate": {"seed": -1}})


@pytest.mark.bad_input
def test_window_longer_than_series_names_the_parameter(project):
    with pytest.raises(ConfigError, match=r"weatherbench\.window"):
        run_kedro(
            project,
            env="era5_sample",
            pipeline="data",
            params={"weatherbench.window.t_in": 800},
        )
    assert not (project / "data/05_model_input/weatherbench.zarr").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"navier_stokes.window.t_in": 20},
            r"navier_stokes\.window\.t_in \+ navier_stokes\.window"
            r"\.t_out = 20 \+ 3 = 23 frames: the window is longer",
        ),
        ({"navier_stokes.window.stride": 0}, r"navier_stokes\.window\.stride must be >= 1"),
        ({"navier_stokes.split.train": 0.9}, r"navier_stokes\.split"),
        ({"rayleigh_benard.split.test": 0}, r"rayleigh_benard\.split"),
    ],
)
def test_window_and_split_errors_come_before_the_generation(project, params, message):
    with pytest.raises(ConfigError, match=message):
        run_kedro(project, env="smoke", pipeline="data", params=params)
    # refused before anything was generated: no raw store of either dataset
    assert not list((project / "data").rglob("*.zarr"))


def test_pipelines_are_namespaced_by_dataset(project):
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    from sdkd_pipeline.pipelines.selection import set_parameters

    bootstrap_project(project)
    set_parameters({"data": {"datasets": ["navier_stokes", "weatherbench"]}})
    data = pipelines["data"]
    assert {n.namespace for n in data.nodes} == {"navier_stokes", "weatherbench"}
    assert "weatherbench.tensors" in data.all_outputs()


def test_raw_files_beside_a_generating_source_are_pointed_out(project, caplog):
    raw = project / "data/01_raw/navier_stokes"
    raw.mkdir(parents=True)
    (raw / "ns_V1e-3_N5000_T50.mat").write_bytes(b"downloaded")
    with caplog.at_level("WARNING", logger="sdkd_pipeline"):
        run_kedro(project, env="smoke", pipeline="data", params={"data.datasets": "navier_stokes"})
    assert "navier_stokes.source.kind is 'generate'" in caplog.text
    assert "ns_V1e-3_N5000_T50.mat" in caplog.text and "'fno_mat'" in caplog.text
