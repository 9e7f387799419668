"""The distillation node: a student trained by the shared training node with a KD loss."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import torch
import xarray as xr

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.distill.config import DistillConfig
from sdkd_pipeline.distill.losses import build_loss, choose_cutoff
from sdkd_pipeline.distill.teachers import (
    WithTeacherTargets,
    cache_bytes,
    check_teacher_matches,
    choose_teachers,
    describe_cache,
    finite_or_raise,
    freeze,
    precompute_teacher_outputs,
    run_teacher,
    should_cache,
)
from sdkd_pipeline.pipelines.forecaster import LossSetup, load_forecaster, train_forecaster
from sdkd_pipeline.training import TrainConfig, autocast_dtype, resolve_device

logger = logging.getLogger(__name__)

TEACHER_INPUT_PREFIX = "teacher_"
# windows of teacher predictions that set an energy-based cutoff (plenty for a mean spectrum)
CUTOFF_WINDOWS = 128

# Teacher outputs on a store's training windows, kept for the other distill nodes of the same
# `kedro run` (one process): each teacher runs once per store, not once per student and
# method. Keyed by the teacher's weights and the windows' content; holding another store's
# outputs frees the previous ones.
_OUTPUT_MEMO: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}


def distill_student(
    tensors: xr.Dataset,
    distill: Mapping[str, Any],
    training: Mapping[str, Any],
    tracking: Mapping[str, Any],
    progress: bool = True,
    *,
    dataset: str,
    student: str,
    method: str,
    **teacher_checkpoints: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train ``student`` on ``dataset`` with distillation method (or variant) ``method``.

    ``teacher_checkpoints`` are the checkpoints written by the teacher pipeline, passed as
    ``teacher_<name>``. Returns the student's checkpoint and summary, like a teacher's.
    """
    cfg = DistillConfig.from_params(method, distill)
    checkpoints = {name.removeprefix(TEACHER_INPUT_PREFIX): ckpt
                   for name, ckpt in teacher_checkpoints.items()}
    chosen = choose_teachers(cfg, {n: float(c["best_val_loss"]) for n, c in checkpoints.items()})
    identity = {
        "distill": cfg.to_dict(),
        # a retrained teacher makes a new student run, not a resumed one
        "teachers": {n: [checkpoints[n].get("mlflow_run_id"), checkpoints[n]["best_val_loss"],
                         checkpoints[n]["best_epoch"]] for n in chosen},
    }

    def setup(model: torch.nn.Module, splits: Mapping[str, WindowDataset], train_cfg: TrainConfig
              ) -> LossSetup:
        return _setup(cfg, {n: checkpoints[n] for n in chosen}, model, splits, train_cfg)

    checkpoint, summary = train_forecaster(
        tensors, (distill or {}).get(student), dict(training or {}), dict(tracking or {}),
        progress, dataset=dataset, model_name=student, role="student", method=cfg.name,
        setup=setup, identity=identity, param_root="distill",
    )
    summary["teachers"] = chosen
    summary["distill_method"] = cfg.method
    summary["cutoff"] = checkpoint.get("cutoff")
    return checkpoint, summary


