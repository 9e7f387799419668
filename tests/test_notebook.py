"""notebooks/compare_students.ipynb runs against outputs in the evaluate/spectral formats."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from sdkd_pipeline.evaluation import build_table, curves_json
from tests.test_evaluation import _result

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_students.ipynb"


def _reports(root: Path) -> None:
    results = [
        _result("teacher", "simvp", "supervised", 1.0, 0.2, val=0.3),
        _result("baseline", "persistence", "baseline", 4.5, 1.1),
        _result("baseline", "climatology", "baseline", 50.0, 3.0),  # off the scale
        _result("student", "unet", "none", 5.0, 1.0),
        _result("student", "unet", "sdkd", 3.0, 0.6),
        _result("student", "resnet", "none", 4.0, 0.9),
        _result("student", "resnet", "sdkd", 3.5, 0.8),
    ]
    evaluation = root / "data" / "08_reporting" / "evaluation"
    evaluation.mkdir(parents=True)
    table = build_table(
        results, teachers=["simvp"], students=["unet", "resnet"], methods=["none", "sdkd"]
    )
    table.to_csv(evaluation / "navier_stokes_table.csv", index=False)
    curves = curves_json(results, dataset="navier_stokes", data_range=[1.0], channels=["w"])
    (evaluation / "navier_stokes_curves.json").write_text(json.dumps(curves))
    spectral = root / "data" / "08_reporting" / "spectral"
    spectral.mkdir(parents=True)
    pd.DataFrame(
        [
            {
                "dataset": "navier_stokes",
                "teacher": "simvp",
                "latent": "high",
                "slope": -2.0,
                "slope_stderr": 0.3,
                "fit_k_min": 2.0,
                "fit_k_max": 6.0,
                "r2": 0.9,
                "high_band_fraction": 0.05,
                "centroid": 1.9,
            }
        ]
    ).to_csv(spectral / "navier_stokes_spectral_summary.csv", index=False)


def test_notebook_draws_the_comparison(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    _reports(tmp_path)
    monkeypatch.setenv("SDKD_PROJECT", str(tmp_path))
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    namespace: dict = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            exec(compile(source, str(NOTEBOOK), "exec"), namespace)  # noqa: S102
    assert namespace["datasets"] == ["navier_stokes"]
    assert set(namespace["figures"]) == {"navier_stokes_mse", "navier_stokes_steps"}
    gap = namespace["gap"].set_index("model")["gap_closed_mse"]
    assert gap["unet"] == 0.5  # (5 - 3) / (5 - 1)
    shown = namespace["table"].set_index("model")
    assert shown.loc["simvp", "teacher_check"] == "ok"  # below persistence, 3x below none
    labels = [
        line.get_label() for line in namespace["figures"]["navier_stokes_mse"].axes[0].get_lines()
    ]
    assert "persistence" in labels and "climatology" not in labels
    assert list(namespace["summary"]["slope"]) == [-2.0]


def test_notebook_says_what_to_run_without_results(tmp_path, monkeypatch):
    monkeypatch.setenv("SDKD_PROJECT", str(tmp_path))
    first = next(c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code")
    source = "".join(first["source"]) if isinstance(first["source"], list) else first["source"]
    with pytest.raises(FileNotFoundError, match="kedro run"):
        exec(compile(source, str(NOTEBOOK), "exec"), {})  # noqa: S102
