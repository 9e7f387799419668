"""Students as MLflow models on their own training runs, and the best one per dataset in the
model registry (``tracking.models`` parameters, ``TrackingConfig``).

``log_student_models`` logs two MLflow models on a student's run (``mlflow_run_id`` in its
checkpoint), each with a signature and a real window of the test split as input example:

- ``forecaster``: a pyfunc (``tracking_pyfunc.StudentForecaster``, logged as model from code)
  taking the last ``T_in`` frames ``(batch, T_in, C, H, W)`` in physical units and returning
  the forecast ``(batch, T_out, C, H, W)`` in physical units: the checkpoint's mean and std
  normalize and de-normalize inside. It holds the checkpoint (PyTorch runtime, needs
  ``sdkd_pipeline``) and its ONNX export (onnxruntime runtime, needs only onnxruntime). This
  is the model that is registered and served.
- ``pytorch``: MLflow's PyTorch flavor (``mlflow.pytorch.load_model`` gives the ``nn.Module``),
  in the model's normalized units; unpickling it needs ``sdkd_pipeline`` installed.

A model already logged on the run (a rerun of the evaluation) is reused, not logged again.
``register_best_student`` registers the ``forecaster`` of the student with the lowest
validation MSE (``best_val_loss`` of its checkpoint, never a test number) as
``sdkd-<dataset>-student``, tagged with its model, method and run id, and points the alias
``best`` at it; a run already registered there gets no second version.

MLflow is imported inside the functions; the tracking URI is the one given (the evaluate node
passes kedro-mlflow's, or the default store).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

FORECASTER = "forecaster"
PYTORCH = "pytorch"
BEST_ALIAS = "best"
PYFUNC_FILE = Path(__file__).with_name("tracking_pyfunc.py")
NOTE_TAG = "mlflow.note.content"  # what MLflow's UI shows as a description
PROGRESS_BAR_VARIABLE = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"

PHYSICAL_NOTE = (
    "Forecaster {model}/{method} of dataset {dataset}: input (batch, {t_in}, {c}, {h}, {w}) = "
    "the last {t_in} frames of channels {channels} in physical units (not normalized), float32; "
    "output (batch, {t_out}, {c}, {h}, {w}), the next {t_out} frames, in physical units. "
    "Normalization (the training split's per-channel mean and std) happens inside; "
    'params={{"units": "normalized"}} feeds and returns normalized values instead.'
)
NORMALIZED_NOTE = (
    "PyTorch module {model}/{method} of dataset {dataset}: input (batch, {t_in}, {c}, {h}, {w}) "
    "in NORMALIZED units ((x - mean) / std per channel {channels}, with the mean and std in "
    "this model's metadata), output (batch, {t_out}, {c}, {h}, {w}) normalized."
)


@dataclass
class LoggedStudent:
    """A student logged by ``log_student_models``."""

    key: str  # <model>/<method>
    model: str
    method: str
    run_id: str
    val_mse: float  # best_val_loss of its checkpoint (normalized units)
    model_id: str | None = None  # the forecaster's logged model; None: logging it failed

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_id}"


# MLflow's INFO lines and warnings while logging a model: "Validating input example",
# artifact progress bars, the pickle caution (a choice made here: see log_student_models)
_QUIET_LOGGERS = ("mlflow.pyfunc", "mlflow.pytorch", "mlflow.models", "mlflow.utils")


@contextlib.contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI is ``uri`` inside (``Model.log`` reads only the global),
    and its per-model log lines and progress bars are off."""
    loggers = {name: logging.getLogger(name) for name in _QUIET_LOGGERS}
    levels = {name: logger.level for name, logger in loggers.items()}
    bar = os.environ.get(PROGRESS_BAR_VARIABLE)
    try:
        for logger in loggers.values():
            logger.setLevel(logging.ERROR)
        os.environ[PROGRESS_BAR_VARIABLE] = "false"
        with _global_tracking_uri(uri):
            yield
    finally:
        if bar is None:
            os.environ.pop(PROGRESS_BAR_VARIABLE, None)
        else:
            os.environ[PROGRESS_BAR_VARIABLE] = bar
        for name, logger in loggers.items():
            logger.setLevel(levels[name])


@contextlib.contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """``mlflow.set_tracking_uri(uri)`` inside, and after it the URI as it was: MLflow's own
    helper restores "not set" too (``MLFLOW_TRACKING_URI`` then still counts)."""
    import mlflow

    try:
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    except ImportError:  # pragma: no cover - an MLflow without the private helper
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)
        return
    with _use_tracking_uri(uri):
        yield


def _requirements(onnx: bool) -> list[str]:
    """Pinned pip requirements (given, so MLflow does not infer them by loading the model in a
    subprocess). ``sdkd_pipeline`` is not on PyPI: the PyTorch runtime needs it installed."""
    import importlib.metadata

    names = ["torch", "numpy"] + (["onnxruntime"] if onnx else [])
    out = []
    for name in names:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(name)
    return out


