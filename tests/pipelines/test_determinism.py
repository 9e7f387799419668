"""Two clean ``kedro run``s of one config give bitwise-equal checkpoints, tables and stores.

Two real ``python -m kedro run --env=smoke --params data.datasets=navier_stokes`` processes,
each in a fresh project copy of its own, one after the other: each process starts with its own
process-level RNG state (torch seeds every process at random), as two runs of a user would.
What they compute must be equal bit for bit (CPU, one machine, the same torch thread count;
both inherit this process's environment):

- every checkpoint under ``data/06_models``: the teachers and the distilled students as the
  pipeline writes them (``state_dict``, ``best_epoch``, ``best_val_loss``, ``test_loss``, ...)
  and the engine's ``best.pt`` / ``last.pt`` (weights, optimizer, RNG states, history): every
  tensor ``torch.equal``, every other value ``==``, less MLflow run ids and wall-clock times;
- the evaluation table: every column but the latency and speedup ones (wall-clock) ``==``,
  not approximately; the per-step curves and the spectra likewise;
- the raw and the tensor store's ``fields``.

NS only keeps it short: the data stage, both teachers, their spectra, the ``none`` and ``sdkd``
students of the smoke config, and the evaluation table: ~15 s a run on an idle 2-core machine,
~80 s when its cores are shared.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import sdkd_pipeline
from sdkd_pipeline.data.store import open_store
from tests.pipelines.conftest import REPO

pytestmark = pytest.mark.slow

PARAMS = "data.datasets=navier_stokes"
RUN_S = 420  # one run: ~15 s on 2 idle cores, ~80 s on busy ones; allow a very busy machine
# wall-clock timings, which no two runs share
TIMING_COLUMN = re.compile(r"latency|speedup|seconds|_ms(_|$)")
STORES = ("data/02_intermediate/navier_stokes_raw.zarr", "data/05_model_input/navier_stokes.zarr")


def test_two_clean_runs_are_bitwise_equal(tmp_path):
    runs = []
    for name in ("a", "b"):
        root = _project_copy(tmp_path / name)
        started = time.monotonic()
        _kedro_run(root, tmp_path / f"{name}.log")
        print(f"run {name}: {time.monotonic() - started:.0f} s")
        runs.append(root)
    a, b = runs

    _check_checkpoints(a, b)
    _check_tables(a, b)
    _check_stores(a, b)


# --------------------------------------------------------------------------------------------
# the comparisons


def _check_checkpoints(a: Path, b: Path) -> None:
    left, right = _checkpoints(a), _checkpoints(b)
    assert sorted(left) == sorted(right)
    # the teachers and the distilled students as the pipeline writes them, and their runs
    for name in (
        "navier_stokes/simvp.pt",
        "navier_stokes/st_alternet.pt",
        "navier_stokes/students/unet/none.pt",
        "navier_stokes/students/unet/sdkd.pt",
        "runs/navier_stokes/unet/sdkd/best.pt",
        "runs/navier_stokes/unet/sdkd/last.pt",
    ):
        assert name in left, sorted(left)
    for name in sorted(left):
        first = torch.load(left[name], map_location="cpu", weights_only=True)
        second = torch.load(right[name], map_location="cpu", weights_only=True)
        weights = "state_dict" if "state_dict" in first else "model"  # engine: best/last.pt
        assert first[weights].keys() == second[weights].keys(), name
        differing = [
            k for k in first[weights] if not torch.equal(first[weights][k], second[weights][k])
        ]
        assert differing == [], f"{name}: tensors differ between two runs: {differing}"
        for key in ("best_epoch", "best_val_loss", "test_loss", "epoch", "val_loss"):
            if key in first:
                assert first[key] == second[key], f"{name}: {key}"
        # and everything else they hold (optimizer, RNG states, losses per epoch, cutoff, ...)
        assert _differences(first, second) == [], name


def _checkpoints(root: Path) -> dict[str, Path]:
    """Every ``*.pt`` under data/06_models by its path, less the engine's run key.

    ``runs/<dataset>/<model>[/<method>]/<key>/``: a student's key hashes its teachers' MLflow
    run ids (random), so it differs between two projects though the weights do not.
    """
    found: dict[str, Path] = {}
    for path in (root / "data/06_models").glob("**/*.pt"):
        parts = path.relative_to(root / "data/06_models").parts
        if parts[0] == "runs":
            parts = (*parts[:-2], parts[-1])
        name = "/".join(parts)
        assert name not in found, f"two runs of one model in a clean run: {found[name]}, {path}"
        found[name] = path
    return found


def _differences(first: Any, second: Any, where: str = "") -> list[str]:
    """Where two nested checkpoints / JSON documents differ, less run ids and timings."""
    if isinstance(first, torch.Tensor):
        same = (
            isinstance(second, torch.Tensor)
            and first.dtype == second.dtype
            and first.shape == second.shape
            and torch.equal(first, second)
        )
        return [] if same else [where]
    if isinstance(first, dict) and isinstance(second, dict):
        if first.keys() != second.keys():
            return [f"{where}: keys {sorted(first)} != {sorted(second)}"]
        return [
            d
            for k in first
            if not _varies(k)
            for d in _differences(first[k], second[k], f"{where}.{k}")
        ]
    if isinstance(first, list | tuple) and isinstance(second, list | tuple):
        if len(first) != len(second):
            return [f"{where}: {len(first)} != {len(second)} items"]
        return [
            d
            for i, (u, v) in enumerate(zip(first, second, strict=True))
            for d in _differences(u, v, f"{where}[{i}]")
        ]
    if isinstance(first, float) and isinstance(second, float) and first != first:
        return [] if second != second else [where]  # NaN matches NaN
    return [] if first == second else [f"{where}: {first!r} != {second!r}"]


def _varies(key: Any) -> bool:
    """Keys whose values legitimately differ between two runs: MLflow ids and timings."""
    return isinstance(key, str) and bool(re.search(r"run_id|time_s|latency|seconds", key))


def _check_tables(a: Path, b: Path) -> None:
    folder = "data/08_reporting/evaluation"
    tables = sorted(p.name for p in (a / folder).glob("*_table.csv"))
    assert tables == ["navier_stokes_table.csv"]
    assert tables == sorted(p.name for p in (b / folder).glob("*_table.csv"))
    for name in tables:
        first, second = pd.read_csv(a / folder / name), pd.read_csv(b / folder / name)
        assert list(first.columns) == list(second.columns), name
        rows = set(zip(first["model"], first["method"], strict=True))
        assert {("simvp", "supervised"), ("unet", "none"), ("unet", "sdkd")} <= rows, rows
        compared = [c for c in first.columns if not TIMING_COLUMN.search(c)]
        assert {"mse", "ssim", "band_mse_high", "gap_closed_mse"} <= set(compared), compared
        for column in compared:
            x, y = first[column], second[column]
            same = (x == y) | (x.isna() & y.isna())  # exactly equal; a blank cell matches blank
            assert same.all(), (
                f"{name}: column {column!r} differs between two runs:\n"
                f"{pd.DataFrame({'model': first['model'], 'method': first['method'], 'a': x, 'b': y})}"
            )
    # the per-step curves and the spectra too (less MLflow run ids and latencies)
    for relative in (
        f"{folder}/navier_stokes_curves.json",
        "data/08_reporting/spectral/navier_stokes_simvp.json",
        "data/08_reporting/spectral/navier_stokes_st_alternet.json",
    ):
        first, second = (json.loads((root / relative).read_text()) for root in (a, b))
        assert _differences(first, second) == [], relative


def _check_stores(a: Path, b: Path) -> None:
    for relative in STORES:
        kind = "raw" if relative.endswith("_raw.zarr") else "tensors"
        first = open_store(a / relative, kind=kind)["fields"].values
        second = open_store(b / relative, kind=kind)["fields"].values
        assert first.dtype == second.dtype and first.shape == second.shape, relative
        assert np.array_equal(first, second), f"{relative}: fields differ between two runs"


# --------------------------------------------------------------------------------------------
# running `kedro run`


def _project_copy(root: Path) -> Path:
    """A project copy as ``conftest.project`` makes it (conf/, pyproject.toml, an empty src/)."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / ".telemetry").write_text("consent: false\n")
    (root / "src").mkdir()  # bootstrap_project insists on it; the package is imported installed
    return root


def _kedro_run(root: Path, log: Path) -> None:
    env = dict(os.environ)
    env["KEDRO_DISABLE_TELEMETRY"] = "1"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    # the code under test, wherever this process imported it from
    source = str(Path(sdkd_pipeline.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    env["COLUMNS"] = "200"  # rich wraps log lines at the terminal width
    with open(log, "wb") as out:
        try:
            rc = subprocess.run(
                [sys.executable, "-m", "kedro", "run", "--env=smoke", f"--params={PARAMS}"],
                cwd=root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=RUN_S,
            ).returncode
        except subprocess.TimeoutExpired:
            pytest.fail(f"kedro run did not end within {RUN_S} s:\n{_tail(log)}")
    assert rc == 0, f"kedro run failed ({rc}):\n{_tail(log)}"


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-6000:]
