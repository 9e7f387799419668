"""`kedro run --pipeline=spectral` on the smoke config: reports, MLflow runs, missing teachers."""

from __future__ import annotations

import json
import math

import mlflow
import pandas as pd
import pytest

from sdkd_pipeline.errors import MissingInputError
from tests.pipelines.conftest import run_kedro

NS_ONLY = {"data.datasets": "navier_stokes"}
TEACHERS = ("st_alternet", "simvp")
REPORTS = "data/08_reporting/spectral"


def test_spectral_needs_the_teachers_then_reports_slopes_and_logs_runs(project):
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    with pytest.raises(MissingInputError, match=r"kedro run --pipeline=teacher"):
        run_kedro(project, env="smoke", pipeline="spectral", params=NS_ONLY)
    assert not (project / REPORTS).exists()  # the check runs before any node

    params = {**NS_ONLY, "teacher.models": "+".join(TEACHERS)}
    run_kedro(project, env="smoke", pipeline="teacher", params=params)
    run_kedro(project, env="smoke", pipeline="spectral", params=params)

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    for teacher in TEACHERS:
        summary = json.loads((project / REPORTS / f"navier_stokes_{teacher}.json").read_text())
        assert (project / REPORTS / f"navier_stokes_{teacher}.png").stat().st_size > 0
        assert summary["dataset"] == "navier_stokes" and summary["teacher"] == teacher
        assert set(summary["spectra"]) == {"data", "high", "low", "fused"}
        for entry in summary["spectra"].values():
            assert math.isfinite(entry["slope"]) and math.isfinite(entry["slope_stderr"])
        assert summary["spectra"]["data"]["fit_k_min"] == 3.0
        assert summary["reference_slopes"]["k^-3"] == -3.0
        assert summary["branch_check"]["verdict"]

        run = client.get_run(summary["mlflow_run_id"])
        assert run.info.run_name == f"navier_stokes/{teacher}/spectral"
        assert run.data.tags["method"] == "spectral"
        assert run.data.tags["model"] == teacher and run.data.tags["role"] == "teacher"
        assert run.data.metrics["slope_data"] == pytest.approx(summary["spectra"]["data"]["slope"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"spectra.json", "spectra.png"} <= artifacts

    tagged = client.search_runs([run.info.experiment_id], "tags.method = 'spectral'")
    assert len(tagged) == len(TEACHERS)

    table = pd.read_csv(project / REPORTS / "navier_stokes_spectral_summary.csv")
    assert list(table.columns) == ["dataset", "teacher", "latent", "slope", "slope_stderr",
                                   "fit_k_min", "fit_k_max", "r2", "high_band_fraction",
                                   "centroid"]
    assert len(table) == 4 * len(TEACHERS)
    assert set(table["teacher"]) == set(TEACHERS)
    assert table[["slope", "slope_stderr", "high_band_fraction", "centroid"]].notna().all().all()


def test_spectral_without_data_names_both_commands(project):
    with pytest.raises(MissingInputError,
                       match=r"--pipeline=data`? then `kedro run --pipeline=teacher"):
        run_kedro(project, env="smoke", pipeline="spectral", params=NS_ONLY)
