"""Checkpoints and the metadata an exported model carries.

``checkpoint_meta(checkpoint)`` is the JSON-able metadata (channels, mean, std, shape, model,
method, ...) of a checkpoint written by ``train_forecaster``; it travels inside every exported
file (the TorchScript archive's ``sdkd_meta.json`` extra file, the ONNX model's
``metadata_props``). ``build_checkpoint_model`` rebuilds the checkpoint's model in eval mode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdkd_pipeline.errors import DataError
from sdkd_pipeline.models.checkpoint import Checkpoint

META_FILE = "sdkd_meta.json"
ONNX_META_KEY = "sdkd_meta"
META_FORMAT = "sdkd-export/1"
_META_KEYS = ("model", "method", "dataset", "role", "model_config")

# -- checkpoints and metadata --------------------------------------------------------------------


def _floats(value: Any) -> list[float]:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]


def _plain(value: Any) -> Any:
    """JSON-able copy of a config value."""
    return json.loads(json.dumps(value, default=str))


def checkpoint_meta(checkpoint: Checkpoint | Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """The metadata an exported model carries (JSON-able)."""
    ckpt = Checkpoint.of(checkpoint)
    shape = {k: int(v) for k, v in dict(ckpt["shape"]).items()}
    meta: dict[str, Any] = {
        "format": META_FORMAT,
        "channels": [str(c) for c in ckpt["channels"]],
        "mean": _floats(ckpt["mean"]),
        "std": _floats(ckpt["std"]),
        "shape": shape,
    }
    for key in _META_KEYS:
        meta[key] = _plain(ckpt.get(key))
    if shape.get("forcing_channels"):  # what the forcing channels are, to rebuild them
        meta["forcings"] = _plain(ckpt.get("forcings"))
    n_chan = shape.get("channels")
    for key in ("channels", "mean", "std"):
        if len(meta[key]) != n_chan:
            raise DataError(
                f"checkpoint: {key} has {len(meta[key])} entries but shape.channels = {n_chan}"
            )
    return meta


def input_channels(shape: Mapping[str, Any]) -> int:
    """Channels of a model's input: the forecast channels, then its forcing channels
    (``data/forcings.py``; 0 for a model trained without them)."""
    return int(shape["channels"]) + int(shape.get("forcing_channels", 0))


def build_checkpoint_model(checkpoint: Checkpoint | Mapping[str, Any] | str | Path) -> nn.Module:
    """The checkpoint's model in eval mode (``Checkpoint.build_model``)."""
    return Checkpoint.of(checkpoint).build_model()


def _example_input(meta: Mapping[str, Any], batch: int, seed: int = 0) -> torch.Tensor:
    s = meta["shape"]
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(
        batch, s["in_frames"], input_channels(s), s["height"], s["width"], generator=gen
    )
