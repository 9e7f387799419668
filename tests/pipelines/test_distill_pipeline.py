"""`kedro run --pipelines=distill` on the smoke config: students, MLflow runs, errors."""

from __future__ import annotations

import json
import shutil

import mlflow
import pytest
import torch

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.errors import ConfigError, DataError, MissingInputError
from sdkd_pipeline.pipelines.forecaster import load_forecaster
from sdkd_pipeline.training import evaluate_mse
from tests.pipelines.conftest import run_kedro

NS_ONLY = {"data.datasets": "navier_stokes"}
STUDENTS = "data/06_models/navier_stokes/students"


# variants declared here, not taken from conf/base: the paper's fixed two-band weighting with
# a cutoff from the teachers' spectrum and a balanced lambda, and sdkd with function matching
# (the smoke Navier-Stokes store is generated: fresh solver trajectories)
VARIANTS = {
    "distill.variants.sdkd_energy.method": "sdkd",
    "distill.variants.sdkd_energy.weighting": "fixed",
    "distill.variants.sdkd_energy.cutoff.mode": "energy",
    "distill.variants.sdkd_energy.balance.lambda": "grad_ratio",
    "distill.variants.sdkd_fm.method": "sdkd",
    "distill.variants.sdkd_fm.function_matching.enabled": True,
    "distill.variants.sdkd_fm.function_matching.ratio": 0.5,
}


