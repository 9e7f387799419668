"""`kedro run --pipelines=spectral` on the smoke config: reports, MLflow runs, missing teachers."""

from __future__ import annotations

import json
import math

import mlflow
import pandas as pd
import pytest

from sdkd_pipeline.errors import MissingInputError
from sdkd_pipeline.pipelines.spectral.nodes import tabulate_spectra
from sdkd_pipeline.spectral.analysis import SUMMARY_COLUMNS
from tests.pipelines.conftest import run_kedro

NS_ONLY = {"data.datasets": "navier_stokes"}
TEACHERS = ("st_alternet", "simvp")
REPORTS = "data/08_reporting/spectral"


def test_spectral_needs_the_teachers_then_reports_slopes_and_logs_runs(project):
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    with pytest.raises(MissingInputError, match=r"kedro run --pipelines=teacher"):
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
            assert math.isfinite(entry["raw_slope"]) and math.isfinite(entry["r2"])
            assert entry["verdict"].startswith(("power law", "no power law"))
            assert (entry["slope"] is not None) == entry["power_law"]
        assert summary["spectra"]["data"]["fit_k_min"] == 4.0  # the base fit_range [4, 14]
        assert summary["reference_slopes"]["k^-3"] == -3.0
        assert summary["branch_check"]["verdict"]
        shares = summary["band_shares"]
        assert shares["distill_cutoff_k"] == 4  # the smoke distill.cutoff.k
        for what in ("data", "teacher_error"):
            bands = [shares[what][b] for b in ("low", "mid", "high")]
            assert sum(bands) == pytest.approx(1.0) and 0 <= shares[what]["above_cutoff"] <= 1

        run = client.get_run(summary["mlflow_run_id"])
        assert run.info.run_name == f"navier_stokes/{teacher}/spectral"
        assert run.data.tags["method"] == "spectral"
        assert run.data.tags["model"] == teacher and run.data.tags["role"] == "teacher"
        data = summary["spectra"]["data"]
        metrics = run.data.metrics
        assert metrics["power_law_data"] == float(data["power_law"])
        assert metrics["raw_slope_data"] == pytest.approx(data["raw_slope"])
        assert ("slope_data" in metrics) == data["power_law"]
        assert metrics["share_high_teacher_error"] == pytest.approx(shares["teacher_error"]["high"])
        assert metrics["share_above_cutoff_data"] == pytest.approx(shares["data"]["above_cutoff"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"spectra.json", "spectra.png"} <= artifacts

    tagged = client.search_runs([run.info.experiment_id], "tags.method = 'spectral'")
    assert len(tagged) == len(TEACHERS)

    table = pd.read_csv(project / REPORTS / "navier_stokes_spectral_summary.csv")
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert len(table) == 5 * len(TEACHERS)  # data, high, low, fused, teacher_error
    assert set(table["teacher"]) == set(TEACHERS)
    spectra = table[table["latent"] != "teacher_error"]
    assert spectra[["raw_slope", "r2", "high_band_fraction", "centroid"]].notna().all().all()
    assert set(spectra["power_law"]) <= {0, 1}
    assert (spectra["slope"].notna() == (spectra["power_law"] == 1)).all()
    errors = table[table["latent"] == "teacher_error"]
    assert errors[["share_low", "share_mid", "share_high"]].sum(axis=1).to_numpy() == (
        pytest.approx(1.0)
    )


def test_spectral_without_data_names_both_commands(project):
    with pytest.raises(
        MissingInputError, match=r"--pipelines=data`? then `kedro run --pipelines=teacher"
    ):
        run_kedro(project, env="smoke", pipeline="spectral", params=NS_ONLY)


def test_the_table_leaves_the_slope_of_a_non_power_law_blank(tmp_path):
    def entry(power_law: bool) -> dict:
        return {
            "power_law": power_law,
            "verdict": "power law" if power_law else "no power law",
            "slope": -3.0 if power_law else None,
            "slope_stderr": 0.1 if power_law else None,
            "raw_slope": -3.0 if power_law else -9.5,
            "fit_k_min": 3.0,
            "fit_k_max": 12.0,
            "r2": 0.99 if power_law else 0.9,
            "exp_r2": 0.9,
            "high_band_fraction": 0.1,
            "centroid": 4.0,
        }

    shares = {"low": 0.7, "mid": 0.2, "high": 0.1, "above_cutoff": 0.2, "mean_square": 1.0}
    summary = {
        "dataset": "navier_stokes",
        "teacher": "t",
        "spectra": {"data": entry(False), "high": entry(True)},
        "band_shares": {"data": shares, "teacher_error": {**shares, "high": 0.5}},
    }
    path = tmp_path / "table.csv"
    tabulate_spectra(t=summary).to_csv(path, index=False)
    table = pd.read_csv(path).set_index("latent")
    assert table.loc["data", "power_law"] == 0 and pd.isna(table.loc["data", "slope"])
    assert table.loc["data", "raw_slope"] == -9.5
    assert table.loc["high", "power_law"] == 1 and table.loc["high", "slope"] == -3.0
    assert pd.isna(table.loc["teacher_error", "power_law"])
    assert table.loc["teacher_error", "share_high"] == 0.5
    assert table.loc["data", "share_low"] == 0.7 and pd.isna(table.loc["high", "share_low"])
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index("power_law")
    assert [line.split(",")[column] for line in lines[1:]] == ["0", "1", ""]  # not 0.0 / 1.0
