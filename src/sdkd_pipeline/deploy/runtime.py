"""Load, check and time exported models.

- ``load_exported(path)`` gives a callable ``ExportedModel`` (normalized numpy/torch input ->
  normalized numpy output) and the metadata, for ``.onnx``, TorchScript ``.pt`` files, or
  checkpoints.
- ``check_torchscript`` / ``check_onnx`` compare an exported file against PyTorch on random
  normalized inputs (onnxruntime on CPU for ONNX) and raise ``ValueError`` when out of tolerance.
- ``exported_latency(path, ...)`` times an exported model (for the evaluation table);
  ``onnx_missing()`` says why ONNX export or inference is unavailable (``None`` when it is not).

onnxruntime is imported only inside the functions that need it.
"""

from __future__ import annotations

import json
import statistics
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.deploy.checkpoint import (
    META_FILE,
    ONNX_META_KEY,
    Checkpoint,
    _example_input,
    build_checkpoint_model,
    checkpoint_meta,
    input_channels,
)
from sdkd_pipeline.errors import ConfigError, DataError
from sdkd_pipeline.evaluation.latency import timed_calls

# -- loading exported models ---------------------------------------------------------------------


class ExportedModel:
    """A loaded forecaster: ``model(x)`` maps normalized ``(B, T_in, C, H, W)`` input (numpy or
    torch) to the normalized ``(B, T_out, C, H, W)`` forecast as a float32 numpy array."""

    def __init__(self, runner: Any, meta: dict[str, Any], path: Path | None, fmt: str) -> None:
        self._runner = runner
        self.meta = meta
        self.path = path
        self.format = fmt

    def __call__(self, x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        s = self.meta["shape"]
        expected = (s["in_frames"], input_channels(s), s["height"], s["width"])
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise DataError(
                f"{self.path or 'model'}: expects input (B, {', '.join(map(str, expected))})"
                f", got {tuple(x.shape)}"
            )
        return self._runner(x)

    def __repr__(self) -> str:
        return f"ExportedModel({self.format}, {self.path}, model={self.meta.get('model')!r})"


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_exported(
    path: str | Path | Checkpoint,
    *,
    threads: int | None = None,
    trust_torchscript: bool = False,
) -> tuple[ExportedModel, dict[str, Any]]:
    """``(model, meta)`` for an ``.onnx`` file (onnxruntime, CPU), a TorchScript file, a
    checkpoint file (``torch.save`` dict) or a checkpoint dict. ``threads`` sets onnxruntime's
    intra-op threads (``None``: its default); TorchScript and checkpoints use torch's setting.

    Loading TorchScript (``torch.jit.load``) runs the code stored in the file, so a TorchScript
    file is refused unless ``trust_torchscript`` (only for files you made or trust); ONNX files
    and checkpoints (read with ``weights_only``) run no code from the file.
    """
    if isinstance(path, Mapping):
        return _from_checkpoint(path, None)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no model file there")
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path, threads)
    if _is_torchscript(path):
        if not trust_torchscript:
            raise DataError(
                f"{path}: a TorchScript file runs the code it holds when loaded; load it only "
                "if you made it or trust its source, with --trust-torchscript "
                "(trust_torchscript=True), or use the ONNX export (runs no code from the file)"
            )
        extra = {META_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:
            raise DataError(f"{path}: cannot be loaded as TorchScript ({exc})") from exc
        if not extra[META_FILE]:
            raise DataError(
                f"{path}: TorchScript file without {META_FILE} (not exported by "
                "sdkd_pipeline.deploy)"
            )
        meta = json.loads(extra[META_FILE])
        module.eval()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(x)).numpy()

        return ExportedModel(run, meta, path, "torchscript"), meta
    return _from_checkpoint(path, path)


def _from_checkpoint(checkpoint: Any, path: Path | None) -> tuple[ExportedModel, dict[str, Any]]:
    ckpt = Checkpoint.of(checkpoint)
    meta = checkpoint_meta(ckpt)
    model = build_checkpoint_model(ckpt)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return ExportedModel(run, meta, path, "checkpoint"), meta


def _load_onnx(path: Path, threads: int | None) -> tuple[ExportedModel, dict[str, Any]]:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "running an ONNX model needs onnxruntime: pip install 'sdkd-pipeline[deploy]'"
        ) from exc
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise DataError(f"{path}: cannot be loaded by onnxruntime ({exc})") from exc
    props = session.get_modelmeta().custom_metadata_map
    if ONNX_META_KEY not in props:
        raise DataError(
            f"{path}: ONNX model without '{ONNX_META_KEY}' metadata (not exported "
            "by sdkd_pipeline.deploy)"
        )
    meta = json.loads(props[ONNX_META_KEY])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: x})[0], dtype=np.float32)

    return ExportedModel(run, meta, path, "onnx"), meta


# -- checks --------------------------------------------------------------------------------------


