"""Accuracy of every model on the test split, in one streamed pass.

Imports only torch at module level, so it runs without Kedro, MLflow, Zarr or Dask.

Every accuracy metric is computed by ``metrics.MetricAccumulator`` on de-normalized fields,
streamed over the test loader (the split is never held in memory), with the models in eval
mode under ``torch.no_grad``; every model's predictions are computed once, in that pass (the
prediction panel's windows are kept from it). PSNR and SSIM use one explicit data range per
channel, ``max - min`` of the test split's truth, computed once per dataset
(``test_data_range``) and used for every model; SSIM in the convention ``ssim_convention``
(``metrics.SSIM_CONVENTIONS``, default ``metrics.DEFAULT_SSIM_CONVENTION``). A module with
``uses_window_index`` (the climatology of ``baselines``) also gets the indices of the batch's
windows in the split.

On a lat/lon grid the latitude-weighted MSE and RMSE (``metrics``, ``mse_lat`` / ``rmse_lat``)
are added when the pass has the latitude of each grid row (``latitudes=``, which the evaluate
node takes from ``evaluate.lat_weighted`` through ``lat_weighting_latitudes``); ``None``: no
such metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from sdkd_pipeline.errors import ConfigError, DataError
from sdkd_pipeline.evaluation.metrics import (
    DEFAULT_SSIM_CONVENTION,
    ForecastMetrics,
    MetricAccumulator,
    data_range_from,
    latitude_weights,
)

__all__ = [
    "LATITUDE_NAMES",
    "evaluate_models",
    "lat_weighting_latitudes",
    "predict_windows",
    "test_data_range",
]

# Names of a latitude coordinate: the weather readers' ``lat`` and the CF/ERA5 ``latitude``.
LATITUDE_NAMES = ("lat", "latitude")


def _loader(windows: Any, batch_size: int) -> DataLoader:
    return DataLoader(windows, batch_size=batch_size, shuffle=False, num_workers=0)


def test_data_range(windows: Any, batch_size: int = 16) -> torch.Tensor:
    """``max - min`` of each channel over the de-normalized truth of ``windows`` (streamed)."""
    return data_range_from(
        (windows.denormalize(y) for _, y in _loader(windows, batch_size)),
        channel_names=getattr(windows, "channels", None),
    )


test_data_range.__test__ = False  # not a pytest test, whatever its name


def lat_weighting_latitudes(
    mode: Any, tensors: Any, *, dataset: str, param: str = "evaluate.lat_weighted"
) -> Any:
    """The latitudes (degrees, one per grid row) the lat-weighted metrics of ``dataset`` use,
    or ``None`` for none, per the option ``param`` = ``mode``.

    ``tensors`` is the tensor store (an ``xarray.Dataset``); its latitude coordinate is a 1-D
    coordinate named as in ``LATITUDE_NAMES`` along the rows (``fields``' dim -2, ``y``).
    ``"auto"``: its values when there is one, else ``None``; ``True``: its values, a
    ``ConfigError`` naming ``param`` and ``dataset`` when there is none; ``False``: ``None``.
    A latitude coordinate ``latitude_weights`` refuses raises its ``DataError``, naming the
    dataset and the coordinate.
    """
    if mode is False:
        return None
    if not (mode is True or (isinstance(mode, str) and mode == "auto")):
        raise ConfigError(f"{param} must be one of 'auto', True, False, got {mode!r}")
    fields = tensors["fields"] if "fields" in tensors else None
    rows = fields.dims[-2] if fields is not None and len(fields.dims) >= 2 else "y"
    name = next(
        (
            n
            for n in LATITUDE_NAMES
            if n in tensors.coords and tuple(tensors.coords[n].dims) == (rows,)
        ),
        None,
    )
    if name is None:
        if mode == "auto":
            return None
        raise ConfigError(
            f"{param} is true but dataset {dataset!r} has no latitude coordinate along its "
            f"rows (a 1-D {' or '.join(map(repr, LATITUDE_NAMES))} on dim {rows!r}; its "
            f"coordinates: {', '.join(map(str, tensors.coords)) or 'none'}): set {param} to "
            "auto or false for a grid that is not lat/lon"
        )
    latitudes = tensors.coords[name].values
    height = int(fields.shape[-2]) if fields is not None else None
    try:
        latitude_weights(latitudes, height)
    except DataError as exc:
        raise DataError(
            f"dataset {dataset!r}: its latitude coordinate {name!r} cannot weight the metrics "
            f"({param}): {exc}"
        ) from exc
    return latitudes


def _forward(
    model: torch.nn.Module, x: torch.Tensor, window_index: torch.Tensor | None = None
) -> torch.Tensor:
    """``model(x)`` as a float tensor; a module with ``uses_window_index`` (the climatology)
    also gets the indices of the batch's windows in the split."""
    if window_index is not None and getattr(model, "uses_window_index", False):
        out = model(x, window_index=window_index)
    else:
        out = model(x)
    if isinstance(out, Mapping):
        out = out["prediction"]
    elif isinstance(out, (tuple, list)):
        out = out[0]
    return out.float()


def evaluate_models(
    models: Mapping[str, torch.nn.Module],
    windows: Any,
    data_range: Sequence[float] | torch.Tensor,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    ssim_convention: str = DEFAULT_SSIM_CONVENTION,
    latitudes: Any = None,
) -> dict[str, ForecastMetrics]:
    """Metrics of each model on ``windows`` (a WindowDataset: normalized ``(x, y)`` items and
    ``denormalize``), in one streamed pass over the loader; every model sees each batch. SSIM
    in the convention ``ssim_convention`` (``"skimage"`` or ``"torchmetrics"``); the
    latitude-weighted MSE and RMSE with ``latitudes`` (one per grid row, degrees; none by
    default)."""
    metrics, _, _ = _evaluate_pass(
        models,
        windows,
        data_range,
        batch_size=batch_size,
        device=device,
        ssim_convention=ssim_convention,
        latitudes=latitudes,
    )
    return metrics


def _chosen_windows(windows: Any, indices: Iterable[int]) -> list[int]:
    return [i for i in indices if 0 <= i < len(windows)] or [0]


def _evaluate_pass(
    models: Mapping[str, torch.nn.Module],
    windows: Any,
    data_range: Sequence[float] | torch.Tensor,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    keep: Iterable[int] = (),
    ssim_convention: str = DEFAULT_SSIM_CONVENTION,
    observe: Callable[[str | None, torch.Tensor], None] | None = None,
    latitudes: Any = None,
) -> tuple[dict[str, ForecastMetrics], torch.Tensor | None, dict[str, torch.Tensor]]:
    """``evaluate_models``, also keeping the de-normalized truth ``(K, T, C, H, W)`` and each
    model's prediction of windows ``keep`` (as ``predict_windows`` picks them; ``None`` and
    ``{}`` when ``keep`` is empty), so the panel needs no second forward pass. ``observe``, if
    given, sees every batch too: ``observe(None, truth)``, then ``observe(name, prediction)``
    per model, de-normalized (the figures' spectra, ``plots.TestPassFields``). ``latitudes``
    as ``evaluate_models``'."""
    if not models:
        raise ConfigError("evaluate_models: no model to evaluate")
    device = torch.device(device)
    x0, y0 = windows[0]
    steps, channels, height, width = (int(s) for s in y0.shape)
    accumulators = {
        name: MetricAccumulator(
            channels,
            steps,
            height,
            width,
            data_range,
            ssim_convention=ssim_convention,
            latitudes=latitudes,
        )
        for name in models
    }
    keep = list(keep)
    chosen = _chosen_windows(windows, keep) if keep else []
    kept_truth: dict[int, torch.Tensor] = {}
    kept: dict[str, dict[int, torch.Tensor]] = {name: {} for name in models}
    states = {}
    for name, model in models.items():
        states[name] = model.training
        model.to(device).eval()
    try:
        with torch.no_grad():
            start = 0
            for x, y in _loader(windows, batch_size):
                x = x.to(device)
                truth = windows.denormalize(y.to(device))
                rows = {i: i - start for i in chosen if start <= i < start + len(x)}
                for i, row in rows.items():
                    kept_truth[i] = truth[row].cpu()
                if observe is not None:
                    observe(None, truth)
                index = torch.arange(start, start + len(x))
                for name, model in models.items():
                    prediction = windows.denormalize(_forward(model, x, index))
                    accumulators[name].update(prediction, truth)
                    if observe is not None:
                        observe(name, prediction)
                    for i, row in rows.items():
                        kept[name][i] = prediction[row].cpu()
                start += len(x)
    finally:
        for name, model in models.items():
            model.train(states[name])
    metrics = {name: acc.compute() for name, acc in accumulators.items()}
    if not chosen:
        return metrics, None, {}
    truth = torch.stack([kept_truth[i] for i in chosen])
    predictions = {name: torch.stack([kept[name][i] for i in chosen]) for name in models}
    return metrics, truth, predictions


def predict_windows(
    models: Mapping[str, torch.nn.Module],
    windows: Any,
    indices: Iterable[int],
    *,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """De-normalized truth ``(K, T, C, H, W)`` and each model's prediction for windows
    ``indices`` (out-of-range indices are dropped; at least window 0 is used)."""
    device = torch.device(device)
    chosen = _chosen_windows(windows, indices)
    xs, ys = zip(*(windows[i] for i in chosen), strict=True)
    x = torch.stack(xs).to(device)
    truth = windows.denormalize(torch.stack(ys))
    predictions = {}
    with torch.no_grad():
        for name, model in models.items():
            was = model.training
            model.to(device).eval()
            index = torch.as_tensor(chosen, dtype=torch.long)
            predictions[name] = windows.denormalize(_forward(model, x, index)).cpu()
            model.train(was)
    return truth, predictions
