"""The shared timing loop: warm-up, sync around each timed call, the early stop."""

from __future__ import annotations

import time

from sdkd_pipeline.latency import timed_calls


def test_warmup_calls_are_untimed_and_sync_wraps_every_timed_call():
    events = []
    times = timed_calls(lambda: events.append("call"), repeats=3, warmup=2,
                        sync=lambda: events.append("sync"))
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert events == ["call", "call", "sync"] + ["sync", "call", "sync"] * 3


def test_max_seconds_stops_after_three_slow_calls_and_not_before():
    slow = timed_calls(lambda: time.sleep(0.02), repeats=10, warmup=0, max_seconds=0.01)
    assert len(slow) == 3 and min(slow) >= 0.02
    fast = timed_calls(lambda: None, repeats=10, warmup=0, max_seconds=10.0)
    assert len(fast) == 10
