"""A whole ``kedro run`` SIGKILLed in the middle, twice, then started again: it finishes, and no
Zarr store, checkpoint or MLflow run is left corrupt, half-written or RUNNING.

Three real ``python -m kedro run --env=smoke`` processes in a throw-away project copy:

A. killed while a Zarr store is being written (data stage): the process is frozen (SIGSTOP) as
   soon as its temporary store appears, the temporary is checked to still be there, then the
   process group is SIGKILLed;
B. killed in training, as soon as the first model's ``last.pt`` (end of epoch 1 of 2) exists;
C. runs to completion and resumes B's training from that ``last.pt``.

MLflow: the runs A and B leave RUNNING (a SIGKILLed process cannot end them) are marked KILLED
by C when it starts (``hooks.MLflowRunsHook``); C's resumed training logs to a new run that
names the killed one it continues and re-logs the epoch done before the kill.

``--params navier_stokes.source.generate.dt=0.02``: the step the NS solver picks by itself for
the smoke grid (``dt: null``, which the command line cannot pass) instead of base's 1e-3; the
data stage then takes seconds instead of over a minute.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import sdkd_pipeline
from sdkd_pipeline.data.store import open_store
from sdkd_pipeline.errors import DataError
from sdkd_pipeline.pipelines.data.nodes import summarize_tensors
from sdkd_pipeline.tracking import CLOSED_TAG

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="process groups and SIGSTOP/SIGKILL"),
]

PARAMS = "navier_stokes.source.generate.dt=0.02"
# (trajectory, time, channel, y, x) of every store, from conf/smoke: NS 8 trajectories of
# t_final / record_every = 12 frames on 32 x 32; RB 4 trajectories, (16 - 10) / 0.5 + 1 = 13
# frames of 4 channels (T, u, w, p) on nz x nx = 16 x 32
SHAPES = {"navier_stokes": (8, 12, 1, 32, 32), "rayleigh_benard": (4, 13, 4, 16, 32)}
STORES = {
    **{f"data/02_intermediate/{name}_raw.zarr": ("raw", name) for name in SHAPES},
    **{f"data/05_model_input/{name}.zarr": ("tensors", name) for name in SHAPES},
}
WALL_CLOCK_ATTRS = ("generation_seconds", "wall_time_s")  # NS and RB generators' timings
KILL_WAIT_S = 240  # until the moment to kill comes (startup is ~30 s, more on a busy machine)
RUN_S = 480  # a whole smoke run: ~2 min on 2 cores


def test_killed_twice_then_restarted_run_finishes_consistent(project, tmp_path):
    # A: killed while writing its first Zarr store
    proc = _start(project, tmp_path / "a.log")
    temporary = _kill_when(
        proc,
        tmp_path / "a.log",
        "a temporary Zarr store exists",
        lambda: _writing_store(project, proc.pid),
        freeze=True,
    )
    target = temporary.with_name(temporary.name[1:].split(".tmp-")[0])
    assert any(target.name == Path(p).name for p in STORES), temporary
    # the half-written store is not taken for one: nothing at the target, a clear error there
    with pytest.raises(DataError, match=re.escape(str(target))):
        open_store(target, kind="raw" if target.name.endswith("_raw.zarr") else "tensors")

    # B: killed in the first training, after its epoch 1 (of 2) checkpoint
    proc = _start(project, tmp_path / "b.log")
    last = _kill_when(
        proc,
        tmp_path / "b.log",
        "a training's last.pt exists",
        lambda: next((project / "data/06_models/runs").glob("**/last.pt"), None),
    )
    killed_state = torch.load(last, weights_only=True)["state"]
    assert killed_state["epochs_done"] == 1 and not killed_state["finished"]
    # B's data stage ran uninterrupted: keep its stores to compare with C's
    reference = tmp_path / "b_stores"
    for relative in STORES:
        if (project / relative / ".zgroup").exists():
            shutil.copytree(project / relative, reference / relative)
    assert (reference / "data/05_model_input/navier_stokes.zarr").exists()

    # C: started again, runs to the end
    log = tmp_path / "c.log"
    proc = _start(project, log)
    try:
        rc = proc.wait(timeout=RUN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the restarted run did not end within {RUN_S} s:\n{_tail(log)}")
    finally:
        _kill_group(proc)
    assert rc == 0, f"the restarted run failed ({rc}):\n{_tail(log)}"
    assert f"resuming {last.relative_to(project)} at epoch 2, batch 0" in _unwrapped(log)

    _check_stores(project, reference)
    _check_checkpoints(project, last)
    _check_mlflow(project, last)
    _check_reports(project)


# --------------------------------------------------------------------------------------------
# what C left


def _check_stores(project: Path, reference: Path) -> None:
    leftovers = sorted(
        str(p) for p in (project / "data").glob("**/.*") if ".tmp-" in p.name or ".old-" in p.name
    )
    assert leftovers == [], f"temporaries of killed writers were not cleaned up: {leftovers}"
    for relative, (kind, dataset) in STORES.items():
        opened = open_store(project / relative, kind=kind).load()
        fields = opened["fields"].values
        assert fields.shape == SHAPES[dataset], relative
        assert np.isfinite(fields).all(), f"{relative}: NaN or Inf"
        if kind == "tensors":
            # the summary the run wrote describes the store it left
            summary = json.loads(
                (project / f"data/08_reporting/{dataset}_data_summary.json").read_text()
            )
            assert summary == json.loads(json.dumps(summarize_tensors(opened))), relative
        if (reference / relative).exists():  # written by B's uninterrupted data stage
            before = open_store(reference / relative, kind=kind).load()
            for ds in (opened, before):  # how long generating took: the attributes that differ
                for clock in WALL_CLOCK_ATTRS:
                    ds.attrs.pop(clock, None)
            xr.testing.assert_identical(opened, before)


def _check_checkpoints(project: Path, last: Path) -> None:
    checkpoints = sorted((project / "data/06_models").glob("**/*.pt"))
    # 4 teachers + 2 students registered, each with a run folder holding best.pt and last.pt
    assert len(checkpoints) == 6 * 3, checkpoints
    for path in checkpoints:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(checkpoint, dict), path
        if path.name == "last.pt":
            assert checkpoint["state"]["finished"], path
            assert checkpoint["state"]["epochs_done"] == 2, path
    resumed = torch.load(last, weights_only=True)["state"]
    assert [row["epoch"] for row in resumed["history"]] == [1.0, 2.0]


def _check_mlflow(project: Path, last: Path) -> None:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sdkd_pipeline")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    running = [(r.info.run_name, r.info.run_id) for r in runs if r.info.status == "RUNNING"]
    assert running == [], f"runs left RUNNING: {running}"
    pipelines = sorted(
        (r for r in runs if "mlflow.parentRunId" not in r.data.tags),
        key=lambda r: r.info.start_time,
    )
    assert [r.info.status for r in pipelines] == ["KILLED", "KILLED", "FINISHED"]
    children = {
        p.info.run_id: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
        for p in pipelines
    }
    killed_a, killed_b, finished = pipelines
    assert children[killed_a.info.run_id] == []  # A never reached a model
    for run in (killed_a, killed_b):
        assert "killed" in run.data.tags[CLOSED_TAG]
        assert run.info.end_time is not None

    # B's training run was closed as KILLED; C's run of the same model continues it
    (killed_model,) = children[killed_b.info.run_id]
    assert killed_model.info.status == "KILLED"
    assert "killed" in killed_model.data.tags[CLOSED_TAG]
    model_runs = children[finished.info.run_id]
    # 4 teachers, 2 students, 4 spectral analyses, 1 evaluation
    assert len(model_runs) == 11
    assert all(r.info.status == "FINISHED" for r in model_runs)
    (resumed,) = [r for r in model_runs if "resumed_from_run" in r.data.tags]
    assert resumed.data.tags["resumed_from_run"] == killed_model.info.run_id
    assert resumed.data.tags["resumed_from_epoch"] == "1"
    assert resumed.info.run_name == killed_model.info.run_name
    assert last.parent.parent.name == resumed.data.tags["model"]
    # the resumed run is complete on its own: the epoch done before the kill is logged again
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "train_loss")]
    assert sorted(steps) == [1, 2]


def _check_reports(project: Path) -> None:
    reports = project / "data/08_reporting/evaluation"
    table = pd.read_csv(reports / "navier_stokes_table.csv")
    assert set(zip(table["model"], table["method"], strict=True)) == {
        ("st_alternet", "supervised"),
        ("simvp", "supervised"),
        ("persistence", "baseline"),
        ("climatology", "baseline"),
        ("unet", "none"),
        ("unet", "sdkd"),
    }
    assert np.isfinite(table["mse"]).all()
    assert "unet" in (reports / "navier_stokes_table.md").read_text()


# --------------------------------------------------------------------------------------------
# running and killing `kedro run`


def _start(project: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ)  # the fixture set MLFLOW_TRACKING_URI and KEDRO_DISABLE_TELEMETRY
    # the code under test, wherever this process imported it from
    source = str(Path(sdkd_pipeline.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    env["COLUMNS"] = "200"  # rich wraps log lines at the terminal width
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kedro", "run", "--env=smoke", f"--params={PARAMS}"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill reaches every child
        )


def _writing_store(project: Path, pid: int) -> Path | None:
    """A temporary Zarr store that process ``pid`` is writing, if any."""
    for folder in ("data/02_intermediate", "data/05_model_input"):
        found = next((project / folder).glob(f".*.zarr.tmp-{pid}-*"), None)
        if found is not None:
            return found
    return None


def _kill_when(
    proc: subprocess.Popen,
    log: Path,
    what: str,
    ready: Callable[[], Path | None],
    *,
    freeze: bool = False,
) -> Path:
    """SIGKILL ``proc``'s process group once ``ready()`` returns a path; that path.

    ``freeze``: stop the group first and kill it only if the path still exists then, so that
    the kill certainly lands while it exists (e.g. mid-write of a temporary store); otherwise
    let it go on and wait for the next such moment.
    """
    deadline = time.monotonic() + KILL_WAIT_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"kedro run ended ({proc.returncode}) before {what}:\n{_tail(log)}")
            found = ready()
            if found is not None:
                if freeze:
                    os.killpg(proc.pid, signal.SIGSTOP)
                    if not found.exists():
                        os.killpg(proc.pid, signal.SIGCONT)
                        time.sleep(0.01)
                        continue
                os.killpg(proc.pid, signal.SIGKILL)
                assert proc.wait(timeout=30) == -signal.SIGKILL
                return found
            time.sleep(0.01)
        pytest.fail(f"not within {KILL_WAIT_S} s: {what}\n{_tail(log)}")
    finally:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-6000:]


def _unwrapped(log: Path) -> str:
    """The log with rich's line wrapping undone (continuation lines joined)."""
    return " ".join(line.strip() for line in log.read_text(errors="replace").splitlines())
