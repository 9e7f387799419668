"""The training node shared by teachers and students: thin glue over the library.

Teachers train on the data (``setup=None``); a distilled student passes a ``setup`` that builds
its loss (and possibly a training set with the teachers' outputs attached) once the model and
the data are known. Either way it is one engine, one MLflow run and one checkpoint format.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from sdkd_pipeline.data.forcings import store_forcings
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.models import build_model
from sdkd_pipeline.models.checkpoint import Checkpoint
from sdkd_pipeline.models.complexity import count_flops, count_parameters
from sdkd_pipeline.models.config import ModelConfig
from sdkd_pipeline.models.registry import resolve_config
from sdkd_pipeline.tracking import (
    MLflowTracker,
    TrackingConfig,
    current_tracking_uri,
    flatten_params,
    run_tags,
)
from sdkd_pipeline.training import (
    TrainConfig,
    TrainResult,
    seed_everything,
    stage_config,
    train,
)

logger = logging.getLogger(__name__)


@dataclass
class LossSetup:
    """What a ``setup`` hands the engine: the loss, the training set it reads (``None``: the
    plain training windows), parameters to log, and fields to add to the checkpoint."""

    loss: Any = None
    train_set: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)


Setup = Callable[[torch.nn.Module, Mapping[str, WindowDataset], TrainConfig], LossSetup]


def _project_relative(store: Any) -> str:
    """The store's path as logged: relative to the project (the working directory) when inside
    it, so a copied project's runs do not name the author's disk; ``memory`` for a dataset."""
    if not isinstance(store, str | Path):
        return "memory"
    path = Path(store).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def train_forecaster(
    tensors: xr.Dataset,
    model_params: dict[str, Any] | None,
    training: dict[str, Any],
    tracking: dict[str, Any],
    progress: bool = True,
    *,
    dataset: str,
    model_name: str,
    role: str,
    method: str = "supervised",
    setup: Setup | None = None,
    identity: Mapping[str, Any] | None = None,
    param_root: str | None = None,
    shared_training: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train ``model_name`` on the tensor store of ``dataset``; one MLflow run for it.

    Returns the best checkpoint (weights, model config, data shape and statistics) for the
    catalog, and a JSON summary (losses, parameters, FLOPs, where the run is logged).
    ``identity`` (e.g. the distillation settings and teachers) joins the hash that names the
    run's folder, so a run with other settings never resumes this one's ``last.pt``.
    ``shared_training`` (the top-level ``training:`` of ``conf/base/parameters.yml``) holds the
    engine settings both stages share; ``training`` (``<root>.training``) wins over it.
    """
    store = tensors.encoding.get("store_path") or tensors
    splits = {name: WindowDataset(store, name) for name in ("train", "val", "test")}
    train_set = splits["train"]
    shape = train_set.model_shape
    root = param_root or role  # where the configs sit in the parameters (for error messages)
    param_path = f"{root}.{model_name}"
    model_cfg = resolve_config(model_name, param_path=param_path, **(model_params or {}))
    cfg = stage_config(shared_training, training, f"{root}.training")
    tracking_cfg = TrackingConfig.from_params(tracking)
    # the initial weights come from the run's seed (torch seeds each process at random), so
    # two runs of one config give the same checkpoint and the study's seeds are paired
    seed_everything(cfg.seed)
    model = build_model(model_name, param_path=param_path, **shape, **model_cfg.to_dict())
    n_params = count_parameters(model)
    flops = count_flops(model, (1, *train_set.input_shape))
    run_folder = f"{model_name}/{method}" if role == "student" else model_name
    key = _run_key(model_cfg.to_dict(), cfg.to_dict(), train_set, identity)
    out_dir = Path(tracking_cfg.checkpoint_dir) / dataset / run_folder / key

    if (reused := _finished_run(out_dir, cfg, model, train_set)) is not None:
        return reused

    tags = run_tags(dataset, role, model_name, method)
    with MLflowTracker(
        **tracking_cfg.tracker_options(),
        run_name=f"{dataset}/{model_name}" + ("" if method == "supervised" else f"/{method}"),
        tags=tags,
    ) as tracker:
        _log_configs(tracker, tags, model_name, model_cfg, cfg, shape, store, n_params, flops)
        tracker.log_store_input(
            dataset,
            _project_relative(store),
            store_digest(train_set),
            {name: len(split) for name, split in splits.items()},
            shape,
        )
        extra = setup(model, splits, cfg) if setup is not None else LossSetup()
        if extra.params:
            tracker.log_params(flatten_params(extra.params))
        result = train(
            model,
            extra.train_set if extra.train_set is not None else train_set,
            splits["val"],
            cfg,
            out_dir=out_dir,
            loss=extra.loss,
            tracker=tracker,
            test_set=splits["test"],
            progress=progress,
        )
        run_id = tracker.run_id
    logger.info(
        "%s/%s: best val MSE %.4g at epoch %d of %d (%s), test MSE %.4g (normalized units)",
        dataset,
        model_name,
        result.best_val_loss,
        result.best_epoch,
        result.epochs_run,
        result.stop_reason.replace("_", " "),
        result.test_loss,
    )
    checkpoint, summary = _results(
        result,
        model,
        train_set,
        extra,
        run_id,
        dataset=dataset,
        model_name=model_name,
        role=role,
        method=method,
        model_cfg=model_cfg,
        shape=shape,
        n_params=n_params,
        flops=flops,
    )
    _record_result(out_dir, checkpoint, summary)
    return checkpoint, summary


