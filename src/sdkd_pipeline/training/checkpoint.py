"""Checkpoints, RNG state and seeding.

The engine keeps two checkpoints in its ``out_dir``: ``best.pt`` (the model weights of the
best validation epoch, that epoch, its validation loss and the training config) and
``last.pt`` (everything needed to continue exactly where the run stopped, including the RNG
states (torch, CUDA, NumPy, Python) of every process). Both are written atomically (temporary
file + ``os.replace``) and hold only tensors, plain containers, numbers and strings, so they
load with ``torch.load(..., weights_only=True)`` (``load_checkpoint``). ``seed_everything``
seeds every generator; ``_determinism`` switches deterministic kernels on for a run."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.atomic import atomic_path, write_text
from sdkd_pipeline.errors import ConfigError, DataError

CHECKPOINT_FORMAT = 1
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
HISTORY_FILE = "history.json"


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """Write ``obj`` so that ``path`` is always either the old or the complete new file (flushed
    to disk first); a full disk is a ``DataError`` naming ``path``, no temporary left."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _atomic_write_text(text: str, path: Path) -> None:
    write_text(text, path)


def _tracker_run_id(tracker: Any) -> str | None:
    run_id = getattr(tracker, "run_id", None)
    return None if run_id is None else str(run_id)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by the engine (``weights_only=True``: no code runs). A file
    that cannot be read (truncated, a pickle payload, not a torch file) is a ``DataError``
    naming it; one of another format a ``ConfigError``."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, a refused pickle global, garbage
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise DataError(f"{path}: cannot be read as a training checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a training checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [py_version, list(py_internal), py_gauss],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def seed_everything(seed: int) -> None:
    """Seed torch (every device), NumPy and Python's ``random`` from ``seed``.

    Call it before a model is built as well as before training: the initial weights come from
    torch's global generator, which is otherwise seeded at random per process."""
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def _determinism(enabled: bool, device: torch.device):
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    previous_benchmark = torch.backends.cudnn.benchmark
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fastest kernels for fixed shapes
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous_benchmark
