"""The evaluation library: streamed metrics, the table's layout, gap closed, Markdown, latency
and figures, on tiny models and an in-memory tensor store."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from sdkd_pipeline import deploy
from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.tensors import (
    SplitConfig,
    WindowConfig,
    build_tensor_dataset,
    parse_splits,
)
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.evaluation import (
    EvaluationConfig,
    ModelResult,
    accuracy,
    build_table,
    checkpoints,
    evaluate_checkpoints,
    evaluate_models,
    measure_latency,
    plot_band_errors,
    plot_prediction_panel,
    plot_step_curves,
    predict_windows,
    tables,
    teacher_check,
    test_data_range,
    to_markdown,
)
from sdkd_pipeline.evaluation.metrics import ForecastMetrics, MetricAccumulator
from sdkd_pipeline.models import build_model

T_IN, T_OUT, SIZE = 2, 2, 16
SHAPE = {"in_frames": T_IN, "out_frames": T_OUT, "channels": 2, "height": SIZE, "width": SIZE}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def windows() -> WindowDataset:
    rng = np.random.default_rng(3)
    fields = rng.normal([5.0, -2.0], [3.0, 0.5], size=(4, 9, SIZE, SIZE, 2))
    raw = make_raw(
        fields.transpose(0, 1, 4, 2, 3).astype(np.float32),
        dataset="demo",
        source="test:demo",
        channels=["u", "v"],
        time=np.arange(9, dtype=np.float64),
    )
    tensors = build_tensor_dataset(
        raw, split=SplitConfig(2, 1, 1), window=WindowConfig(T_IN, T_OUT)
    ).load()
    return WindowDataset(tensors, "test")


TINY = {
    "unet": {"hidden": 8, "base_width": 8, "levels": 2},
    "simvp": {"frame_hidden": 8, "hidden": 16, "spatial_layers": 2, "depth": 2},
}


def _model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, **SHAPE, **TINY[name]).eval()


def _checkpoint(name: str, module: torch.nn.Module, windows: WindowDataset, **extra) -> dict:
    """A checkpoint as train_forecaster writes it (enough for deploy's exports)."""
    return {
        "model": name,
        "model_config": dict(TINY[name]),
        "shape": dict(SHAPE),
        "channels": list(windows.channels),
        "mean": windows.mean,
        "std": windows.std,
        "state_dict": {k: v.clone() for k, v in module.state_dict().items()},
        **extra,
    }


def _entries(windows: WindowDataset) -> list[tuple]:
    teacher, student, baseline = _model("simvp", 1), _model("unet", 2), _model("unet", 3)
    return [
        (
            "teacher",
            "simvp",
            "supervised",
            teacher,
            _checkpoint("simvp", teacher, windows, best_val_loss=0.5),
        ),
        (
            "student",
            "unet",
            "sdkd",
            student,
            _checkpoint("unet", student, windows, best_val_loss=1.0),
        ),
        (
            "student",
            "unet",
            "none",
            baseline,
            _checkpoint("unet", baseline, windows, best_val_loss=1.2),
        ),
    ]


def _fast_cfg(**exported) -> EvaluationConfig:
    return EvaluationConfig.from_params(
        {
            "batch_size": 2,
            "latency": {"repeats": 1, "warmup": 0, "batch_sizes": [1, 2]},
            "device": "cpu",
            "exported_latency": exported,
        }
    )


def _metrics(mse: float, mae: float) -> ForecastMetrics:
    return ForecastMetrics(
        mse=mse,
        mae=mae,
        rmse=math.sqrt(mse),
        psnr=20.0,
        ssim=0.5,
        mse_per_step=(mse, mse),
        mae_per_step=(mae, mae),
        rmse_per_step=(1.0, 1.0),
        psnr_per_step=(20.0, 20.0),
        ssim_per_step=(0.5, 0.5),
        band_mse={"low": mse / 2, "mid": mse / 4, "high": mse / 4},
        band_mse_per_step={"low": (1.0, 1.0), "mid": (1.0, 1.0), "high": (1.0, 1.0)},
        band_cutoffs=(1.0, 2.0),
        data_range=(1.0,),
        n_samples=3,
    )


def _result(role, model, method, mse, mae, val=math.nan, lat=(1.0, 8.0)):
    return ModelResult(
        role=role,
        model=model,
        method=method,
        metrics=_metrics(mse, mae),
        params=100,
        flops=2_000_000,
        latency_ms={1: lat[0], 32: lat[1]},
        best_val_loss=val,
    )


def test_streamed_metrics_equal_one_batch_on_denormalized_fields(windows):
    model = _model("unet")
    data_range = test_data_range(windows, batch_size=2)
    ys = torch.stack([windows[i][1] for i in range(len(windows))])
    truth = windows.denormalize(ys)
    assert torch.allclose(
        data_range, (truth.amax((0, 1, 3, 4)) - truth.amin((0, 1, 3, 4))).double()
    )
    streamed = evaluate_models({"m": model}, windows, data_range, batch_size=2)["m"]
    xs = torch.stack([windows[i][0] for i in range(len(windows))])
    with torch.no_grad():
        prediction = windows.denormalize(model(xs))
    accumulator = MetricAccumulator(2, T_OUT, SIZE, SIZE, data_range)
    accumulator.update(prediction, truth)
    whole = accumulator.compute()
    assert streamed.mse == pytest.approx(whole.mse, rel=1e-6)
    assert streamed.ssim == pytest.approx(whole.ssim, rel=1e-6)
    # de-normalized: channel 0's normalized MSE times its std squared
    normalized = (model(xs).detach() - ys)[:, :, 0].square().mean()
    manual = float(normalized * windows.std[0] ** 2)
    direct = float((prediction - truth)[:, :, 0].square().mean())
    assert direct == pytest.approx(manual, rel=1e-4)
    assert not model.training


def test_table_order_columns_and_gap_closed():
    results = [
        _result("student", "unet", "sdkd", 3.0, 0.6, lat=(0.5, 2.0)),
        _result("student", "resnet", "none", 5.0, 1.0),
        _result("teacher", "simvp", "supervised", 1.0, 0.2, val=0.3, lat=(2.0, 16.0)),
        _result("student", "unet", "none", 5.0, 1.0, lat=(0.5, 4.0)),
        _result("teacher", "st_alternet", "supervised", 0.5, 0.1, val=0.4, lat=(4.0, 8.0)),
        _result("student", "unet", "aekd", 4.0, 0.9),
        _result("baseline", "climatology", "baseline", 7.0, 1.5, lat=(0.01, 0.1)),
        _result("baseline", "persistence", "baseline", 9.0, 2.0, lat=(0.01, 0.1)),
    ]
    table = build_table(
        results,
        teachers=["st_alternet", "simvp"],
        students=["unet", "resnet"],
        methods=["none", "sdkd", "aekd"],
    )
    assert list(zip(table["model"], table["method"], strict=True)) == [
        ("st_alternet", "supervised"),
        ("simvp", "supervised"),
        ("persistence", "baseline"),
        ("climatology", "baseline"),
        ("unet", "none"),
        ("unet", "sdkd"),
        ("unet", "aekd"),
        ("resnet", "none"),
    ]
    assert list(table.columns) == [
        "role",
        "model",
        "method",
        "params",
        "gflops",
        "mse",
        "mae",
        "rmse",
        "psnr",
        "ssim",
        "band_mse_low",
        "band_mse_mid",
        "band_mse_high",
        "latency_ms_b1",
        "latency_ms_b32",
        "speedup_vs_st_alternet_b1",
        "speedup_vs_st_alternet_b32",
        "speedup_vs_simvp_b1",
        "speedup_vs_simvp_b32",
        "gap_closed_mse",
        "gap_closed_mae",
        "gap_closed_vs_persistence_mse",
        "teacher_check",
    ]
    row = table.set_index(["model", "method"]).loc[("unet", "sdkd")]
    # the reference is simvp (lowest validation MSE 0.3), not st_alternet (lowest test MSE)
    assert row["gap_closed_mse"] == pytest.approx((5.0 - 3.0) / (5.0 - 1.0))
    assert row["gap_closed_mae"] == pytest.approx((1.0 - 0.6) / (1.0 - 0.2))
    assert row["gap_closed_vs_persistence_mse"] == pytest.approx((9.0 - 3.0) / (9.0 - 1.0))
    assert row["speedup_vs_simvp_b1"] == pytest.approx(4.0)
    assert row["speedup_vs_st_alternet_b32"] == pytest.approx(4.0)
    assert row["gflops"] == pytest.approx(0.002)
    assert table.set_index(["model", "method"]).loc[("unet", "none"), "gap_closed_mse"] == 0.0
    assert table["gap_closed_mse"][:4].isna().all()  # teachers and baselines
    assert table["gap_closed_vs_persistence_mse"][:4].isna().all()
    # both teachers are below persistence (9) and 1.5x below unet's and resnet's none (5)
    assert list(table["teacher_check"]) == ["ok", "ok"] + [""] * 6
    baselines = table[table["role"] == "baseline"]
    assert baselines["speedup_vs_simvp_b1"].tolist() == pytest.approx([200.0, 200.0])


def test_gap_closed_is_blank_without_baseline():
    results = [
        _result("teacher", "simvp", "supervised", 1.0, 0.2, val=0.3),
        _result("student", "unet", "sdkd", 3.0, 0.6),
    ]
    table = build_table(
        results, teachers=["simvp"], students=["unet"], methods=["sdkd"], batch_sizes=[1]
    )
    assert table["gap_closed_mse"].isna().all() and table["gap_closed_mae"].isna().all()
    assert "latency_ms_b32" not in table.columns
    assert "nan" not in to_markdown(table)


def test_gap_closed_is_blank_when_the_baseline_already_beats_the_teacher():
    # a long-trained student can beat a short-trained teacher: no gap, no share
    results = [
        _result("teacher", "simvp", "supervised", 1.0, 0.2, val=0.3),
        _result("student", "unet", "none", 0.5, 0.3),
        _result("student", "unet", "sdkd", 0.8, 0.25),
    ]
    table = build_table(
        results, teachers=["simvp"], students=["unet"], methods=["none", "sdkd"], batch_sizes=[1]
    )
    row = table.set_index(["model", "method"]).loc[("unet", "sdkd")]
    assert math.isnan(row["gap_closed_mse"])  # the baseline's 0.5 beats the teacher's 1.0
    assert row["gap_closed_mae"] == pytest.approx((0.3 - 0.25) / (0.3 - 0.2))


def test_teacher_check_names_every_reason():
    results = [
        _result("teacher", "good", "supervised", 1.0, 0.2, val=0.3),
        _result("teacher", "bad", "supervised", 4.0, 0.8, val=0.9),
        _result("baseline", "persistence", "baseline", 3.0, 0.7),
        _result("student", "unet", "none", 5.0, 1.0),
        _result("student", "resnet", "none", 2.0, 0.5),
        _result("student", "unet", "sdkd", 4.5, 0.9),
    ]
    table = build_table(
        results, teachers=["good", "bad"], students=["unet", "resnet"], methods=["none", "sdkd"]
    )
    check = table.set_index("model")["teacher_check"]
    assert check["bad"] == (
        "not below persistence; not 1.5x below none of unet; not 1.5x below none of resnet"
    )
    # 1.0 <= 2.0 / 1.5 and 1.0 < 3.0: ok; with a stricter ratio resnet's none is too close
    assert check["good"] == "ok"
    strict = build_table(results, teacher_min_ratio=2.5).set_index("model")["teacher_check"]
    assert strict["good"] == "not 2.5x below none of resnet"
    # "" for every row but the teachers; blank in the Markdown, never "nan"
    assert (table.loc[table["role"] != "teacher", "teacher_check"] == "").all()
    text = to_markdown(table)
    assert "teacher_check" in text and "not below persistence" in text and "nan" not in text
    # nothing to compare with: said so, not "ok"
    alone = build_table([_result("teacher", "simvp", "supervised", 1.0, 0.2, val=0.3)])
    assert alone["teacher_check"].iloc[0].startswith("not checked")
    assert teacher_check(math.nan, 3.0, {}) == "not below persistence"


def test_baselines_are_never_the_reference_teacher():
    results = [
        _result("teacher", "simvp", "supervised", 2.0, 0.4, val=0.5),
        # a baseline with a lower "validation loss" and test error than the teacher
        _result("baseline", "persistence", "baseline", 1.0, 0.1, val=0.01),
        _result("baseline", "climatology", "baseline", 1.5, 0.2, val=0.02),
        _result("student", "unet", "none", 5.0, 1.0),
        _result("student", "unet", "sdkd", 3.0, 0.6),
    ]
    assert tables.best_teacher(results).model == "simvp"
    table = build_table(results, teachers=["simvp"], students=["unet"], methods=["none", "sdkd"])
    row = table.set_index(["model", "method"]).loc[("unet", "sdkd")]
    assert row["gap_closed_mse"] == pytest.approx((5.0 - 3.0) / (5.0 - 2.0))
    # persistence already beats the reference teacher: no gap to close against it
    assert math.isnan(row["gap_closed_vs_persistence_mse"])
    assert table.set_index("model").loc["simvp", "teacher_check"] == "not below persistence"
    assert [c for c in table.columns if c.startswith("speedup")] == [
        "speedup_vs_simvp_b1",
        "speedup_vs_simvp_b32",
    ]
    # curves keep the order and the role
    curves = tables.curves_json(
        tables._order(results, ["simvp"], ["unet"], ["none", "sdkd"]),
        dataset="demo",
        data_range=[1.0],
        channels=["u"],
    )
    assert [m["role"] for m in curves["models"]] == [
        "teacher",
        "baseline",
        "baseline",
        "student",
        "student",
    ]


def test_a_flagged_teacher_is_logged_as_a_warning(caplog):
    results = [
        _result("teacher", "good", "supervised", 1.0, 0.2, val=0.3),
        _result("teacher", "bad", "supervised", 4.0, 0.8, val=0.9),
        _result("baseline", "persistence", "baseline", 3.0, 0.7),
        _result("student", "unet", "none", 5.0, 1.0),
    ]
    table = build_table(results)
    with caplog.at_level(logging.WARNING, logger="sdkd_pipeline.evaluation"):
        checkpoints._warn_flagged_teachers(table, "demo")
    (record,) = caplog.records
    message = record.getMessage()
    assert "demo: teacher bad" in message and "not below persistence" in message
    assert "persistence/baseline 3" in message and "unet/none 5" in message


def test_teacher_check_and_baselines_parameters():
    cfg = EvaluationConfig.from_params({})
    assert cfg.teacher_min_ratio == 1.5 and cfg.baselines == ("persistence", "climatology")
    cfg = EvaluationConfig.from_params(
        {"teacher_check": {"min_ratio": 2}, "baselines": ["climatology"]}
    )
    assert cfg.teacher_min_ratio == 2.0 and cfg.baselines == ("climatology",)
    assert EvaluationConfig.from_params({"baselines": []}).baselines == ()
    for bad in (0.5, "x", True, math.inf):
        with pytest.raises(ConfigError, match=r"evaluate.teacher_check.min_ratio .*times lower"):
            EvaluationConfig.from_params({"teacher_check": {"min_ratio": bad}})
    with pytest.raises(ConfigError, match="evaluate.teacher_check"):
        EvaluationConfig.from_params({"teacher_check": 1.5})
    with pytest.raises(ConfigError, match=r"evaluate.baselines\[0\] must be one of .*disables"):
        EvaluationConfig.from_params({"baselines": ["analogue"]})
    # in their order, each once; one name for a list
    both = EvaluationConfig.from_params({"baselines": ["climatology", "persistence"]})
    assert both.baselines == ("persistence", "climatology")
    assert EvaluationConfig.from_params({"baselines": "climatology"}).baselines == ("climatology",)


def test_markdown_is_a_pipe_table():
    table = pd.DataFrame(
        {
            "model": ["a|b", "c"],
            "params": [1234, 5],
            "mse": [0.123456, math.nan],
            "psnr": [math.inf, 1e-7],
        }
    )
    text = to_markdown(table, digits=3)
    lines = text.strip().splitlines()
    assert len(lines) == 4
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    assert lines[0].split("|")[1].strip() == "model"
    assert set(lines[1].replace("|", "").replace(" ", "")) <= {"-", ":"}
    assert lines[1].rstrip(" |").endswith(":")  # numbers right-aligned
    assert "a\\|b" in lines[2] and "1,234" in lines[2] and "0.123" in lines[2]
    assert "inf" in lines[2] and "1.00e-07" in lines[3] and "nan" not in text
    # every row has the same width
    assert len({len(line) for line in lines}) == 1


def test_latency_is_positive_and_restores_threads():
    torch.set_num_threads(1)
    latency = measure_latency(
        _model("unet"), (T_IN, 2, SIZE, SIZE), [1, 3], repeats=2, warmup=1, threads=1
    )
    assert set(latency) == {1, 3} and all(v > 0 for v in latency.values())
    assert torch.get_num_threads() == 1


class _MatMul(torch.nn.Module):
    """A model whose forward is an ``n x n`` matrix product (work ~ n^3), counting its calls."""

    def __init__(self, n: int) -> None:
        super().__init__()
        weight = torch.randn(n, n, generator=torch.Generator().manual_seed(n))
        self.weight = torch.nn.Parameter(weight)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x + (self.weight @ self.weight)[0, 0]


def _fastest_call_ms(model: torch.nn.Module, x: torch.Tensor, calls: int = 5) -> float:
    times = []
    with torch.no_grad():
        for _ in range(calls):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return min(times) * 1e3


def test_latency_is_the_median_forward_time_in_milliseconds():
    # 1024 x 1024 products do 64x the work of 256 x 256: the medians differ by far more than 8x
    small, big = _MatMul(256), _MatMul(1024)
    shape = (1, 1, 4, 4)
    small_ms = measure_latency(small, shape, [1], repeats=9, warmup=1)[1]
    start = time.perf_counter()
    big_ms = measure_latency(big, shape, [1], repeats=5, warmup=0)[1]
    wall = time.perf_counter() - start
    assert big_ms > 8.0 * small_ms > 0, (big_ms, small_ms)
    # milliseconds of the forward call: at least half the fastest call timed here (a loaded
    # machine only slows calls down), and 3 of the 5 timed calls (those at or above the median)
    # fit in the wall time of the whole measurement
    assert big_ms >= 0.5 * _fastest_call_ms(big, torch.zeros(1, *shape)), big_ms
    assert 3 * big_ms / 1e3 <= wall, (big_ms, wall)


def test_latency_of_a_slow_model_stops_after_three_calls_past_the_budget():
    slow = _MatMul(512)
    measure_latency(slow, (1, 1, 4, 4), [1], repeats=9, warmup=1, max_seconds=1e-9)
    assert slow.calls == 1 + 3
    slow.calls = 0
    measure_latency(slow, (1, 1, 4, 4), [1], repeats=4, warmup=0, max_seconds=None)
    assert slow.calls == 4
    assert EvaluationConfig.from_params({}).max_seconds == 2.0
    assert EvaluationConfig.from_params({"latency": {"max_seconds": None}}).max_seconds is None
    with pytest.raises(ConfigError, match="evaluate.latency.max_seconds"):
        EvaluationConfig.from_params({"latency": {"max_seconds": 0}})


def test_evaluate_checkpoints_table_and_figures(windows):
    from matplotlib.figure import Figure

    teacher, student, baseline = _model("simvp", 1), _model("unet", 2), _model("unet", 3)
    entries = [
        ("student", "unet", "sdkd", student, {"best_val_loss": 1.0}),
        ("teacher", "simvp", "supervised", teacher, {"best_val_loss": 0.5}),
        ("student", "unet", "none", baseline, {"best_val_loss": 1.2}),
    ]
    cfg = EvaluationConfig.from_params(
        {
            "batch_size": 2,
            "latency": {"repeats": 1, "warmup": 0, "batch_sizes": [1, 2]},
            "panels": {"windows": [0, 1, 99]},
            "device": "cpu",
            "exported_latency": {"formats": []},
        }
    )
    result = evaluate_checkpoints(
        entries,
        windows,
        cfg,
        dataset="demo",
        teachers=["simvp"],
        students=["unet"],
        methods=["none", "sdkd"],
    )
    table = result.table
    assert list(table["role"]) == ["teacher", "baseline", "baseline", "student", "student"]
    assert list(table["model"]) == ["simvp", "persistence", "climatology", "unet", "unet"]
    assert list(table["method"]) == ["supervised", "baseline", "baseline", "none", "sdkd"]
    assert (table["latency_ms_b1"] > 0).all() and (table["speedup_vs_simvp_b2"] > 0).all()
    assert math.isfinite(table["gap_closed_mse"].iloc[4])
    assert math.isfinite(table["gap_closed_vs_persistence_mse"].iloc[4]) or (
        table["mse"].iloc[0] >= table["mse"].iloc[1]  # random teacher: no gap to persistence
    )
    assert table["params"].iloc[0] > 0 and table["gflops"].iloc[0] > 0
    baselines = table[table["role"] == "baseline"]
    assert (baselines["params"] == 0).all() and (baselines["gflops"] == 0).all()
    assert table["teacher_check"].iloc[0] != "" and (table["teacher_check"].iloc[1:] == "").all()
    # the baselines' MSE by hand, from the normalized windows and the training frames
    xs, ys = (torch.stack(t) for t in zip(*(windows[i] for i in range(len(windows))), strict=True))
    truth = windows.denormalize(ys).double()
    persistence = windows.denormalize(xs[:, -1:]).double()
    train = parse_splits(windows.attrs["splits"])["train"]  # trajectories 0 and 1
    frames = np.concatenate([windows.frames(t, a, b) for t, a, b in train])
    assert len(frames) == 2 * 9
    mean = windows.denormalize(torch.from_numpy(frames).double().mean(0))
    mse = table.set_index("model")["mse"]
    assert mse["persistence"] == pytest.approx(float((persistence - truth).square().mean()))
    assert mse["climatology"] == pytest.approx(float((mean - truth).square().mean()), rel=1e-5)
    for fig in (result.step_figure, result.band_figure, result.panel_figure):
        assert isinstance(fig, Figure)
    assert len(result.panel_figure.axes) >= 2 * 6  # 2 windows x (truth + 5 models), colorbars
    assert not any(c.startswith(("latency_torchscript", "latency_onnx")) for c in table.columns)
    # the two unet rows are one architecture: timed once, counted once
    students = table[table["role"] == "student"]
    assert students["latency_ms_b1"].nunique() == 1 and students["gflops"].nunique() == 1
    curves = result.curves
    assert curves["gap_reference_teacher"] == "simvp"
    assert [m["model"] for m in curves["models"]] == [
        "simvp",
        "persistence",
        "climatology",
        "unet",
        "unet",
    ]
    assert curves["baselines"]["climatology"]["train_frames"] == 2 * 9
    assert curves["teacher_check"] == {"min_ratio": 1.5}
    assert len(curves["models"][0]["metrics"]["mse_per_step"]) == T_OUT
    json.dumps(curves, allow_nan=False)


def test_panel_predictions_come_from_the_metric_pass(windows):
    models = {"a": _model("unet", 2), "b": _model("simvp", 1)}
    data_range = test_data_range(windows, batch_size=2)
    metrics, truth, kept = accuracy._evaluate_pass(
        models, windows, data_range, batch_size=2, keep=[1, 99, 0]
    )
    expected_truth, expected = predict_windows(models, windows, [1, 99, 0])
    assert set(metrics) == {"a", "b"}
    assert torch.allclose(truth, expected_truth)
    for name in models:
        assert torch.allclose(kept[name], expected[name], rtol=1e-5, atol=1e-5)


def _exported_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(("latency_torchscript", "latency_onnx"))]