# written in a run's folder once its node has finished: what the node returned (less the
# weights, which are best.pt's), so a rerun of the pipeline returns it without any work
RESULT_FILE = "result.json"
# the MLflow runs of the models this process returned from a finished run (``MLflowRunsHook``
# deletes the pipeline's own run when nothing else was logged)
REUSED_RUNS: list[str] = []
_TENSOR_FIELDS = ("state_dict", "mean", "std")


def _record_result(
    out_dir: Path, checkpoint: Mapping[str, Any], summary: Mapping[str, Any]
) -> None:
    from sdkd_pipeline.atomic import write_text

    fields = {k: v for k, v in checkpoint.items() if k not in _TENSOR_FIELDS}
    text = json.dumps({"checkpoint": fields, "summary": dict(summary)}, default=str, indent=1)
    write_text(text, out_dir / RESULT_FILE)


def _finished_run(
    out_dir: Path, cfg: TrainConfig, model: torch.nn.Module, train_set: WindowDataset
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The checkpoint and summary of the finished run in ``out_dir``, or ``None`` to train.

    A folder is named by everything that defines its run (configs, data, teachers), so a
    ``result.json`` there means this very run finished: a rerun (``kedro run
    --pipelines=distill`` after a full run) returns it before any teacher output is computed
    and without a new MLflow run. Not with ``resume: false`` (a fresh run on purpose), and not
    when the run's MLflow record is gone (then the engine reloads the finished ``last.pt`` and
    logs a new run).
    """
    from sdkd_pipeline.training.checkpoint import BEST_CHECKPOINT, load_checkpoint

    path, best_path = out_dir / RESULT_FILE, out_dir / BEST_CHECKPOINT
    if not cfg.resume:
        path.unlink(missing_ok=True)  # a fresh run on purpose: written again when it finishes
        return None
    if not path.is_file() or not best_path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        fields, summary = dict(stored["checkpoint"]), dict(stored["summary"])
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("%s cannot be read; the run is loaded and evaluated again", path)
        return None
    run_id = summary.get("mlflow_run_id")
    if run_id and not _mlflow_run_finished(str(run_id)):
        logger.info("%s: MLflow run %s is gone; logging the finished run again", out_dir, run_id)
        return None
    best = load_checkpoint(best_path)
    model.load_state_dict(best["model"])
    checkpoint = {
        **fields,
        "mean": train_set.mean.clone(),
        "std": train_set.std.clone(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    REUSED_RUNS.append(str(run_id))
    method = summary.get("method", "supervised")
    logger.info(
        "%s/%s%s: already trained in %s (MLflow run %s): reused, nothing trained",
        summary.get("dataset"),
        summary.get("model"),
        "" if method == "supervised" else f"/{method}",
        out_dir,
        run_id,
    )
    return checkpoint, summary


def _mlflow_run_finished(run_id: str) -> bool:
    """Whether the tracking store (the active run's, else the project's) still has ``run_id``
    as a finished, not deleted run."""
    from mlflow import MlflowClient

    try:
        info = MlflowClient(tracking_uri=current_tracking_uri()).get_run(run_id).info
    except Exception:  # a deleted database or run: MlflowException, or the store's own error
        return False
    return info.status == "FINISHED" and info.lifecycle_stage == "active"


def _log_configs(
    tracker: MLflowTracker,
    tags: dict[str, str],
    model_name: str,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    shape: dict[str, int],
    store: Any,
    n_params: int,
    flops: int,
) -> None:
    """The run's parameters and its ``resolved_config.json``, logged to ``tracker``."""
    tracker.log_params(
        flatten_params(
            {
                **tags,
                "model_config": model_cfg.to_dict(),
                "data": {**shape, "store": _project_relative(store)},
                "n_parameters": n_params,
                "flops_per_sample": flops,
            }
        )
    )
    tracker.log_dict(
        {
            "model": model_name,
            "model_config": model_cfg.to_dict(),
            "data": shape,
            "training": cfg.to_dict(),
            "tags": tags,
        },
        "resolved_config.json",
    )


