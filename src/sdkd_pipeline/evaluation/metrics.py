"""Evaluation metrics of a forecast: the one place where they are defined.

Imports only torch, numpy and torchmetrics, so it runs without Kedro, MLflow, Zarr or Dask.

Definitions
-----------
Predictions ``P`` and truths ``Y`` have shape ``(N, T, C, H, W)``: N samples, T forecast steps,
C channels on an H x W grid. Every sum below is accumulated in float64.

- **Units.** All metrics are computed on de-normalized fields, in physical units: callers pass
  predictions and truths already de-normalized. Predictions are not clipped to the data range
  before any metric (OpenSTL clips after MSE for some metrics; we never clip).
- **MSE, MAE.** The mean over all of N, C, H and W of ``(P - Y)^2`` and ``|P - Y|``, i.e. per pixel
  and per channel, not summed over C*H*W as OpenSTL does for some datasets. Reported per forecast
  step t (``mse_per_step``, a vector of length T) and averaged over the steps (``mse``); every
  step counts the same number of values, so ``mse`` is also the mean over all of N, T, C, H, W.
- **RMSE.** Per step, the square root of that step's MSE; overall, the square root of the
  overall MSE, ``sqrt(mse)``, which is not the mean of the per-step RMSEs.
- **Latitude-weighted MSE, RMSE** (lat/lon grids only: ``MetricAccumulator(latitudes=...)``, one
  latitude in degrees per grid row; WeatherBench, Rasp et al. 2020). Row h has the weight
  ``w_h = cos(lat_h) / mean_h' cos(lat_h')`` over the H rows (``latitude_weights``), so the
  weights average to 1 and a uniform error gives the plain MSE. ``mse_lat`` is the mean over
  N, C, H, W of ``w_h (P - Y)^2``, per step (``mse_lat_per_step``) and averaged over the steps;
  ``rmse_lat`` follows the RMSE convention above: per step ``sqrt(mse_lat_t)``, overall
  ``sqrt(mse_lat)``. WeatherBench instead averages over forecast times the RMSE of each
  forecast (the square root taken per sample), which is never larger (Jensen); ours is the
  square root of the split's weighted MSE. Latitudes must be finite, within [-90, 90] and one
  per row, and not all at a pole (a ``DataError`` says which is violated). Without latitudes
  these fields are ``None`` and absent from ``to_dict`` and ``flat``.
- **PSNR.** ``10 log10(R_c^2 / MSE_{t,c})`` in dB, where ``MSE_{t,c}`` is the MSE of channel c at
  step t over all of N, H, W and ``R_c`` is an explicit data range per channel, passed in by the
  caller (the evaluation passes ``max - min`` of the channel over the test split's truth, see
  ``data_range_from``; that choice is the caller's). Averaged over channels per step
  (``psnr_per_step``), then over steps (``psnr``). It is computed from the MSE of the whole
  split, not averaged over per-frame PSNRs. An error of exactly zero gives ``+inf``, which
  propagates to the averages.
- **SSIM.** Computed on each (sample, step, channel) 2-D frame with the explicit data range
  ``R_c`` of its channel (``C1 = (0.01 R_c)^2``, ``C2 = (0.03 R_c)^2``), never inferred from the
  data, then averaged over samples and channels per step (``ssim_per_step``) and over steps
  (``ssim``). Two conventions (``ssim_convention``; ``evaluate.ssim.convention``), which differ
  in the window and in which pixels of the SSIM map are averaged; the result records which
  (``ForecastMetrics.ssim_convention``):

  - ``"skimage"`` (the default, ``DEFAULT_SSIM_CONVENTION``): what OpenSTL computes, whose
    numbers the paper's tables follow. OpenSTL calls ``skimage.metrics.structural_similarity``
    with its defaults: a 7 x 7 uniform window, sample covariances (the windowed
    ``E[xy] - E[x]E[y]`` times ``49 / 48``), k1 = 0.01, k2 = 0.03, and the map averaged only
    where the window lies inside the frame (3 cells cropped along every border: the mean of an
    (H - 6) x (W - 6) map, so no padding enters). Here a batched torch implementation (two
    separable ``avg_pool2d`` passes, always float64, about as fast as float32 on the CPU)
    equal to ``structural_similarity(p, y, data_range=R_c, win_size=7, gaussian_weights=False,
    use_sample_covariance=True)`` to ~1e-11 (tested); OpenSTL's per-frame channel average is
    our average over channels. One deliberate difference: OpenSTL passes no ``data_range``, so
    the skimage it pins (<= 0.19) assumes a range of 2 for float images; we pass ``R_c``
    (recent skimage refuses a float image without one). Needs H, W >= 7.
  - ``"torchmetrics"``: ``torchmetrics.functional.structural_similarity_index_measure`` with a
    gaussian kernel of 11 points and sigma 1.5 (population covariances), whose map covers the
    whole frame: the 5 cells along each border are averaged too, their windows filled by
    reflect padding. The window and the border both change the number: the two conventions
    differ by a few per cent (1-4 % on smooth random fields from 16 x 16 to 128 x 128, the
    border's share largest on small grids). Needs H, W >= 6. Precision: on the CPU a batch's
    channel whose values all lie within ``R_c`` of zero (``max |P|, |Y| <= R_c``, e.g.
    vorticity, velocities, anomalies) runs in float32, 10-100x faster than float64 there and
    within ~1e-5 of it (tested); any other channel (a large offset such as temperature in K,
    where float32's ``E[x^2] - E[x]^2`` loses digits), and every channel on other devices (no
    TF32 risk on GPUs), runs in float64.

  The sums over frames are float64 either way.
- **Band errors (Plancherel).** The error field ``P - Y`` is split by radial wavenumber into
  three bands, ``spectral.BandSplit.log_spaced(H, W, 3)``: low, mid and high, with cutoffs
  log-spaced between ``|k| = 1`` and the grid's largest ``|k|`` (the mean, k = 0, is in the low
  band). ``band_mse[b]`` is the band's error energy divided by the same count as the MSE, so the
  three band MSEs sum to the MSE exactly (to float64 rounding); per step
  (``band_mse_per_step``) and averaged over steps (``band_mse``).
- **Gap closed.** ``gap_closed(student, baseline, teacher) = (baseline - student) /
  (baseline - teacher)`` for any one metric, with ``baseline`` the student trained without
  distillation. Positive means the method moved the student toward the teacher, 1 means it
  reached the teacher, above 1 past it, 0 no change, negative away from it; the same formula
  serves lower-is-better (MSE) and higher-is-better (PSNR, SSIM) metrics. NaN when
  ``baseline == teacher``.

Streaming: ``MetricAccumulator`` keeps float64 sums over batches, so an evaluation never holds
the whole test split; its result equals the one computed on the concatenated data up to float64
rounding (float32 rounding, ~1e-7, for an SSIM computed in float32), whatever the batch sizes.
A prediction or truth with NaN or Inf is refused with a ValueError, so a diverged model cannot
produce a silent NaN table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from sdkd_pipeline.evaluation.latitude import latitude_weights
from sdkd_pipeline.evaluation.metric_inputs import (
    _as_tensor,
    _autocast_off,
    _check_data_range,
    _check_finite,
    _check_positive_int,
)
from sdkd_pipeline.evaluation.ssim_kernels import SSIM_UNIFORM_WINDOW, _skimage_ssim
from sdkd_pipeline.spectral import BandSplit

__all__ = [
    "BAND_NAMES",
    "DEFAULT_SSIM_CONVENTION",
    "LAT_WEIGHTED_NAMES",
    "SSIM_CONVENTIONS",
    "ForecastMetrics",
    "MetricAccumulator",
    "data_range_from",
    "gap_closed",
    "latitude_weights",
]

BAND_NAMES: tuple[str, ...] = ("low", "mid", "high")
# The latitude-weighted metrics (module docstring), present only on a lat/lon grid.
LAT_WEIGHTED_NAMES: tuple[str, ...] = ("mse_lat", "rmse_lat")

# The SSIM conventions (module docstring): "skimage" is OpenSTL's, whose numbers the paper's
# tables follow, hence the default.
SSIM_CONVENTIONS: tuple[str, ...] = ("skimage", "torchmetrics")
DEFAULT_SSIM_CONVENTION = "skimage"
# torchmetrics convention: gaussian window
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5
# skimage convention: skimage's default uniform window, its side and the border it crops
_SSIM_CROP = (SSIM_UNIFORM_WINDOW - 1) // 2
# Smallest grid side per convention: torchmetrics pads each frame by reflection with
# (kernel - 1) / 2 = 5 cells, and reflect padding needs more cells than that along each axis;
# skimage's window must fit in the frame.
_SSIM_MIN_SIZE = {"skimage": SSIM_UNIFORM_WINDOW, "torchmetrics": SSIM_KERNEL_SIZE // 2 + 1}
_SSIM_WINDOW_NAME = {
    "skimage": f"skimage's {SSIM_UNIFORM_WINDOW}-point uniform window",
    "torchmetrics": f"torchmetrics' {SSIM_KERNEL_SIZE}-point gaussian window",
}
# Pixels per SSIM call: bounds the temporaries (about a dozen copies) to a few 100 MB.
_SSIM_PIXELS_PER_CALL = 2**22
# float32 SSIM on the CPU only where max(|P|, |Y|) <= this times R_c: there it agrees with
# float64 to ~1e-5 (tests/test_evaluation.py); with a large offset it does not (cancellation in
# torchmetrics' E[x^2] - E[x]^2), and float64 is used.
_SSIM_FLOAT32_MAX_OFFSET = 1.0


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------


def _json_float(value: float) -> float | str:
    """Finite floats as they are; +inf (PSNR of an exact forecast) as ``"inf"`` for strict JSON."""
    return value if math.isfinite(value) else str(value)


def _step_key(step: int, steps: int) -> str:
    return f"step_{step:0{max(2, len(str(steps)))}d}"


@dataclass(frozen=True)
class ForecastMetrics:
    """Metrics of one model on one split (definitions in the module docstring).

    Scalars are averaged over the forecast steps; ``*_per_step`` tuples have one value per step
    (step 1 first). ``band_mse`` maps ``low`` / ``mid`` / ``high`` to the band's MSE and
    ``band_mse_per_step`` to its per-step tuple. ``band_cutoffs`` are the two ``|k|`` cutoffs of
    the bands, ``data_range`` the ``R_c`` used for PSNR and SSIM, ``n_samples`` the N seen,
    ``ssim_convention`` the SSIM convention (one of ``SSIM_CONVENTIONS``). ``mse_lat``,
    ``rmse_lat`` and their ``*_per_step`` are the latitude-weighted metrics, ``None`` unless the
    accumulator had latitudes.
    """

    mse: float
    mae: float
    rmse: float
    psnr: float
    ssim: float
    mse_per_step: tuple[float, ...]
    mae_per_step: tuple[float, ...]
    rmse_per_step: tuple[float, ...]
    psnr_per_step: tuple[float, ...]
    ssim_per_step: tuple[float, ...]
    band_mse: dict[str, float]
    band_mse_per_step: dict[str, tuple[float, ...]]
    band_cutoffs: tuple[float, ...]
    data_range: tuple[float, ...]
    n_samples: int
    ssim_convention: str = DEFAULT_SSIM_CONVENTION
    mse_lat: float | None = None
    rmse_lat: float | None = None
    mse_lat_per_step: tuple[float, ...] | None = None
    rmse_lat_per_step: tuple[float, ...] | None = None

    @property
    def steps(self) -> int:
        return len(self.mse_per_step)

    @property
    def lat_weighted(self) -> bool:
        """Whether the latitude-weighted metrics were computed (a lat/lon grid)."""
        return self.mse_lat is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists and floats for ``json.dumps(..., allow_nan=False)``.

        The only non-finite value a metric can take, a PSNR of ``+inf``, is written as the
        string ``"inf"``; ``from_dict`` reads it back.
        """
        out: dict[str, Any] = {}
        for name in ("mse", "mae", "rmse", "psnr", "ssim"):
            out[name] = _json_float(getattr(self, name))
        for name in ("mse", "mae", "rmse", "psnr", "ssim"):
            out[f"{name}_per_step"] = [_json_float(v) for v in getattr(self, f"{name}_per_step")]
        out["band_mse"] = {band: _json_float(v) for band, v in self.band_mse.items()}
        out["band_mse_per_step"] = {
            band: [_json_float(v) for v in values]
            for band, values in self.band_mse_per_step.items()
        }
        out["band_cutoffs"] = list(self.band_cutoffs)
        out["data_range"] = list(self.data_range)
        out["n_samples"] = self.n_samples
        out["ssim_convention"] = self.ssim_convention
        if self.lat_weighted:
            for name in LAT_WEIGHTED_NAMES:
                out[name] = _json_float(getattr(self, name))
                out[f"{name}_per_step"] = [
                    _json_float(v) for v in getattr(self, f"{name}_per_step")
                ]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForecastMetrics:
        """Inverse of ``to_dict`` (e.g. for a metrics JSON file written by an evaluation).

        A dict without ``ssim_convention`` was written before the option existed, when every
        SSIM was torchmetrics': it reads as ``"torchmetrics"``. One without ``mse_lat`` has no
        latitude-weighted metrics (``None``).
        """
        lat = {
            key: (
                tuple(float(v) for v in data[key])
                if key.endswith("_per_step")
                else float(data[key])
            )
            for name in LAT_WEIGHTED_NAMES
            for key in (name, f"{name}_per_step")
            if data.get(key) is not None
        }
        per_step = {
            f"{name}_per_step": tuple(float(v) for v in data[f"{name}_per_step"])
            for name in ("mse", "mae", "rmse", "psnr", "ssim")
        }
        return cls(
            **{name: float(data[name]) for name in ("mse", "mae", "rmse", "psnr", "ssim")},
            **per_step,
            band_mse={band: float(v) for band, v in data["band_mse"].items()},
            band_mse_per_step={
                band: tuple(float(v) for v in values)
                for band, values in data["band_mse_per_step"].items()
            },
            band_cutoffs=tuple(float(v) for v in data["band_cutoffs"]),
            data_range=tuple(float(v) for v in data["data_range"]),
            n_samples=int(data["n_samples"]),
            ssim_convention=str(data.get("ssim_convention", "torchmetrics")),
            **lat,
        )

    def flat(self) -> dict[str, float]:
        """Flat ``name -> float`` for ``mlflow.log_metrics``.

        Keys: ``mse``, ``mae``, ``rmse``, ``psnr``, ``ssim``; per step ``mse_step_01``, ...,
        ``ssim_step_12`` (1-based, zero-padded to at least two digits); ``band_mse_low``,
        ``band_mse_mid``, ``band_mse_high`` and ``band_mse_low_step_01``, ...; on a lat/lon grid
        also ``mse_lat``, ``rmse_lat``, ``mse_lat_step_01``, .... A PSNR of ``+inf`` stays
        ``inf`` (MLflow's SQL store records it as the largest float64).
        """
        out: dict[str, float] = {}
        for name in ("mse", "mae", "rmse", "psnr", "ssim"):
            out[name] = float(getattr(self, name))
        for name in ("mse", "mae", "rmse", "psnr", "ssim"):
            for step, value in enumerate(getattr(self, f"{name}_per_step"), start=1):
                out[f"{name}_{_step_key(step, self.steps)}"] = float(value)
        for band, value in self.band_mse.items():
            out[f"band_mse_{band}"] = float(value)
        for band, values in self.band_mse_per_step.items():
            for step, value in enumerate(values, start=1):
                out[f"band_mse_{band}_{_step_key(step, self.steps)}"] = float(value)
        if self.lat_weighted:
            for name in LAT_WEIGHTED_NAMES:
                out[name] = float(getattr(self, name))
            for name in LAT_WEIGHTED_NAMES:
                for step, value in enumerate(getattr(self, f"{name}_per_step"), start=1):
                    out[f"{name}_{_step_key(step, self.steps)}"] = float(value)
        return out


