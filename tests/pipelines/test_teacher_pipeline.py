"""`kedro run --pipelines=teacher` on the smoke config: checkpoints, summaries, MLflow runs."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.pipelines.teacher.nodes import load_forecaster
from sdkd_pipeline.training import evaluate_mse
from tests.pipelines.conftest import run_kedro

NS_ONLY = {"data.datasets": "navier_stokes"}


def test_teachers_train_register_checkpoints_and_log_to_mlflow(project):
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    run_kedro(project, env="smoke", pipeline="teacher", params=NS_ONLY)

    store = project / "data/05_model_input/navier_stokes.zarr"
    val = WindowDataset(store, "val")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    for teacher in ("st_alternet", "simvp"):
        path = project / f"data/06_models/navier_stokes/{teacher}.pt"
        checkpoint = torch.load(path, weights_only=True)
        model = load_forecaster(checkpoint)
        # the registered weights are the best-validation ones the summary reports
        summary = json.loads(
            (project / f"data/06_models/navier_stokes/{teacher}_summary.json").read_text()
        )
        assert evaluate_mse(model, val, batch_size=8) == pytest.approx(
            summary["best_val_mse"], rel=1e-4
        )
        assert summary["n_parameters"] == sum(p.numel() for p in model.parameters())

        run = client.get_run(summary["mlflow_run_id"])
        assert run.data.tags["dataset"] == "navier_stokes"
        assert run.data.tags["role"] == "teacher"
        assert run.data.tags["model"] == teacher
        assert "train.lr" in run.data.params and "model_config.hidden" in run.data.params
        # relative to the project, so a copied project's runs do not name this disk
        assert run.data.params["data.store"] == "data/05_model_input/navier_stokes.zarr"
        # the tensor store as the run's dataset input, with its digest and split sizes
        (used,) = run.inputs.dataset_inputs
        assert used.dataset.name == "navier_stokes" and len(used.dataset.digest) == 16
        assert used.dataset.source == "data/05_model_input/navier_stokes.zarr"
        assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "training"
        assert set(json.loads(used.dataset.profile)["windows"]) == {"train", "val", "test"}
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert len(history) == 2  # one per epoch (smoke: 2 epochs)
        assert "test_loss" in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"loss_curves.png", "resolved_config.json", "checkpoints"} <= artifacts


def test_teacher_without_data_says_which_command_to_run(project):
    with pytest.raises(Exception, match=r"kedro run --pipelines=data"):
        run_kedro(project, env="smoke", pipeline="teacher", params=NS_ONLY)


def test_changed_settings_start_a_new_run_and_same_settings_reuse_it(project):
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    params = {**NS_ONLY, "teacher.models": "simvp"}
    run_kedro(project, env="smoke", pipeline="teacher", params=params)
    runs = project / "data/06_models/runs/navier_stokes/simvp"
    (first,) = list(runs.iterdir())
    # the same settings find the finished run (the engine returns from its checkpoints)
    run_kedro(project, env="smoke", pipeline="teacher", params=params)
    assert [p.name for p in runs.iterdir()] == [first.name]
    # another learning rate is another run, not a refused resume of the finished one
    run_kedro(
        project, env="smoke", pipeline="teacher", params={**params, "teacher.training.lr": 5e-4}
    )
    assert len(list(runs.iterdir())) == 2
