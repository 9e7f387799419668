"""Function matching: the student also learns the teacher's outputs on inputs without a truth.

Beyer et al. (2022, "a good teacher is patient and consistent") distil by matching the teacher
as a function on many inputs, not only on the labelled ones. For forecasting:

- **solver** (generated datasets: Navier-Stokes, free-slip Rayleigh-Benard): fresh initial
  states from the dataset's own solver, with the settings recorded in the tensor store's
  attributes. They are new trajectories by construction: the solvers seed trajectory ``i`` by
  ``(seed, i)``, and the fresh ones take indices from ``n_trajectories`` on, beyond every
  trajectory of the train, validation and test splits. Each is simulated only as far as the
  last input window needs (``T_out`` frames short of a labelled trajectory), and cut into input
  windows at the store's window starts.
- **mixup** (any dataset, e.g. weather or traffic): ``lambda x_i + (1 - lambda) x_j`` of two
  training windows' inputs, ``lambda ~ Beta(a, a)``, pairs drawn with a seeded generator from the
  training split only.

Either way the inputs are normalized with the training split's statistics and never come from
validation or test trajectories or time ranges; ``UnlabelledInputs.provenance`` says where each
came from (tested). ``FunctionMatchingSet`` serves the labelled windows and these inputs
together, marking which samples have a truth (the loss then fits the truth on those only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sdkd_pipeline.errors import ConfigError

SOURCES = ("auto", "solver", "mixup")


@dataclass
class UnlabelledInputs:
    """Input windows ``(N, T_in, C, H, W)`` (normalized) without a truth, and their origin."""

    inputs: torch.Tensor
    source: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def _generated_kind(attrs: Mapping[str, Any]) -> str | None:
    from sdkd_pipeline.data.sources.navier_stokes import GENERATED_SOURCE
    from sdkd_pipeline.data.sources.rayleigh_benard import FREE_SLIP_SOURCE

    source = str(attrs.get("source", ""))
    if source == GENERATED_SOURCE:
        return "navier_stokes"
    if source == FREE_SLIP_SOURCE:
        return "rayleigh_benard"
    return None


def resolve_source(source: str, attrs: Mapping[str, Any]) -> str:
    """``auto`` -> ``solver`` for a store made by a built-in solver, else ``mixup``."""
    if source not in SOURCES:
        raise ConfigError(
            f"distill.function_matching.source must be one of {', '.join(SOURCES)}, got {source!r}"
        )
    kind = _generated_kind(attrs)
    if source == "solver" and kind is None:
        raise ConfigError(
            "distill.function_matching.source 'solver' needs a store made by a built-in solver "
            f"(this one comes from {attrs.get('source', 'an unknown source')!r}); use mixup"
        )
    if source == "auto":
        return "solver" if kind is not None else "mixup"
    return source


def function_matching_inputs(
    train_set: Any,
    *,
    ratio: float,
    source: str = "auto",
    mixup_alpha: float = 0.4,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> UnlabelledInputs:
    """``ceil(ratio * len(train_set))`` unlabelled input windows for ``train_set`` (a
    ``WindowDataset`` of the training split)."""
    if not ratio > 0:
        raise ConfigError(f"distill.function_matching.ratio must be > 0, got {ratio!r}")
    if getattr(train_set, "split", "train") != "train":
        raise ConfigError(
            "function matching draws its inputs for the training split only, got "
            f"the {train_set.split!r} split"
        )
    count = max(1, math.ceil(ratio * len(train_set)))
    chosen = resolve_source(source, train_set.attrs)
    if chosen == "solver":
        return solver_inputs(train_set, count, seed=seed, device=device)
    return mixup_inputs(train_set, count, alpha=mixup_alpha, seed=seed)


# --------------------------------------------------------------------------------------------
# fresh initial states from the dataset's solver


def _config_from_attrs(cls: type, attrs: Mapping[str, Any], prefix: str = "") -> Any:
    """Rebuild a solver config from the store's attributes (written from ``asdict(cfg)``,
    each field under ``prefix + name``: None as "null", booleans as 0/1 or "True"/"False")."""
    from dataclasses import fields

    values: dict[str, Any] = {}
    for f in fields(cls):
        if prefix + f.name not in attrs:
            continue
        value = attrs[prefix + f.name]
        if isinstance(value, np.generic):
            value = value.item()
        if value == "null":
            value = None
        elif isinstance(f.default, bool):
            # bool("False") is True: the free-slip generator writes booleans as str(value)
            value = value.strip().lower() == "true" if isinstance(value, str) else bool(value)
        values[f.name] = value
    return cls(**values)


def _window_starts(n_frames: int, t_in: int, t_out: int, stride: int) -> list[int]:
    return list(range(0, n_frames - t_in - t_out + 1, stride))


def solver_inputs(
    train_set: Any, count: int, *, seed: int = 0, device: str | torch.device = "cpu"
) -> UnlabelledInputs:
    """``count`` input windows from fresh trajectories of the store's solver (see the module
    docstring). ``seed`` shifts the first fresh trajectory index, so several function-matching
    runs can draw disjoint inputs."""
    attrs = train_set.attrs
    kind = _generated_kind(attrs)
    n_time = int(train_set.shape[1])
    t_in, t_out, stride = train_set.t_in, train_set.t_out, train_set.stride
    starts = _window_starts(n_time, t_in, t_out, stride)
    if not starts:
        raise ConfigError("function matching: the store's trajectories hold no complete window")
    n_traj = math.ceil(count / len(starts))
    first = int(attrs.get("n_trajectories", train_set.shape[0])) + int(seed) * 10_007
    if kind == "navier_stokes":
        frames = _navier_stokes_frames(attrs, first, n_traj, n_time - t_out, device)
    elif kind == "rayleigh_benard":
        frames = _rayleigh_benard_frames(attrs, first, n_traj, n_time - t_out, device)
    else:  # pragma: no cover - resolve_source refuses other stores
        raise ConfigError("function matching 'solver' needs a generated store")
    fields_ = train_set.normalize(torch.as_tensor(frames, dtype=torch.float32))
    windows = [(i, t0) for i in range(n_traj) for t0 in starts][:count]
    inputs = torch.stack([fields_[i, t0 : t0 + t_in] for i, t0 in windows])
    return UnlabelledInputs(
        inputs,
        "solver",
        {
            "solver": kind,
            "trajectories": [first, first + n_traj],  # half-open range of trajectory indices
            "dataset_trajectories": int(attrs.get("n_trajectories", train_set.shape[0])),
            "windows": windows,
            "frames_simulated": n_time - t_out,
        },
    )


def _navier_stokes_frames(
    attrs: Mapping[str, Any], first: int, n_traj: int, n_frames: int, device: str | torch.device
) -> np.ndarray:
    from dataclasses import replace

    from sdkd_pipeline.data.sources import navier_stokes as ns

    cfg = _config_from_attrs(ns.NavierStokesConfig, attrs)
    records = n_frames - int(cfg.include_initial_state)
    # the dataset's own step: an automatic dt depends on t_final, which is shorter here
    dt = float(attrs.get("dt_used", cfg.resolved_dt))
    cfg = replace(
        cfg,
        n_trajectories=n_traj,
        t_final=cfg.t_spinup + records * cfg.record_every,
        dt=dt,
        device=str(device),
        on_blowup="raise",
    )
    raw = ns.generate_navier_stokes(cfg, progress=False, first_trajectory=first)
    return np.asarray(raw["fields"].values)


def _rayleigh_benard_frames(
    attrs: Mapping[str, Any], first: int, n_traj: int, n_frames: int, device: str | torch.device
) -> np.ndarray:
    from dataclasses import replace

    from sdkd_pipeline.data.sources import rayleigh_benard as rb

    # the free-slip generator records its config as ``solver_<field>`` attributes
    cfg = _config_from_attrs(rb.FreeSlipRBCConfig, attrs, prefix="solver_")
    times = cfg.record_times
    t_final = float(times[n_frames - 1])
    cfg = replace(cfg, n_trajectories=n_traj, t_final=t_final, device=str(device))
    theta0 = rb.initial_theta(cfg, first_trajectory=first)
    raw = rb.generate_rayleigh_benard_free_slip(cfg, progress=False, initial_theta=theta0)
    return np.asarray(raw["fields"].values)[:, :n_frames]


# --------------------------------------------------------------------------------------------
# mixup of training inputs


def mixup_inputs(
    train_set: Any, count: int, *, alpha: float = 0.4, seed: int = 0
) -> UnlabelledInputs:
    """``count`` convex combinations of two training windows' inputs (see the module
    docstring); provenance lists the pairs (training window indices) and the mixing weights."""
    if not alpha > 0:
        raise ConfigError(f"distill.function_matching.mixup_alpha must be > 0, got {alpha!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5D4D]))
    n = len(train_set)
    first = rng.integers(0, n, size=count)
    second = rng.integers(0, n, size=count)
    lam = rng.beta(alpha, alpha, size=count).astype(np.float32)
    inputs = torch.stack(
        [
            float(w) * train_set[int(i)][0] + (1.0 - float(w)) * train_set[int(j)][0]
            for i, j, w in zip(first, second, lam, strict=True)
        ]
    )
    return UnlabelledInputs(
        inputs,
        "mixup",
        {
            "pairs": np.stack([first, second], axis=1).tolist(),
            "lambda": lam.tolist(),
            "alpha": float(alpha),
        },
    )


# --------------------------------------------------------------------------------------------
# the training set


class FunctionMatchingSet(Dataset):
    """The labelled training windows followed by unlabelled inputs, every item marked.

    Item ``i`` is ``(x, {"y": y, "labelled": bool, "teachers": {...}})``: for a labelled
    window its truth and (when cached) the teachers' outputs; for an unlabelled input the
    teachers' first prediction stands in for ``y`` (or zeros without a cache) and
    ``labelled`` is False, so the loss never fits it as a truth.
    """

    def __init__(
        self,
        labelled: Dataset,
        unlabelled: UnlabelledInputs,
        labelled_cache: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        unlabelled_cache: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        target_shape: tuple[int, ...] | None = None,
    ) -> None:
        self.labelled = labelled
        self.unlabelled = unlabelled
        self.labelled_cache = labelled_cache
        self.unlabelled_cache = unlabelled_cache
        if (labelled_cache is None) != (unlabelled_cache is None):
            raise ValueError("cache the teachers' outputs on both parts or on neither")
        self.n_labelled = len(labelled)  # type: ignore[arg-type]
        if target_shape is None:
            target_shape = tuple(labelled[0][1].shape)
        self.target_shape = target_shape

    def __len__(self) -> int:
        return self.n_labelled + len(self.unlabelled)

    def _teachers(
        self, cache: Mapping[str, Mapping[str, torch.Tensor]] | None, index: int
    ) -> dict[str, dict[str, torch.Tensor]] | None:
        if cache is None:
            return None
        return {name: {k: v[index] for k, v in outs.items()} for name, outs in cache.items()}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if index < self.n_labelled:
            x, y = self.labelled[index]
            target: dict[str, Any] = {"y": y, "labelled": torch.tensor(True)}
            teachers = self._teachers(self.labelled_cache, index)
        else:
            j = index - self.n_labelled
            x = self.unlabelled.inputs[j]
            teachers = self._teachers(self.unlabelled_cache, j)
            if teachers:
                stand_in = next(iter(teachers.values()))["prediction"]
            else:
                stand_in = torch.zeros(self.target_shape)
            target = {"y": stand_in, "labelled": torch.tensor(False)}
        if teachers is not None:
            target["teachers"] = teachers
        return x, target
