"""`kedro viz` groups the data pipeline by dataset (one modular pipeline per namespace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_kedro_viz_build_groups_nodes_by_dataset(project):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    main = json.loads((project / "build" / "api" / "main").read_text())
    groups = main["modular_pipelines"]
    assert {"navier_stokes", "rayleigh_benard"} <= set(groups)
    for dataset in ("navier_stokes", "rayleigh_benard"):
        children = {child["id"] for child in groups[dataset]["children"]}
        node_names = {n["name"] for n in main["nodes"] if n["id"] in children}
        assert {"acquire_raw", "build_tensors", "summarize_tensors"} <= node_names
        assert f"{dataset}.tensors" in node_names
    # students nest under their dataset: <dataset>.<student>.<method>
    for student in ("unet", "resnet", "mlp_mixer"):
        for method in ("none", "sdkd", "aekd"):
            assert f"navier_stokes.{student}.{method}" in groups
    teacher_ids = {child["id"] for child in groups["navier_stokes.simvp"]["children"]}
    assert "train_teacher" in {n["name"] for n in main["nodes"] if n["id"] in teacher_ids}
