"""`kedro run --pipelines=teacher --params teacher.models=fno` on the smoke config: the FNO
trains, its checkpoint reloads, and its MLflow run has the tags and counts of any teacher."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.models import FNO, count_flops
from sdkd_pipeline.pipelines.teacher.nodes import load_forecaster
from sdkd_pipeline.training import evaluate_mse
from tests.pipelines.conftest import run_kedro

NS_FNO = {"data.datasets": "navier_stokes", "teacher.models": "fno"}


def test_the_teacher_pipeline_trains_the_fno_and_logs_it_to_mlflow(project):
    run_kedro(project, env="smoke", pipeline="data", params=NS_FNO)
    run_kedro(project, env="smoke", pipeline="teacher", params=NS_FNO)

    folder = project / "data/06_models/navier_stokes"
    assert not (folder / "st_alternet.pt").exists()  # only the teachers asked for
    checkpoint = torch.load(folder / "fno.pt", weights_only=True)
    model = load_forecaster(checkpoint)
    assert isinstance(model, FNO) and model.config.hidden == 8  # the smoke size
    summary = json.loads((folder / "fno_summary.json").read_text())
    val = WindowDataset(project / "data/05_model_input/navier_stokes.zarr", "val")
    assert evaluate_mse(model, val, batch_size=8) == pytest.approx(
        summary["best_val_mse"], rel=1e-4
    )
    assert summary["n_parameters"] == sum(p.numel() for p in model.parameters())
    x, _ = val[0]
    assert summary["flops_per_sample"] == count_flops(model, tuple(x.shape))  # FFTs included
    assert summary["flops_per_sample"] > 0

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    tags = run.data.tags
    assert (tags["dataset"], tags["role"], tags["model"], tags["method"]) == (
        "navier_stokes",
        "teacher",
        "fno",
        "supervised",
    )
    assert run.data.params["model_config.modes"] == "[4, 4]"
    assert run.data.params["model_config.hidden"] == "8"
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2  # smoke: 2 epochs
    assert "test_loss" in run.data.metrics
