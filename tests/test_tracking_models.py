"""Students as MLflow models and the model registry: two tiny students trained through
``train_forecaster`` into a SQLite store in a temporary folder, evaluated twice by the evaluate
node; the registered model predicts what the checkpoint predicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.models.checkpoint import Checkpoint
from sdkd_pipeline.tracking import TrackingConfig
from sdkd_pipeline.tracking_models import (
    BEST_ALIAS,
    FORECASTER,
    PYTORCH,
    LoggedStudent,
    best_student,
    register_best_student,
)

mlflow = pytest.importorskip("mlflow")

DATASET = "demo"
REGISTERED = f"sdkd-{DATASET}-student"
TINY_UNET = {"hidden": 8, "base_width": 8, "levels": 2}
EVALUATE = {
    "batch_size": 2,
    "latency": {"repeats": 1, "warmup": 0, "batch_sizes": [1]},
    "device": "cpu",
    "exported_latency": {"formats": []},
}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tensors():
    rng = np.random.default_rng(3)
    fields = rng.normal([5.0, -2.0], [3.0, 0.5], size=(4, 9, 16, 16, 2))
    raw = make_raw(
        fields.transpose(0, 1, 4, 2, 3).astype(np.float32),
        dataset=DATASET,
        source="test:demo",
        channels=["u", "v"],
        time=np.arange(9, dtype=np.float64),
    )
    return build_tensor_dataset(raw, split=SplitConfig(2, 1, 1), window=WindowConfig(2, 2)).load()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Two students (methods ``none`` and ``sdkd``, other seeds) trained and logged to a SQLite
    store in a temporary folder, then evaluated twice (a rerun of the evaluate stage)."""
    from sdkd_pipeline.pipelines.evaluate.nodes import evaluate_dataset
    from sdkd_pipeline.pipelines.forecaster import train_forecaster

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tensors = _tensors()
    tracking = {
        "experiment": "students",
        "checkpoint_dir": str(root / "runs"),
        "system_metrics": {"enabled": False},
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        checkpoints = {}
        for method, seed in (("none", 0), ("sdkd", 1)):
            checkpoint, _ = train_forecaster(
                tensors,
                TINY_UNET,
                {"epochs": 1, "batch_size": 2, "seed": seed},
                tracking,
                progress=False,
                dataset=DATASET,
                model_name="unet",
                role="student",
                method=method,
            )
            checkpoints[f"student_unet__{method}"] = checkpoint
        for _ in range(2):
            evaluate_dataset(tensors, EVALUATE, tracking, dataset=DATASET, **checkpoints)
    return uri, tensors, checkpoints


def _best(checkpoints):
    return min(checkpoints.values(), key=lambda c: c["best_val_loss"])


def test_the_best_student_by_validation_mse_is_registered_once(evaluated):
    uri, _, checkpoints = evaluated
    client = mlflow.MlflowClient(tracking_uri=uri)
    best = _best(checkpoints)
    assert len({c["best_val_loss"] for c in checkpoints.values()}) == 2  # a real choice
    versions = client.search_model_versions(f"name = '{REGISTERED}'")
    assert len(versions) == 1  # two evaluations of the same runs: one version
    version = versions[0]
    assert version.run_id == best["mlflow_run_id"]
    assert version.tags["method"] == best["method"] and version.tags["model"] == "unet"
    assert version.tags["run_id"] == best["mlflow_run_id"]
    assert float(version.tags["val_mse"]) == pytest.approx(best["best_val_loss"], rel=1e-5)
    assert "physical units" in version.description
    assert client.get_model_version_by_alias(REGISTERED, BEST_ALIAS).version == version.version
    # each student's run holds each model once, although the evaluation ran twice
    for checkpoint in checkpoints.values():
        run = client.get_run(checkpoint["mlflow_run_id"])
        models = client.search_logged_models([run.info.experiment_id])
        names = sorted(m.name for m in models if m.source_run_id == run.info.run_id)
        assert names == sorted([FORECASTER, PYTORCH])


def _window(tensors) -> torch.Tensor:
    return WindowDataset(tensors, "test")[1][0].unsqueeze(0)


def test_the_registered_model_predicts_what_the_checkpoint_predicts(evaluated):
    uri, tensors, checkpoints = evaluated
    best = Checkpoint.of(_best(checkpoints))
    module = best.build_model().eval()
    x_norm = _window(tensors)
    mean = best["mean"].float().reshape(-1, 1, 1)
    std = best["std"].float().reshape(-1, 1, 1)
    x_phys = (x_norm * std + mean).numpy()
    with torch.no_grad():
        expected_norm = module(x_norm).numpy()
        # what a user of the checkpoint computes from physical input
        expected_phys = (module((torch.from_numpy(x_phys) - mean) / std) * std + mean).numpy()
    mlflow.set_tracking_uri(uri)
    try:
        for model_uri in (
            f"models:/{REGISTERED}/1",
            f"models:/{REGISTERED}@{BEST_ALIAS}",
            f"runs:/{best['mlflow_run_id']}/{FORECASTER}",
        ):
            loaded = mlflow.pyfunc.load_model(model_uri)
            got = loaded.predict(x_phys)
            assert got.shape == expected_phys.shape == (1, 2, 2, 16, 16)
            np.testing.assert_allclose(got, expected_phys, rtol=0, atol=1e-6)
            got_norm = loaded.predict(x_norm.numpy(), params={"units": "normalized"})
            np.testing.assert_allclose(got_norm, expected_norm, rtol=0, atol=1e-6)
        signature = loaded.metadata.signature
        assert signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 2, 2, 16, 16)
        # the ONNX export inside the same model, run by onnxruntime
        onnx = mlflow.pyfunc.load_model(f"models:/{REGISTERED}/1", model_config={"runtime": "onnx"})
        np.testing.assert_allclose(onnx.predict(x_phys), expected_phys, rtol=1e-4, atol=1e-4)
        # the PyTorch flavor: the module itself, in normalized units
        torch_model = mlflow.pytorch.load_model(f"runs:/{best['mlflow_run_id']}/{PYTORCH}")
        with torch.no_grad():
            np.testing.assert_allclose(
                torch_model(x_norm).numpy(), expected_norm, rtol=0, atol=1e-6
            )
    finally:
        mlflow.set_tracking_uri(None)


