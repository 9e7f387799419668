"""Tests of the evaluation metrics in ``sdkd_pipeline.evaluation.metrics``."""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

import sdkd_pipeline.evaluation.metrics as metrics_module
from sdkd_pipeline.evaluation.metrics import (
    BAND_NAMES,
    ForecastMetrics,
    MetricAccumulator,
    data_range_from,
    gap_closed,
)
from sdkd_pipeline.spectral import BandSplit

torch.set_num_threads(1)

N, T, C, H, W = 5, 3, 2, 16, 16


def _fields(seed: int = 0, n: int = N, scale: float = 50.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Truth in 'physical units' (offset and range far from [0, 1]) and a noisy prediction."""
    generator = torch.Generator().manual_seed(seed)
    truth = 280.0 + scale * torch.rand((n, T, C, H, W), generator=generator, dtype=torch.float64)
    noise = torch.randn((n, T, C, H, W), generator=generator, dtype=torch.float64)
    prediction = truth + 0.1 * scale * noise
    return prediction, truth


def _metrics(prediction, truth, data_range, **kwargs) -> ForecastMetrics:
    accumulator = MetricAccumulator(C, T, H, W, data_range, **kwargs)
    accumulator.update(prediction, truth)
    return accumulator.compute()


# --------------------------------------------------------------------------------------------
# hand-computable cases


def test_constant_offset_gives_hand_computed_values():
    _, truth = _fields()
    d = -0.5
    data_range = [2.0, 5.0]
    metrics = _metrics(truth + d, truth, data_range)
    psnr = np.mean([10 * math.log10(r**2 / d**2) for r in data_range])
    assert metrics.mse == pytest.approx(d**2, rel=1e-12)
    assert metrics.mae == pytest.approx(abs(d), rel=1e-12)
    assert metrics.rmse == pytest.approx(abs(d), rel=1e-12)
    assert metrics.psnr == pytest.approx(psnr, rel=1e-12)
    for name in ("mse", "mae", "rmse", "psnr"):
        assert getattr(metrics, f"{name}_per_step") == pytest.approx([getattr(metrics, name)] * T)
    # A constant offset is all at k = 0, which belongs to the low band.
    assert metrics.band_mse["low"] == pytest.approx(d**2, rel=1e-12)
    assert metrics.band_mse["mid"] == pytest.approx(0.0, abs=1e-20)
    assert metrics.band_mse["high"] == pytest.approx(0.0, abs=1e-20)
    assert metrics.n_samples == N and metrics.data_range == (2.0, 5.0)


def test_identical_fields_mse_zero_ssim_one_psnr_inf():
    _, truth = _fields()
    metrics = _metrics(truth.clone(), truth, [50.0, 50.0])
    assert metrics.mse == 0.0 and metrics.mae == 0.0 and metrics.rmse == 0.0
    assert metrics.ssim == pytest.approx(1.0, abs=1e-12)
    assert metrics.psnr == math.inf and metrics.psnr_per_step == (math.inf,) * T
    # to_dict is strict JSON (inf as "inf") and reads back; flat keeps inf for MLflow.
    text = json.dumps(metrics.to_dict(), allow_nan=False)
    assert json.loads(text)["psnr"] == "inf"
    assert ForecastMetrics.from_dict(json.loads(text)) == metrics
    assert metrics.flat()["psnr"] == math.inf


def test_per_step_and_overall_averaging():
    _, truth = _fields()
    offsets = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).reshape(1, T, 1, 1, 1)
    metrics = _metrics(truth + offsets, truth, [10.0, 10.0])
    assert metrics.mse_per_step == pytest.approx([1.0, 4.0, 9.0])
    assert metrics.rmse_per_step == pytest.approx([1.0, 2.0, 3.0])
    assert metrics.mae_per_step == pytest.approx([1.0, 2.0, 3.0])
    assert metrics.mse == pytest.approx(14 / 3)
    assert metrics.mae == pytest.approx(2.0)
    # Overall RMSE is sqrt of the overall MSE, not the mean of the per-step RMSEs (2.0).
    assert metrics.rmse == pytest.approx(math.sqrt(14 / 3))
    psnr_steps = [10 * math.log10(100 / m) for m in (1.0, 4.0, 9.0)]
    assert metrics.psnr_per_step == pytest.approx(psnr_steps)
    assert metrics.psnr == pytest.approx(np.mean(psnr_steps))
    assert metrics.ssim == pytest.approx(np.mean(metrics.ssim_per_step))
    assert metrics.band_mse_per_step["low"] == pytest.approx([1.0, 4.0, 9.0])


def test_mse_is_per_pixel_and_channel_not_summed():
    prediction, truth = _fields()
    metrics = _metrics(prediction, truth, [50.0, 50.0])
    assert metrics.mse == pytest.approx(float(((prediction - truth) ** 2).mean()), rel=1e-12)
    assert metrics.mae == pytest.approx(float((prediction - truth).abs().mean()), rel=1e-12)


def test_psnr_per_channel_uses_each_channels_range():
    prediction, truth = _fields()
    data_range = torch.tensor([30.0, 70.0], dtype=torch.float64)
    metrics = _metrics(prediction, truth, data_range)
    mse_tc = ((prediction - truth) ** 2).mean((0, 3, 4))  # (T, C)
    expected = (10 * torch.log10(data_range**2 / mse_tc)).mean(1)
    assert metrics.psnr_per_step == pytest.approx(expected.tolist(), rel=1e-12)


# --------------------------------------------------------------------------------------------
# SSIM


def _torchmetrics_ssim_per_step(prediction, truth, data_range) -> list[float]:
    per_step = []
    for t in range(T):
        values = [
            structural_similarity_index_measure(
                prediction[:, t, c : c + 1],
                truth[:, t, c : c + 1],
                gaussian_kernel=True,
                sigma=1.5,
                kernel_size=11,
                data_range=float(data_range[c]),
            )
            for c in range(C)
        ]
        per_step.append(float(torch.stack(values).mean()))
    return per_step


def test_ssim_matches_torchmetrics_and_depends_on_data_range():
    # Like weather fields: a range of about 50 over the split (here between samples), small
    # variations within a frame, so the range-dependent constants of SSIM matter.
    generator = torch.Generator().manual_seed(1)
    offsets = 12.0 * torch.arange(N, dtype=torch.float64).reshape(N, 1, 1, 1, 1)
    truth = 280.0 + offsets + torch.rand((N, T, C, H, W), generator=generator, dtype=torch.float64)
    prediction = truth + 0.5 * torch.randn(truth.shape, generator=generator, dtype=torch.float64)
    true_range = data_range_from(truth)
    metrics = _metrics(prediction, truth, true_range, ssim_convention="torchmetrics")
    assert metrics.ssim_convention == "torchmetrics"
    expected = _torchmetrics_ssim_per_step(prediction, truth, true_range)
    assert metrics.ssim_per_step == pytest.approx(expected, rel=1e-10)
    assert metrics.ssim == pytest.approx(np.mean(expected), rel=1e-10)
    # The OpenSTL trap: skimage without data_range assumes 2 for float images. The wrong range
    # gives a very different number, so the range must be explicit.
    wrong = _metrics(prediction, truth, [2.0, 2.0], ssim_convention="torchmetrics")
    assert wrong.ssim_per_step == pytest.approx(
        _torchmetrics_ssim_per_step(prediction, truth, [2.0, 2.0]), rel=1e-10
    )
    assert metrics.ssim - wrong.ssim > 0.3


def test_predictions_are_not_clipped():
    _, truth = _fields()
    data_range = data_range_from(truth)
    # An overshoot beyond the truth's range counts in full (no clipping to [min, max]).
    overshoot = truth + 10 * data_range.reshape(1, 1, C, 1, 1)
    metrics = _metrics(overshoot, truth, data_range)
    assert metrics.mse == pytest.approx(float((10 * data_range).square().mean()), rel=1e-12)


# --------------------------------------------------------------------------------------------
# streaming


def test_streaming_equals_one_shot_with_partial_last_batch():
    prediction, truth = _fields(seed=3, n=7)
    data_range = data_range_from(truth)
    accumulator = MetricAccumulator(C, T, H, W, data_range)
    for start in range(0, 7, 3):  # batches of 3, 3, 1
        accumulator.update(prediction[start : start + 3].float(), truth[start : start + 3])
    accumulator.update(prediction[:0], truth[:0])  # an empty batch is a no-op
    streamed = accumulator.compute()
    # The float32 predictions are upcast before the subtraction; compare with the same inputs.
    one_shot = _metrics(prediction.float(), truth, data_range)
    assert streamed.n_samples == 7
    streamed_flat, one_shot_flat = streamed.flat(), one_shot.flat()
    assert streamed_flat.keys() == one_shot_flat.keys()
    for key, value in one_shot_flat.items():
        assert streamed_flat[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    accumulator.reset()
    with pytest.raises(ValueError, match="before any"):
        accumulator.compute()


# --------------------------------------------------------------------------------------------
# band errors


def test_band_mses_sum_to_mse_and_match_band_split():
    prediction, truth = _fields(seed=5)
    metrics = _metrics(prediction, truth, [50.0, 50.0])
    assert sum(metrics.band_mse.values()) == pytest.approx(metrics.mse, abs=1e-10)
    for t in range(T):
        band_sum = sum(metrics.band_mse_per_step[b][t] for b in BAND_NAMES)
        assert band_sum == pytest.approx(metrics.mse_per_step[t], abs=1e-10)
    bands = BandSplit.log_spaced(H, W, 3)
    assert metrics.band_cutoffs == bands.cutoffs
    expected = bands.band_mse(prediction, truth)
    assert list(metrics.band_mse.values()) == pytest.approx(expected.tolist(), rel=1e-12)


def test_pure_high_frequency_error_lands_in_high_band():
    _, truth = _fields()
    rows = torch.arange(H, dtype=torch.float64)[:, None]
    cols = torch.arange(W, dtype=torch.float64)[None, :]
    checkerboard = (-1.0) ** (rows + cols)  # the Nyquist mode, |k| = k_max
    metrics = _metrics(truth + 0.3 * checkerboard, truth, [50.0, 50.0])
    assert metrics.mse == pytest.approx(0.09, rel=1e-12)
    assert metrics.band_mse["high"] == pytest.approx(0.09, rel=1e-12)
    assert metrics.band_mse["low"] == pytest.approx(0.0, abs=1e-20)
    assert metrics.band_mse["mid"] == pytest.approx(0.0, abs=1e-20)


# --------------------------------------------------------------------------------------------
# output formats


def test_flat_keys_and_to_dict():
    prediction, truth = _fields()
    metrics = _metrics(prediction, truth, [50.0, 50.0])
    flat = metrics.flat()
    for key in (
        "mse",
        "mae",
        "rmse",
        "psnr",
        "ssim",
        "band_mse_low",
        "band_mse_mid",
        "band_mse_high",
        "mse_step_01",
        "ssim_step_03",
        "band_mse_high_step_02",
    ):
        assert isinstance(flat[key], float), key
    assert "mse_step_04" not in flat
    assert len(flat) == 5 + 5 * T + 3 + 3 * T
    assert flat["mse_step_02"] == metrics.mse_per_step[1]
    data = json.loads(json.dumps(metrics.to_dict(), allow_nan=False))
    assert data["band_mse"].keys() == {"low", "mid", "high"}
    assert data["ssim_convention"] == "skimage"  # the default
    assert ForecastMetrics.from_dict(data) == metrics
    # a file written before the option existed: its SSIM was torchmetrics'
    del data["ssim_convention"]
    assert ForecastMetrics.from_dict(data).ssim_convention == "torchmetrics"


# --------------------------------------------------------------------------------------------
# data range and gap closed


def test_data_range_from_tensor_and_batches():
    _, truth = _fields()
    expected = truth.amax((0, 1, 3, 4)) - truth.amin((0, 1, 3, 4))
    assert torch.equal(data_range_from(truth), expected)
    assert torch.equal(data_range_from(iter([truth[:2], truth[2:]])), expected)
    assert torch.equal(data_range_from(truth.numpy()), expected)


def test_data_range_from_refuses_constant_channel_and_bad_input():
    _, truth = _fields()
    truth[:, :, 1] = 7.0
    with pytest.raises(ValueError, match=r"channel 1 \('v'\) is constant"):
        data_range_from(truth, channel_names=["u", "v"])
    with pytest.raises(ValueError, match="no truth values"):
        data_range_from([])
    truth[0, 0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN/Inf"):
        data_range_from(truth)


def test_gap_closed():
    assert gap_closed(student=0.8, baseline=1.0, teacher=0.6) == pytest.approx(0.5)
    assert gap_closed(student=1.0, baseline=1.0, teacher=0.6) == 0.0
    assert gap_closed(student=0.6, baseline=1.0, teacher=0.6) == pytest.approx(1.0)
    assert gap_closed(student=1.2, baseline=1.0, teacher=0.6) < 0  # worse than the baseline
    assert gap_closed(student=31.0, baseline=29.0, teacher=33.0) == pytest.approx(0.5)  # PSNR
    # The paper's WeatherBench MAE: U-Net 0.9822 -> AEKD 0.8457, teacher 0.7287: about 54 %.
    assert gap_closed(0.8457, 0.9822, 0.7287) == pytest.approx(0.5385, abs=1e-4)
    assert math.isnan(gap_closed(0.8, 1.0, 1.0))


# --------------------------------------------------------------------------------------------
# errors


def test_errors_name_the_problem():
    prediction, truth = _fields()
    accumulator = MetricAccumulator(C, T, H, W, [50.0, 50.0])
    with pytest.raises(ValueError, match=r"\(5, 3, 2, 16, 16\).*\(5, 2, 2, 16, 16\)"):
        accumulator.update(prediction, truth[:, :2])
    with pytest.raises(ValueError, match=r"\(N, 3, 2, 16, 16\).*\(5, 3, 2, 16\)"):
        accumulator.update(prediction[..., 0], truth[..., 0])
    for bad in (math.nan, math.inf):
        broken = prediction.clone()
        broken[1, 2, 0, 3, 4] = bad
        with pytest.raises(ValueError, match=r"prediction contains 1 NaN/Inf .*diverged"):
            accumulator.update(broken, truth)
    with pytest.raises(ValueError, match=r"target contains 1 NaN/Inf"):
        accumulator.update(prediction, _with_nan(truth))
    assert accumulator.n_samples == 0  # refused batches leave no trace
    with pytest.raises(ValueError, match=r"one value per channel \(2\), got 3"):
        MetricAccumulator(C, T, H, W, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="data_range of channel 1 must be a positive"):
        MetricAccumulator(C, T, H, W, [1.0, 0.0])
    with pytest.raises(ValueError, match="'skimage'.*at least 7x7, got 6x16"):
        MetricAccumulator(C, T, 6, 16, [1.0, 1.0])
    with pytest.raises(ValueError, match="'torchmetrics'.*at least 6x6, got 5x16"):
        MetricAccumulator(C, T, 5, 16, [1.0, 1.0], ssim_convention="torchmetrics")
    with pytest.raises(ValueError, match="ssim_convention must be one of 'skimage', 'torch"):
        MetricAccumulator(C, T, H, W, [1.0, 1.0], ssim_convention="openstl")


def _with_nan(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[0, 0, 0, 0, 0] = math.nan
    return x


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_imports_only_torch_numpy_torchmetrics():
    # Static (a subprocess import of torch costs seconds): metrics.py and the project modules it
    # imports, followed transitively, use only the standard library, torch, numpy, torchmetrics.
    package = Path(metrics_module.__file__).parents[1]
    allowed_third_party = {"torch", "numpy", "torchmetrics"}
    todo, seen = ["sdkd_pipeline.evaluation.metrics"], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = package.joinpath(*module.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for name in _imported_modules(path):
            top = name.split(".")[0]
            if top == "sdkd_pipeline":
                todo.append(name)
            else:
                assert top in allowed_third_party or top in sys.stdlib_module_names, (module, name)
    assert "sdkd_pipeline.spectral" in seen
