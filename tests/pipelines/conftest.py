"""Run the project's Kedro pipelines in a throw-away copy of the project."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A copy of conf/ and pyproject.toml in tmp_path, as the working directory."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / ".telemetry").write_text("consent: false\n")
    # bootstrap_project insists on the source dir; the package itself is imported as installed
    (root / "src").mkdir()
    fixtures = root / "tests" / "fixtures"
    fixtures.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "fixtures" / "era5-2mt-2019-03-uk.grib", fixtures)
    monkeypatch.chdir(root)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return root


def run_kedro(project: Path, *, env: str, pipeline: str | None = None, params: dict | None = None):
    """Run a pipeline in a fresh KedroSession; returns the session's run output.

    ``params`` take dotted keys as on the command line (``--params "a.b=1"``).
    """
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    try:
        runtime = _nested(params or {})
        with KedroSession.create(project_path=project, env=env, runtime_params=runtime) as s:
            return s.run(pipeline_names=[pipeline] if pipeline else None)
    finally:
        # one `kedro run` is one process in real use; here several share the test process, and
        # kedro-mlflow leaves the run of a failed or selected pipeline open
        while mlflow.active_run():
            mlflow.end_run()


def _nested(dotted: dict) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}}, as Kedro's CLI turns ``--params`` into runtime params."""
    out: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