def test_the_input_example_is_a_real_test_window(evaluated):
    uri, tensors, checkpoints = evaluated
    run_id = checkpoints["student_unet__none"]["mlflow_run_id"]
    first = WindowDataset(tensors, "test")[0][0].unsqueeze(0).numpy()
    mlflow.set_tracking_uri(uri)
    try:
        info = mlflow.models.get_model_info(f"runs:/{run_id}/{PYTORCH}")
        example = mlflow.models.Model.load(f"runs:/{run_id}/{PYTORCH}").load_input_example(
            mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{PYTORCH}")
        )
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_allclose(np.asarray(example), first, rtol=0, atol=0)
    assert info.metadata["units"] == "normalized"


def test_a_wrong_input_shape_is_named(evaluated):
    uri, _, _ = evaluated
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{REGISTERED}/1")
    finally:
        mlflow.set_tracking_uri(None)
    with pytest.raises(Exception, match=r"T_in|shape"):
        loaded.predict(np.zeros((1, 3, 2, 16, 16), dtype=np.float32))


def test_best_student_never_picks_a_missing_validation_mse():
    a = LoggedStudent("unet/none", "unet", "none", "r1", 0.5, "m-1")
    b = LoggedStudent("unet/sdkd", "unet", "sdkd", "r2", math.nan, "m-2")
    c = LoggedStudent("unet/kd", "unet", "kd", "r3", 0.4, "m-3")
    assert best_student([a, b, c]) is c
    assert best_student([b]) is None
    assert best_student([]) is None


def test_a_best_student_that_failed_to_log_is_not_replaced(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    failed = LoggedStudent("unet/sdkd", "unet", "sdkd", "r1", 0.1, None)
    other = LoggedStudent("unet/none", "unet", "none", "r2", 0.2, "m-2")
    assert register_best_student(uri, [failed, other], DATASET) is None
    assert "failed to log" in caplog.text
    assert mlflow.MlflowClient(tracking_uri=uri).search_registered_models() == []


def test_tracking_model_parameters():
    cfg = TrackingConfig.from_params(None)
    assert cfg.log_models and cfg.register_models and cfg.registered_name.format(dataset="x")
    off = TrackingConfig.from_params({"models": {"log": False, "register": False}})
    assert not off.log_models and not off.register_models


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"models": {"log": False}}, r"tracking\.models\.register needs tracking\.models\.log"),
        ({"models": {"registered_name": "students"}}, r"tracking\.models\.registered_name"),
        ({"models": {"registered_name": "s-{data}"}}, r"tracking\.models\.registered_name"),
        ({"models": {"logs": True}}, r"tracking\.models\.logs: unknown parameter"),
    ],
)
def test_bad_model_parameters_are_named(params, match):
    with pytest.raises(ConfigError, match=match):
        TrackingConfig.from_params(params)


def test_no_model_is_written_into_a_copied_experiment(evaluated, tmp_path, caplog):
    from sdkd_pipeline.tracking_models import log_students
    from sdkd_pipeline.tracking_store import COPIED_FROM_TAG

    _, tensors, checkpoints = evaluated
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("old", artifact_location=str(tmp_path / "original"))
    client.set_experiment_tag(experiment, COPIED_FROM_TAG, "/somewhere/else")
    run_id = client.create_run(experiment).info.run_id
    checkpoint = {**checkpoints["student_unet__none"], "mlflow_run_id": run_id}
    entry = ("student", "unet", "none", Checkpoint.of(checkpoint).build_model(), checkpoint)
    students = log_students(uri, [entry], _window(tensors), dataset=DATASET)
    assert [s.model_id for s in students] == [None]
    assert "copied with this project's mlflow.db from /somewhere/else" in caplog.text
    assert client.search_logged_models([experiment]) == []
    assert not (tmp_path / "original").exists()