def test_exported_latency_columns_are_positive(windows):
    cfg = _fast_cfg(formats=["torchscript", "onnx"], teachers=True)
    result = evaluate_checkpoints(
        _entries(windows),
        windows,
        cfg,
        dataset="demo",
        teachers=["simvp"],
        students=["unet"],
        methods=["none", "sdkd"],
    )
    table = result.table
    assert _exported_columns(table) == [
        "latency_torchscript_ms_b1",
        "latency_torchscript_ms_b2",
        "latency_onnx_ms_b1",
        "latency_onnx_ms_b2",
    ]
    # after the eager latencies, before the speedups
    columns = list(table.columns)
    assert columns.index("latency_ms_b2") < columns.index("latency_torchscript_ms_b1")
    assert columns.index("latency_onnx_ms_b2") < columns.index("speedup_vs_simvp_b1")
    formats = ["torchscript"] if deploy.onnx_missing() else ["torchscript", "onnx"]
    models = table["role"] != "baseline"  # baselines are not exported: blank
    for fmt in formats:
        for b in (1, 2):
            assert (table.loc[models, f"latency_{fmt}_ms_b{b}"] > 0).all(), (fmt, b)
            assert table.loc[~models, f"latency_{fmt}_ms_b{b}"].isna().all(), (fmt, b)
    text = to_markdown(table)
    assert "latency_torchscript_ms_b1" in text and "nan" not in text
    models = result.curves["models"]
    assert models[0]["latency_exported_ms"]["torchscript"]["1"] > 0
    assert result.curves["latency"]["exported_formats"] == ["torchscript", "onnx"]
    json.dumps(result.curves, allow_nan=False)


