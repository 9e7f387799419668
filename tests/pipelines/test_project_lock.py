"""One `kedro run` per project at a time, and the MLflow schema created once: real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sdkd_pipeline.io.locks import LOCK_FILE, ProjectLock, ProjectLockedError
from tests.pipelines.conftest import run_kedro

REPO = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import sys, time
    from sdkd_pipeline.io.locks import ProjectLock
    ProjectLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def _hold(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_while_another_process_holds_the_project(project):
    holder = _hold(project)
    try:
        with pytest.raises(ProjectLockedError, match=rf"process {holder.pid} on .*wait for it"):
            run_kedro(
                project, env="smoke", pipeline="data", params={"data.datasets": "navier_stokes"}
            )
        assert not (project / "data" / "05_model_input").exists()  # nothing ran
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
        runs = [
            r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
        ]
        assert runs == []  # refused before the pipeline's MLflow run was started
    finally:
        holder.send_signal(signal.SIGKILL)  # even a killed holder leaves no stale lock
        holder.wait()
    assert (project / LOCK_FILE).exists()
    run_kedro(project, env="smoke", pipeline="data", params={"data.datasets": "navier_stokes"})
    assert (project / "data/05_model_input/navier_stokes.zarr").exists()
    # MLflow 3's UI opens the experiment in model-training mode, not GenAI mode
    experiment = client.get_experiment_by_name("sdkd_pipeline")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # released after the run: another process can take it now
    other = _hold(project)
    other.kill()
    other.wait()


def test_the_lock_is_reentrant_in_one_process_and_released(tmp_path):
    lock = ProjectLock(tmp_path)
    lock.acquire()
    lock.acquire()  # a second session in the same process (a notebook, the tests)
    assert lock.held and str(os.getpid()) in (tmp_path / LOCK_FILE).read_text()
    lock.release()
    assert not lock.held and (tmp_path / LOCK_FILE).read_text() == ""
    holder = _hold(tmp_path)
    try:
        with pytest.raises(ProjectLockedError, match=str(tmp_path / LOCK_FILE)):
            ProjectLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()


SCHEMA = textwrap.dedent("""
    import sys, time
    from types import SimpleNamespace
    import mlflow
    from sdkd_pipeline.hooks import MLflowSchemaHook
    while time.time() < float(sys.argv[1]):
        time.sleep(0.005)
    context = SimpleNamespace(project_path=".", config_loader={"parameters": {}})
    MLflowSchemaHook().after_context_created(context)
    mlflow.MlflowClient().search_experiments()
    print("ok")
""")


def test_two_first_runs_create_the_mlflow_schema_once(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    # both start migrating at the same moment (after importing MLflow): without the lock one of
    # them (often both) fails in alembic ("Online migration expected to match one row")
    start = time.time() + 10
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCHEMA, str(start)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and out.strip().endswith("ok"), err[-2000:]
