"""Latency timing: the one timing loop behind every latency figure (eager models, TorchScript
and ONNX exports) and the evaluation's latency measurements.

Imports only torch at module level (``deploy`` times its exported models with
``timed_calls`` and must not pay for pandas or torchmetrics), so it runs without Kedro,
MLflow, Zarr or Dask.

Latency is the median of ``repeats`` timed forward calls after ``warmup`` calls (at least 3
when they take over ``max_seconds`` together), on the CPU with ``threads`` torch threads (CUDA
too when available), per batch size (``measure_latency``). The exported models' latency
(``exported_formats``: TorchScript, and ONNX through onnxruntime when onnx and onnxruntime
import) is timed the same way by ``deploy.exported_latency`` on files exported to a temporary
directory (``_exported_latencies``); a format that fails gets no numbers and one reason.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sdkd_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from sdkd_pipeline.evaluation.config import EvaluationConfig

__all__ = ["measure_latency", "timed_calls"]


def timed_calls(
    call: Callable[[], object],
    *,
    repeats: int,
    warmup: int,
    max_seconds: float | None = None,
    sync: Callable[[], None] | None = None,
) -> list[float]:
    """Seconds taken by each of up to ``repeats`` calls of ``call()``, after ``warmup`` untimed
    ones. ``sync`` (e.g. a CUDA synchronize) runs before and after every timed call. With
    ``max_seconds`` the timed calls stop early, after at least 3, once they have taken that
    long together (a slow model's calls are long and steady enough that the median of 3 is as
    good as that of more)."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        call()
    sync()
    times: list[float] = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
        if max_seconds is not None and len(times) >= 3 and sum(times) >= max_seconds:
            break
    return times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: torch.nn.Module,
    sample_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 32),
    *,
    repeats: int = 5,
    warmup: int = 2,
    threads: int | None = 1,
    device: str | torch.device = "cpu",
    max_seconds: float | None = None,
) -> dict[int, float]:
    """Median forward latency in milliseconds per batch size, for inputs ``(B, *sample_shape)``.

    On the CPU torch runs with ``threads`` threads (restored afterwards); on CUDA every call is
    synchronized. The model is timed in eval mode under ``torch.no_grad``. With
    ``max_seconds``, the timed calls of a batch size stop early, after at least 3 of them, once
    they have taken that long together (a slow model's calls are long and steady enough that
    the median of 3 is as good as that of more).
    """
    device = torch.device(device)
    if repeats < 1:
        raise ConfigError(f"measure_latency: repeats must be >= 1, got {repeats}")
    old_threads = torch.get_num_threads()
    if threads and device.type == "cpu":
        torch.set_num_threads(int(threads))
    was = model.training
    model.to(device).eval()
    out: dict[int, float] = {}
    try:
        with torch.no_grad():
            for batch in batch_sizes:
                x = torch.randn((int(batch), *(int(s) for s in sample_shape)), device=device)
                times = timed_calls(
                    lambda x=x: model(x),
                    repeats=repeats,
                    warmup=warmup,
                    max_seconds=max_seconds,
                    sync=lambda: _sync(device),
                )
                out[int(batch)] = statistics.median(times) * 1e3
    finally:
        model.train(was)
        torch.set_num_threads(old_threads)
    return out


def _exported_latencies(
    checkpoint: Mapping[str, Any],
    formats: Sequence[str],
    directory: Path,
    stem: str,
    cfg: EvaluationConfig,
    sample_shape: Sequence[int],
) -> tuple[dict[str, dict[int, float]], dict[str, str]]:
    """Export ``checkpoint`` to each format in ``directory`` and time it like the eager model:
    ``({format: {batch: ms}}, {format: why it has no numbers})``."""
    from sdkd_pipeline import deploy

    exporters = {
        "torchscript": (deploy.export_torchscript, ".pt"),
        "onnx": (deploy.export_onnx, ".onnx"),
    }
    out: dict[str, dict[int, float]] = {}
    failed: dict[str, str] = {}
    for fmt in formats:
        out[fmt] = {}
        export, suffix = exporters[fmt]
        try:
            path = export(checkpoint, directory / f"{stem}{suffix}")
            rows = deploy.exported_latency(
                path,
                sample_shape,
                cfg.batch_sizes,
                repeats=cfg.repeats,
                warmup=cfg.warmup,
                threads=cfg.threads,
                max_seconds=cfg.max_seconds,
            )
        except Exception as exc:  # a model that does not export: a blank cell, not a crash
            failed[fmt] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            continue
        out[fmt] = {int(row["batch_size"]): float(row["median_ms"]) for row in rows}
    return out, failed


def _latencies(
    module: torch.nn.Module, sample_shape: Sequence[int], cfg: EvaluationConfig
) -> tuple[dict[int, float], dict[int, float]]:
    """CPU latency and (when timed and available) CUDA latency of ``module`` (left on the CPU)."""
    latency = measure_latency(
        module,
        sample_shape,
        cfg.batch_sizes,
        repeats=cfg.repeats,
        warmup=cfg.warmup,
        threads=cfg.threads,
        device="cpu",
        max_seconds=cfg.max_seconds,
    )
    latency_cuda: dict[int, float] = {}
    if cfg.cuda_latency and torch.cuda.is_available():
        latency_cuda = measure_latency(
            module,
            sample_shape,
            cfg.batch_sizes,
            repeats=cfg.repeats,
            warmup=cfg.warmup,
            device="cuda",
            max_seconds=cfg.max_seconds,
        )
        module.cpu()
    return latency, latency_cuda
