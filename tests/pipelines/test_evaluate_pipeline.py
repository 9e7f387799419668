"""`kedro run --pipelines=evaluate` on the smoke config: the table, its files and MLflow run."""

from __future__ import annotations

import json
import math

import mlflow
import pandas as pd
import pytest
import torch

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.deploy import onnx_missing
from sdkd_pipeline.errors import MissingInputError
from sdkd_pipeline.evaluation.plots import FIGURES
from sdkd_pipeline.pipelines.forecaster import load_forecaster
from tests.pipelines.conftest import run_kedro

NS_ONLY = {"data.datasets": "navier_stokes"}
REPORTS = "data/08_reporting/evaluation"
# the evaluation needs trained checkpoints, not good ones: one short epoch each
FAST = {
    **NS_ONLY,
    "teacher.training.epochs": 1,
    "teacher.training.max_batches_per_epoch": 2,
    "distill.training.epochs": 1,
    "distill.training.max_batches_per_epoch": 2,
}


def test_evaluate_tables_teachers_and_students(project):
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    run_kedro(project, env="smoke", pipeline="teacher", params=FAST)
    run_kedro(project, env="smoke", pipeline="distill", params=FAST)
    run_kedro(project, env="smoke", pipeline="evaluate", params=NS_ONLY)

    reports = project / REPORTS
    for name in (
        "table.csv",
        "table.md",
        "curves.json",
        *(f"{figure}.png" for figure in FIGURES),
    ):
        assert (reports / f"navier_stokes_{name}").stat().st_size > 0, name
    table = pd.read_csv(reports / "navier_stokes_table.csv")
    assert list(zip(table["role"], table["model"], table["method"], strict=True)) == [
        ("teacher", "st_alternet", "supervised"),
        ("teacher", "simvp", "supervised"),
        ("baseline", "persistence", "baseline"),
        ("baseline", "climatology", "baseline"),
        ("student", "unet", "none"),
        ("student", "unet", "sdkd"),
    ]
    for column in (
        "latency_ms_b1",
        "latency_ms_b4",
        "speedup_vs_simvp_b1",
        "speedup_vs_st_alternet_b4",
    ):
        assert (table[column] > 0).all(), column
    # the exported students' latency (teachers are not exported by default); ONNX only where
    # onnx and onnxruntime import, its columns blank otherwise
    students = table["role"] == "student"
    baselines = table["role"] == "baseline"
    assert (table.loc[baselines, "params"] == 0).all()
    # teachers get a verdict ("ok" or the reasons), the other rows none (blank in the CSV)
    assert table.loc[table["role"] == "teacher", "teacher_check"].str.len().gt(0).all()
    assert table.loc[table["role"] != "teacher", "teacher_check"].isna().all()
    assert table.loc[~students, "gap_closed_vs_persistence_mse"].isna().all()
    formats = ["torchscript"] if onnx_missing() else ["torchscript", "onnx"]
    for fmt in ("torchscript", "onnx"):
        for b in (1, 4):
            column = f"latency_{fmt}_ms_b{b}"
            assert table.loc[~students, column].isna().all(), column
            if fmt in formats:
                assert (table.loc[students, column] > 0).all(), column
            else:
                assert table.loc[students, column].isna().all(), column
    sdkd = table.set_index("method").loc["sdkd"]
    assert math.isfinite(sdkd["gap_closed_mse"]) and math.isfinite(sdkd["gap_closed_mae"])
    markdown = (reports / "navier_stokes_table.md").read_text()
    assert "| role" in markdown and "st_alternet" in markdown
    assert "teacher_check" in markdown and "Baseline rows" in markdown
    assert "`climatology` = mean field of the" in markdown  # NS: no datetime coordinate
    # the compact table: units in the headers, the full columns in the CSV only
    assert "| MSE [" in markdown and "CPU latency b=1 [ms]" in markdown and "nan" not in markdown
    assert (
        "latency_torchscript_ms_b1" not in markdown and "`teacher_check`: st_alternet" in markdown
    )

    # de-normalized: the student's MSE is its normalized per-channel MSE times std^2
    test = WindowDataset(project / "data/05_model_input/navier_stokes.zarr", "test")
    checkpoint = torch.load(
        project / "data/06_models/navier_stokes/students/unet/none.pt", weights_only=True
    )
    model = load_forecaster(checkpoint)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(test)):
            x, y = test[i]
            total += float((model(x[None])[0] - y).double().square().sum())
            count += y.numel()
    assert len(test.channels) == 1
    manual = total / count * float(test.std[0]) ** 2
    none = table.set_index("method").loc["none"]
    assert none["mse"] == pytest.approx(manual, rel=1e-4)

    # persistence by hand: the last input frame for every target step
    total, count = 0.0, 0
    for i in range(len(test)):
        x, y = test[i]
        total += float((x[-1:] - y).double().square().sum())
        count += y.numel()
    persistence = table.set_index("model").loc["persistence"]
    assert persistence["mse"] == pytest.approx(total / count * float(test.std[0]) ** 2, rel=1e-4)

    curves = json.loads((reports / "navier_stokes_curves.json").read_text())
    assert len(curves["models"]) == 6
    assert not curves["baselines"]["climatology"]["by_time_of_day"]
    assert len(curves["models"][0]["metrics"]["mse_per_step"]) == test.t_out
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    # each model's own training run carries its test results (MLflow's Compare view sorts by
    # them), per lead time with step = lead
    for model, method in (("unet", "sdkd"), ("simvp", "supervised")):
        where = "students/unet/sdkd" if model == "unet" else "simvp"
        summary = json.loads(
            (project / f"data/06_models/navier_stokes/{where}_summary.json").read_text()
        )
        metrics = client.get_run(summary["mlflow_run_id"]).data.metrics
        row = table[(table["model"] == model) & (table["method"] == method)].iloc[0]
        assert metrics["test_ssim"] == pytest.approx(row["ssim"])
        tags = client.get_run(summary["mlflow_run_id"]).data.tags
        assert tags["test_ssim_convention"] == curves["ssim_convention"] == "skimage"
        assert metrics["test_mse"] == pytest.approx(row["mse"])
        assert "test_latency_ms_b1" in metrics
        leads = client.get_metric_history(summary["mlflow_run_id"], "test_mse_by_lead")
        assert sorted(m.step for m in leads) == [1, 2, 3]  # smoke: t_out = 3
    run = client.get_run(curves["mlflow_run_id"])
    assert run.info.run_name == "navier_stokes/evaluation"
    assert run.data.tags["dataset"] == "navier_stokes"
    assert run.data.tags["ssim_convention"] == "skimage"
    assert run.data.metrics["unet/sdkd.mse"] == pytest.approx(sdkd["mse"], rel=1e-9)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "navier_stokes_evaluation.csv",
        "navier_stokes_evaluation.md",
        "navier_stokes_rollout.png",
        *(f"navier_stokes_{figure}.png" for figure in FIGURES),
    } <= artifacts
    # the autoregressive rollout: 2 x t_out frames (smoke), every model and baseline, the
    # table's column and each model's curves on its run with step = lead time
    rollout = json.loads((reports / "navier_stokes_rollout.json").read_text())
    assert rollout["skipped"] is None and rollout["horizon"] == 6
    assert {"unet/sdkd", "persistence/baseline", "climatology/baseline"} <= set(rollout["models"])
    assert all(len(c["mse"]) == 6 for c in rollout["models"].values())
    assert "rollout_lead_behind_persistence" in table.columns
    sdkd_run = json.loads(
        (project / "data/06_models/navier_stokes/students/unet/sdkd_summary.json").read_text()
    )["mlflow_run_id"]
    history = client.get_metric_history(sdkd_run, "rollout_mse")
    assert sorted(m.step for m in history) == list(range(1, 7))
    assert history[0].value == pytest.approx(rollout["models"]["unet/sdkd"]["mse"][0])