def _existing(client: Any, experiment_id: str, run_id: str, name: str) -> Any | None:
    """The READY logged model ``name`` of run ``run_id``, if one exists."""
    models = client.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"name = '{name}' AND source_run_id = '{run_id}'",
    )
    ready = [m for m in models if str(m.status) in ("READY", "LoggedModelStatus.READY")]
    return ready[0] if ready else None


def _refuse_a_copied_experiment(client: Any, experiment_id: str, run_id: str) -> None:
    """A run of an experiment copied from another project (``tracking_store``) keeps its
    artifacts in that project: a model logged on it would be written there."""
    from sdkd_pipeline.errors import DataError
    from sdkd_pipeline.tracking_store import COPIED_FROM_TAG

    origin = (client.get_experiment(experiment_id).tags or {}).get(COPIED_FROM_TAG)
    if origin:
        raise DataError(
            f"its run {run_id} was copied with this project's mlflow.db from {origin} and keeps "
            f"its artifacts there; retrain the student here, or evaluate it in {origin}"
        )


def _onnx_export(checkpoint: Any, folder: Path) -> Path | None:
    """The checkpoint's ONNX export, checked against PyTorch, or ``None`` (logged why)."""
    from sdkd_pipeline import deploy

    missing = deploy.onnx_missing()
    if missing:
        log.info("student models are logged without ONNX: %s", missing)
        return None
    try:
        path = deploy.export_onnx(checkpoint, folder / "student.onnx")
        deploy.check_onnx(checkpoint, path, n=1, batch_sizes=(1,))
    except Exception as exc:  # noqa: BLE001 - the PyTorch runtime still works without it
        log.warning("student model logged without its ONNX export: %s", exc)
        return None
    return path


def _notes(checkpoint: Any, meta: Mapping[str, Any]) -> dict[str, str]:
    shape = meta["shape"]
    values = {
        "model": meta.get("model"),
        "method": meta.get("method"),
        "dataset": meta.get("dataset"),
        "t_in": shape["in_frames"],
        "t_out": shape["out_frames"],
        "c": shape["channels"],
        "h": shape["height"],
        "w": shape["width"],
        "channels": ", ".join(meta["channels"]),
    }
    return {
        FORECASTER: PHYSICAL_NOTE.format(**values),
        PYTORCH: NORMALIZED_NOTE.format(**values),
    }


