"""The two SSIM conventions of ``sdkd_pipeline.evaluation.metrics``, each against its library.

``skimage`` (the default, OpenSTL's) against ``skimage.metrics.structural_similarity`` with the
arguments OpenSTL uses and our explicit data range; ``torchmetrics`` against
``torchmetrics.functional.structural_similarity_index_measure``; on small, rectangular and
multi-channel grids with one data range per channel, streamed in any batches, and through the
evaluation path (``evaluate_models``, ``evaluate_checkpoints``, the Markdown header).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import structural_similarity_index_measure

import sdkd_pipeline.evaluation.metrics as metrics_module
from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.evaluation import (
    EvaluationConfig,
    evaluate_checkpoints,
    evaluate_models,
    test_data_range,
)
from sdkd_pipeline.evaluation.metrics import (
    DEFAULT_SSIM_CONVENTION,
    SSIM_CONVENTIONS,
    MetricAccumulator,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (H, W): small square grids, a rectangular one with odd sides, the smallest skimage takes
SHAPES = [(16, 16), (32, 32), (33, 49), (7, 9)]
N, T = 3, 2


def _smooth(shape: tuple[int, ...], generator: torch.Generator, width: int = 5) -> torch.Tensor:
    """Random fields with structure at the window's scale: white noise under a box filter."""
    *lead, height, width_ = shape
    noise = torch.randn(
        (int(np.prod(lead)), 1, height + width - 1, width_ + width - 1),
        generator=generator,
        dtype=torch.float64,
    )
    box = torch.ones(1, 1, width, width, dtype=torch.float64) / width**2
    return torch.nn.functional.conv2d(noise, box).reshape(shape)


def _fields(height: int, width: int, channels: int = 3, seed: int = 0):
    """Truth and prediction ``(N, T, C, H, W)`` in 'physical units': each channel its own offset
    and scale (so its own data range), the prediction off by smooth and white noise."""
    generator = torch.Generator().manual_seed(seed)
    shape = (N, T, channels, height, width)
    offset = torch.tensor([280.0, -40.0, 1000.0][:channels], dtype=torch.float64)
    scale = torch.tensor([15.0, 2.0, 300.0][:channels], dtype=torch.float64)
    offset, scale = offset.reshape(1, 1, -1, 1, 1), scale.reshape(1, 1, -1, 1, 1)
    truth = offset + scale * _smooth(shape, generator)
    error = 0.6 * _smooth(shape, generator, 3) + 0.2 * torch.randn(
        shape, generator=generator, dtype=torch.float64
    )
    return truth + scale * error, truth


def _data_range(prediction: torch.Tensor, truth: torch.Tensor) -> list[float]:
    both = torch.cat([prediction, truth])
    return (both.amax((0, 1, 3, 4)) - both.amin((0, 1, 3, 4))).tolist()


def _accumulated(prediction, truth, data_range, convention, batch: int | None = None):
    n, steps, channels, height, width = prediction.shape
    accumulator = MetricAccumulator(
        channels, steps, height, width, data_range, ssim_convention=convention
    )
    batch = batch or n
    for start in range(0, n, batch):
        accumulator.update(prediction[start : start + batch], truth[start : start + batch])
    return accumulator.compute()


def _skimage_per_step(prediction, truth, data_range) -> list[float]:
    """skimage with OpenSTL's arguments (its defaults: 7x7 uniform window, sample covariance,
    k1 0.01, k2 0.03, the border cropped), spelled out, and the explicit data range."""
    n, steps, channels = prediction.shape[:3]
    return [
        float(
            np.mean(
                [
                    structural_similarity(
                        prediction[i, t, c].numpy(),
                        truth[i, t, c].numpy(),
                        data_range=data_range[c],
                        win_size=7,
                        gaussian_weights=False,
                        use_sample_covariance=True,
                        K1=0.01,
                        K2=0.03,
                    )
                    for i in range(n)
                    for c in range(channels)
                ]
            )
        )
        for t in range(steps)
    ]


def _torchmetrics_per_step(prediction, truth, data_range) -> list[float]:
    channels = prediction.shape[2]
    return [
        float(
            np.mean(
                [
                    structural_similarity_index_measure(
                        prediction[:, t, c : c + 1],
                        truth[:, t, c : c + 1],
                        gaussian_kernel=True,
                        sigma=1.5,
                        kernel_size=11,
                        data_range=data_range[c],
                    ).item()
                    for c in range(channels)
                ]
            )
        )
        for t in range(prediction.shape[1])
    ]