def _check_exported(
    checkpoint: Any,
    path: str | Path,
    kind: str,
    n: int,
    atol: float,
    rtol: float,
    batch_sizes: Sequence[int],
    seed: int,
) -> float:
    ckpt = Checkpoint.of(checkpoint)
    meta = checkpoint_meta(ckpt)
    model = build_checkpoint_model(ckpt)
    exported, exported_meta = load_exported(path, trust_torchscript=True)  # made here
    if exported.format != kind:
        raise ValueError(f"{path}: is a {exported.format} file, expected {kind}")
    if (
        exported_meta.get("shape") != meta["shape"]
        or exported_meta.get("channels") != meta["channels"]
    ):
        raise ValueError(
            f"{path}: metadata (shape {exported_meta.get('shape')}, channels "
            f"{exported_meta.get('channels')}) does not match the checkpoint's "
            f"({meta['shape']}, {meta['channels']})"
        )
    worst = 0.0
    for i in range(max(int(n), 1)):
        for batch in batch_sizes:
            x = _example_input(meta, int(batch), seed=seed + 1000 * i + int(batch))
            with torch.no_grad():
                expected = model(x).numpy()
            got = exported(x.numpy())
            if got.shape != expected.shape:
                raise ValueError(
                    f"{path}: output shape {got.shape} for batch {batch}, PyTorch "
                    f"gives {expected.shape}"
                )
            diff = np.abs(got.astype(np.float64) - expected)
            worst = max(worst, float(diff.max()))
            if not np.all(diff <= atol + rtol * np.abs(expected)) or not np.isfinite(got).all():
                raise ValueError(
                    f"{path}: {kind} output differs from PyTorch by up to {diff.max():.3g} "
                    f"(batch {batch}; tolerance atol={atol}, rtol={rtol})"
                )
    return worst


def check_onnx(
    checkpoint: Checkpoint | str | Path,
    onnx_path: str | Path,
    n: int = 2,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    *,
    batch_sizes: Sequence[int] = (1, 3),
    seed: int = 0,
) -> float:
    """Largest absolute difference between onnxruntime (CPU) and PyTorch on ``n`` random
    normalized inputs per batch size; ``ValueError`` naming the file when out of tolerance."""
    return _check_exported(checkpoint, onnx_path, "onnx", n, atol, rtol, batch_sizes, seed)


def check_torchscript(
    checkpoint: Checkpoint | str | Path,
    path: str | Path,
    n: int = 2,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    *,
    batch_sizes: Sequence[int] = (1, 3),
    seed: int = 0,
) -> float:
    """Like ``check_onnx`` for a TorchScript file."""
    return _check_exported(checkpoint, path, "torchscript", n, atol, rtol, batch_sizes, seed)


# -- latency -------------------------------------------------------------------------------------


def onnx_missing() -> str | None:
    """Why ONNX models cannot be exported and run here (``onnx`` or ``onnxruntime`` does not
    import), or ``None`` when both import."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except Exception:  # ImportError, or a broken binary install
            missing.append(name)
    if not missing:
        return None
    return f"{' and '.join(missing)} not installed (pip install 'sdkd-pipeline[deploy]')"


def exported_latency(
    path: str | Path,
    input_shape: Sequence[int] | None = None,
    batch_sizes: Sequence[int] = (1,),
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = 1,
    max_seconds: float | None = None,
) -> list[dict[str, Any]]:
    """Time an exported model (``.onnx`` via onnxruntime, TorchScript via torch) on CPU.

    ``input_shape`` is one sample's ``(T_in, C, H, W)`` (a leading batch dim is ignored;
    ``None``: from the file's metadata). Returns one row per batch size: ``format``,
    ``batch_size``, ``threads``, ``median_ms``, ``p90_ms``, ``min_ms`` (per batch) and
    ``ms_per_sample`` (median / batch size). ``threads`` sets onnxruntime's intra-op threads
    and torch's thread count for the measurement (restored afterwards); ``None`` leaves both.
    With ``max_seconds``, a batch size's timed calls stop early, after at least 3, once they
    have taken that long together (``latency.timed_calls``, as for the eager model).
    """
    if repeats < 1 or warmup < 0:
        raise ConfigError(
            f"exported_latency: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}"
        )
    model, meta = load_exported(path, threads=threads, trust_torchscript=True)
    if input_shape is None:
        s = meta["shape"]
        sample = (s["in_frames"], input_channels(s), s["height"], s["width"])
    else:
        sample = tuple(int(v) for v in input_shape)[-4:]
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    rows = []
    try:
        rng = np.random.default_rng(0)
        for batch in batch_sizes:
            x = rng.standard_normal((int(batch), *sample)).astype(np.float32)
            seconds = timed_calls(
                lambda x=x: model(x), repeats=repeats, warmup=warmup, max_seconds=max_seconds
            )
            times = sorted(t * 1e3 for t in seconds)
            median = statistics.median(times)
            rows.append(
                {
                    "format": model.format,
                    "path": str(path),
                    "batch_size": int(batch),
                    "threads": threads,
                    "median_ms": median,
                    "p90_ms": times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))],
                    "min_ms": times[0],
                    "ms_per_sample": median / int(batch),
                }
            )
    finally:
        torch.set_num_threads(old_threads)
    return rows