def test_onnx_column_is_blank_without_onnxruntime(windows, monkeypatch, caplog):
    why = "onnxruntime not installed (pip install 'sdkd-pipeline[deploy]')"
    monkeypatch.setattr(deploy, "onnx_missing", lambda: why)

    def no_onnx(*args, **kwargs):
        raise AssertionError("export_onnx called although onnxruntime is missing")

    monkeypatch.setattr(deploy, "export_onnx", no_onnx)
    caplog.set_level(logging.INFO, logger="sdkd_pipeline.evaluation")
    result = evaluate_checkpoints(
        _entries(windows),
        windows,
        _fast_cfg(),
        dataset="demo",
        teachers=["simvp"],
        students=["unet"],
        methods=["none", "sdkd"],
    )
    table = result.table
    assert _exported_columns(table) == [
        "latency_torchscript_ms_b1",
        "latency_torchscript_ms_b2",
        "latency_onnx_ms_b1",
        "latency_onnx_ms_b2",
    ]
    assert table["latency_onnx_ms_b1"].isna().all() and table["latency_onnx_ms_b2"].isna().all()
    assert pd.api.types.is_float_dtype(table["latency_onnx_ms_b1"])
    students = table["role"] == "student"
    assert (table.loc[students, "latency_torchscript_ms_b1"] > 0).all()
    assert table.loc[~students, "latency_torchscript_ms_b1"].isna().all()  # teachers: off
    onnx_lines = [r for r in caplog.records if "ONNX" in r.getMessage()]
    assert len(onnx_lines) == 1 and why in onnx_lines[0].getMessage()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "worth distilling" not in w]  # random teacher: flagged
    assert result.curves["latency"]["onnx_unavailable"] == why
    assert "nan" not in to_markdown(table)