# --------------------------------------------------------------------------------------------
# each convention against its library


def test_the_default_is_the_paper_comparable_skimage_convention():
    assert SSIM_CONVENTIONS == ("skimage", "torchmetrics")
    assert DEFAULT_SSIM_CONVENTION == "skimage"
    assert EvaluationConfig.from_params({}).ssim_convention == "skimage"
    prediction, truth = _fields(16, 16)
    n, steps, channels, height, width = prediction.shape
    accumulator = MetricAccumulator(channels, steps, height, width, _data_range(prediction, truth))
    accumulator.update(prediction, truth)
    assert accumulator.compute().ssim_convention == "skimage"


@pytest.mark.parametrize("height, width", SHAPES)
def test_skimage_convention_matches_skimage(height, width):
    prediction, truth = _fields(height, width)
    data_range = _data_range(prediction, truth)
    assert len(set(data_range)) == 3  # one range per channel, all different
    metrics = _accumulated(prediction, truth, data_range, "skimage")
    expected = _skimage_per_step(prediction, truth, data_range)
    assert metrics.ssim_convention == "skimage"
    assert metrics.ssim_per_step == pytest.approx(expected, abs=1e-9)
    assert metrics.ssim == pytest.approx(np.mean(expected), abs=1e-9)
    assert 0.2 < metrics.ssim < 0.99  # a forecast with errors, not a degenerate case


def test_skimage_convention_matches_openstls_own_call():
    # OpenSTL: cal_ssim(pred[b, f].swapaxes(0, 2), true[b, f].swapaxes(0, 2), multichannel=True),
    # i.e. a (W, H, C) image whose channels are averaged (channel_axis=-1 since skimage 0.19),
    # here with one data range for all channels (skimage's call takes only one).
    prediction, truth = _fields(32, 32, channels=2, seed=4)
    data_range = max(_data_range(prediction, truth))
    metrics = _accumulated(prediction, truth, [data_range] * 2, "skimage")
    frames = [
        structural_similarity(
            prediction[b, f].numpy().swapaxes(0, 2),
            truth[b, f].numpy().swapaxes(0, 2),
            channel_axis=-1,
            data_range=data_range,
        )
        for b in range(N)
        for f in range(T)
    ]
    assert metrics.ssim == pytest.approx(np.mean(frames), abs=1e-9)


@pytest.mark.parametrize("height, width", SHAPES[:3])
def test_torchmetrics_convention_matches_torchmetrics(height, width):
    prediction, truth = _fields(height, width, seed=1)
    data_range = _data_range(prediction, truth)
    metrics = _accumulated(prediction, truth, data_range, "torchmetrics")
    expected = _torchmetrics_per_step(prediction, truth, data_range)
    assert metrics.ssim_convention == "torchmetrics"
    assert metrics.ssim_per_step == pytest.approx(expected, abs=1e-9)
    assert metrics.ssim == pytest.approx(np.mean(expected), abs=1e-9)


def test_torchmetrics_convention_within_1e_6_where_it_runs_in_float32():
    # values within R_c of zero: the CPU runs this convention in float32 (module docstring)
    prediction, truth = _fields(32, 32, channels=1, seed=2)
    prediction, truth = prediction - 280.0, truth - 280.0
    data_range = _data_range(prediction, truth)
    metrics = _accumulated(prediction, truth, data_range, "torchmetrics")
    expected = _torchmetrics_per_step(prediction, truth, data_range)
    assert metrics.ssim_per_step == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------------------------
# streaming, and the two conventions apart


@pytest.mark.parametrize("convention", SSIM_CONVENTIONS)
def test_ssim_does_not_depend_on_the_batches(convention, monkeypatch):
    prediction, truth = _fields(33, 49, seed=3)
    prediction = torch.cat([prediction, prediction.flip(0) + 1.0, prediction[:1]])
    truth = torch.cat([truth, truth.flip(0), truth[:1]])  # N = 7
    data_range = _data_range(prediction, truth)
    whole = _accumulated(prediction, truth, data_range, convention)
    streamed = _accumulated(prediction, truth, data_range, convention, batch=3)  # 3, 3, 1
    # and each channel's frames split over several SSIM calls within a batch
    monkeypatch.setattr(metrics_module, "_SSIM_PIXELS_PER_CALL", 2 * T * 33 * 49)
    chunked = _accumulated(prediction, truth, data_range, convention, batch=5)  # 5, 2
    for other in (streamed, chunked):
        assert other.n_samples == 7
        assert other.ssim_per_step == pytest.approx(whole.ssim_per_step, abs=1e-12)


