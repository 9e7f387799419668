"""The one timing loop behind every latency figure: eager models, TorchScript and ONNX exports."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed_calls(call: Callable[[], object], *, repeats: int, warmup: int,
                max_seconds: float | None = None,
                sync: Callable[[], None] | None = None) -> list[float]:
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
