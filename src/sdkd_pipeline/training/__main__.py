"""Train one model on one tensor store without Kedro, e.g. on several GPUs with torchrun.

    python -m sdkd_pipeline.training --store data/05_model_input/navier_stokes.zarr \\
        --model st_alternet --out data/06_models/runs/navier_stokes/st_alternet
    torchrun --nproc_per_node=4 -m sdkd_pipeline.training --store ... --model simvp --out ...
    python -m sdkd_pipeline.training --store ... --model unet --method sdkd \\
        --teacher data/06_models/navier_stokes/st_alternet.pt \\
        --teacher data/06_models/navier_stokes/simvp.pt --out runs/unet_sdkd

Model and training settings come from a parameters file (default: the project's
``conf/base/parameters_teacher.yml`` for a teacher, ``parameters_distill.yml`` for a student),
sections ``<role>.<model>`` and ``<role>.training`` (``distill.<model>`` and
``distill.training`` for students) over the shared ``training:`` block (that of
``conf/base/parameters.yml`` with the default files, or the file's own); ``--set key=value``
overrides training keys. A student
trains with ``--method`` (default ``none``), a method or variant of the file's ``distill``
section, from the teacher checkpoints given with ``--teacher`` (written by the teacher
pipeline; single-teacher methods take ``distill.teacher`` among them, ``best`` = lowest
validation MSE). Under torchrun every rank trains (DDP); rank 0 alone writes checkpoints and
logs the MLflow run (``--mlflow``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError, DataError, SDKDError
from sdkd_pipeline.models import build_model
from sdkd_pipeline.models.checkpoint import Checkpoint
from sdkd_pipeline.models.registry import MODEL_ROLES
from sdkd_pipeline.training.checkpoint import seed_everything
from sdkd_pipeline.training.config import autocast_dtype, stage_config
from sdkd_pipeline.training.distributed import distributed_env
from sdkd_pipeline.training.engine import train

if TYPE_CHECKING:
    from torch import nn

    from sdkd_pipeline.distill.config import DistillConfig
    from sdkd_pipeline.training.config import TrainConfig
    from sdkd_pipeline.training.losses import TrainingLoss

PARAMS_SECTION = {"teacher": "teacher", "student": "distill"}
SHARED_PARAMS = Path("conf/base/parameters.yml")


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def _teacher_checkpoints(paths: list[str]) -> dict[str, Checkpoint]:
    """``--teacher`` files, by teacher name (the checkpoint's ``model``)."""
    out: dict[str, Checkpoint] = {}
    for path in paths:
        label = f"--teacher {path}"
        if not Path(path).is_file():
            raise ConfigError(
                f"{label}: no such file (teacher checkpoints are written "
                "by `kedro run --pipelines=teacher` to data/06_models/<dataset>/)"
            )
        try:
            ckpt = Checkpoint.load(path)
        except DataError as exc:  # a truncated file, a pickle payload, not a checkpoint
            reason = str(exc).removeprefix(f"{path}: ")
            raise ConfigError(f"{label}: not a readable checkpoint ({reason})") from None
        ckpt.expect_role("teacher", label)
        if "best_val_loss" not in ckpt:
            raise ConfigError(
                f"{label}: not a checkpoint of the teacher pipeline (lacks best_val_loss)"
            )
        if ckpt.model_name in out:
            raise ConfigError(f"{label}: a second {ckpt.model_name!r} checkpoint")
        out[ckpt.model_name] = ckpt
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sdkd_pipeline.training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store", required=True, help="tensor store (.zarr) or NetCDF copy")
    parser.add_argument("--model", required=True, choices=sorted(MODEL_ROLES))
    parser.add_argument("--out", required=True, help="checkpoint folder (best.pt, last.pt)")
    parser.add_argument("--params-file", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--method", default=None, help="students: distillation method or variant (default none)"
    )
    parser.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="CHECKPOINT",
        help="students: a teacher checkpoint (repeat for several)",
    )
    parser.add_argument(
        "--teachers",
        nargs="+",
        default=[],
        metavar="CHECKPOINT",
        help="students: several teacher checkpoints at once (same as repeating --teacher)",
    )
    parser.add_argument("--mlflow", action="store_true", help="log the run to MLflow")
    parser.add_argument("--dataset", default=None, help="dataset name for the MLflow tags")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.teacher = [*args.teacher, *args.teachers]
    try:
        return _main(args)
    except SDKDError as exc:  # a user's mistake: the message names what to fix
        parser.exit(2, f"{parser.prog}: error: {exc}\n")


