"""`kedro viz` groups the data pipeline by dataset (one modular pipeline per namespace), labels
each node with what it does, and the collapsed view shows the groups with their reporting
outputs only (the run report reads the summaries)."""

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
        assert {
            f"acquire_{dataset}_raw_fields",
            f"build_{dataset}_tensor_store",
            f"summarize_{dataset}_tensor_store",
            f"write_{dataset}_run_report",
        } <= node_names
        assert f"{dataset}.tensors" in node_names
    # students nest under their dataset: <dataset>.<student>.<method>
    for student in ("unet", "resnet", "mlp_mixer"):
        for method in ("none", "sdkd", "aekd"):
            group = f"navier_stokes.{student}.{method}"
            ids = {child["id"] for child in groups[group]["children"]}
            label = (
                f"train_{student}_without_teacher"
                if method == "none"
                else f"distill_{student}_with_{method}"
            )
            assert label in {n["name"] for n in main["nodes"] if n["id"] in ids}, group
    teacher_ids = {child["id"] for child in groups["navier_stokes.simvp"]["children"]}
    teacher_names = {n["name"] for n in main["nodes"] if n["id"] in teacher_ids}
    assert {"train_teacher_simvp", "analyse_simvp_latent_spectra"} <= teacher_names
    # collapsed: the two groups and, beside them, reporting datasets only (no summaries)
    names = {n["id"]: n for n in main["nodes"]}
    top = [names[c["id"]] for c in groups["__root__"]["children"] if c["type"] != "parameters"]
    assert {n["name"] for n in top if n["type"] == "modularPipeline"} == {
        "navier_stokes",
        "rayleigh_benard",
    }
    loose = [n for n in top if n["type"] == "data"]
    assert {"navier_stokes.run_report", "rayleigh_benard.run_report"} <= {n["name"] for n in loose}
    assert not [n["name"] for n in loose if n["name"].endswith("summary")], loose
    assert {n["layer"] for n in loose} == {"reporting"}, loose
