"""Long autoregressive rollouts: each model's forecast fed back as its input, past the horizon
it was trained for, scored per lead time on the test split.

``rollout(model, x, horizon)`` calls a model of ``T_in`` input and ``T_out`` output frames
``ceil(horizon / T_out)`` times; each call's input is the last ``T_in`` frames of the input and
the forecasts so far, so a rollout of ``T_out`` frames is one forward pass and one of
``2 T_out`` frames is two passes where the second sees the first's output (tested against
repeated single steps). Baselines need no feedback: persistence repeats the last input frame
(which is what its rollout is) and the climatology forecasts each target frame's mean.

``evaluate_rollouts`` scores every model on the test windows of length ``T_in + horizon``
(``horizon = factor * T_out``; at most ``max_windows`` of them, evenly spaced), de-normalized:
MSE and SSIM per lead time (``metrics.MetricAccumulator``, the evaluation's definitions) and
the **spectral drift**: per lead time and radial band (low / mid / high, as the band errors),
the ratio of the forecast's energy to the truth's, summed over windows and channels,
``E_b(P_t) / E_b(Y_t)``: 1 is a forecast with the truth's spectrum, below 1 one that lost
energy at those scales (over-smoothing), above 1 one that gained it (noise, blow-up).
``behind_persistence_lead`` is the first lead time at which a model's MSE exceeds
persistence's (``None``: never within the horizon). Imports only numpy and torch at module level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError

__all__ = ["RolloutResult", "evaluate_rollouts", "rollout"]

BANDS = ("low", "mid", "high")


def rollout(
    model: Any,
    x: torch.Tensor,
    horizon: int,
    window_index: Any = None,
    forcings: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, horizon, C, H, W)``: ``model`` (``(B, T_in, C, H, W) -> (B, T_out, C, H, W)``)
    run autoregressively from ``x``. A module with ``uses_window_index`` (the climatology) is
    called once with ``window_index`` and must forecast the whole horizon itself.

    With ``forcings`` (``(B, T_in + horizon, F, H, W)``: the input-only channels of every
    frame of the window, known in advance), ``x`` holds ``C + F`` channels, the forcings last;
    each call's input is the last ``T_in`` frames' fields (inputs, then forecasts) with those
    frames' forcings."""
    if horizon < 1:
        raise ConfigError(f"rollout: horizon must be >= 1, got {horizon}")
    if getattr(model, "uses_window_index", False):
        out = model(x, window_index=window_index)
        return out[:, :horizon]
    t_in = int(x.shape[1])
    n_forcing = 0 if forcings is None else int(forcings.shape[2])
    if forcings is not None and (
        forcings.shape[0] != x.shape[0] or forcings.shape[1] < t_in + horizon
    ):
        raise ConfigError(
            f"rollout: forcings of shape {tuple(forcings.shape)} do not cover the "
            f"{t_in} + {horizon} frames of a batch of {x.shape[0]}"
        )
    frames, produced = (x[:, :, : x.shape[2] - n_forcing] if n_forcing else x), 0
    pieces = []
    while produced < horizon:
        step_in = frames[:, -t_in:]
        if n_forcing:
            at = frames.shape[1]
            step_in = torch.cat([step_in, forcings[:, at - t_in : at].to(step_in)], dim=2)
        out = model(step_in)
        if isinstance(out, Mapping):
            out = out["prediction"]
        out = out.float()
        pieces.append(out)
        produced += int(out.shape[1])
        frames = torch.cat([frames, out], dim=1)
    return torch.cat(pieces, dim=1)[:, :horizon]


@dataclass
class RolloutCurves:
    """One model's rollout scores, one value per lead time ``1..horizon``."""

    mse: list[float]
    ssim: list[float]
    energy_ratio: dict[str, list[float]]
    behind_persistence_lead: int | None = None
    finite_leads: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "mse": self.mse,
            "ssim": self.ssim,
            "energy_ratio": self.energy_ratio,
            "behind_persistence_lead": self.behind_persistence_lead,
            "finite_leads": self.finite_leads,
        }


