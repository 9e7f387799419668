"""Deployment (online inference): export a trained forecaster and forecast from a data file.

- ``export_torchscript(checkpoint, path)`` / ``export_onnx(checkpoint, path)`` write the plain
  prediction path ``x -> model(x)`` of a checkpoint written by ``train_forecaster`` for input
  ``(B, T_in, C, H, W)`` with a dynamic batch axis and fixed ``T_in, C, H, W``. The checkpoint's
  metadata (channels, mean, std, shape, model, method, ...) travels inside the file: the
  TorchScript archive's ``sdkd_meta.json`` extra file, the ONNX model's ``metadata_props``.
- ``check_torchscript`` / ``check_onnx`` compare an exported file against PyTorch on random
  normalized inputs (onnxruntime on CPU for ONNX) and raise ``ValueError`` when out of tolerance.
- ``load_exported(path)`` gives a callable (normalized numpy/torch input -> normalized numpy
  output) and the metadata, for ``.onnx``, TorchScript ``.pt`` files, or checkpoints.
- ``predict(model, input, output)`` reads an input window from a Zarr store (raw store or this
  project's tensor store) or a NetCDF file of the raw layout, runs the model and writes the
  de-normalized forecast with the input's coordinates (NetCDF, or Zarr for a ``.zarr`` path).
- ``exported_latency(path, ...)`` times an exported model (for the evaluation table);
  ``onnx_missing()`` says why ONNX export or inference is unavailable (``None`` when it is not).

Imports without Kedro, MLflow, Zarr or Dask; onnx and onnxruntime are imported only inside the
functions that need them (``pip install sdkd-pipeline[deploy]``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdkd_pipeline.errors import ConfigError, DataError
from sdkd_pipeline.latency import timed_calls

META_FILE = "sdkd_meta.json"
ONNX_META_KEY = "sdkd_meta"
META_FORMAT = "sdkd-export/1"
_META_KEYS = ("model", "method", "dataset", "role", "model_config")

Checkpoint = Mapping[str, Any]


# -- checkpoints and metadata --------------------------------------------------------------------


def _load_checkpoint(checkpoint: Checkpoint | str | Path) -> dict[str, Any]:
    if isinstance(checkpoint, Mapping):
        ckpt = dict(checkpoint)
        origin = "checkpoint"
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise DataError(f"{path}: no checkpoint file there")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(f"{path}: cannot be read as a checkpoint ({exc})") from exc
        origin = str(path)
        if not isinstance(ckpt, dict):
            raise DataError(f"{path}: not a checkpoint dict (got {type(ckpt).__name__})")
    missing = [
        k
        for k in ("model", "model_config", "shape", "channels", "mean", "std", "state_dict")
        if k not in ckpt
    ]
    if missing:
        raise DataError(f"{origin}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def _floats(value: Any) -> list[float]:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]


def _plain(value: Any) -> Any:
    """JSON-able copy of a config value."""
    return json.loads(json.dumps(value, default=str))


def checkpoint_meta(checkpoint: Checkpoint | str | Path) -> dict[str, Any]:
    """The metadata an exported model carries (JSON-able)."""
    ckpt = _load_checkpoint(checkpoint)
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
    n_chan = shape.get("channels")
    for key in ("channels", "mean", "std"):
        if len(meta[key]) != n_chan:
            raise DataError(
                f"checkpoint: {key} has {len(meta[key])} entries but shape.channels = {n_chan}"
            )
    return meta


def build_checkpoint_model(checkpoint: Checkpoint | str | Path) -> nn.Module:
    """The checkpoint's model in eval mode (like ``pipelines.forecaster.load_forecaster``)."""
    from sdkd_pipeline.models import model_from_checkpoint

    return model_from_checkpoint(_load_checkpoint(checkpoint))


