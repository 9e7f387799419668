"""MLflow system metrics (CPU, memory, disk, network, GPU) on a training run.

``start_system_metrics`` starts MLflow's ``SystemMetricsMonitor`` on a run created with
``MlflowClient.create_run`` (``mlflow.enable_system_metrics_logging`` covers only runs of
``mlflow.start_run``): a daemon thread samples every ``interval`` seconds and logs
``system/<metric>`` with ``step`` = sample number (``system/cpu_utilization_percentage``,
``system/system_memory_usage_megabytes``, ``system/disk_usage_percentage``,
``system/network_receive_megabytes``, ...). The NVIDIA GPU metrics
(``system/gpu_<i>_utilization_percentage``, memory, power) need ``nvidia-ml-py``; without it,
a CUDA process logs its own devices' memory from torch instead
(``system/gpu_<i>_memory_usage_megabytes`` and ``..._percentage`` of the device,
``system/gpu_<i>_torch_reserved_megabytes`` held by this process's allocator).

``stop_system_metrics`` ends it without waiting for the next sample (the thread waits on an
event that is set) and logs what was sampled since the last step, so even a run shorter than
the interval gets one sample. ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` (MLflow's variable)
overrides ``interval``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0  # a monitor stuck in a store call is left behind (a daemon thread)


def _torch_cuda_monitor() -> Any | None:
    """A monitor of this process's CUDA devices through torch, or ``None`` without CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    from mlflow.system_metrics.metrics.base_metrics_monitor import BaseMetricsMonitor

    class TorchCudaMonitor(BaseMetricsMonitor):
        """Device memory of the GPUs this process uses (only those it holds memory on: asking
        another device would create a CUDA context there)."""

        def collect_metrics(self) -> None:
            if not torch.cuda.is_initialized():
                return
            for i in range(torch.cuda.device_count()):
                reserved = torch.cuda.memory_reserved(i)
                if reserved <= 0:
                    continue
                free, total = torch.cuda.mem_get_info(i)
                self._metrics[f"gpu_{i}_memory_usage_megabytes"].append((total - free) / 1e6)
                self._metrics[f"gpu_{i}_memory_usage_percentage"].append(
                    (total - free) / total * 100
                )
                self._metrics[f"gpu_{i}_torch_reserved_megabytes"].append(reserved / 1e6)

        def aggregate_metrics(self) -> dict[str, float]:
            return {k: round(sum(v) / len(v), 1) for k, v in self._metrics.items() if v}

    return TorchCudaMonitor()


def start_system_metrics(
    run_id: str, tracking_uri: str, interval: float, *, resume: bool = False
) -> Any | None:
    """Start sampling system metrics into run ``run_id`` every ``interval`` seconds; the
    monitor for ``stop_system_metrics``, or ``None`` when it cannot start (logged)."""
    try:
        from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError as exc:  # psutil missing: MLflow's monitor needs it
        log.warning("no system metrics for MLflow run %s: %s", run_id, exc)
        return None
    # MLflow logs "Started monitoring system metrics" and more at INFO for every run
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    try:
        monitor = SystemMetricsMonitor(
            run_id,
            sampling_interval=interval,
            samples_before_logging=1,
            resume_logging=resume,
            tracking_uri=tracking_uri,
        )
    except Exception as exc:  # noqa: BLE001 - metrics about the machine must not stop training
        log.warning("no system metrics for MLflow run %s: %s", run_id, exc)
        return None
    if not any(isinstance(m, GPUMonitor) for m in monitor.monitors):
        cuda = _torch_cuda_monitor()
        if cuda is not None:
            monitor.monitors.append(cuda)
    monitor.start()
    return monitor


def stop_system_metrics(monitor: Any | None) -> None:
    """Stop ``monitor`` and log the samples taken since its last logged step."""
    thread = getattr(monitor, "_process", None)
    if thread is None:
        return
    monitor._shutdown_event.set()
    thread.join(JOIN_TIMEOUT_S)
    monitor._process = None
    if thread.is_alive():
        log.warning("MLflow system metrics: the monitor did not stop within %.0f s", JOIN_TIMEOUT_S)
        return
    try:
        if any(m.metrics for m in monitor.monitors):
            monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    except Exception as exc:  # noqa: BLE001 - e.g. the run was deleted meanwhile
        log.warning("MLflow system metrics: the last sample was not logged: %s", exc)