@dataclass
class RolloutResult:
    """Every model's ``RolloutCurves`` (keyed ``model/method``) and the set-up."""

    horizon: int
    t_out: int
    windows: int
    curves: dict[str, RolloutCurves] = field(default_factory=dict)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "t_out": self.t_out,
            "windows": self.windows,
            "skipped": self.skipped,
            "definition": (
                "autoregressive rollout on test windows: each forecast fed back as input; "
                "energy_ratio = forecast / truth band energy per lead time"
            ),
            "models": {k: v.to_dict() for k, v in self.curves.items()},
        }


def _subset(windows: Any, max_windows: int) -> list[int]:
    n = len(windows)
    if n <= max_windows:
        return list(range(n))
    step = n / max_windows
    return sorted({int(i * step) for i in range(max_windows)})


def _nan_safe(x: torch.Tensor) -> torch.Tensor:
    """A diverged rollout's frames as finite values (inf, NaN -> a huge number), so the
    metrics show the blow-up instead of refusing the field."""
    return torch.nan_to_num(x, nan=1e30, posinf=1e30, neginf=-1e30).clamp(-1e30, 1e30)


def evaluate_rollouts(
    modules: Mapping[str, Any],
    store: Any,
    *,
    factor: int,
    max_windows: int,
    batch_size: int,
    data_range: torch.Tensor,
    device: torch.device,
    ssim_convention: str,
    climatology: str = "auto",
) -> RolloutResult:
    """Roll every module of ``modules`` (``model/method`` -> module; baselines from
    ``baselines.build_baselines`` of the rollout windows included) out over ``factor`` x
    ``T_out`` frames on the test split of ``store`` and score it per lead time.

    A store whose test trajectories are too short for one window of ``T_in + horizon`` frames
    gives a result with ``skipped`` saying so (no error: the rollout is an extra)."""
    from torch.utils.data import DataLoader, Subset

    from sdkd_pipeline.data.windows import WindowDataset
    from sdkd_pipeline.evaluation.baselines import build_baselines
    from sdkd_pipeline.evaluation.metrics import MetricAccumulator
    from sdkd_pipeline.spectral.bands import BandSplit

    base = WindowDataset(store, "test")
    t_out = int(base.t_out)
    horizon = int(factor) * t_out
    try:
        windows = WindowDataset(store, "test", t_out=horizon)
        count = len(windows)
    except Exception as exc:  # the split's trajectories are shorter than T_in + horizon
        count, reason = 0, str(exc).splitlines()[0]
    else:
        reason = "no test window is long enough"
    if count == 0:
        why = f"test trajectories too short for T_in + {horizon} frames ({reason})"
        return RolloutResult(horizon, t_out, 0, skipped=why)
    chosen = _subset(windows, max_windows)
    modules = dict(modules)
    for name, module in build_baselines(windows, climatology=climatology).items():
        modules.setdefault(f"{name}/baseline", module)
    channels, height, width = windows.shape[2:]
    bands = BandSplit.log_spaced(height, width, len(BANDS))
    accumulators = {
        k: MetricAccumulator(
            channels, horizon, height, width, data_range, ssim_convention=ssim_convention
        )
        for k in modules
    }
    energy = {k: torch.zeros(horizon, len(BANDS), dtype=torch.float64) for k in modules}
    truth_energy = torch.zeros(horizon, len(BANDS), dtype=torch.float64)
    loader = DataLoader(Subset(windows, chosen), batch_size=batch_size, shuffle=False)
    offset = 0
    for module in modules.values():
        if hasattr(module, "eval"):
            module.eval().to(device)
    with torch.no_grad():
        for x, y in loader:
            index = torch.tensor(chosen[offset : offset + len(x)])
            offset += len(x)
            x = x.to(device)
            forcings = _window_forcings(windows, index, horizon)
            forcings = None if forcings is None else forcings.to(device)
            truth = windows.denormalize(y.to(device)).double()
            truth_energy += bands.band_energy(truth).sum((0, 2)).cpu()
            for key, module in modules.items():
                out = rollout(module, x, horizon, window_index=index, forcings=forcings)
                pred = windows.denormalize(out)
                pred = _nan_safe(pred.double())
                accumulators[key].update(pred, truth)
                energy[key] += bands.band_energy(pred).sum((0, 2)).cpu()
    result = RolloutResult(horizon, t_out, len(chosen))
    for key, acc in accumulators.items():
        metrics = acc.compute()
        ratio = (energy[key] / truth_energy.clamp_min(1e-300)).T
        mse = [float(v) for v in metrics.mse_per_step]
        result.curves[key] = RolloutCurves(
            mse=mse,
            ssim=[float(v) for v in metrics.ssim_per_step],
            energy_ratio={b: [float(v) for v in ratio[i]] for i, b in enumerate(BANDS)},
            finite_leads=sum(1 for v in mse if math.isfinite(v) and v < 1e50),
        )
    reference = result.curves.get("persistence/baseline")
    if reference is not None:
        for key, curves in result.curves.items():
            if key == "persistence/baseline":
                continue
            behind = [
                lead
                for lead, (m, p) in enumerate(zip(curves.mse, reference.mse, strict=True), 1)
                if not m <= p
            ]
            curves.behind_persistence_lead = behind[0] if behind else None
    return result


