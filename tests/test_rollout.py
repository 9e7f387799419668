"""Autoregressive rollouts: the mathematics and the scores on a tiny store."""

from __future__ import annotations

import math

import pytest
import torch

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.evaluation.rollout import evaluate_rollouts, plot_rollouts, rollout
from sdkd_pipeline.models import build_model


def _model(t_in=3, t_out=2):
    torch.manual_seed(0)
    shape = {"in_frames": t_in, "out_frames": t_out, "channels": 2, "height": 16, "width": 16}
    return build_model("unet", **shape, hidden=8, base_width=8).eval()


def test_rollout_equals_repeated_single_steps():
    model = _model()
    x = torch.randn(2, 3, 2, 16, 16)
    with torch.no_grad():
        out = rollout(model, x, 5)
        first = model(x)
        second = model(torch.cat([x, first], 1)[:, -3:])
        third = model(torch.cat([x, first, second], 1)[:, -3:])
    assert out.shape == (2, 5, 2, 16, 16)
    torch.testing.assert_close(out, torch.cat([first, second, third], 1)[:, :5])
    with torch.no_grad():  # a rollout of T_out frames is the plain forecast
        torch.testing.assert_close(rollout(model, x, 2), first)
    with pytest.raises(ConfigError, match="horizon must be >= 1"):
        rollout(model, x, 0)


def test_rollout_feeds_back_a_t_out_longer_than_t_in():
    # T_out > T_in: each next input is the last T_in frames of the forecast itself
    model = _model(t_in=2, t_out=3)
    x = torch.randn(1, 2, 2, 16, 16)
    with torch.no_grad():
        out = rollout(model, x, 6)
        first = model(x)
        second = model(first[:, -2:])
    torch.testing.assert_close(out, torch.cat([first, second], 1))


def test_scores_persistence_and_drift_on_a_tiny_store(tmp_path):
    import numpy as np

    from sdkd_pipeline.data.raw import make_raw
    from sdkd_pipeline.data.store import write_store
    from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
    from sdkd_pipeline.data.windows import WindowDataset

    rng = np.random.default_rng(3)
    fields = rng.normal(size=(6, 14, 2, 16, 16)).astype(np.float32) + 2.0
    raw = make_raw(
        fields, dataset="demo", source="test:demo", channels=["u", "v"], time=np.arange(14.0)
    )
    tensors = build_tensor_dataset(raw, split=SplitConfig(4, 1, 1), window=WindowConfig(3, 2))
    store = write_store(tensors, tmp_path / "demo.zarr")
    from sdkd_pipeline.evaluation.accuracy import test_data_range

    test = WindowDataset(store, "test")
    shape = test.model_shape
    # too long a horizon for the 14-frame test trajectories is reported, not raised
    too_long = evaluate_rollouts(
        {},
        store,
        factor=10,
        max_windows=4,
        batch_size=2,
        data_range=torch.ones(2),
        device=torch.device("cpu"),
        ssim_convention="skimage",
    )
    assert too_long.windows == 0 and "too short for T_in + 20 frames" in too_long.skipped
    torch.manual_seed(0)
    model = build_model("unet", **shape, hidden=8, base_width=8).eval()

    class Zero(torch.nn.Module):  # forecasts the training mean: no energy but the mean's
        def forward(self, x):
            return torch.zeros(x.shape[0], shape["out_frames"], *x.shape[2:])

    result = evaluate_rollouts(
        {"unet/none": model, "zero/none": Zero()},
        store,
        factor=3,
        max_windows=4,
        batch_size=2,
        data_range=test_data_range(test),
        device=torch.device("cpu"),
        ssim_convention="skimage",
    )
    assert result.skipped is None
    assert result.horizon == 3 * test.t_out and 1 <= result.windows <= 4
    assert {"persistence/baseline", "climatology/baseline", "unet/none"} <= set(result.curves)
    for curves in result.curves.values():
        assert len(curves.mse) == len(curves.ssim) == result.horizon
        assert all(len(v) == result.horizon for v in curves.energy_ratio.values())
    # persistence's rollout is its plain forecast repeated: its error at lead 1 is the one-step
    persist = result.curves["persistence/baseline"]
    assert persist.behind_persistence_lead is None and all(math.isfinite(v) for v in persist.mse)
    # the zero forecast's fluctuating energy is zero: far below the truth in every band but
    # the low one (which holds the mean)
    zero = result.curves["zero/none"]
    assert all(r < 0.5 for r in zero.energy_ratio["high"])
    lead = zero.behind_persistence_lead
    assert lead is None or 1 <= lead <= result.horizon
    data = result.to_dict()
    assert data["models"]["unet/none"]["mse"] == result.curves["unet/none"].mse
    figure = plot_rollouts(result)
    assert len([ax for ax in figure.axes if ax.lines]) == 5
