"""The shared timing loop: warm-up, sync around each timed call, the early stop, and that what
it reports is the time the work took (real matrix products, no sleeps)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import pytest
import torch

from sdkd_pipeline.evaluation.latency import timed_calls

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# n x n float32 matrix products: 1024 does 64x the work of 256 (~25 ms against ~0.3 ms on one
# core). The medians are compared with a margin of 8x, far inside that on a loaded, shared VM.
SMALL, BIG, MARGIN = 256, 1024, 8.0


def _matmul(n: int):
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(n))
    return lambda: a @ a


def test_warmup_calls_are_untimed_and_sync_wraps_every_timed_call():
    events = []
    times = timed_calls(
        lambda: events.append("call"), repeats=3, warmup=2, sync=lambda: events.append("sync")
    )
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert events == ["call", "call", "sync"] + ["sync", "call", "sync"] * 3


def test_times_are_the_seconds_the_work_took():
    small = statistics.median(timed_calls(_matmul(SMALL), repeats=9, warmup=1))
    work = _matmul(BIG)
    start = time.perf_counter()
    big_times = timed_calls(work, repeats=7, warmup=0)
    wall = time.perf_counter() - start
    big = statistics.median(big_times)
    # more work, more time: the order and a clear ratio
    assert big > MARGIN * small > 0, (big, small)
    # seconds, and the calls themselves: together they are almost all of the wall time of the
    # loop (which also holds its own overhead) and never more than it
    assert 0.5 * wall <= sum(big_times) <= wall, (big_times, wall)


def test_max_seconds_stops_after_three_calls_past_the_budget_and_not_before():
    big = _matmul(BIG)
    # every call is past a budget of a nanosecond: exactly the minimum of 3
    past = timed_calls(big, repeats=20, warmup=1, max_seconds=1e-9)
    assert len(past) == 3 and min(past) > 0
    # a budget of about 5 calls: the loop stops at the first call that reaches it
    budget = 5 * statistics.median(past)
    times = timed_calls(big, repeats=50, warmup=0, max_seconds=budget)
    assert 3 <= len(times) < 50, times
    assert sum(times) >= budget
    assert len(times) == 3 or sum(times[:-1]) < budget
    # quick calls under a large budget: every repeat
    fast = timed_calls(lambda: None, repeats=10, warmup=0, max_seconds=10.0)
    assert len(fast) == 10


def test_the_timing_module_imports_without_pandas_or_torchmetrics():
    # deploy imports it for the exported models' latency: it must stay light
    code = (
        "import sys, sdkd_pipeline.evaluation.latency; "
        "print(sorted({'pandas', 'torchmetrics', 'matplotlib', 'kedro', 'mlflow'} "
        "& set(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