def test_distill_trains_each_method_logs_it_and_keeps_best_weights(project):
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    run_kedro(project, env="smoke", pipeline="teacher", params=NS_ONLY)
    methods = ["none", "sdkd", "sdkd_energy", "aekd", "sdkd_latent", "sdkd_fm"]
    run_kedro(
        project,
        env="smoke",
        pipeline="distill",
        params={**NS_ONLY, **VARIANTS, "distill.methods": "+".join(methods)},
    )

    val = WindowDataset(project / "data/05_model_input/navier_stokes.zarr", "val")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    teacher_val = {
        t: json.loads((project / f"data/06_models/navier_stokes/{t}_summary.json").read_text())[
            "best_val_mse"
        ]
        for t in ("st_alternet", "simvp")
    }
    for method in methods:
        summary = json.loads((project / STUDENTS / "unet" / f"{method}_summary.json").read_text())
        checkpoint = torch.load(project / STUDENTS / "unet" / f"{method}.pt", weights_only=True)
        model = load_forecaster(checkpoint)
        assert evaluate_mse(model, val, batch_size=8) == pytest.approx(
            summary["best_val_mse"], rel=1e-4
        )
        assert checkpoint["role"] == "student" and checkpoint["method"] == method

        run = client.get_run(summary["mlflow_run_id"])
        assert run.data.tags["dataset"] == "navier_stokes"
        assert run.data.tags["role"] == "student"
        assert run.data.tags["model"] == "unet"
        assert run.data.tags["method"] == method
        assert run.info.run_name == f"navier_stokes/unet/{method}"
        assert "test_loss" in run.data.metrics
        if method == "none":
            assert summary["teachers"] == []
            continue
        assert "train_kd" in run.data.metrics and "train_task" in run.data.metrics
        if method == "aekd":
            assert sorted(summary["teachers"]) == ["simvp", "st_alternet"]
            weights = [run.data.metrics[f"train_w_{t}"] for t in ("simvp", "st_alternet")]
            assert sum(weights) == pytest.approx(1.0, abs=1e-4)
            assert all(0.4 - 1e-4 <= w <= 0.6 + 1e-4 for w in weights)  # cap C = 0.6
        else:  # single teacher: the one with the lower validation error
            assert summary["teachers"] == [min(teacher_val, key=teacher_val.get)]
        metrics = run.data.metrics
        if method in ("sdkd", "sdkd_latent", "sdkd_fm"):
            # the advantage weighting: log-spaced bands, each weighted, no cutoff
            assert summary["cutoff"] is None
            for band in range(3):
                assert f"train_kd_band{band}" in metrics and f"train_w_band{band}" in metrics
                assert 0.0 <= metrics[f"train_w_band{band}"] <= 4.0  # advantage.w_max
            assert "train_alpha" not in metrics and "train_kd_high" not in metrics
        if method == "sdkd_energy":
            # the cutoff came from the teachers' spectrum; alpha is fixed, lambda balanced
            assert summary["cutoff"] is not None and summary["cutoff"] % 1 == 0.5
            assert metrics["train_alpha"] == 1.0
            assert metrics["train_lambda"] != 1.0
            assert run.data.params["cutoff"] == str(summary["cutoff"])
            assert "train_kd_high" in metrics and "train_kd_low" in metrics
        if method == "sdkd_latent":
            assert {"train_latent", "train_latent_weight", "train_latent_share"} <= set(metrics)
            assert 0.0 < metrics["train_latent_share"] < 1.0
            assert "train_latent_high" not in metrics
        if method == "sdkd_fm":
            # the solver's fresh trajectories: half as many inputs as training windows
            train = WindowDataset(project / "data/05_model_input/navier_stokes.zarr", "train")
            assert run.data.params["function_matching_source"] == "solver"
            assert run.data.params["function_matching_inputs"] == str(-(-len(train) // 2))
            assert 0.5 < metrics["train_labelled"] < 1.0  # 2/3 of the samples have a truth


def test_distill_without_teachers_says_to_run_the_teacher_pipeline(project):
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    with pytest.raises(MissingInputError, match=r"kedro run --pipelines=teacher"):
        run_kedro(project, env="smoke", pipeline="distill", params=NS_ONLY)
    # nothing was trained: the check runs before any node
    assert not (project / STUDENTS).exists()


@pytest.mark.bad_input
def test_a_teacher_file_of_another_architecture_is_refused(project):
    # simvp.pt copied over st_alternet.pt must not be used (and credited) as ST-AlterNet
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    run_kedro(project, env="smoke", pipeline="teacher", params=NS_ONLY)
    models = project / "data/06_models/navier_stokes"
    shutil.copyfile(models / "simvp.pt", models / "st_alternet.pt")
    with pytest.raises(
        DataError,
        match=r"teacher 'st_alternet': holds a 'simvp' checkpoint, "
        r"not 'st_alternet'.*kedro run --pipelines=teacher",
    ):
        run_kedro(
            project,
            env="smoke",
            pipeline="distill",
            params={**NS_ONLY, "distill.methods": "sdkd", "distill.teacher": "st_alternet"},
        )
    assert not (project / STUDENTS / "unet" / "sdkd.pt").exists()


def test_distill_without_data_names_both_commands(project):
    with pytest.raises(
        MissingInputError, match=r"--pipelines=data`? then `kedro run --pipelines=teacher"
    ):
        run_kedro(project, env="smoke", pipeline="distill", params=NS_ONLY)


def test_baseline_needs_no_teacher(project):
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    run_kedro(
        project,
        env="smoke",
        pipeline="distill",
        params={**NS_ONLY, "distill.methods": "none", "distill.students": "mlp_mixer"},
    )
    assert (project / STUDENTS / "mlp_mixer" / "none.pt").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"distill.methods": "none+magic"}, r"distill.methods: 'magic' is neither a method"),
        ({"distill.students": "simvp"}, r"distill.students: \['simvp'\] are not student"),
        ({"distill.datasets": "taxibj_xl"}, r"distill.datasets: unknown dataset name"),
        ({"distill.lambda": -1}, r"distill.lambda must be >= 0"),
        # `--params distill.methods=` gives null: named, not a TypeError
        ({"distill.methods": None}, r"parameter distill\.methods is empty: name at least one"),
        ({"distill.students": ""}, r"parameter distill\.students is empty"),
        ({"data.datasets": None}, r"parameter data\.datasets is empty"),
        (
            {"distill.methods": "sdkd", "distill.teacher": "simvpp"},
            r"distill\.teacher \(method 'sdkd'\): \['simvpp'\] are not among the trained",
        ),
    ],
)
def test_bad_distill_parameters_are_named(project, params, message):
    with pytest.raises(ConfigError, match=message):
        run_kedro(project, env="smoke", pipeline="distill", params={**NS_ONLY, **params})
    assert not (project / STUDENTS).exists()  # refused before any student was trained


def test_distill_leaves_out_datasets_that_are_not_enabled():
    from sdkd_pipeline.pipelines.selection import distill_selection

    params = {
        "data": {"datasets": ["rayleigh_benard"]},
        "distill": {"datasets": ["navier_stokes"], "students": ["unet"], "methods": ["none"]},
    }
    datasets, students, methods, _ = distill_selection(params)
    assert datasets == [] and students == ["unet"] and methods == ["none"]