class PredictionModule(nn.Module):
    """``forward(x) = model(x)``: only the plain prediction path, for tracing/export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _example_input(meta: Mapping[str, Any], batch: int, seed: int = 0) -> torch.Tensor:
    s = meta["shape"]
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, s["in_frames"], s["channels"], s["height"], s["width"], generator=gen)


def _target_file(path: str | Path, meta: Mapping[str, Any], suffix: str) -> Path:
    """``path`` itself, or ``<model>_<method><suffix>`` inside it when it is a directory."""
    text = str(path)
    path = Path(path)
    if path.is_dir() or text.endswith(("/", os.sep)) or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        return path / f"{meta.get('model') or 'model'}_{meta.get('method') or 'export'}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


# -- export --------------------------------------------------------------------------------------


def export_torchscript(checkpoint: Checkpoint | str | Path, path: str | Path) -> Path:
    """Trace the checkpoint's prediction path to TorchScript at ``path`` (a file, or a directory
    that gets ``<model>_<method>.pt``), with the metadata as the extra file ``sdkd_meta.json``.

    The trace is for the checkpoint's fixed ``(T_in, C, H, W)``; the batch size may vary.
    Written atomically (temporary file, then rename). Returns the file's path.
    """
    ckpt = _load_checkpoint(checkpoint)
    meta = checkpoint_meta(ckpt)
    target = _target_file(path, meta, ".pt")
    module = PredictionModule(build_checkpoint_model(ckpt)).eval()
    example = _example_input(meta, batch=2)  # not 1: no size-1 specialisation in the trace
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # jit's deprecation
        traced = torch.jit.trace(module, example, check_trace=False)
    tmp = _tmp_sibling(target)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.jit.save(traced, str(tmp), _extra_files={META_FILE: json.dumps(meta)})
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
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
    ckpt = _load_checkpoint(checkpoint)
    meta = checkpoint_meta(ckpt)
    target = _target_file(path, meta, ".onnx")
    module = PredictionModule(build_checkpoint_model(ckpt)).eval()
    example = _example_input(meta, batch=2)
    tmp = _tmp_sibling(target)
    try:
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
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
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
        expected = (s["in_frames"], s["channels"], s["height"], s["width"])
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
    path: str | Path | Checkpoint, *, threads: int | None = None
) -> tuple[ExportedModel, dict[str, Any]]:
    """``(model, meta)`` for an ``.onnx`` file (onnxruntime, CPU), a TorchScript file, a
    checkpoint file (``torch.save`` dict) or a checkpoint dict. ``threads`` sets onnxruntime's
    intra-op threads (``None``: its default); TorchScript and checkpoints use torch's setting.
    """
    if isinstance(path, Mapping):
        return _from_checkpoint(path, None)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no model file there")
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path, threads)
    if _is_torchscript(path):
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
    ckpt = _load_checkpoint(checkpoint)
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
    ckpt = _load_checkpoint(checkpoint)
    meta = checkpoint_meta(ckpt)
    model = build_checkpoint_model(ckpt)
    exported, exported_meta = load_exported(path)
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
    model, meta = load_exported(path, threads=threads)
    if input_shape is None:
        s = meta["shape"]
        sample = (s["in_frames"], s["channels"], s["height"], s["width"])
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
            seconds = timed_calls(lambda x=x: model(x), repeats=repeats, warmup=warmup,
                                  max_seconds=max_seconds)
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


# -- predict -------------------------------------------------------------------------------------


def _open_input(path: Path) -> Any:
    import xarray as xr

    if not path.exists():
        raise DataError(f"{path}: input file not found")
    if path.is_dir():
        if not ((path / "zarr.json").is_file() or (path / ".zgroup").is_file()):
            raise DataError(f"{path}: a directory but not a Zarr store (no zarr.json or .zgroup)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return xr.open_zarr(path, chunks=None, consolidated=None)
        except Exception as exc:
            raise DataError(f"{path}: cannot be opened as a Zarr store ({exc})") from exc
    try:
        return xr.open_dataset(path)
    except Exception as exc:
        raise DataError(f"{path}: cannot be opened as NetCDF ({exc})") from exc


def _is_tensor_store(ds: Any) -> bool:
    return (
        "mean" in ds.data_vars
        and "std" in ds.data_vars
        and ("format_version" in ds.attrs or "normalization" in ds.attrs)
    )


def _regular_step(values: np.ndarray) -> Any:
    """The constant step of a 1-D coordinate, or ``None`` when it is not regularly spaced."""
    if values.ndim != 1 or values.size < 2:
        return None
    if not (
        np.issubdtype(values.dtype, np.number)
        or np.issubdtype(values.dtype, np.datetime64)
        or np.issubdtype(values.dtype, np.timedelta64)
    ):
        return None
    steps = np.diff(values)
    step = steps[0]
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all() or step == 0:
            return None
        ok = np.allclose(steps, step, rtol=1e-6, atol=1e-9 * max(abs(float(step)), 1e-300))
    else:
        ok = bool(np.all(steps == step)) and step != step * 0
    return step if ok else None


def _attr(value: Any) -> Any:
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    return json.dumps(value, default=str) if not isinstance(value, np.datetime64) else str(value)


def predict(
    model_path_or_checkpoint: str | Path | Checkpoint,
    input_path: str | Path,
    output_path: str | Path,
    *,
    time_index: int | None = None,
    trajectory: int = 0,
    variable: str = "fields",
) -> Path:
    """Forecast the ``T_out`` frames after an input window and write them in physical units.

    The window is the ``T_in`` frames of ``trajectory`` ending at ``time_index`` (inclusive;
    negative counts from the end; default the last frame). The input is a Zarr store or a
    NetCDF file with ``variable`` of dims ``(trajectory, time, channel, y, x)`` (or without
    ``trajectory``): a raw store holds physical values (normalized here with the checkpoint's
    mean/std); this project's tensor store holds values normalized with its own ``mean``/``std``
    (mapped back to physical and re-normalized with the checkpoint's, a no-op when equal).
    The output (NetCDF; Zarr when the path ends in ``.zarr``; written atomically) holds
    ``forecast`` ``(time, channel, y, x)`` with the channel names, the input's y/x (and other
    coordinates on y/x such as lat/lon), ``time`` the next ``T_out`` values of a regularly
    spaced input time coordinate (else integer lead steps) and ``lead`` (1..T_out).
    Returns the output path. Bad input raises ``DataError`` naming the file; nothing is written.
    """
    import xarray as xr

    input_path = Path(input_path)
    output_path = Path(output_path)
    model, meta = load_exported(model_path_or_checkpoint)
    shape = meta["shape"]
    t_in, t_out = int(shape["in_frames"]), int(shape["out_frames"])
    n_chan, height, width = int(shape["channels"]), int(shape["height"]), int(shape["width"])

    ds = _open_input(input_path)
    try:
        if variable not in ds.data_vars:
            raise DataError(
                f"{input_path}: no variable {variable!r} (found "
                f"{sorted(map(str, ds.data_vars))}); pass --variable"
            )
        field = ds[variable]
        dims = tuple(map(str, field.dims))
        if dims == ("time", "channel", "y", "x"):
            field = field.expand_dims("trajectory")
        elif dims != ("trajectory", "time", "channel", "y", "x"):
            raise DataError(
                f"{input_path}: {variable!r} has dims {dims}, expected (trajectory, "
                "time, channel, y, x) or (time, channel, y, x)"
            )
        _, n_time, c_file, h_file, w_file = (int(s) for s in field.shape)
        names = [str(c) for c in ds["channel"].values] if "channel" in ds.coords else None
        if c_file != n_chan:
            raise DataError(
                f"{input_path}: {variable!r} has {c_file} channel(s) "
                f"{names or ''}, the model expects {n_chan} {meta['channels']}"
            )
        if names is not None and names != list(meta["channels"]):
            raise DataError(
                f"{input_path}: channels {names} do not match the model's {meta['channels']}"
            )
        if (h_file, w_file) != (height, width):
            raise DataError(
                f"{input_path}: grid (y, x) = ({h_file}, {w_file}) does not match "
                f"the model's ({height}, {width})"
            )
        n_traj = int(field.shape[0])
        if not -n_traj <= int(trajectory) < n_traj:
            raise DataError(
                f"{input_path}: trajectory {trajectory} out of range (the file holds {n_traj})"
            )
        traj = int(trajectory) % n_traj
        if n_time < t_in:
            raise DataError(f"{input_path}: {n_time} time step(s), the model needs T_in = {t_in}")
        end = n_time - 1 if time_index is None else int(time_index)
        if not -n_time <= end < n_time:
            raise DataError(f"{input_path}: time index {time_index} out of range (0..{n_time - 1})")
        end %= n_time
        start = end - t_in + 1
        if start < 0:
            raise DataError(
                f"{input_path}: time index {end} gives only {end + 1} step(s) up to and including it, "
                f"the model needs T_in = {t_in}"
            )
        window = np.asarray(
            field.isel(trajectory=traj, time=slice(start, end + 1)).values, dtype=np.float64
        )
        bad = ~np.isfinite(window)
        if bad.any():
            first = np.argwhere(bad)[0]
            raise DataError(
                f"{input_path}: {int(bad.sum())} NaN/Inf value(s) in the input "
                f"window (time steps {start}..{end}; first at time step "
                f"{start + int(first[0])}, channel {int(first[1])})"
            )
        c_shape = (1, n_chan, 1, 1)
        mean = np.asarray(meta["mean"], dtype=np.float64).reshape(c_shape)
        std = np.asarray(meta["std"], dtype=np.float64).reshape(c_shape)
        normalized_input = _is_tensor_store(ds)
        if normalized_input:
            s_mean = np.asarray(ds["mean"].values, dtype=np.float64).reshape(c_shape)
            s_std = np.asarray(ds["std"].values, dtype=np.float64).reshape(c_shape)
            window = window * s_std + s_mean
        x = ((window - mean) / std).astype(np.float32)[None]
        y = model(x)[0].astype(np.float64) * std + mean

        times = np.asarray(ds["time"].values) if "time" in ds.coords else None
        step = _regular_step(times) if times is not None else None
        lead = np.arange(1, t_out + 1)
        if step is not None:
            out_time = times[end] + step * lead
            time_note = "input time coordinate extrapolated with its step"
        else:
            out_time = lead
            time_note = "lead steps after the input window (input time not regularly spaced)"
        coords: dict[str, Any] = {
            "time": ("time", out_time),
            "lead": ("time", lead),
            "channel": ("channel", np.asarray(list(meta["channels"]), dtype=object)),
        }
        for name, coord in ds.coords.items():
            if name in ("y", "x") or (coord.dims and set(coord.dims) <= {"y", "x"}):
                coords[str(name)] = (coord.dims, np.asarray(coord.values))
        window_times = times[start : end + 1] if times is not None else np.arange(start, end + 1)
        attrs = {
            "model": meta.get("model"),
            "method": meta.get("method"),
            "dataset": meta.get("dataset"),
            "role": meta.get("role"),
            "model_file": str(model_path_or_checkpoint)
            if not isinstance(model_path_or_checkpoint, Mapping)
            else "checkpoint",
            "model_format": model.format,
            "source_file": str(input_path),
            "source_variable": variable,
            "input_normalized": int(normalized_input),
            "trajectory": traj,
            "time_index": end,
            "input_time_indices": f"{start}..{end}",
            "input_times": json.dumps([str(t) for t in window_times]),
            "input_time_start": str(window_times[0]),
            "input_time_end": str(window_times[-1]),
            "time_coordinate": time_note,
            "units_note": "physical units (de-normalized with the model's mean/std)",
        }
        attrs = {k: _attr(v) for k, v in attrs.items() if v is not None}
        forecast = xr.DataArray(
            y.astype(np.float32), dims=("time", "channel", "y", "x"), coords=coords, name="forecast"
        )
        out = forecast.to_dataset()
        out.attrs.update(attrs)
    finally:
        ds.close()
    _write_atomic(out, output_path)
    return output_path


def _write_atomic(ds: Any, path: Path) -> None:
    zarr_out = path.suffix.lower() == ".zarr"
    if path.exists() and path.is_dir() and not zarr_out:
        raise DataError(f"{path}: is a directory; give a file name for the NetCDF output")
    if (
        path.exists()
        and zarr_out
        and not ((path / "zarr.json").is_file() or (path / ".zgroup").is_file())
    ):
        raise DataError(f"{path}: exists and is not a Zarr store; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    if zarr_out:
        tmp = tmp.with_suffix(".zarr")
    out = ds.copy()
    out["channel"] = out["channel"].astype(str)
    try:
        if zarr_out:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import zarr

                kwargs = {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}
                out.to_zarr(tmp, mode="w-", consolidated=True, **kwargs)
            if path.exists():
                old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        else:
            out.to_netcdf(tmp)
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