def _results(
    result: TrainResult,
    model: torch.nn.Module,
    train_set: WindowDataset,
    extra: LossSetup,
    run_id: str | None,
    *,
    dataset: str,
    model_name: str,
    role: str,
    method: str,
    model_cfg: ModelConfig,
    shape: dict[str, int],
    n_params: int,
    flops: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``train_forecaster``'s return: the best checkpoint for the catalog and the summary."""
    checkpoint = {
        "model": model_name,
        "role": role,
        "method": method,
        "dataset": dataset,
        "model_config": model_cfg.to_dict(),
        "shape": shape,
        "channels": list(train_set.channels),
        # the input-only channels after them (data/forcings.py), to rebuild at predict time
        "forcings": store_forcings(train_set.attrs) if train_set.forcing_channels else None,
        "mean": train_set.mean.clone(),
        "std": train_set.std.clone(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "best_epoch": result.best_epoch,
        "best_val_loss": float(result.best_val_loss),
        "test_loss": None if result.test_loss is None else float(result.test_loss),
        "mlflow_run_id": run_id,
        **extra.checkpoint,
    }
    summary = {
        "dataset": dataset,
        "model": model_name,
        "role": role,
        "method": method,
        "n_parameters": n_params,
        "flops_per_sample": flops,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "stop_reason": result.stop_reason,
        "best_val_mse": float(result.best_val_loss),
        "test_mse": None if result.test_loss is None else float(result.test_loss),
        "samples_per_second": float(result.samples_per_second),
        "mlflow_run_id": run_id,
    }
    return checkpoint, summary


# engine settings that may change between a killed run and its resumption
_RESUMABLE_KEYS = (
    "num_workers",
    "persistent_workers",
    "checkpoint_every_steps",
    "resume",
    "val_batch_size",
)


def _data_identity(data: WindowDataset) -> dict[str, Any]:
    """What defines a tensor store as training sees it: its splits, shape and the training
    statistics (a regenerated store differs)."""
    return {
        "splits": data.attrs.get("splits"),
        "shape": list(data.shape),
        "mean": data.mean.tolist(),
        "std": data.std.tolist(),
    }


def store_digest(data: WindowDataset) -> str:
    """A short digest of ``_data_identity`` (the run's dataset input in MLflow)."""
    text = json.dumps(_data_identity(data), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run_key(
    model_cfg: dict, train_cfg: dict, data: WindowDataset, extra: Mapping[str, Any] | None = None
) -> str:
    """A short hash of what defines a run (configs and the data's splits and statistics).

    A killed run started again with the same settings finds its ``last.pt`` and resumes; a run
    with other settings (or regenerated data) gets a folder of its own instead of colliding
    with a finished one.
    """
    identity = {
        "model": model_cfg,
        "train": {k: v for k, v in train_cfg.items() if k not in _RESUMABLE_KEYS},
        **_data_identity(data),
    }
    if extra:  # only when given, so teachers keep the folders of earlier runs
        identity["extra"] = dict(extra)
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_forecaster(checkpoint: dict[str, Any]) -> torch.nn.Module:
    """Rebuild a trained model from a checkpoint written by ``train_forecaster``."""
    return Checkpoint.of(checkpoint).build_model()
