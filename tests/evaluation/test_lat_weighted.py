"""The latitude-weighted MSE / RMSE (WeatherBench, Rasp et al. 2020) and ``evaluate.lat_weighted``:
weights cos(lat) / mean cos(lat) on a global 5-degree grid (on the 33-row UK box of the ERA5
fixture they barely differ from 1), a hand computation in numpy, the clear errors, and the
evaluate node's ``mse_lat`` / ``rmse_lat`` columns for a store with a latitude coordinate only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.errors import ConfigError, DataError
from sdkd_pipeline.evaluation import EvaluationConfig
from sdkd_pipeline.evaluation.accuracy import lat_weighting_latitudes
from sdkd_pipeline.evaluation.metrics import (
    ForecastMetrics,
    MetricAccumulator,
    latitude_weights,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A global grid: latitudes -87.5 .. 87.5 every 5 degrees (36 rows), 72 longitudes.
GLOBAL_LAT = np.arange(-87.5, 90.0, 5.0)
GLOBAL_LON = np.arange(0.0, 360.0, 5.0)
# The ERA5 fixture's UK box (tests/fixtures/era5-2mt-2019-03-uk.grib): 33 x 49, 50..58 N.
UK_LAT = np.linspace(50.0, 58.0, 33)
N, T, C = 3, 2, 2
H, W = GLOBAL_LAT.size, GLOBAL_LON.size


def _fields(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    truth = rng.normal(280.0, 10.0, size=(N, T, C, H, W))
    prediction = truth + rng.normal(0.0, 1.0, size=truth.shape) * np.linspace(0.5, 2, H)[:, None]
    return torch.from_numpy(prediction), torch.from_numpy(truth)


def _accumulate(prediction, truth, latitudes=GLOBAL_LAT, batch=None) -> ForecastMetrics:
    acc = MetricAccumulator(C, T, H, W, [50.0] * C, latitudes=latitudes)
    step = batch or len(prediction)
    for start in range(0, len(prediction), step):
        acc.update(prediction[start : start + step], truth[start : start + step])
    return acc.compute()


def test_the_weights_are_cos_lat_over_its_mean_and_average_to_one():
    weights = latitude_weights(GLOBAL_LAT, H)
    cos = np.cos(np.deg2rad(GLOBAL_LAT))
    assert weights.dtype == np.float64 and weights.shape == (36,)
    np.testing.assert_allclose(weights, cos / cos.mean(), rtol=1e-15)
    assert weights.mean() == pytest.approx(1.0, abs=1e-15)
    # the equator's rows weigh ~1.57, the rows next to the poles ~0.07
    assert weights.max() == pytest.approx(1.5688, abs=1e-4)
    assert weights.min() == pytest.approx(0.0685, abs=1e-4)


def test_on_the_uk_box_the_weights_barely_differ_from_one():
    weights = latitude_weights(UK_LAT, 33)
    # 50..58 N: 0.902 (58 N) to 1.095 (50 N), within 9.8 % of 1
    assert weights.max() == pytest.approx(1.0945, abs=1e-4)
    assert weights.min() == pytest.approx(0.9023, abs=1e-4)
    assert np.abs(weights - 1).max() == pytest.approx(0.0977, abs=1e-4)
    # a wider 33-row box, 49..61 N: 0.847 to 1.146, within 15.3 % of 1
    wider = latitude_weights(np.linspace(49.0, 61.0, 33))
    assert np.abs(wider - 1).max() == pytest.approx(0.1531, abs=1e-4)


def test_lat_weighted_mse_equals_a_hand_computation():
    prediction, truth = _fields()
    p, y = prediction.numpy(), truth.numpy()
    cos = np.cos(np.deg2rad(GLOBAL_LAT))
    w = (cos / cos.mean())[None, None, :, None]  # (C, H, W) broadcast: one weight per row
    per_step = np.array([np.mean(w * (p[:, t] - y[:, t]) ** 2) for t in range(T)])
    metrics = _accumulate(prediction, truth)
    np.testing.assert_allclose(metrics.mse_lat_per_step, per_step, rtol=1e-12)
    np.testing.assert_allclose(metrics.rmse_lat_per_step, np.sqrt(per_step), rtol=1e-12)
    assert metrics.mse_lat == pytest.approx(np.mean(w[None] * (p - y) ** 2), rel=1e-12)
    assert metrics.mse_lat == pytest.approx(per_step.mean(), rel=1e-12)
    # RMSE as the module's convention: sqrt of the overall MSE, not the mean of per-step RMSEs
    assert metrics.rmse_lat == pytest.approx(math.sqrt(per_step.mean()), rel=1e-12)
    # the error varies with latitude here: the weighted MSE is not the plain one
    assert metrics.mse_lat != pytest.approx(metrics.mse, rel=1e-3)
    # streamed in batches of 1: the same numbers
    streamed = _accumulate(prediction, truth, batch=1)
    np.testing.assert_allclose(streamed.mse_lat_per_step, metrics.mse_lat_per_step, rtol=1e-12)


def test_an_error_at_the_poles_counts_less_than_the_same_error_at_the_equator():
    truth = torch.zeros(N, T, C, H, W, dtype=torch.float64)
    polar, equatorial = truth.clone(), truth.clone()
    polar[..., [0, -1], :] = 1.0  # the rows at 87.5 S and 87.5 N
    equatorial[..., [17, 18], :] = 1.0  # the rows at 2.5 S and 2.5 N
    at_poles, at_equator = _accumulate(polar, truth), _accumulate(equatorial, truth)
    assert at_poles.mse == pytest.approx(at_equator.mse, rel=1e-15)  # unweighted: the same
    assert at_poles.mse_lat < at_equator.mse_lat / 20
    weights = latitude_weights(GLOBAL_LAT)
    assert at_poles.mse_lat == pytest.approx(2 * weights[0] / H, rel=1e-12)
    assert at_equator.mse_lat == pytest.approx(2 * weights[17] / H, rel=1e-12)


def test_a_uniform_error_gives_the_unweighted_mse():
    _, truth = _fields()
    metrics = _accumulate(truth + 0.75, truth)
    assert metrics.mse == pytest.approx(0.5625, rel=1e-12)
    assert metrics.mse_lat == pytest.approx(metrics.mse, rel=1e-12)
    assert metrics.rmse_lat == pytest.approx(0.75, rel=1e-12)


def test_lat_weighted_metrics_round_trip_and_are_flat_keys():
    prediction, truth = _fields()
    metrics = _accumulate(prediction, truth)
    assert ForecastMetrics.from_dict(metrics.to_dict()) == metrics
    flat = metrics.flat()
    assert flat["mse_lat"] == metrics.mse_lat and flat["rmse_lat_step_02"] > 0
    # without latitudes (not a lat/lon grid): no such metric, no such key
    plain = MetricAccumulator(C, T, H, W, [50.0] * C)
    plain.update(prediction, truth)
    plain = plain.compute()
    assert plain.mse_lat is None and not plain.lat_weighted
    assert "mse_lat" not in plain.to_dict() and "mse_lat" not in plain.flat()
    assert plain.mse == pytest.approx(metrics.mse, rel=1e-15)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("latitudes", "message"),
    [
        (np.r_[GLOBAL_LAT[:-1], np.nan], r"1 NaN/Inf value\(s\) out of 36"),
        (np.r_[GLOBAL_LAT[:-1], 95.0], r"within \[-90, 90\] degrees.*1 outside"),
        (GLOBAL_LAT[:-1], r"one latitude per grid row \(H = 36\), got 35"),
        (np.tile(GLOBAL_LAT, (2, 1)), r"1-D, one latitude per grid row"),
        (np.full(H, 90.0), r"all at a pole"),
        (["north"] * H, r"must be numbers"),
    ],
    ids=["nan", "beyond-90", "one-short", "2-d", "all-poles", "text"],
)
def test_bad_latitudes_are_refused_naming_what_is_wrong(latitudes, message):
    with pytest.raises(DataError, match=message):
        MetricAccumulator(C, T, H, W, [1.0] * C, latitudes=latitudes)


# -- evaluate.lat_weighted -------------------------------------------------------------------


def _store(coords: str | None = "lat", latitudes: np.ndarray = GLOBAL_LAT):
    """A small tensor store on the global grid: 4 trajectories of 9 frames, one channel in K;
    ``coords`` names its latitude coordinate along y (None: a grid that is not lat/lon)."""
    rng = np.random.default_rng(1)
    fields = rng.normal(280.0, 5.0, size=(4, 9, 1, H, W)).astype(np.float32)
    extra = None if coords is None else {coords: ("y", latitudes), "lon": ("x", GLOBAL_LON)}
    raw = make_raw(
        fields,
        dataset="globe",
        source="test:globe",
        channels=["t2m"],
        time=np.arange(9.0),
        extra_coords=extra,
    )
    return build_tensor_dataset(raw, split=SplitConfig(2, 1, 1), window=WindowConfig(2, 2)).load()


def test_the_option_defaults_to_auto_and_takes_true_and_false():
    assert EvaluationConfig.from_params({}).lat_weighted == "auto"
    for value in ("auto", True, False):
        assert EvaluationConfig.from_params({"lat_weighted": value}).lat_weighted == value


@pytest.mark.parametrize("name", ["lat", "latitude"])
def test_auto_and_true_take_the_latitude_coordinate_along_the_rows(name):
    tensors = _store(name)
    for mode in ("auto", True):
        found = lat_weighting_latitudes(mode, tensors, dataset="globe")
        np.testing.assert_array_equal(found, GLOBAL_LAT)
    assert lat_weighting_latitudes(False, tensors, dataset="globe") is None
    assert lat_weighting_latitudes("auto", _store(None), dataset="ns") is None


@pytest.mark.bad_input
def test_a_bad_lat_weighted_value_is_refused_naming_the_parameter():
    with pytest.raises(ConfigError, match=r"evaluate\.lat_weighted must be one of 'auto'.*'yes'"):
        EvaluationConfig.from_params({"lat_weighted": "yes"})


@pytest.mark.bad_input
def test_lat_weighted_true_without_a_latitude_coordinate_names_parameter_and_dataset():
    with pytest.raises(
        ConfigError,
        match=r"evaluate\.lat_weighted is true but dataset 'navier_stokes' has no latitude "
        r"coordinate along its rows.*'y'",
    ):
        lat_weighting_latitudes(True, _store(None), dataset="navier_stokes")


@pytest.mark.bad_input
def test_a_latitude_coordinate_out_of_range_names_the_dataset_and_coordinate():
    radians = np.deg2rad(GLOBAL_LAT) * 100  # not degrees
    with pytest.raises(
        DataError, match=r"dataset 'globe': its latitude coordinate 'lat'.*\[-90, 90\] degrees"
    ):
        lat_weighting_latitudes("auto", _store("lat", radians), dataset="globe")


# -- the evaluate node -----------------------------------------------------------------------

EVALUATE = {
    "batch_size": 2,
    "latency": {"repeats": 1, "warmup": 0, "batch_sizes": [1]},
    "device": "cpu",
    "exported_latency": {"formats": []},
}


def test_the_evaluate_node_adds_lat_columns_for_a_lat_lon_store_only(tmp_path, monkeypatch):
    """The baselines' rows (no checkpoint needed) of the evaluate node: ``mse_lat`` and
    ``rmse_lat`` in the table and on the MLflow run for the global store, not for a store
    without a latitude coordinate, nor with ``lat_weighted: false``."""
    mlflow = pytest.importorskip("mlflow")
    from sdkd_pipeline.pipelines.evaluate.nodes import evaluate_dataset

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking = {"experiment": "lat", "system_metrics": {"enabled": False}}

    def evaluate(tensors, **params):
        table, _, curves, *_ = evaluate_dataset(
            tensors, {**EVALUATE, **params}, tracking, dataset="globe"
        )
        return table, curves

    table, curves = evaluate(_store("lat"))
    assert list(table.columns[5:12]) == [
        "mse",
        "mae",
        "rmse",
        "psnr",
        "ssim",
        "mse_lat",
        "rmse_lat",
    ]
    assert list(table["model"]) == ["persistence", "climatology"]
    assert table["mse_lat"].notna().all()
    assert np.allclose(table["rmse_lat"], np.sqrt(table["mse_lat"]))
    assert not np.allclose(table["mse_lat"], table["mse"])  # random fields: the weights count
    metrics = mlflow.MlflowClient(tracking_uri=uri).get_run(curves["mlflow_run_id"]).data.metrics
    assert metrics["persistence/baseline.mse_lat"] == pytest.approx(table["mse_lat"][0])
    assert "persistence/baseline.rmse_lat_step_01" in metrics
    assert curves["models"][0]["metrics"]["mse_lat"] == pytest.approx(table["mse_lat"][0])

    for tensors, params in ((_store(None), {}), (_store("lat"), {"lat_weighted": False})):
        table, curves = evaluate(tensors, **params)
        assert not {"mse_lat", "rmse_lat"} & set(table.columns)
        assert "mse_lat" not in curves["models"][0]["metrics"]