def test_the_two_conventions_differ_on_a_small_grid():
    prediction, truth = _fields(32, 32, seed=5)
    data_range = _data_range(prediction, truth)
    skimage = _accumulated(prediction, truth, data_range, "skimage").ssim
    torchmetrics = _accumulated(prediction, truth, data_range, "torchmetrics").ssim
    assert abs(skimage - torchmetrics) / skimage > 0.01
    # and both are 1 for an exact forecast
    for convention in SSIM_CONVENTIONS:
        exact = _accumulated(truth, truth, data_range, convention)
        assert exact.ssim == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------------------------
# through the evaluation path


@pytest.fixture(scope="module")
def windows() -> WindowDataset:
    generator = torch.Generator().manual_seed(7)
    fields = 3.0 * _smooth((4, 7, 2, 16, 16), generator) + torch.tensor([5.0, -2.0]).reshape(
        1, 1, 2, 1, 1
    )
    raw = make_raw(
        fields.numpy().astype(np.float32),
        dataset="demo",
        source="test:demo",
        channels=["u", "v"],
        time=np.arange(7, dtype=np.float64),
    )
    tensors = build_tensor_dataset(raw, split=SplitConfig(2, 1, 1), window=WindowConfig(2, 2))
    return WindowDataset(tensors.load(), "test")


class _Damped(torch.nn.Module):
    """The last input frame, damped: a forecast with errors and no parameters to train."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.7 * x[:, -1:].repeat(1, 2, 1, 1, 1)


def test_both_conventions_through_evaluate_models(windows):
    data_range = test_data_range(windows, batch_size=2)
    xs = torch.stack([windows[i][0] for i in range(len(windows))])
    truth = windows.denormalize(torch.stack([windows[i][1] for i in range(len(windows))]))
    prediction = windows.denormalize(_Damped()(xs))
    values = {}
    for convention in SSIM_CONVENTIONS:
        got = evaluate_models(
            {"m": _Damped()}, windows, data_range, batch_size=2, ssim_convention=convention
        )["m"]
        direct = _accumulated(prediction.double(), truth.double(), data_range.tolist(), convention)
        assert got.ssim_convention == convention
        assert got.ssim_per_step == pytest.approx(direct.ssim_per_step, abs=1e-6)
        values[convention] = got.ssim
    assert values["skimage"] != pytest.approx(values["torchmetrics"], abs=1e-3)
    default = evaluate_models({"m": _Damped()}, windows, data_range, batch_size=2)["m"]
    assert default.ssim == values["skimage"]


def test_evaluate_checkpoints_records_the_convention(windows):
    from sdkd_pipeline.pipelines.evaluate.nodes import _markdown

    cfg = EvaluationConfig.from_params(
        {
            "batch_size": 2,
            "device": "cpu",
            "latency": {"repeats": 1, "warmup": 0, "batch_sizes": [1], "cuda": False},
            "exported_latency": {"formats": []},
            "ssim": {"convention": "torchmetrics"},
        }
    )
    result = evaluate_checkpoints([], windows, cfg, dataset="demo")
    assert result.curves["ssim_convention"] == "torchmetrics"
    assert {m["metrics"]["ssim_convention"] for m in result.curves["models"]} == {"torchmetrics"}
    assert "SSIM in the torchmetrics convention" in _markdown("demo", windows, cfg, result)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "ssim, message",
    [
        ({"convention": "openstl"}, r"^evaluate\.ssim\.convention must be one of 'skimage', "),
        ("skimage", r"^evaluate\.ssim must be a mapping, got 'skimage'"),
    ],
)
def test_a_wrong_ssim_convention_is_refused_naming_the_parameter(ssim, message):
    with pytest.raises(ConfigError, match=message):
        EvaluationConfig.from_params({"ssim": ssim})


def test_the_study_records_its_convention_and_renders_old_results_unchanged():
    import sys
    from pathlib import Path

    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        import study
    finally:
        sys.path.remove(benchmarks)
    assert study.SSIM_CONVENTION == DEFAULT_SSIM_CONVENTION
    assert study._ssim_note({"ssim_convention": "skimage"}) == (
        " SSIM in the skimage convention (README, Metrics)."
    )
    assert study._ssim_note({}) == ""  # the committed results (torchmetrics) predate the field