def test_a_model_that_does_not_export_gets_blank_cells(windows, caplog):
    entries = _entries(windows)
    role, model, method, module, checkpoint = entries[1]
    entries[1] = (role, model, method, module, {"best_val_loss": 1.0})  # no weights, no shape
    entries = entries[:2]
    with caplog.at_level(logging.WARNING, logger="sdkd_pipeline.evaluation"):
        table = evaluate_checkpoints(
            entries, windows, _fast_cfg(formats=["torchscript"]), dataset="demo"
        ).table
    assert table["latency_torchscript_ms_b1"].isna().all()
    assert (table["latency_ms_b1"] > 0).all()
    assert "unet/sdkd (torchscript" in caplog.text


def test_exported_latency_parameters():
    assert EvaluationConfig.from_params({}).exported_formats == ("torchscript", "onnx")
    assert not EvaluationConfig.from_params({}).exported_teachers
    assert (
        EvaluationConfig.from_params({"exported_latency": {"formats": []}}).exported_formats == ()
    )
    assert EvaluationConfig.from_params({"exported_latency": None}).exported_formats == ()
    cfg = EvaluationConfig.from_params({"exported_latency": {"formats": "onnx", "teachers": True}})
    assert cfg.exported_formats == ("onnx",) and cfg.exported_teachers
    assert EvaluationConfig.from_params({"exported_latency": False}).exported_formats == ()
    both = EvaluationConfig.from_params({"exported_latency": {"formats": ["onnx", "torchscript"]}})
    assert both.exported_formats == ("torchscript", "onnx")
    with pytest.raises(ConfigError, match="exported_latency.formats"):
        EvaluationConfig.from_params({"exported_latency": {"formats": ["tensorrt"]}})
    with pytest.raises(ConfigError, match="exported_latency.teachers"):
        EvaluationConfig.from_params({"exported_latency": {"teachers": "yes"}})