def log_student_models(
    tracking_uri: str,
    run_id: str,
    checkpoint: Any,
    example: torch.Tensor,
    *,
    module: torch.nn.Module | None = None,
) -> str:
    """Log the ``forecaster`` and ``pytorch`` models of ``checkpoint`` (see the module
    docstring) on run ``run_id``; ``example`` is one normalized input window ``(1, T_in, C, H,
    W)`` of the test split. Returns the forecaster's logged model id (the existing one when the
    run has it already)."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import Model, infer_signature

    from sdkd_pipeline.deploy import checkpoint_meta
    from sdkd_pipeline.models.checkpoint import Checkpoint

    ckpt = Checkpoint.of(checkpoint)
    meta = checkpoint_meta(ckpt)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.get_run(run_id).info.experiment_id
    notes = _notes(ckpt, meta)
    model = (module if module is not None else ckpt.build_model()).cpu().eval()
    x = example.detach().cpu().float().reshape(1, *example.shape[-4:])
    with torch.no_grad():
        y = model(x)
    mean = torch.as_tensor(meta["mean"], dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.as_tensor(meta["std"], dtype=torch.float32).reshape(-1, 1, 1)
    x_norm, y_norm = x.numpy(), y.numpy()
    x_phys, y_phys = (x * std + mean).numpy(), (y * std + mean).numpy()
    tags = {
        "dataset": str(meta.get("dataset")),
        "model": str(meta.get("model")),
        "method": str(meta.get("method")),
        "role": "student",
    }
    metadata = {k: meta[k] for k in ("channels", "mean", "std", "shape")}
    logged: dict[str, str] = {}
    with use_tracking_uri(tracking_uri), tempfile.TemporaryDirectory() as tmp:
        for name in (FORECASTER, PYTORCH):
            found = _existing(client, experiment_id, run_id, name)
            if found is not None:
                logged[name] = found.model_id
                continue
            _refuse_a_copied_experiment(client, experiment_id, run_id)
            units = "physical" if name == FORECASTER else "normalized"
            entity = client.create_logged_model(
                experiment_id,
                name=name,
                source_run_id=run_id,
                tags={**tags, "units": units, NOTE_TAG: notes[name]},
            )
            if name == FORECASTER:
                logged[name] = _log_forecaster(
                    entity.model_id, ckpt, Path(tmp), (x_phys, y_phys), metadata, run_id
                )
            else:
                Model.log(
                    artifact_path=None,
                    name=name,
                    flavor=mlflow.pytorch,
                    pytorch_model=model,
                    model_id=entity.model_id,
                    run_id=run_id,
                    signature=infer_signature(x_norm, y_norm),
                    input_example=x_norm,
                    pip_requirements=_requirements(onnx=False),
                    serialization_format="pickle",
                    metadata={**metadata, "units": units},
                )
                logged[name] = entity.model_id
    return logged[FORECASTER]


def _log_forecaster(
    model_id: str,
    checkpoint: Any,
    folder: Path,
    example: tuple[np.ndarray, np.ndarray],
    metadata: Mapping[str, Any],
    run_id: str,
) -> str:
    """The ``forecaster`` pyfunc into logged model ``model_id``: the checkpoint file and, when
    it exports, the ONNX file as its artifacts; the example in physical units."""
    import mlflow.pyfunc
    from mlflow.models import Model, infer_signature

    from sdkd_pipeline.tracking_pyfunc import CHECKPOINT_ARTIFACT, ONNX_ARTIFACT

    path = folder / "checkpoint.pt"
    torch.save(checkpoint.to_dict(), path)
    artifacts = {CHECKPOINT_ARTIFACT: str(path)}
    onnx_path = _onnx_export(checkpoint, folder)
    if onnx_path is not None:
        artifacts[ONNX_ARTIFACT] = str(onnx_path)
    x, y = example
    # Model.log, not mlflow.pyfunc.log_model: only it takes the run (not the active one)
    Model.log(
        artifact_path=None,
        name=FORECASTER,
        flavor=mlflow.pyfunc,
        model_id=model_id,
        run_id=run_id,
        python_model=str(PYFUNC_FILE),
        artifacts=artifacts,
        model_config={"runtime": "auto"},
        signature=infer_signature(x, y, params={"units": "physical"}),
        input_example=x,
        pip_requirements=_requirements(onnx=onnx_path is not None),
        metadata={**metadata, "units": "physical", "onnx": onnx_path is not None},
    )
    return model_id


def log_students(
    tracking_uri: str,
    entries: Sequence[tuple[str, str, str, torch.nn.Module, Any]],
    example: torch.Tensor,
    *,
    dataset: str,
    register: bool = True,
    name_template: str = "sdkd-{dataset}-student",
) -> list[LoggedStudent]:
    """``log_student_models`` for every student of ``entries`` (``(role, model, method,
    module, checkpoint)``, as the evaluation takes them) that has a run, then (``register``)
    ``register_best_student``. A student whose models fail to log gets a warning, and is not
    registered even if it is the best (no other student is registered in its place)."""
    students = []
    for role, model, method, module, checkpoint in entries:
        run_id = checkpoint.get("mlflow_run_id")
        if role != "student" or not run_id:
            continue
        val = checkpoint.get("best_val_loss")
        student = LoggedStudent(
            f"{model}/{method}", model, method, str(run_id), float("nan" if val is None else val)
        )
        try:
            student.model_id = log_student_models(
                tracking_uri, student.run_id, checkpoint, example, module=module
            )
        except Exception as exc:  # noqa: BLE001 - a deleted run, a model MLflow cannot save
            log.warning(
                "%s: student %s was not logged as an MLflow model on its run %s: %s",
                dataset,
                student.key,
                student.run_id,
                f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
            )
        students.append(student)
    if register:
        register_best_student(tracking_uri, students, dataset, name_template)
    return students


def best_student(students: Sequence[LoggedStudent]) -> LoggedStudent | None:
    """The student with the lowest validation MSE (the first of equals); ``None`` when none
    has a finite one."""
    finite = [s for s in students if math.isfinite(s.val_mse)]
    return min(finite, key=lambda s: s.val_mse) if finite else None


def register_best_student(
    tracking_uri: str,
    students: Sequence[LoggedStudent],
    dataset: str,
    name_template: str = "sdkd-{dataset}-student",
) -> Any | None:
    """Register the ``best_student`` of ``dataset`` (see the module docstring); returns its
    model version (the existing one when its run is registered already) or ``None``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    best = best_student(students)
    if best is None:
        return None
    name = name_template.format(dataset=dataset)
    if best.model_id is None:
        log.warning(
            "%s: the best student %s is not registered in %s: its model failed to log",
            dataset,
            best.key,
            name,
        )
        return None
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name,
            tags={"dataset": dataset, "role": "student"},
            description=(
                f"The best student of dataset {dataset} by validation MSE, as a forecaster in "
                "physical units: input (batch, T_in, C, H, W), the last T_in frames; output "
                "(batch, T_out, C, H, W). Alias 'best': the latest best."
            ),
        )
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{best.run_id}'")
    if versions:
        version = max(versions, key=lambda v: int(v.version))
    else:
        note = client.get_logged_model(best.model_id).tags.get(NOTE_TAG, "")
        tags = {
            "dataset": dataset,
            "model": best.model,
            "method": best.method,
            "run_id": best.run_id,
            "val_mse": f"{best.val_mse:.6g}",
        }
        version = client.create_model_version(
            name,
            source=best.model_uri,
            run_id=best.run_id,
            tags=tags,
            description=note,
            model_id=best.model_id,
        )
    client.set_registered_model_alias(name, BEST_ALIAS, version.version)
    log.info(
        "%s: best student %s (validation MSE %.4g, run %s) is %s version %s",
        dataset,
        best.key,
        best.val_mse,
        best.run_id,
        name,
        version.version,
    )
    return version