def _window_forcings(windows: Any, index: torch.Tensor, horizon: int) -> torch.Tensor | None:
    """The forcing channels of every frame of the rollout windows ``index`` (``None`` for a
    store without forcings)."""
    if not getattr(windows, "forcing_channels", None):
        return None
    t_in = int(windows.t_in)
    rows = [windows.windows[int(i)] for i in index]
    return torch.from_numpy(
        np.stack([windows.forcings(int(j), int(t), int(t) + t_in + horizon) for j, t in rows])
    )


def _series(key: str) -> Any:
    """``model/method`` as the (role, model, method) the evaluation's plot styles take."""
    from types import SimpleNamespace

    model, method = key.split("/")
    role = {"baseline": "baseline", "supervised": "teacher"}.get(method, "student")
    return SimpleNamespace(role=role, model=model, method=method)


def plot_rollouts(result: RolloutResult, title: str | None = None) -> Any:
    """MSE, SSIM and the energy ratio of each band against lead time, one line per model
    (the evaluation's styles: colour = model, line style = method), the training horizon
    ``T_out`` marked."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from sdkd_pipeline.evaluation.plots.style import Styles, no_data_figure

    plain = FuncFormatter(lambda v, _: f"{v:.3g}")

    if result.skipped or not result.curves:
        return no_data_figure(f"no rollout: {result.skipped or 'no model'}", title)
    figure = Figure(figsize=(13.0, 7.5), layout="constrained")
    axes = figure.subplots(2, 3)
    leads = list(range(1, result.horizon + 1))
    panels = [("mse", "MSE (de-normalized)", True), ("ssim", "SSIM", False)]
    panels += [(f"energy_{b}", f"energy ratio forecast / truth, {b} band", True) for b in BANDS]
    styles = Styles.of([_series(key) for key in result.curves])
    flat = axes.ravel()
    for ax, (name, label, log) in zip(flat, panels, strict=False):
        for key, curves in result.curves.items():
            values = (
                getattr(curves, name)
                if not name.startswith("energy_")
                else curves.energy_ratio[name.removeprefix("energy_")]
            )
            style = styles.of_result(_series(key))
            ax.plot(leads, values, color=style.color, linestyle=style.linestyle, label=style.label)
        ax.axvline(result.t_out + 0.5, color="black", linewidth=0.8, linestyle=":")
        if name.startswith("energy_"):
            ax.axhline(1.0, color="black", linewidth=0.8)
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap
        ax.set_xlabel("lead time (frames)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    handles, labels = flat[0].get_legend_handles_labels()
    flat[-1].axis("off")
    flat[-1].legend(handles, labels, loc="center", fontsize=8, frameon=False)
    figure.suptitle(
        title
        or f"autoregressive rollout over {result.horizon} frames ({result.windows} test "
        f"windows; training horizon {result.t_out}, dotted)"
    )
    return figure
