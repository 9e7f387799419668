"""The one way to set up a distillation run: loss, training set and what to log.

``prepare_distillation(cfg, teachers, student, train_set, ...)`` is what the Kedro distill node,
the benchmarks and the study call: it checks nothing about checkpoints (callers load and check
their teachers), caches the teachers' outputs on the training windows when they fit, draws the
function-matching inputs when the method asks for them, picks the band cutoff of the paper's
fixed two-band weighting, and builds the ``DistillationLoss``.

A ``DistillCache`` kept by the caller across runs (one per process) computes each teacher's
outputs on a set of inputs once, and the function-matching inputs once per store and settings,
however many students and methods use them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from sdkd_pipeline.distill.config import DistillConfig
from sdkd_pipeline.distill.function_matching import (
    FunctionMatchingSet,
    UnlabelledInputs,
    function_matching_inputs,
)
from sdkd_pipeline.distill.losses import DistillationLoss, build_loss, choose_cutoff
from sdkd_pipeline.distill.teachers import (
    WithTeacherTargets,
    cache_bytes,
    describe_cache,
    finite_or_raise,
    precompute_teacher_outputs,
    run_teacher,
    should_cache,
)
from sdkd_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

# windows of teacher predictions that set an energy-based cutoff (plenty for a mean spectrum)
CUTOFF_WINDOWS = 128


@dataclass
class DistillSetup:
    """What the engine needs for one distilled student, and what to log about it."""

    loss: DistillationLoss | None
    train_set: Dataset
    cutoff: float | None = None
    unlabelled: UnlabelledInputs | None = None
    params: dict[str, Any] = field(default_factory=dict)


def state_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A digest of a model's weights (names, shapes and values)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _weights_fingerprint(model: nn.Module) -> str:
    return state_digest(model.state_dict())


def windows_fingerprint(windows: Any) -> str:
    """A set of inputs: its size, shape and statistics and its first and last inputs."""
    digest = hashlib.sha1(repr((len(windows), tuple(getattr(windows, "shape", ())))).encode())
    tensors = [windows[0][0], windows[len(windows) - 1][0]]
    tensors += [getattr(windows, name) for name in ("mean", "std") if hasattr(windows, name)]
    for tensor in tensors:
        digest.update(torch.as_tensor(tensor).detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class DistillCache:
    """Teacher outputs and function-matching inputs computed once per process.

    Keys are the teacher's weights and the inputs' content (not names), so a retrained teacher
    or regenerated data is never served stale outputs. Outputs on another store's windows free
    the previous ones (one store is distilled at a time).
    """

    def __init__(self) -> None:
        self.outputs: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}
        self.inputs: dict[tuple[Any, ...], UnlabelledInputs] = {}

    def teacher_outputs(
        self,
        teachers: Mapping[str, nn.Module],
        windows: Any,
        *,
        latents: bool,
        batch_size: int,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        fingerprint: str | None = None,
    ) -> dict[str, dict[str, torch.Tensor]]:
        """``precompute_teacher_outputs`` for the teachers not yet run on ``windows``."""
        windows_key = fingerprint or windows_fingerprint(windows)
        keys = {
            name: (
                name,
                _weights_fingerprint(model),
                windows_key,
                str(latents),
                str(device),
                str(autocast_dtype),
            )
            for name, model in teachers.items()
        }
        missing = {name: teachers[name] for name, key in keys.items() if key not in self.outputs}
        if missing:
            computed = precompute_teacher_outputs(
                missing,
                windows,
                latents=latents,
                batch_size=batch_size,
                device=device,
                autocast_dtype=autocast_dtype,
            )
            for name, outputs in computed.items():
                finite_or_raise(name, outputs)
                self.outputs[keys[name]] = outputs
        reused = sorted(set(teachers) - set(missing))
        if reused:
            log.info("reusing the outputs of %s computed earlier in this process", reused)
        return {name: self.outputs[key] for name, key in keys.items()}

    def forget_other_stores(self, keep: set[str]) -> None:
        for key in [k for k in self.outputs if k[2] not in keep]:
            del self.outputs[key]

    def unlabelled_inputs(
        self, cfg: DistillConfig, train_set: Any, *, device: torch.device
    ) -> UnlabelledInputs:
        key = (
            windows_fingerprint(train_set),
            cfg.fm_ratio,
            cfg.fm_source,
            cfg.fm_mixup_alpha,
            cfg.fm_seed,
        )
        if key not in self.inputs:
            self.inputs.clear()
            self.inputs[key] = function_matching_inputs(
                train_set,
                ratio=cfg.fm_ratio,
                source=cfg.fm_source,
                mixup_alpha=cfg.fm_mixup_alpha,
                seed=cfg.fm_seed,
                device=device,
            )
        return self.inputs[key]


def prepare_distillation(
    cfg: DistillConfig,
    teachers: Mapping[str, nn.Module],
    student: nn.Module,
    train_set: Any,
    *,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    batch_size: int = 32,
    cache: DistillCache | None = None,
) -> DistillSetup:
    """Loss and training set for distilling ``student`` from ``teachers`` (frozen, on
    ``device``) with ``cfg`` on ``train_set`` (the training split's ``WindowDataset``)."""
    device = torch.device(device)
    params: dict[str, Any] = {"distill": cfg.to_dict(), "teachers": list(teachers)}
    if not cfg.needs_teachers:
        if cfg.fm_enabled:
            raise ConfigError(
                f"distill: method {cfg.name!r} learns from the data alone, so "
                "function_matching.enabled has nothing to match; enable it for a "
                "distillation method"
            )
        return DistillSetup(loss=None, train_set=train_set, params=params)
    cache = cache or DistillCache()
    _, _, _, height, width = train_set.shape
    latents = cfg.needs_latents
    unlabelled = cache.unlabelled_inputs(cfg, train_set, device=device) if cfg.fm_enabled else None
    n_bytes = cache_bytes(teachers, train_set, latents)
    if unlabelled is not None:
        n_bytes = int(n_bytes * (1 + len(unlabelled) / len(train_set)))
    labelled_cache, unlabelled_cache, predictions = _teacher_outputs(
        cfg,
        teachers,
        train_set,
        unlabelled,
        cache,
        n_bytes=n_bytes,
        latents=latents,
        batch_size=batch_size,
        device=device,
        autocast_dtype=autocast_dtype,
    )
    cutoff = choose_cutoff(cfg, height, width, predictions) if cfg.uses_cutoff else None
    if cutoff is not None:
        log.info("%s: band cutoff k_c = %g (%s)", cfg.name, cutoff, cfg.cutoff_mode)
    first = next(iter(teachers.values()))
    loss = build_loss(
        cfg,
        teachers,
        height=height,
        width=width,
        cutoff=cutoff,
        student_latent_channels=getattr(student, "latent_channels", None),
        teacher_latent_channels=getattr(first, "latent_channels", None),
        student_parameters=list(student.parameters()),
    )
    if unlabelled is not None:
        data: Dataset = FunctionMatchingSet(train_set, unlabelled, labelled_cache, unlabelled_cache)
    elif labelled_cache is not None:
        data = WithTeacherTargets(train_set, labelled_cache)
    else:
        data = train_set
    params.update(
        cutoff=cutoff,
        teacher_cache=labelled_cache is not None,
        teacher_cache_mib=round(n_bytes / 2**20, 1),
    )
    if cfg.uses_local:  # the wavelet levels this grid gave (``local.levels: auto``)
        wavelets = loss.split.wavelets  # type: ignore[union-attr]
        params.update(local_levels=wavelets.levels, local_regions=wavelets.n_regions)
    if unlabelled is not None:
        params.update(
            function_matching_inputs=len(unlabelled), function_matching_source=unlabelled.source
        )
    return DistillSetup(
        loss=loss, train_set=data, cutoff=cutoff, unlabelled=unlabelled, params=params
    )


def _teacher_outputs(
    cfg: DistillConfig,
    teachers: Mapping[str, nn.Module],
    train_set: Any,
    unlabelled: UnlabelledInputs | None,
    cache: DistillCache,
    *,
    n_bytes: int,
    latents: bool,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> tuple[
    dict[str, dict[str, torch.Tensor]] | None,
    dict[str, dict[str, torch.Tensor]] | None,
    list[torch.Tensor] | None,
]:
    """``(labelled cache, unlabelled cache, predictions)``: the teachers' outputs on the
    training windows and the function-matching inputs when they fit in the cache, and the
    teachers' predictions that set an energy-based cutoff (``None`` where not needed)."""
    labelled_cache = unlabelled_cache = None
    predictions: list[torch.Tensor] | None = None
    if should_cache(cfg, n_bytes):
        log.info(
            "caching %d teacher(s)' outputs on %d training windows%s (%s)",
            len(teachers),
            len(train_set),
            "" if unlabelled is None else f" and {len(unlabelled)} unlabelled inputs",
            describe_cache(n_bytes),
        )
        started = time.perf_counter()
        fingerprint = windows_fingerprint(train_set)
        cache.forget_other_stores({fingerprint, *cache_keys(cache, unlabelled, fingerprint)})
        labelled_cache = cache.teacher_outputs(
            teachers,
            train_set,
            latents=latents,
            batch_size=batch_size,
            device=device,
            autocast_dtype=autocast_dtype,
            fingerprint=fingerprint,
        )
        if unlabelled is not None:
            inputs = TensorDataset(unlabelled.inputs, torch.zeros(len(unlabelled)))
            unlabelled_cache = cache.teacher_outputs(
                teachers,
                inputs,
                latents=latents,
                batch_size=batch_size,
                device=device,
                autocast_dtype=autocast_dtype,
                fingerprint=_inputs_key(unlabelled),
            )
        predictions = [outs["prediction"][:CUTOFF_WINDOWS] for outs in labelled_cache.values()]
        log.info("teacher outputs ready in %.1f s", time.perf_counter() - started)
    elif cfg.uses_cutoff and cfg.cutoff_mode == "energy":
        n = min(CUTOFF_WINDOWS, len(train_set))
        x = torch.stack([train_set[i][0] for i in range(n)]).to(device)
        predictions = [run_teacher(t, x, False)["prediction"].cpu() for t in teachers.values()]
    return labelled_cache, unlabelled_cache, predictions


def _inputs_key(unlabelled: UnlabelledInputs) -> str:
    digest = hashlib.sha1(repr(tuple(unlabelled.inputs.shape)).encode())
    digest.update(unlabelled.inputs.contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_keys(
    cache: DistillCache, unlabelled: UnlabelledInputs | None, fingerprint: str | None = None
) -> set[str]:
    """Keys of the function-matching inputs whose teacher outputs belong to the store
    ``fingerprint``: this run's and those drawn earlier for the same store (so that a run
    without function matching in between does not free them)."""
    drawn = [u for key, u in cache.inputs.items() if key[0] == fingerprint]
    if unlabelled is not None:
        drawn.append(unlabelled)
    return {_inputs_key(u) for u in drawn}