@pytest.mark.bad_input
def test_evaluate_without_a_student_says_to_run_distill(project):
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    # the baseline needs no teacher: only unet/none exists, unet/sdkd and the teachers do not
    run_kedro(project, env="smoke", pipeline="distill", params={**FAST, "distill.methods": "none"})
    with pytest.raises(MissingInputError, match=r"kedro run --pipelines=distill") as error:
        run_kedro(project, env="smoke", pipeline="evaluate", params=NS_ONLY)
    message = str(error.value)
    assert "navier_stokes.unet.sdkd.checkpoint" in message
    assert "navier_stokes.unet.none.checkpoint" not in message
    assert not (project / REPORTS).exists()


def test_a_checkpoint_under_another_models_or_methods_name_is_refused():
    from types import SimpleNamespace

    from sdkd_pipeline.errors import DataError
    from sdkd_pipeline.pipelines.evaluate.nodes import _checked

    shape = {"in_frames": 2, "out_frames": 2, "channels": 1, "height": 8, "width": 8}
    windows = SimpleNamespace(model_shape=shape, mean=torch.tensor([0.0]), std=torch.tensor([1.0]))
    ckpt = {
        "model": "unet",
        "method": "sdkd",
        "model_config": {},
        "shape": shape,
        "channels": ["u"],
        "mean": torch.tensor([0.0]),
        "std": torch.tensor([1.0]),
        "state_dict": {},
    }
    command = "kedro run --pipelines=distill"
    assert _checked("student 'unet' (sdkd)", command, ckpt, "unet", "sdkd", windows)["method"]
    with pytest.raises(DataError, match=r"student 'resnet' \(sdkd\): holds a 'unet' checkpoint"):
        _checked("student 'resnet' (sdkd)", command, ckpt, "resnet", "sdkd", windows)
    with pytest.raises(DataError, match=r"distilled with 'sdkd', not 'aekd'.*--pipelines=distill"):
        _checked("student 'unet' (aekd)", command, ckpt, "unet", "aekd", windows)