def test_ssim_in_float32_agrees_with_float64():
    # float32 where values lie within the data range of zero (vorticity-like), float64 where a
    # large offset would cost float32 its digits; either way the per-frame torchmetrics SSIM
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    generator = torch.Generator().manual_seed(0)
    kernel = torch.ones(1, 1, 5, 5, dtype=torch.float64) / 25  # smooth, field-like frames
    base = torch.randn((12, 3, 1, 36, 36), generator=generator, dtype=torch.float64)
    truth = torch.nn.functional.conv2d(base.reshape(-1, 1, 36, 36), kernel)
    truth = truth.reshape(12, 3, 1, 32, 32) / truth.std()
    noise = torch.randn(truth.shape, generator=generator, dtype=torch.float64)
    for offset, dtype, tolerance in ((0.0, torch.float32, 1e-5), (280.0, torch.float64, 1e-10)):
        y = truth + offset
        p = y + 0.3 * noise
        data_range = float(truth.max() - truth.min())
        accumulator = MetricAccumulator(1, 3, 32, 32, [data_range], ssim_convention="torchmetrics")
        assert accumulator._ssim_dtype(p, y, data_range) == dtype
        for start in range(0, 12, 5):  # streamed, with a partial last batch
            accumulator.update(p[start : start + 5], y[start : start + 5])
        got = accumulator.compute().ssim_per_step
        frames = [
            ssim(
                p[:, t],
                y[:, t],
                gaussian_kernel=True,
                sigma=1.5,
                kernel_size=11,
                reduction="none",
                data_range=data_range,
            )
            for t in range(3)
        ]
        expected = [float(f.mean()) for f in frames]
        assert got == pytest.approx(expected, abs=tolerance), offset


