"""Train one model on one tensor store without Kedro, e.g. on several GPUs with torchrun.

    python -m sdkd_pipeline.train_cli --store data/05_model_input/navier_stokes.zarr \\
        --model st_alternet --out data/06_models/runs/navier_stokes/st_alternet
    torchrun --nproc_per_node=4 -m sdkd_pipeline.train_cli --store ... --model simvp --out ...

Model and training settings come from a parameters file (default: the project's
``conf/base/parameters_<role>.yml``), sections ``<role>.<model>`` and ``<role>.training``;
``--set key=value`` overrides training keys. Under torchrun every rank trains (DDP); rank 0
alone writes checkpoints and logs the MLflow run (``--mlflow``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.models import build_model
from sdkd_pipeline.models.registry import MODEL_ROLES
from sdkd_pipeline.training import TrainConfig, distributed_env, seed_everything, train


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdkd_pipeline.train_cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="tensor store (.zarr) or NetCDF copy")
    parser.add_argument("--model", required=True, choices=sorted(MODEL_ROLES))
    parser.add_argument("--out", required=True, help="checkpoint folder (best.pt, last.pt)")
    parser.add_argument("--params-file", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--mlflow", action="store_true", help="log the run to MLflow")
    parser.add_argument("--dataset", default=None, help="dataset name for the MLflow tags")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    role = MODEL_ROLES[args.model]
    params_file = Path(args.params_file or f"conf/base/parameters_{role}.yml")
    if not params_file.is_file():
        raise ConfigError(f"--params-file {params_file}: no such file")
    params = yaml.safe_load(params_file.read_text()) or {}
    section = params.get(role) or {}
    training = {**(section.get("training") or {}), **_overrides(args.set)}
    cfg = TrainConfig.from_dict(training, prefix=f"{role}.training")

    store = args.store
    if str(store).endswith((".nc", ".nc4")):
        import xarray as xr

        store = xr.open_dataset(store).load()
    splits = {name: WindowDataset(store, name) for name in ("train", "val", "test")}
    _, _, channels, height, width = splits["train"].shape
    seed_everything(cfg.seed)  # the initial weights too, not only the training
    model = build_model(
        args.model, in_frames=splits["train"].t_in, out_frames=splits["train"].t_out,
        channels=channels, height=height, width=width, **(section.get(args.model) or {}),
    )
    env = distributed_env()
    main_rank = env is None or env[0] == 0
    if args.mlflow and main_rank:
        from sdkd_pipeline.tracking import MLflowTracker, run_tags

        dataset = args.dataset or Path(str(args.store)).stem
        tracker = MLflowTracker(run_name=f"{dataset}/{args.model}",
                                tags=run_tags(dataset, role, args.model))
    else:
        tracker = None
    try:
        result = train(model, splits["train"], splits["val"], cfg, out_dir=args.out,
                       tracker=tracker, test_set=splits["test"], progress=not args.no_progress)
    finally:
        if tracker is not None:
            tracker.close()
    if main_rank:
        print(json.dumps({"best_val_mse": result.best_val_loss, "best_epoch": result.best_epoch,
                          "test_mse": result.test_loss,
                          "best_checkpoint": str(result.best_checkpoint)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
