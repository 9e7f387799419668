"""Knowledge distillation: losses, teacher weighting and the teachers' outputs.

Imports without Kedro, MLflow, Zarr or Dask::

    from sdkd_pipeline.distill import DistillConfig, build_loss, choose_cutoff
    cfg = DistillConfig.from_params("sdkd", {"lambda": 1.0, "cutoff": {"k": 4}})
    loss = build_loss(cfg, {"simvp": teacher}, height=64, width=64, cutoff=4.0)
    train(student, train_set, val_set, train_cfg, out_dir=..., loss=loss)
"""

from sdkd_pipeline.distill.config import METHODS, MULTI_TEACHER, SINGLE_TEACHER, DistillConfig
from sdkd_pipeline.distill.losses import (
    Balancer,
    DistillationLoss,
    build_loss,
    camkd_weights,
    choose_cutoff,
)
from sdkd_pipeline.distill.minnorm import min_norm_weights, min_norm_weights_torch

__all__ = [
    "METHODS",
    "MULTI_TEACHER",
    "SINGLE_TEACHER",
    "Balancer",
    "DistillConfig",
    "DistillationLoss",
    "build_loss",
    "camkd_weights",
    "choose_cutoff",
    "min_norm_weights",
    "min_norm_weights_torch",
]