def _configs(
    args: argparse.Namespace, role: str, section_name: str
) -> tuple[dict[str, Any], TrainConfig, DistillConfig | None, dict[str, Checkpoint]]:
    """``(section, training config, distillation config or None, teacher checkpoints)`` from
    the parameters file, the shared ``training:`` block and the command line."""
    params_file = Path(args.params_file or f"conf/base/parameters_{section_name}.yml")
    if not params_file.is_file():
        raise ConfigError(f"--params-file {params_file}: no such file")
    params = yaml.safe_load(params_file.read_text()) or {}
    section = params.get(section_name) or {}
    # the shared ``training:`` block: the project's conf/base/parameters.yml with the default
    # files, then the params file's own top-level ``training:`` over it
    shared: dict[str, Any] = {}
    if args.params_file is None and SHARED_PARAMS.is_file():
        shared = dict((yaml.safe_load(SHARED_PARAMS.read_text()) or {}).get("training") or {})
    shared.update(params.get("training") or {})
    training = {**(section.get("training") or {}), **_overrides(args.set)}
    cfg = stage_config(shared, training, f"{section_name}.training")
    distill_cfg = None
    checkpoints: dict[str, Checkpoint] = {}
    if role == "student":
        from sdkd_pipeline.distill.config import DistillConfig

        distill_cfg = DistillConfig.from_params(args.method or "none", section)
        checkpoints = _teacher_checkpoints(args.teacher)
        if distill_cfg.needs_teachers and not checkpoints:
            raise ConfigError(
                f"--method {distill_cfg.name}: distills from teachers; give their "
                "checkpoints with --teacher data/06_models/<dataset>/<teacher>.pt"
            )
    return section, cfg, distill_cfg, checkpoints


def _distillation(
    distill_cfg: DistillConfig,
    checkpoints: dict[str, Checkpoint],
    cfg: TrainConfig,
    model: nn.Module,
    splits: dict[str, WindowDataset],
    shape: dict[str, int],
) -> tuple[TrainingLoss | None, Any]:
    """``(loss, train set)`` of a student's method: the chosen teachers loaded and the
    distillation prepared (``None`` and the training split for a method without teachers)."""
    from sdkd_pipeline.distill.setup import prepare_distillation
    from sdkd_pipeline.distill.teachers import choose_teachers, load_teachers

    loss, train_set = None, splits["train"]
    chosen = choose_teachers(
        distill_cfg, {n: float(c["best_val_loss"]) for n, c in checkpoints.items()}
    )
    device = resolve_device(cfg.device, param=f"{cfg.param_path}.device")
    teachers = load_teachers(
        {n: checkpoints[n] for n in chosen},
        shape,
        splits["train"].mean,
        splits["train"].std,
        device,
    )
    prepared = prepare_distillation(
        distill_cfg,
        teachers,
        model,
        splits["train"],
        device=device,
        autocast_dtype=autocast_dtype(cfg.precision, device),
        batch_size=cfg.val_batch_size or cfg.batch_size,
    )
    if prepared.loss is not None:
        loss, train_set = prepared.loss, prepared.train_set
    return loss, train_set


def _main(args: argparse.Namespace) -> int:
    role = MODEL_ROLES[args.model]
    section_name = PARAMS_SECTION[role]
    if role == "teacher" and (args.method or args.teacher):
        raise ConfigError(
            f"--method and --teacher are for students; {args.model!r} is a "
            "teacher, trained on the data alone"
        )
    section, cfg, distill_cfg, checkpoints = _configs(args, role, section_name)

    store = args.store
    if str(store).endswith((".nc", ".nc4")):
        import xarray as xr

        store = xr.open_dataset(store).load()
    splits = {name: WindowDataset(store, name) for name in ("train", "val", "test")}
    shape = splits["train"].model_shape
    seed_everything(cfg.seed)  # the initial weights too, not only the training
    model = build_model(args.model, **shape, **(section.get(args.model) or {}))
    loss, train_set, method = None, splits["train"], None
    if distill_cfg is not None:
        method = distill_cfg.name
        loss, train_set = _distillation(distill_cfg, checkpoints, cfg, model, splits, shape)
    env = distributed_env()
    main_rank = env is None or env[0] == 0
    if args.mlflow and main_rank:
        from sdkd_pipeline.tracking import MLflowTracker, run_tags

        dataset = args.dataset or Path(str(args.store)).stem
        name = f"{dataset}/{args.model}" + (f"/{method}" if method else "")
        tracker = MLflowTracker(run_name=name, tags=run_tags(dataset, role, args.model, method))
    else:
        tracker = None
    try:
        result = train(
            model,
            train_set,
            splits["val"],
            cfg,
            out_dir=args.out,
            tracker=tracker,
            loss=loss,
            test_set=splits["test"],
            progress=not args.no_progress,
        )
    finally:
        if tracker is not None:
            tracker.close()
    if main_rank:
        print(
            json.dumps(
                {
                    "best_val_mse": result.best_val_loss,
                    "best_epoch": result.best_epoch,
                    "test_mse": result.test_loss,
                    "stop_reason": result.stop_reason,
                    "method": method,
                    "best_checkpoint": str(result.best_checkpoint),
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