def test_figures_directly():
    results = [
        _result("teacher", "simvp", "supervised", 1.0, 0.2),
        _result("student", "unet", "none", 2.0, 0.5),
    ]
    assert plot_step_curves(results).axes
    assert plot_band_errors(results, title="t").axes
    truth = torch.randn(1, 2, 1, SIZE, SIZE)
    fig = plot_prediction_panel(truth, {"a": truth + 0.1}, step=-1)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    fields = [im for im in images if im.get_gid().startswith("field:")]
    # 2 lead times of the truth and the forecast, and the forecast's 2 error maps
    assert len(fields) == 4 and len(images) == 6
    assert len({im.get_clim() for im in fields}) == 1


def test_bad_parameters_are_named():
    with pytest.raises(ConfigError, match=r"^evaluate\.latency\.repeats must be >= 1, got 0$"):
        EvaluationConfig.from_params({"latency": {"repeats": 0}})
    with pytest.raises(ConfigError, match=r"^evaluate\.batch_size must be an integer, got 'x'$"):
        EvaluationConfig.from_params({"batch_size": "x"})
    with pytest.raises(ConfigError, match=r"^evaluate\.latency\.batch_sizes\[1\] must be >= 1"):
        EvaluationConfig.from_params({"latency": {"batch_sizes": [1, 0]}})
    with pytest.raises(ConfigError, match=r"^evaluate\.latency\.batch_sizes must not be empty"):
        EvaluationConfig.from_params({"latency": {"batch_sizes": []}})
    with pytest.raises(ConfigError, match=r"^evaluate\.panels\.window: unknown parameter"):
        EvaluationConfig.from_params({"panels": {"window": [0]}})
    with pytest.raises(ConfigError, match=r"^evaluate\.latncy: unknown parameter \(allowed: b"):
        EvaluationConfig.from_params({"latncy": {}})
    # one value for a list, and a null section
    cfg = EvaluationConfig.from_params({"latency": {"batch_sizes": 8}, "panels": None})
    assert cfg.batch_sizes == (8,) and cfg.panel_windows == (0,)


def test_the_package_reexports_every_name_from_its_module():
    import importlib

    import sdkd_pipeline.evaluation as evaluation

    assert sorted(evaluation.__all__) == sorted(evaluation._EXPORTS)
    for name, module in evaluation._EXPORTS.items():
        defined = importlib.import_module(f"sdkd_pipeline.evaluation.{module}")
        assert getattr(evaluation, name) is getattr(defined, name), name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        evaluation.nothing  # noqa: B018


def test_library_imports_without_kedro_mlflow_zarr_dask():
    code = (
        "import sys; from sdkd_pipeline.evaluation import *; "
        "bad = [m for m in ('kedro', 'mlflow', 'zarr', 'dask') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cuda_latency_columns_appear_when_timed():
    teacher = _result("teacher", "simvp", "supervised", 1.0, 0.2, val=0.3)
    teacher.latency_cuda_ms = {1: 0.5, 32: 1.0}
    table = build_table([teacher, _result("student", "unet", "none", 2.0, 0.5)])
    assert list(table.columns[13:17]) == [
        "latency_ms_b1",
        "latency_ms_b32",
        "latency_cuda_ms_b1",
        "latency_cuda_ms_b32",
    ]
    assert math.isnan(table["latency_cuda_ms_b1"].iloc[1])
