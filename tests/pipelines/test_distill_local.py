"""The band split that varies in space through `kedro run --pipelines=distill` (smoke config):
the conf/base variant ``sdkd_local`` trains and logs its per-band weights to MLflow, and levels
the grid does not allow stop its node with the parameter named."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch

from sdkd_pipeline.errors import ConfigError
from tests.pipelines.conftest import run_kedro

NS_ONLY = {"data.datasets": "navier_stokes"}
STUDENTS = "data/06_models/navier_stokes/students"


@pytest.mark.bad_input
def test_the_local_variant_trains_and_levels_the_grid_does_not_allow_are_named(project):
    # one data and teacher run for both (the smoke teachers take most of the test's time)
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    run_kedro(project, env="smoke", pipeline="teacher", params=NS_ONLY)
    local = {**NS_ONLY, "distill.methods": "sdkd_local"}
    with pytest.raises(
        ConfigError,
        match=r"distill\.variants\.sdkd_local\.local\.levels = 4: a 32x32 grid in 4x4 tiles "
        r"of 8x8 cells allows at most 3 level\(s\)",
    ):
        run_kedro(
            project,
            env="smoke",
            pipeline="distill",
            params={**local, "distill.variants.sdkd_local.local.levels": 4},
        )
    assert not (project / STUDENTS / "unet" / "sdkd_local.pt").exists()

    run_kedro(project, env="smoke", pipeline="distill", params=local)
    summary = json.loads((project / STUDENTS / "unet" / "sdkd_local_summary.json").read_text())
    checkpoint = torch.load(project / STUDENTS / "unet" / "sdkd_local.pt", weights_only=True)
    assert checkpoint["method"] == "sdkd_local" and summary["distill_method"] == "sdkd"
    assert checkpoint["distill"]["weighting"] == "local"
    assert checkpoint["distill"]["local_tiles"] == [4, 4]
    run = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}").get_run(
        summary["mlflow_run_id"]
    )
    metrics, params = run.data.metrics, run.data.params
    assert run.data.tags["method"] == "sdkd_local" and "test_loss" in metrics
    # 32x32 in 4x4 tiles: levels auto = 3, so 4 wavelet bands, each over 16 regions
    assert params["local_levels"] == "3" and params["local_regions"] == "16"
    for band in range(4):
        w = [metrics[f"train_w_band{band}{s}"] for s in ("_min", "", "_max")]
        assert 0.0 <= w[0] <= w[1] <= w[2] <= 4.0  # advantage.w_max
        assert metrics[f"train_kd_band{band}"] >= 0.0
    assert "train_w_band4" not in metrics and 0.0 <= metrics["train_w_zero"] <= 1.0