def _setup(cfg: DistillConfig, checkpoints: Mapping[str, Mapping[str, Any]],
           model: torch.nn.Module, splits: Mapping[str, WindowDataset], train_cfg: TrainConfig
           ) -> LossSetup:
    params: dict[str, Any] = {"distill": cfg.to_dict(), "teachers": list(checkpoints)}
    extra_ckpt: dict[str, Any] = {"distill": cfg.to_dict(), "teachers": list(checkpoints),
                                  "cutoff": None}
    if not cfg.needs_teachers:
        return LossSetup(params=params, checkpoint=extra_ckpt)
    train_set = splits["train"]
    _, _, channels, height, width = train_set.shape
    shape = {"in_frames": train_set.t_in, "out_frames": train_set.t_out, "channels": channels,
             "height": height, "width": width}
    device = resolve_device(train_cfg.device)
    teachers = {}
    for name, ckpt in checkpoints.items():
        check_teacher_matches(name, ckpt, shape, train_set.mean, train_set.std)
        teachers[name] = freeze(load_forecaster(ckpt)).to(device)

    dtype = autocast_dtype(train_cfg.precision, device)
    n_bytes = cache_bytes(teachers, train_set, cfg.needs_latents)
    train_data: Any = None
    predictions: list[torch.Tensor] | None = None
    if should_cache(cfg, n_bytes):
        logger.info("caching %d teacher(s)' outputs on %d training windows (%s)", len(teachers),
                    len(train_set), describe_cache(n_bytes))
        cache = teacher_outputs(teachers, train_set, latents=cfg.needs_latents,
                                batch_size=train_cfg.val_batch_size or train_cfg.batch_size,
                                device=device, autocast_dtype=dtype)
        train_data = WithTeacherTargets(train_set, cache)
        predictions = [outs["prediction"][:CUTOFF_WINDOWS] for outs in cache.values()]
    elif cfg.uses_bands and cfg.cutoff_mode == "energy":
        n = min(CUTOFF_WINDOWS, len(train_set))
        x = torch.stack([train_set[i][0] for i in range(n)]).to(device)
        predictions = [run_teacher(t, x, False)["prediction"].cpu() for t in teachers.values()]

    cutoff = choose_cutoff(cfg, height, width, predictions) if cfg.uses_bands else None
    if cutoff is not None:
        logger.info("%s: band cutoff k_c = %g (%s)", cfg.name, cutoff, cfg.cutoff_mode)
    first = next(iter(teachers.values()))
    loss = build_loss(
        cfg, teachers, height=height, width=width, cutoff=cutoff,
        student_latent_channels=getattr(model, "latent_channels", None),
        teacher_latent_channels=getattr(first, "latent_channels", None),
        student_parameters=list(model.parameters()),
    )
    params.update(cutoff=cutoff, teacher_cache=train_data is not None,
                  teacher_cache_mib=round(n_bytes / 2**20, 1))
    extra_ckpt["cutoff"] = cutoff
    return LossSetup(loss=loss, train_set=train_data, params=params, checkpoint=extra_ckpt)


def teacher_outputs(teachers: Mapping[str, torch.nn.Module], train_set: WindowDataset, *,
                    latents: bool, batch_size: int, device: torch.device,
                    autocast_dtype: torch.dtype | None) -> dict[str, dict[str, torch.Tensor]]:
    """``precompute_teacher_outputs`` for ``teachers``, computing only those this process has
    not already computed on the same windows (see ``_OUTPUT_MEMO``); checked finite."""
    windows = _windows_fingerprint(train_set)
    keys = {name: (name, _weights_fingerprint(model), windows, str(latents), str(device),
                   str(autocast_dtype)) for name, model in teachers.items()}
    for key in [k for k in _OUTPUT_MEMO if k[2] != windows]:
        del _OUTPUT_MEMO[key]
    missing = {name: teachers[name] for name, key in keys.items() if key not in _OUTPUT_MEMO}
    if missing:
        computed = precompute_teacher_outputs(missing, train_set, latents=latents,
                                              batch_size=batch_size, device=device,
                                              autocast_dtype=autocast_dtype)
        for name, outputs in computed.items():
            finite_or_raise(name, outputs)
            _OUTPUT_MEMO[keys[name]] = outputs
    reused = sorted(set(teachers) - set(missing))
    if reused:
        logger.info("reusing the outputs of %s computed by an earlier node of this run", reused)
    return {name: _OUTPUT_MEMO[key] for name, key in keys.items()}


def _weights_fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _windows_fingerprint(windows: WindowDataset) -> str:
    """The split's size, shape and statistics and its first and last windows' inputs."""
    digest = hashlib.sha1(repr((len(windows), tuple(windows.shape))).encode())
    for tensor in (windows.mean, windows.std, windows[0][0], windows[len(windows) - 1][0]):
        digest.update(torch.as_tensor(tensor).detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
