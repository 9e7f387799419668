"""A copied project's MLflow store: two project folders in a temporary folder, the second a
copy of the first with its mlflow.db and mlruns/; runs of the copy must not write into the
original's mlruns/."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.tracking import EXPERIMENT_KIND, MLflowTracker
from sdkd_pipeline.tracking_store import (
    COPIED_FROM_TAG,
    copied_experiments,
    foreign_root,
    local_path,
    separate_copied_experiments,
)

mlflow = pytest.importorskip("mlflow")


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _log_a_run(project: Path, experiment: str = "exp", **options) -> MLflowTracker:
    """One run in ``project`` (the working directory) that logs one artifact, as a training
    run outside Kedro does (a store URI per folder: MLflow caches a store per URI)."""
    note = project / "note.txt"
    note.write_text(str(project))
    with MLflowTracker(
        experiment, tracking_uri=f"sqlite:///{project / 'mlflow.db'}", nested=False, **options
    ) as tracker:
        tracker.log_artifact(note)
    return tracker


@pytest.fixture
def original(tmp_path, monkeypatch):
    """Project ``a`` with one run logged into its own mlruns/ (the working directory)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = tmp_path / "a"
    project.mkdir()
    monkeypatch.chdir(project)
    tracker = _log_a_run(project)
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert local_path(experiment.artifact_location) == project / "mlruns" / experiment.experiment_id
    return project, tracker


def _copy(original: Path, name: str, monkeypatch) -> Path:
    copy = original.parent / name
    shutil.copytree(original, copy)
    monkeypatch.chdir(copy)
    return copy


def test_a_copied_project_logs_into_its_own_mlruns(original, monkeypatch, caplog):
    project_a, first = original
    before = _files(project_a / "mlruns")
    project_b = _copy(project_a, "b", monkeypatch)
    uri_b = f"sqlite:///{project_b / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri_b)
    [(found, root)] = copied_experiments(client, uri_b)
    assert found.name == "exp" and root == project_a.resolve()

    with caplog.at_level(logging.WARNING, logger="sdkd_pipeline.tracking_store"):
        second = _log_a_run(project_b)
    assert _files(project_a / "mlruns") == before  # nothing new in the original's folder
    run = client.get_run(second.run_id)
    artifacts = local_path(run.info.artifact_uri)
    assert artifacts.is_relative_to(project_b / "mlruns") and (artifacts / "note.txt").is_file()
    assert "copied from" in caplog.text and "mlflow.db and mlruns/" in caplog.text

    # the copied runs stay, under the renamed experiment; the new one is a training experiment
    old = client.get_experiment(first.experiment_id)
    assert old.name == f"exp (copied from {project_a.resolve()})"
    assert old.tags[COPIED_FROM_TAG] == str(project_a.resolve())
    assert client.get_run(first.run_id).info.experiment_id == old.experiment_id
    new = client.get_experiment_by_name("exp")
    assert new.experiment_id == second.experiment_id != old.experiment_id
    assert EXPERIMENT_KIND.items() <= new.tags.items()
    assert copied_experiments(client, uri_b) == []  # handled once
    # and the original project itself is left as it was
    monkeypatch.chdir(project_a)
    uri_a = f"sqlite:///{project_a / 'mlflow.db'}"
    assert copied_experiments(mlflow.MlflowClient(uri_a), uri_a) == []
    assert mlflow.MlflowClient(uri_a).get_experiment_by_name("exp") is not None


@pytest.mark.bad_input
def test_copied_store_error_refuses_and_names_the_fix(original, monkeypatch):
    project_a, _ = original
    project_c = _copy(project_a, "c", monkeypatch)
    uri_c = f"sqlite:///{project_c / 'mlflow.db'}"
    with pytest.raises(ConfigError, match=r"tracking\.copied_store.*without mlflow\.db"):
        separate_copied_experiments(mlflow.MlflowClient(uri_c), uri_c, "error")
    with pytest.raises(ConfigError, match=r"tracking\.copied_store"):
        _log_a_run(project_c, copied_store="error")
    assert _files(project_c / "mlruns") == _files(project_a / "mlruns")  # no run started


@pytest.mark.bad_input
def test_an_unknown_copied_store_mode_is_named(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ConfigError, match=r"tracking\.copied_store must be one of"):
        separate_copied_experiments(None, uri, "ignore")


def test_an_artifact_location_chosen_on_purpose_and_other_stores_are_left_alone(tmp_path):
    class Experiment:
        def __init__(self, experiment_id: str, location: str) -> None:
            self.experiment_id, self.artifact_location = experiment_id, location

    project = tmp_path / "b"
    other = tmp_path / "a"
    assert foreign_root(Experiment("3", (other / "mlruns" / "3").as_uri()), project) == other
    assert foreign_root(Experiment("3", str(other / "mlruns" / "3")), project) == other
    assert foreign_root(Experiment("3", str(project / "mlruns" / "3")), project) is None
    # not MLflow's default layout: a location somebody chose (a shared disk), left alone
    assert foreign_root(Experiment("3", str(other / "artifacts")), project) is None
    assert foreign_root(Experiment("3", str(other / "mlruns" / "7")), project) is None
    assert foreign_root(Experiment("3", "s3://bucket/mlruns/3"), project) is None
    # a store outside the project (a server, a shared database) is never searched
    assert copied_experiments(None, "http://127.0.0.1:5000", project) == []
    assert copied_experiments(None, f"sqlite:///{other / 'mlflow.db'}", project) == []


def test_kedro_runs_separate_a_copied_store_before_kedro_mlflow_opens_it(original, monkeypatch):
    from types import SimpleNamespace

    from sdkd_pipeline.hooks import MLflowSchemaHook

    project_a, first = original
    project_d = _copy(project_a, "d", monkeypatch)
    uri_d = f"sqlite:///{project_d / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri_d)
    context = SimpleNamespace(config_loader={"parameters": {"tracking": {"experiment": "exp"}}})
    MLflowSchemaHook().after_context_created(context)
    client = mlflow.MlflowClient(uri_d)
    assert client.get_experiment(first.experiment_id).name.startswith("exp (copied from ")
    fresh = client.get_experiment_by_name("exp")
    assert local_path(fresh.artifact_location).is_relative_to(project_d / "mlruns")
    # the tracking parameters are checked there, before any stage runs
    context.config_loader["parameters"]["tracking"]["copied_store"] = "keep"
    with pytest.raises(ConfigError, match=r"tracking\.copied_store"):
        MLflowSchemaHook().after_context_created(context)
