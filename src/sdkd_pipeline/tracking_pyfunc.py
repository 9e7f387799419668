"""The MLflow pyfunc model a student is logged as (``tracking_models``): physical units in and
out, normalization inside.

This file is logged as MLflow "model from code": MLflow copies it into the model and runs it
when the model is loaded, so it must stand alone. It imports only numpy and MLflow at module
level; the PyTorch runtime needs ``sdkd_pipeline`` (and torch) installed where the model is
loaded, the ONNX runtime only onnxruntime.

``predict(x)`` takes a float32 array ``(batch, T_in, C, H, W)`` of the last ``T_in`` frames in
physical units (the tensor store's channels, in its order), normalizes it with the training
split's per-channel mean and std stored with the model, runs the student and returns the
forecast ``(batch, T_out, C, H, W)`` in physical units. ``params={"units": "normalized"}``
skips both steps (input and output in the model's normalized units).

The model configuration key ``runtime`` chooses what runs it: ``torch`` (the checkpoint,
rebuilt by ``sdkd_pipeline``), ``onnx`` (the ONNX export, onnxruntime on the CPU) or ``auto``
(the default: ``torch`` where ``sdkd_pipeline`` imports, else ``onnx``), e.g.
``mlflow.pyfunc.load_model(uri, model_config={"runtime": "onnx"})``.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

RUNTIMES = ("auto", "torch", "onnx")
UNITS = ("physical", "normalized")
CHECKPOINT_ARTIFACT = "checkpoint"
ONNX_ARTIFACT = "onnx"
ONNX_META_KEY = "sdkd_meta"  # the metadata entry of sdkd_pipeline.deploy's ONNX exports


def _torch_runner(path: str) -> tuple[Any, dict[str, Any]]:
    from sdkd_pipeline.deploy import load_exported

    model, meta = load_exported(path)  # a checkpoint file, read with weights_only
    return model, meta


def _onnx_runner(path: str) -> tuple[Any, dict[str, Any]]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map[ONNX_META_KEY])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: x})[0], dtype=np.float32)

    return run, meta


class StudentForecaster(PythonModel):
    """A trained forecaster with its normalization (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        config = dict(context.model_config or {})
        runtime = str(config.get("runtime", "auto"))
        if runtime not in RUNTIMES:
            raise ValueError(f"model_config runtime must be one of {RUNTIMES}, got {runtime!r}")
        artifacts = context.artifacts
        if runtime == "auto":
            has_torch = importlib.util.find_spec("sdkd_pipeline") is not None
            runtime = "torch" if has_torch or ONNX_ARTIFACT not in artifacts else "onnx"
        if runtime == "onnx" and ONNX_ARTIFACT not in artifacts:
            raise ValueError("this model was logged without an ONNX export: use runtime torch")
        if runtime == "torch":
            self._run, meta = _torch_runner(artifacts[CHECKPOINT_ARTIFACT])
        else:
            self._run, meta = _onnx_runner(artifacts[ONNX_ARTIFACT])
        self.runtime = runtime
        self.meta = meta
        shape = meta["shape"]
        # forcing channels (dimensionless, already in model units) follow the forecast channels
        n_in = int(shape["channels"]) + int(shape.get("forcing_channels", 0))
        self.input_shape = (shape["in_frames"], n_in, shape["height"], shape["width"])
        self._channels = int(shape["channels"])
        self._mean = np.asarray(meta["mean"], dtype=np.float32).reshape(-1, 1, 1)
        self._std = np.asarray(meta["std"], dtype=np.float32).reshape(-1, 1, 1)

    # np.ndarray: a hint MLflow infers no schema from (the logged signature says it)
    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> Any:
        units = str((params or {}).get("units", "physical"))
        if units not in UNITS:
            raise ValueError(f"params units must be one of {UNITS}, got {units!r}")
        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim == len(self.input_shape):  # one window without its batch axis
            x = x[None]
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected input (batch, T_in, C, H, W) = (batch, {', '.join(map(str, self.input_shape))})"
                f" for channels {self.meta.get('channels')}, got {tuple(x.shape)}"
            )
        if units == "physical":
            x = x.copy()
            c = self._channels
            x[:, :, :c] = (x[:, :, :c] - self._mean) / self._std
        y = np.asarray(self._run(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float32)
        if units == "physical":
            y = y * self._std + self._mean
        return y


mlflow.models.set_model(StudentForecaster())
