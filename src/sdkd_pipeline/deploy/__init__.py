"""Deployment (online inference): export a trained forecaster and forecast from a data file.

``checkpoint`` reads a checkpoint written by ``train_forecaster`` and gives the metadata
(channels, mean, std, shape, model, method, ...) that travels inside every exported file;
``export`` writes its plain prediction path ``x -> model(x)`` to TorchScript or ONNX
(``export_torchscript``, ``export_onnx``) with a dynamic batch axis; ``runtime`` loads an
exported file or a checkpoint as a callable (``load_exported``), checks an export against
PyTorch (``check_torchscript``, ``check_onnx``) and times it (``exported_latency``,
``onnx_missing``); ``forecast`` holds ``predict``, which forecasts from a Zarr store or NetCDF
file and writes the de-normalized forecast atomically; ``__main__`` is the command line
(``python -m sdkd_pipeline.deploy export|predict``, the ``sdkd-predict`` script). Imports
without Kedro, MLflow, Zarr or Dask; onnx and onnxruntime are imported only inside the
functions that need them (``pip install sdkd-pipeline[deploy]``).
"""

from sdkd_pipeline.deploy.checkpoint import (
    META_FILE,
    META_FORMAT,
    ONNX_META_KEY,
    Checkpoint,
    build_checkpoint_model,
    checkpoint_meta,
)
from sdkd_pipeline.deploy.export import PredictionModule, export_onnx, export_torchscript
from sdkd_pipeline.deploy.forecast import predict
from sdkd_pipeline.deploy.runtime import (
    ExportedModel,
    check_onnx,
    check_torchscript,
    exported_latency,
    load_exported,
    onnx_missing,
)

__all__ = [
    "META_FILE",
    "META_FORMAT",
    "ONNX_META_KEY",
    "Checkpoint",
    "ExportedModel",
    "PredictionModule",
    "build_checkpoint_model",
    "check_onnx",
    "check_torchscript",
    "checkpoint_meta",
    "export_onnx",
    "export_torchscript",
    "exported_latency",
    "load_exported",
    "onnx_missing",
    "predict",
]
