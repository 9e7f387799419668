"""The one training engine, for teachers and students alike (``train``), split by job:
``config`` holds ``TrainConfig`` (the ``train`` block of the parameters), its checks and
``autocast_dtype``; ``schedule`` the learning-rate schedule (``LRSchedule``); ``losses`` the
``TrainingLoss`` protocol through which distillation plugs in and the default ``MSELoss``;
``evaluate`` the validation metric and ``evaluate_mse``; ``distributed`` the torchrun / DDP
context, the epoch sampler and the DataLoaders; ``checkpoint`` the atomic ``best.pt`` /
``last.pt`` format, ``load_checkpoint``, RNG state and ``seed_everything``; ``state`` the
resumable run state and ``TrainResult``; ``engine`` ``train`` itself (the loop, resume,
early stopping, tracker logging); and ``__main__`` the command line that trains one model on one
tensor store without Kedro (``python -m sdkd_pipeline.training``, also under torchrun). The
package imports without Kedro, MLflow, Zarr or Dask; tqdm is optional (no progress bar without
it).
"""

from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.training.checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_FORMAT,
    HISTORY_FILE,
    LAST_CHECKPOINT,
    load_checkpoint,
    seed_everything,
)
from sdkd_pipeline.training.checkpoint import _atomic_torch_save as _atomic_torch_save
from sdkd_pipeline.training.config import (
    PRECISIONS,
    RESUME_FREE_KEYS,
    SCHEDULES,
    TrainConfig,
    autocast_dtype,
    stage_config,
)
from sdkd_pipeline.training.distributed import distributed_env
from sdkd_pipeline.training.engine import train
from sdkd_pipeline.training.evaluate import (
    ValMetric,
    evaluate_mse,
    squared_error_sum,
)
from sdkd_pipeline.training.evaluate import _autocast as _autocast
from sdkd_pipeline.training.losses import MSELoss, TrainingLoss
from sdkd_pipeline.training.schedule import LRSchedule
from sdkd_pipeline.training.state import TrainResult

# ``_atomic_torch_save`` and ``_autocast`` (private) are re-exported for callers of the old
# single module; a patch of ``_atomic_torch_save`` belongs on ``engine``, where it is looked up.
__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "HISTORY_FILE",
    "LAST_CHECKPOINT",
    "PRECISIONS",
    "RESUME_FREE_KEYS",
    "SCHEDULES",
    "LRSchedule",
    "MSELoss",
    "TrainConfig",
    "TrainResult",
    "TrainingLoss",
    "ValMetric",
    "autocast_dtype",
    "distributed_env",
    "evaluate_mse",
    "load_checkpoint",
    "resolve_device",
    "seed_everything",
    "squared_error_sum",
    "stage_config",
    "train",
]
