"""What kedro-viz shows: node labels that say what a node does, a layer and a preview for every
dataset a user reads, and a collapsed view without loose summaries.

Fast: the pipelines come from the registry with each env's parameters (no run), the catalog
from ``conf/base/catalog.yml``; the previews are called on tiny files written here.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
import yaml
from kedro.io.core import parse_dataset_definition

from sdkd_pipeline.models.registry import MODEL_ROLES
from sdkd_pipeline.pipelines import selection
from sdkd_pipeline.pipelines.report.nodes import write_run_report
from sdkd_pipeline.pipelines.report.pipeline import report_inputs
from tests.pipelines.conftest import REPO

matplotlib.use("Agg")

CATALOG = REPO / "conf" / "base" / "catalog.yml"
LAYERS = {  # kedro's data-layer folders, and the kedro-viz layer of what is stored in each
    "01_raw": "raw",
    "02_intermediate": "intermediate",
    "05_model_input": "model_input",
    "06_models": "models",
    "08_reporting": "reporting",
}
# the library functions behind the nodes: a label must say more than these
FUNCTIONS = {
    "acquire_raw",
    "build_tensors",
    "summarize_tensors",
    "download_files",
    "train_forecaster",
    "analyse_teacher_spectra",
    "tabulate_spectra",
    "distill_student",
    "evaluate_dataset",
    "write_run_report",
}


def _pipelines(project: Path, env: str, monkeypatch) -> dict:
    """The registry's pipelines for ``env``'s parameters (the project copy has no conf/local)."""
    from kedro.framework.project import settings
    from kedro.framework.startup import bootstrap_project

    from sdkd_pipeline.pipeline_registry import register_pipelines

    bootstrap_project(project)
    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(project / "conf"), env=env, **settings.CONFIG_LOADER_ARGS
    )
    monkeypatch.setattr(selection, "_parameters", dict(loader["parameters"]))
    return register_pipelines()


def _label(node) -> str:
    """What kedro-viz writes on the node: its name without the namespace."""
    return node.name.removeprefix(f"{node.namespace}.") if node.namespace else node.name


@pytest.mark.parametrize("env", ["local", "smoke", "paper"])
def test_node_labels_say_what_the_node_does(project, env, monkeypatch):
    pipelines = _pipelines(project, env, monkeypatch)
    nodes = [*pipelines["__default__"].nodes, *pipelines["download"].nodes]
    assert nodes
    labels = Counter()
    for node in nodes:
        label = _label(node)
        assert label not in FUNCTIONS and label != node.func.__name__, node.name
        # every part of the namespace below the dataset is in the label: `unet` and `sdkd` in
        # navier_stokes.unet.sdkd's, `simvp` in navier_stokes.simvp's; the `none` baseline
        # says it has no teacher; a node right under the dataset names the dataset
        dataset, *inner = node.namespace.split(".")
        for part in inner:
            assert part in label or (part == "none" and "without_teacher" in label), node.name
        if not inner:
            assert dataset in label, node.name
        labels[(dataset, label)] += 1
    repeated = [key for key, count in labels.items() if count > 1]
    assert not repeated, f"labels repeated within a dataset's group: {repeated}"


def test_nodes_keep_their_namespaces(project, monkeypatch):
    """The names change, the namespaces (``--namespaces``, the hooks, the catalog) do not."""
    pipelines = _pipelines(project, "local", monkeypatch)
    default = pipelines["__default__"]
    by_tag = {
        tag: {n.namespace for n in default.nodes if tag in n.tags}
        for tag in ("data", "teacher", "distill", "evaluate", "report")
    }
    assert by_tag["data"] == {"navier_stokes", "rayleigh_benard"}
    assert by_tag["teacher"] == {"navier_stokes.simvp", "navier_stokes.st_alternet"}
    assert by_tag["distill"] == {
        f"navier_stokes.{s}.{m}"
        for s in ("unet", "resnet", "mlp_mixer")
        for m in ("none", "sdkd", "aekd")
    }
    assert by_tag["evaluate"] == {"navier_stokes"}
    assert by_tag["report"] == {"navier_stokes", "rayleigh_benard"}
    names = {n.name for n in default.nodes}
    assert "navier_stokes.unet.sdkd.distill_unet_with_sdkd" in names
    assert "navier_stokes.unet.none.train_unet_without_teacher" in names
    assert "navier_stokes.simvp.train_teacher_simvp" in names


@pytest.mark.parametrize("env", ["local", "paper"])
def test_only_reporting_outputs_hang_off_the_collapsed_groups(project, env, monkeypatch):
    """kedro-viz draws every output that no node reads outside its dataset's group; the run
    report reads the summaries and tables, so only it, the figures, the CSV table and the
    curves are left there, and every one of them is in the reporting layer."""
    default = _pipelines(project, env, monkeypatch)["__default__"]
    free = default.outputs()
    datasets = {n.namespace for n in default.nodes if "data" in n.tags}
    assert {f"{d}.run_report" for d in datasets} <= free
    assert not [name for name in free if name.endswith("summary")], sorted(free)
    layers = {
        name: _entry(name)[1].get("metadata", {}).get("kedro-viz", {}).get("layer") for name in free
    }
    assert set(layers.values()) == {"reporting"}, layers


def _catalog() -> dict:
    return {k: v for k, v in yaml.safe_load(CATALOG.read_text()).items() if not k.startswith("_")}


def _entry(name: str) -> tuple[str, dict]:
    """The catalog pattern that resolves ``name`` (one placeholder per dotted part)."""
    parts = name.split(".")
    for pattern, config in _catalog().items():
        pieces = pattern.split(".")
        if len(pieces) == len(parts) and all(
            p == q or (p.startswith("{") and p.endswith("}"))
            for p, q in zip(pieces, parts, strict=True)
        ):
            return pattern, config
    raise AssertionError(f"no catalog entry for {name}")


@pytest.mark.parametrize("pattern", sorted(_catalog()))
def test_every_dataset_has_the_layer_of_its_folder(pattern):
    config = _catalog()[pattern]
    folder = Path(config["filepath"]).parts[1]
    viz = config.get("metadata", {}).get("kedro-viz", {})
    assert viz.get("layer") == LAYERS[folder], (pattern, config["filepath"])


@pytest.mark.parametrize(
    "pattern",
    sorted(p for p, c in _catalog().items() if c["filepath"].startswith("data/08_reporting")),
)
def test_tables_and_figures_have_a_preview_with_args_it_takes(pattern, tmp_path):
    """Each reporting dataset previews in kedro-viz (Markdown text excepted: ``TextDataset``
    has no ``preview``); ``preview_args`` bind to its ``preview`` and are set wherever it takes
    any (the CSV tables' ``nrows``, default 5), and the preview shows the whole table."""
    config = dict(_catalog()[pattern])
    cls, _ = parse_dataset_definition(dict(config))
    args = config.get("metadata", {}).get("kedro-viz", {}).get("preview_args")
    if not hasattr(cls, "preview"):
        assert cls.__name__ == "TextDataset", f"{pattern}: {cls.__name__} has no preview"
        return
    takes = [p for p in inspect.signature(cls.preview).parameters if p != "self"]
    if takes:
        assert args, f"{pattern}: preview takes {takes}; set metadata.kedro-viz.preview_args"
    inspect.signature(cls.preview).bind(None, **(args or {}))

    suffix = Path(config["filepath"]).suffix
    config["filepath"] = str(tmp_path / f"file{suffix}")
    dataset = parse_dataset_definition(config)[0](
        **{k: v for k, v in config.items() if k != "type"}
    )
    if cls.__name__ == "CSVDataset":
        rows = 30  # a laptop table: 2 teachers, 2 baselines, 9 students, more to spare
        dataset.save(pd.DataFrame({"model": [f"m{i}" for i in range(rows)], "mse": range(rows)}))
        assert len(dataset.preview(**args)["data"]) == rows
    elif cls.__name__ == "MatplotlibDataset":
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots()
        axes.plot([0, 1], [1, 0])
        dataset.save(figure)
        plt.close(figure)
        assert dataset.preview(**(args or {}))
    else:
        dataset.save({"dataset": "navier_stokes", "values": [1, 2]})
        assert "navier_stokes" in dataset.preview(**(args or {}))


def test_run_report_gathers_the_stages_summaries():
    summary = {
        "dataset": "navier_stokes",
        "source": "generate",
        "shape": {"trajectory": 4, "time": 20, "channel": 1, "y": 16, "x": 16},
        "channels": ["vorticity"],
        "t_in": 4,
        "t_out": 4,
        "stride": 2,
        "split_method": "trajectory",
        "windows": {"train": 12, "val": 4, "test": 4},
    }

    def model(name, role, method, test):
        return {
            "model": name,
            "role": role,
            "method": method,
            "n_parameters": 1000,
            "epochs_run": 3,
            "best_epoch": 2,
            "stop_reason": "max_epochs",
            "best_val_mse": test / 2,
            "test_mse": test,
        }

    # as the CSV reads back: power_law's 1 / blank are floats
    spectra = pd.DataFrame(
        {
            "teacher": ["simvp", "simvp"],
            "latent": ["high", "teacher_error"],
            "power_law": [1.0, float("nan")],
            "slope": [-4.5, float("nan")],
        }
    )
    page = write_run_report(
        summary,
        dataset="navier_stokes",
        spectral_summary=spectra,
        evaluation_markdown="# navier_stokes: test split\n\n4 test windows.\n\n| mse |\n|---|\n| 0.1 |\n",
        student__unet__sdkd=model("unet", "student", "sdkd", 0.3),
        teacher__simvp=model("simvp", "teacher", "supervised", 0.1),
    )
    lines = page.splitlines()
    assert lines[0] == "# navier_stokes: run report"
    headings = [line for line in lines if line.startswith("#")]
    assert headings == [
        "# navier_stokes: run report",
        "## Data",
        "## Training",
        "## Spectral analysis of the teachers",
        "## navier_stokes: test split",  # the evaluation page's title, one level down
    ]
    assert "| generate " in page and "trajectory 4 x time 20" in page
    assert re.search(r"train windows \|.*\n.*\n\| generate .*\|\s+12 \|\s+4 \|\s+4 \|$", page, re.M)
    section = page.split("## Training")[1].split("\n## ")[0].splitlines()
    training = [line for line in section if line.startswith(("| simvp", "| unet"))]
    assert [row.split("|")[1].strip() for row in training] == ["simvp", "unet"]  # teachers first
    assert "4 test windows." in page
    assert re.search(r"^\| simvp +\| high +\| 1 +\| -4\.5000 \|$", page, re.M), page
    assert re.search(r"^\| simvp +\| teacher_error \| +\| +\|$", page, re.M), page

    assert "input-only forcings" not in page  # NS declares none: no such column
    forced = write_run_report(
        {**summary, "forcing_channels": ["hour_sin", "hour_cos", "lat"]}, dataset="weatherbench"
    )
    assert "| input-only forcings " in forced and "| hour_sin, hour_cos, lat |" in forced

    only_data = write_run_report(summary, dataset="rayleigh_benard")
    assert [line for line in only_data.splitlines() if line.startswith("#")] == [
        "# rayleigh_benard: run report",
        "## Data",
    ]


def test_run_report_reads_its_datasets_outputs_only():
    available = {
        "navier_stokes.data_summary",
        "navier_stokes.spectral_summary",
        "navier_stokes.simvp.summary",
        "navier_stokes.unet.sdkd.summary",
        "navier_stokes.unet.none.summary",
        "navier_stokes.evaluation_table",  # the CSV: the report takes the Markdown
        "rayleigh_benard.data_summary",
        "rayleigh_benard.simvp.summary",
    }
    assert MODEL_ROLES["simvp"] == "teacher" and MODEL_ROLES["unet"] == "student"
    assert report_inputs("navier_stokes", available) == {
        "data_summary": "navier_stokes.data_summary",
        "spectral_summary": "navier_stokes.spectral_summary",
        "teacher__simvp": "navier_stokes.simvp.summary",
        "student__unet__none": "navier_stokes.unet.none.summary",
        "student__unet__sdkd": "navier_stokes.unet.sdkd.summary",
    }
