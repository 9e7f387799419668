"""Export a trained forecaster to TorchScript or ONNX.

``export_torchscript(checkpoint, path)`` / ``export_onnx(checkpoint, path)`` write the plain
prediction path ``x -> model(x)`` (``PredictionModule``) of a checkpoint written by
``train_forecaster`` for input ``(B, T_in, C, H, W)`` with a dynamic batch axis and fixed
``T_in, C, H, W``. The checkpoint's metadata (``checkpoint.checkpoint_meta``) travels inside the
file: the TorchScript archive's ``sdkd_meta.json`` extra file, the ONNX model's
``metadata_props``. onnx is imported only inside ``export_onnx``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sdkd_pipeline.atomic import atomic_path
from sdkd_pipeline.deploy.checkpoint import (
    META_FILE,
    ONNX_META_KEY,
    Checkpoint,
    _example_input,
    build_checkpoint_model,
    checkpoint_meta,
)
from sdkd_pipeline.errors import ConfigError


class PredictionModule(nn.Module):
    """``forward(x) = model(x)``: only the plain prediction path, for tracing/export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _target_file(path: str | Path, meta: Mapping[str, Any], suffix: str) -> Path:
    """``path`` itself, or ``<model>_<method><suffix>`` inside it when it is a directory."""
    text = str(path)
    path = Path(path)
    if path.is_dir() or text.endswith(("/", os.sep)) or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        return path / f"{meta.get('model') or 'model'}_{meta.get('method') or 'export'}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# -- export --------------------------------------------------------------------------------------


def export_torchscript(checkpoint: Checkpoint | str | Path, path: str | Path) -> Path:
    """Trace the checkpoint's prediction path to TorchScript at ``path`` (a file, or a directory
    that gets ``<model>_<method>.pt``), with the metadata as the extra file ``sdkd_meta.json``.

    The trace is for the checkpoint's fixed ``(T_in, C, H, W)``; the batch size may vary.
    Written atomically (temporary file, then rename). Returns the file's path.
    """
    ckpt = Checkpoint.of(checkpoint)
    meta = checkpoint_meta(ckpt)
    target = _target_file(path, meta, ".pt")
    module = PredictionModule(build_checkpoint_model(ckpt)).eval()
    example = _example_input(meta, batch=2)  # not 1: no size-1 specialisation in the trace
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # jit's deprecation
        traced = torch.jit.trace(module, example, check_trace=False)
    with atomic_path(target, suffix=target.suffix) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.save(traced, str(tmp), _extra_files={META_FILE: json.dumps(meta)})
    return target


def export_onnx(checkpoint: Checkpoint | str | Path, path: str | Path, opset: int = 17) -> Path:
    """Export the checkpoint's prediction path to ONNX at ``path`` (a file, or a directory that
    gets ``<model>_<method>.onnx``): input ``x`` ``(batch, T_in, C, H, W)`` with a dynamic batch
    axis, output ``forecast``; the metadata is stored as the JSON ``metadata_props`` entry
    ``sdkd_meta`` (and the scalar fields as entries of their own). Needs ``onnx``.
    """
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "ONNX export needs the onnx package: pip install 'sdkd-pipeline[deploy]'"
        ) from exc
    ckpt = Checkpoint.of(checkpoint)
    meta = checkpoint_meta(ckpt)
    target = _target_file(path, meta, ".onnx")
    module = PredictionModule(build_checkpoint_model(ckpt)).eval()
    example = _example_input(meta, batch=2)
    with atomic_path(target, suffix=target.suffix) as tmp:
        _torch_onnx_export(module, example, tmp, opset)
        proto = onnx.load(str(tmp))
        props = {ONNX_META_KEY: json.dumps(meta)}
        props.update(
            {
                k: str(meta[k])
                for k in ("model", "method", "dataset", "role")
                if meta.get(k) is not None
            }
        )
        props["channels"] = ",".join(meta["channels"])
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return target


def _torch_onnx_export(module: nn.Module, example: torch.Tensor, out: Path, opset: int) -> None:
    kwargs: dict[str, Any] = {
        "input_names": ["x"],
        "output_names": ["forecast"],
        "opset_version": opset,
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # the TorchScript-based exporter: fast, and handles the dynamic batch axis directly
            torch.onnx.export(
                module,
                (example,),
                str(out),
                dynamo=False,
                dynamic_axes={"x": {0: "batch"}, "forecast": {0: "batch"}},
                **kwargs,
            )
            return
        except Exception as legacy_error:  # e.g. a torch without the legacy exporter
            first = legacy_error
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(
                module,
                (example,),
                str(out),
                dynamo=True,
                dynamic_shapes={"x": {0: batch}},
                **kwargs,
            )
        except Exception as exc:
            raise RuntimeError(
                f"ONNX export to {out} failed: {exc} (TorchScript-based exporter: {first})"
            ) from exc