def _check_ssim_convention(convention: Any) -> str:
    """``convention`` if it is one of ``SSIM_CONVENTIONS``, else a ValueError naming them."""
    if not isinstance(convention, str) or convention not in SSIM_CONVENTIONS:
        raise ValueError(
            f"ssim_convention must be one of {', '.join(map(repr, SSIM_CONVENTIONS))}, "
            f"got {convention!r}"
        )
    return convention


# ---------------------------------------------------------------------------------------------
# Accumulator
# ---------------------------------------------------------------------------------------------


class MetricAccumulator:
    """Streaming float64 sums of every metric over batches of ``(N, T, C, H, W)`` fields.

    ``update(prediction, target)`` per batch (any N, any device, any float dtype; a last
    partial batch is fine), then ``compute()``. ``data_range`` holds ``R_c`` per channel, in the
    units of the de-normalized fields (see ``data_range_from``); ``ssim_convention`` is one of
    ``SSIM_CONVENTIONS`` (module docstring). ``latitudes`` (degrees, one per grid row; ``None``
    for a grid that is not lat/lon) adds the latitude-weighted MSE and RMSE.
    """

    def __init__(
        self,
        channels: int,
        steps: int,
        height: int,
        width: int,
        data_range: Sequence[float] | torch.Tensor,
        *,
        ssim_convention: str = DEFAULT_SSIM_CONVENTION,
        latitudes: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    ) -> None:
        self.ssim_convention = _check_ssim_convention(ssim_convention)
        self.channels = _check_positive_int(channels, "channels")
        self.steps = _check_positive_int(steps, "steps")
        self.height = _check_positive_int(height, "height")
        self.width = _check_positive_int(width, "width")
        least = _SSIM_MIN_SIZE[self.ssim_convention]
        if min(self.height, self.width) < least:
            raise ValueError(
                f"SSIM with {_SSIM_WINDOW_NAME[self.ssim_convention]} (ssim_convention "
                f"{self.ssim_convention!r}) needs a grid of at least {least}x{least}, got "
                f"{self.height}x{self.width}"
            )
        self.data_range = _check_data_range(data_range, self.channels)
        self.lat_weights: torch.Tensor | None = (
            None
            if latitudes is None
            else torch.from_numpy(latitude_weights(latitudes, self.height))
        )
        self.bands = BandSplit.log_spaced(self.height, self.width, len(BAND_NAMES))
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        shape = (self.steps, self.channels)
        self._squared_error = torch.zeros(shape, dtype=torch.float64)
        self._absolute_error = torch.zeros(shape, dtype=torch.float64)
        self._lat_squared_error = torch.zeros(shape, dtype=torch.float64)
        self._ssim = torch.zeros(shape, dtype=torch.float64)
        self._band_energy = torch.zeros((self.steps, len(BAND_NAMES)), dtype=torch.float64)
        self._n_samples = 0

    @property
    def n_samples(self) -> int:
        return self._n_samples

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: de-normalized ``prediction`` and ``target`` of shape (N, T, C, H, W)."""
        prediction = _as_tensor(prediction, "prediction")
        target = _as_tensor(target, "target")
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(prediction.shape)} and target shape "
                f"{tuple(target.shape)} differ"
            )
        expected = (self.steps, self.channels, self.height, self.width)
        if prediction.dim() != 5 or tuple(prediction.shape[1:]) != expected:
            raise ValueError(
                f"expected prediction and target of shape (N, {', '.join(map(str, expected))}) "
                f"(N, T, C, H, W), got prediction {tuple(prediction.shape)} and target "
                f"{tuple(target.shape)}"
            )
        _check_finite(prediction, "prediction", "the model diverged or de-normalization overflowed")
        _check_finite(target, "target", "the truth data is corrupt")
        if len(prediction) == 0:
            return

        device = prediction.device
        with torch.no_grad(), _autocast_off(device):
            pred = prediction.to(torch.float64)
            true = target.to(device=device, dtype=torch.float64)
            error = pred - true
            squared = error.square()
            self._squared_error += squared.sum((0, 3, 4)).cpu()
            if self.lat_weights is not None:
                weights = self.lat_weights.to(device)[:, None]  # (H, 1): one per row
                self._lat_squared_error += (squared * weights).sum((0, 3, 4)).cpu()
            self._absolute_error += error.abs().sum((0, 3, 4)).cpu()
            self._band_energy += self.bands.band_energy(error).sum((0, 2)).cpu()
            self._ssim += self._ssim_sums(pred, true).cpu()
        self._n_samples += len(prediction)

    def _ssim_sums(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Sum over samples of each frame's SSIM: (T, C).

        The frames of one channel are taken as ``(T, n, H, W)``: the steps as the batch and the
        samples as its channels, filtered channel by channel (torchmetrics' grouped
        convolution, or ``avg_pool2d``), far faster on the CPU than ``n * T`` one-channel
        images. The mean over the n samples of each step's frame SSIMs, times n, is the sum we
        need: the same numbers as one call per frame.
        """
        n, steps = pred.shape[:2]
        per_call = max(1, _SSIM_PIXELS_PER_CALL // (steps * self.height * self.width))
        sums = torch.zeros((steps, self.channels), dtype=torch.float64, device=pred.device)
        for channel in range(self.channels):
            data_range = float(self.data_range[channel])
            frames_pred = pred[:, :, channel].transpose(0, 1)
            frames_true = true[:, :, channel].transpose(0, 1)
            if self.ssim_convention == "torchmetrics":
                dtype = self._ssim_dtype(frames_pred, frames_true, data_range)
            else:
                dtype = torch.float64
            frames_pred = frames_pred.to(dtype).contiguous()
            frames_true = frames_true.to(dtype).contiguous()
            for start in range(0, n, per_call):
                stop = min(start + per_call, n)
                chunk_pred, chunk_true = frames_pred[:, start:stop], frames_true[:, start:stop]
                if self.ssim_convention == "torchmetrics":
                    # per image (reduction="none"): the mean over the chunk's samples and
                    # H x W pixels of each step's SSIM map, i.e. the mean of its frames' SSIMs
                    mean = structural_similarity_index_measure(
                        chunk_pred,
                        chunk_true,
                        gaussian_kernel=True,
                        sigma=SSIM_SIGMA,
                        kernel_size=SSIM_KERNEL_SIZE,
                        reduction="none",
                        data_range=data_range,
                    )
                else:
                    mean = _skimage_ssim(chunk_pred, chunk_true, data_range).mean(1)
                sums[:, channel] += mean.to(torch.float64) * (stop - start)
        return sums

    @staticmethod
    def _ssim_dtype(pred: torch.Tensor, true: torch.Tensor, data_range: float) -> torch.dtype:
        """float32 on the CPU for well-conditioned values (see the module docstring), else
        float64."""
        if pred.device.type != "cpu":
            return torch.float64
        largest = max(float(pred.abs().max()), float(true.abs().max()))
        return torch.float32 if largest <= _SSIM_FLOAT32_MAX_OFFSET * data_range else torch.float64

    def compute(self) -> ForecastMetrics:
        """The metrics of every batch seen so far (does not reset)."""
        if self._n_samples == 0:
            raise ValueError("MetricAccumulator.compute() called before any non-empty update()")
        values_per_channel = self._n_samples * self.height * self.width
        mse_tc = self._squared_error / values_per_channel  # (T, C)
        mse_t = mse_tc.mean(1)
        mae_t = self._absolute_error.sum(1) / (values_per_channel * self.channels)
        rmse_t = mse_t.sqrt()
        # R^2 / 0 = inf, log10(inf) = inf: an exact channel gives PSNR +inf.
        psnr_t = (10.0 * torch.log10(self.data_range.square() / mse_tc)).mean(1)
        ssim_t = self._ssim.sum(1) / (self._n_samples * self.channels)
        band_t = self._band_energy / (values_per_channel * self.channels)  # (T, bands)
        mse = float(mse_t.mean())

        def per_step(values: torch.Tensor) -> tuple[float, ...]:
            return tuple(float(v) for v in values)

        lat: dict[str, Any] = {}
        if self.lat_weights is not None:
            mse_lat_t = self._lat_squared_error.sum(1) / (values_per_channel * self.channels)
            mse_lat = float(mse_lat_t.mean())
            lat = {
                "mse_lat": mse_lat,
                "rmse_lat": math.sqrt(mse_lat),
                "mse_lat_per_step": per_step(mse_lat_t),
                "rmse_lat_per_step": per_step(mse_lat_t.sqrt()),
            }
        return ForecastMetrics(
            mse=mse,
            mae=float(mae_t.mean()),
            rmse=math.sqrt(mse),
            psnr=float(psnr_t.mean()),
            ssim=float(ssim_t.mean()),
            mse_per_step=per_step(mse_t),
            mae_per_step=per_step(mae_t),
            rmse_per_step=per_step(rmse_t),
            psnr_per_step=per_step(psnr_t),
            ssim_per_step=per_step(ssim_t),
            band_mse={name: float(band_t[:, b].mean()) for b, name in enumerate(BAND_NAMES)},
            band_mse_per_step={name: per_step(band_t[:, b]) for b, name in enumerate(BAND_NAMES)},
            band_cutoffs=self.bands.cutoffs,
            data_range=per_step(self.data_range),
            n_samples=self._n_samples,
            ssim_convention=self.ssim_convention,
            **lat,
        )


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def data_range_from(
    truth: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
    channel_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """``max - min`` of each channel over ``truth``: float64 ``(C,)`` on the CPU.

    ``truth`` is one tensor/array or an iterable of batches (e.g. ``(y for _, y in loader)``),
    each ``(..., C, H, W)`` with channels at dim -3, in de-normalized units. The evaluation
    passes the test split's truth; which split to take the range from is the caller's choice.
    Raises ValueError for a channel of zero range (PSNR and SSIM are undefined there, naming it
    by ``channel_names`` when given), for NaN/Inf, mismatched channel counts or no data.
    """
    batches = [truth] if isinstance(truth, (torch.Tensor, np.ndarray)) else truth
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    for batch in batches:
        x = _as_tensor(batch, "truth")
        if x.dim() < 3:
            raise ValueError(f"truth needs shape (..., C, H, W), got {tuple(x.shape)}")
        channels = x.shape[-3]
        if low is not None and channels != len(low):
            raise ValueError(f"truth batches disagree on channels: {len(low)} then {channels}")
        if x.numel() == 0:
            continue
        _check_finite(x, "truth", "the truth data is corrupt")
        per_channel = x.movedim(-3, 0).reshape(channels, -1)
        batch_low = per_channel.amin(1).to(device="cpu", dtype=torch.float64)
        batch_high = per_channel.amax(1).to(device="cpu", dtype=torch.float64)
        low = batch_low if low is None else torch.minimum(low, batch_low)
        high = batch_high if high is None else torch.maximum(high, batch_high)
    if low is None or high is None:
        raise ValueError("data_range_from got no truth values")
    if channel_names is not None and len(channel_names) != len(low):
        raise ValueError(f"{len(channel_names)} channel_names for {len(low)} channels")
    data_range = high - low
    for channel, value in enumerate(data_range.tolist()):
        if value <= 0:
            name = f" ({channel_names[channel]!r})" if channel_names is not None else ""
            raise ValueError(
                f"channel {channel}{name} is constant ({float(low[channel]):g}) over the truth: "
                "a zero data range leaves PSNR and SSIM undefined"
            )
    return data_range


def gap_closed(student: float, baseline: float, teacher: float) -> float:
    """Share of the baseline-teacher gap the method closed: ``(baseline - student) /
    (baseline - teacher)``.

    ``baseline`` is the student trained without distillation and ``student`` the distilled one,
    all three the same metric. Positive = moved toward the teacher (1 = reached it, > 1 =
    passed it), 0 = no change, negative = moved away; valid for lower- and higher-is-better
    metrics alike. NaN when ``baseline == teacher`` (no gap to close).
    """
    denominator = float(baseline) - float(teacher)
    if denominator == 0.0:
        return math.nan
    return (float(baseline) - float(student)) / denominator