@pytest.mark.bad_input
def test_a_run_that_left_a_stage_out_for_every_dataset_ends_saying_so(caplog):
    from sdkd_pipeline.hooks import EnabledDatasetsHook
    from sdkd_pipeline.pipelines import selection

    rbc_only = {
        "data": {"datasets": ["rayleigh_benard"]},
        "teacher": {"datasets": ["navier_stokes"]},
        "distill": {"datasets": ["navier_stokes"]},
    }
    selection.distill_selection(rbc_only)  # as the registry does (teachers first)
    with caplog.at_level("WARNING"):
        caplog.clear()
        EnabledDatasetsHook().after_pipeline_run({"pipeline_names": None})
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(
        "run finished without the teacher and spectral and distill and evaluate stages"
    )
    assert "teacher.datasets: ['navier_stokes'] left out" in line
    assert 'use --params "teacher.datasets=rayleigh_benard"' in line
    # a run of the data pipeline alone does not mention them; a selection with teachers clears it
    caplog.clear()
    with caplog.at_level("WARNING"):
        EnabledDatasetsHook().after_pipeline_run({"pipeline_names": ["data"]})
        selection.distill_selection({"data": {"datasets": ["navier_stokes"]}})
        EnabledDatasetsHook().after_pipeline_run({"pipeline_names": None})
    assert not [r for r in caplog.records if "run finished" in r.getMessage()]


def test_teacher_datasets_default_to_the_enabled_ones_and_bound_distillation(caplog):
    from sdkd_pipeline.pipelines.selection import distill_selection, teacher_datasets

    both = {"data": {"datasets": ["navier_stokes", "rayleigh_benard"]}}
    assert teacher_datasets(both) == ["navier_stokes", "rayleigh_benard"]
    ns_only = {**both, "teacher": {"datasets": ["navier_stokes"]}}
    assert teacher_datasets(ns_only) == ["navier_stokes"]
    # distillation defaults to the teachers' datasets and leaves out those without teachers
    assert distill_selection({**ns_only, "distill": {}})[0] == ["navier_stokes"]
    with caplog.at_level("WARNING"):
        chosen = distill_selection({**ns_only, "distill": {"datasets": ["rayleigh_benard"]}})
    assert chosen[0] == [] and "rayleigh_benard" in caplog.text
    assert "add them to teacher.datasets" in caplog.text
    # the key that fixes it for what is there, and that the stage does nothing
    assert 'use --params "distill.datasets=navier_stokes"' in caplog.text
    assert "the distill stage has nothing to do in this run" in caplog.text
    # a teacher dataset that is not enabled is left out with a warning; unknown is an error
    with caplog.at_level("WARNING"):
        assert (
            teacher_datasets(
                {
                    "data": {"datasets": ["navier_stokes"]},
                    "teacher": {"datasets": ["rayleigh_benard"]},
                }
            )
            == []
        )
    with pytest.raises(ConfigError, match=r"teacher.datasets: unknown dataset name"):
        teacher_datasets({**both, "teacher": {"datasets": ["navier"]}})
    with pytest.raises(ConfigError, match=r"teacher.datasets: duplicate"):
        teacher_datasets({**both, "teacher": {"datasets": ["navier_stokes", "navier_stokes"]}})


def test_teacher_outputs_are_computed_once_per_teacher_and_store(monkeypatch):
    """Each distill node of one `kedro run` would otherwise rerun the same teachers: the node
    keeps one ``DistillCache`` for the process."""
    import numpy as np

    from sdkd_pipeline.data.raw import make_raw
    from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
    from sdkd_pipeline.distill import setup
    from sdkd_pipeline.models import build_model
    from sdkd_pipeline.pipelines.distill import nodes

    assert isinstance(nodes._CACHE, setup.DistillCache)

    def windows(seed):
        fields = np.random.default_rng(seed).normal(size=(4, 8, 1, 16, 16)).astype("float32")
        raw = make_raw(fields, dataset="test", source="random", channels=["w"], time=np.arange(8.0))
        store = build_tensor_dataset(
            raw, split=SplitConfig(train=0.5, val=0.25, test=0.25), window=WindowConfig(2, 2)
        )
        return WindowDataset(store, "train")

    def teacher(seed):
        torch.manual_seed(seed)
        return build_model(
            "simvp",
            in_frames=2,
            out_frames=2,
            channels=1,
            height=16,
            width=16,
            frame_hidden=4,
            hidden=8,
            depth=2,
            mlp_ratio=2.0,
        ).eval()

    calls = []
    real = setup.precompute_teacher_outputs
    monkeypatch.setattr(
        setup,
        "precompute_teacher_outputs",
        lambda models, *a, **k: calls.append(sorted(models)) or real(models, *a, **k),
    )
    cache = setup.DistillCache()
    a, b = teacher(0), teacher(1)
    train = windows(0)
    kw = {"latents": False, "batch_size": 4, "device": torch.device("cpu"), "autocast_dtype": None}
    first = cache.teacher_outputs({"a": a}, train, **kw)
    both = cache.teacher_outputs({"a": a, "b": b}, train, **kw)  # only b is new
    assert calls == [["a"], ["b"]]
    assert both["a"]["prediction"] is first["a"]["prediction"]
    with torch.no_grad():
        x = torch.stack([train[i][0] for i in range(len(train))])
        assert torch.allclose(both["b"]["prediction"], b(x), atol=1e-5)
    # retrained weights, latents or another store: computed again
    retrained = teacher(2)
    cache.teacher_outputs({"a": retrained}, train, **kw)
    with_latents = cache.teacher_outputs({"a": a}, train, **{**kw, "latents": True})
    assert set(with_latents["a"]) == {"prediction", "state"}
    other = windows(1)
    cache.teacher_outputs({"a": a}, other, **kw)
    assert calls[2:] == [["a"], ["a"], ["a"]]
    # set-up on another store lets the previous store's outputs go
    cache.forget_other_stores({setup.windows_fingerprint(other)})
    assert len(cache.outputs) == 1


def test_a_rerun_after_a_full_run_trains_nothing_and_creates_no_mlflow_run(project):
    """`kedro run --pipelines=distill` (and the teachers) after a finished run: each node finds
    its finished run folder before any teacher output is computed, trains nothing, opens no
    MLflow run and returns the same checkpoint; the students' run folders stay one per run."""
    import sdkd_pipeline.pipelines.distill.nodes as distill_nodes
    import sdkd_pipeline.pipelines.forecaster as forecaster

    params = {**NS_ONLY, "distill.methods": "none+sdkd"}
    run_kedro(project, env="smoke", pipeline="data", params=NS_ONLY)
    run_kedro(project, env="smoke", pipeline="teacher", params=NS_ONLY)
    run_kedro(project, env="smoke", pipeline="distill", params=params)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")

    def all_runs():
        ids = [e.experiment_id for e in client.search_experiments()]
        return {r.info.run_id for r in client.search_runs(ids, max_results=1000)}

    before = all_runs()
    first = {
        m: torch.load(project / STUDENTS / "unet" / f"{m}.pt", weights_only=True)
        for m in ("none", "sdkd")
    }

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run must not be set up or trained again")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(distill_nodes, "prepare_distillation", refuse)
        patch.setattr(forecaster, "train", refuse)
        run_kedro(project, env="smoke", pipeline="teacher", params=NS_ONLY)
        run_kedro(project, env="smoke", pipeline="distill", params=params)

    assert all_runs() == before
    for method, old in first.items():
        new = torch.load(project / STUDENTS / "unet" / f"{method}.pt", weights_only=True)
        assert new["mlflow_run_id"] == old["mlflow_run_id"]
        assert new["best_val_loss"] == old["best_val_loss"]
        assert all(torch.equal(new["state_dict"][k], v) for k, v in old["state_dict"].items())
    folders = [
        p for p in (project / "data/06_models/runs/navier_stokes/unet/sdkd").iterdir() if p.is_dir()
    ]
    assert len(folders) == 1, folders

    # a run whose MLflow record is gone is logged again (from its finished last.pt, no training)
    client.delete_run(first["sdkd"]["mlflow_run_id"])
    run_kedro(
        project, env="smoke", pipeline="distill", params={**NS_ONLY, "distill.methods": "sdkd"}
    )
    again = torch.load(project / STUDENTS / "unet" / "sdkd.pt", weights_only=True)
    assert again["mlflow_run_id"] != first["sdkd"]["mlflow_run_id"]
    assert client.get_run(again["mlflow_run_id"]).info.status == "FINISHED"
