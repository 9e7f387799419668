"""The checkpoint of a trained forecaster: what it is, how to load it, and what it was trained on.

A checkpoint written by the training node (``pipelines.forecaster.train_forecaster``) is a dict
of plain values and tensors: the model's name and config, the data shape it takes
(``in_frames``, ``out_frames``, ``channels``, ``height``, ``width``), the channel names and the
training split's normalization statistics, the weights, and what the run measured
(``best_val_loss``, ``best_epoch``, ...). ``Checkpoint`` wraps such a dict (it is a read-only
``Mapping`` over it, so code that indexes the dict keeps working) and is what every consumer
uses: teacher loading and distillation, the spectral stage, evaluation, export and predict.

- ``Checkpoint.load(path)`` reads a file with ``torch.load(weights_only=True)`` (a checkpoint
  can never run code when opened); an unreadable file, a non-dict payload or a missing key is a
  ``DataError`` naming the file.
- ``build_model()`` rebuilds the model in eval mode.
- ``expect_model(name)`` refuses a checkpoint of another architecture (e.g. SimVP's weights
  copied over ``st_alternet.pt``), naming both; ``expect_method`` a student of another method.
- ``check_trained_on(windows)`` refuses a checkpoint trained on other data (another window
  shape, other normalization statistics), naming what differs and the command that remakes it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from sdkd_pipeline.errors import DataError

REQUIRED_KEYS = ("model", "model_config", "shape", "channels", "mean", "std", "state_dict")


def _stats_close(a: Any, b: Any) -> bool:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def check_checkpoint_matches(
    label: str,
    command: str,
    checkpoint: Mapping[str, Any],
    shape: Mapping[str, int],
    mean: torch.Tensor,
    std: torch.Tensor,
) -> None:
    """A checkpoint must have been trained on the very data it is used with: same window
    shape, same normalization (the training split's statistics). A regenerated dataset makes
    old checkpoints stale; say so (``label`` names the model, ``command`` remakes it) instead
    of using them."""
    if dict(checkpoint.get("shape", {})) != dict(shape):
        raise DataError(
            f"{label} was trained for data of shape {dict(checkpoint.get('shape', {}))}"
            f" but the tensor store holds {dict(shape)}; rerun `{command}`"
        )
    if not (_stats_close(checkpoint["mean"], mean) and _stats_close(checkpoint["std"], std)):
        raise DataError(
            f"{label} was trained on data with other normalization statistics than "
            f"the current tensor store (the data were regenerated); rerun `{command}`"
        )


class Checkpoint(Mapping[str, Any]):
    """A trained forecaster's checkpoint (see the module docstring). ``origin`` (the file, or
    a label such as ``teacher 'simvp'``) starts every error message about it."""

    def __init__(self, payload: Mapping[str, Any], origin: str = "checkpoint") -> None:
        if not isinstance(payload, Mapping):
            raise DataError(f"{origin}: not a checkpoint dict (got {type(payload).__name__})")
        missing = [k for k in REQUIRED_KEYS if k not in payload]
        if missing:
            raise DataError(
                f"{origin}: not a checkpoint of the training node (lacks {', '.join(missing)})"
            )
        self._payload = dict(payload)
        self.origin = origin

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        """Read ``path`` (``weights_only=True``); every failure names the file."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no checkpoint file there")
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # truncated, a pickle payload, not a torch file at all
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{path}: cannot be read as a checkpoint ({first})") from None
        return cls(payload, origin=str(path))

    @classmethod
    def of(
        cls, source: Checkpoint | Mapping[str, Any] | str | Path, origin: str = "checkpoint"
    ) -> Checkpoint:
        """``source`` as a ``Checkpoint``: itself, a wrapped dict, or the file it names."""
        if isinstance(source, Checkpoint):
            return source
        if isinstance(source, Mapping):
            return cls(source, origin=origin)
        return cls.load(source)

    # -- Mapping over the payload ------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._payload[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._payload)

    def __len__(self) -> int:
        return len(self._payload)

    def __repr__(self) -> str:
        return f"Checkpoint({self.model_name!r}, shape={self.shape}, origin={self.origin!r})"

    def to_dict(self) -> dict[str, Any]:
        """The payload as a plain dict (what ``torch.save`` and the Kedro catalog take)."""
        return dict(self._payload)

    # -- what it is --------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return str(self._payload["model"])

    @property
    def shape(self) -> dict[str, int]:
        return {k: int(v) for k, v in dict(self._payload["shape"]).items()}

    @property
    def role(self) -> str | None:
        """``teacher`` or ``student`` (from the model registry), ``None`` for an unknown
        model name."""
        from sdkd_pipeline.models.registry import MODEL_ROLES

        return MODEL_ROLES.get(self.model_name)

    def expect_model(
        self, name: str, label: str | None = None, command: str = "kedro run --pipelines=teacher"
    ) -> Checkpoint:
        """Refuse a checkpoint of another architecture than ``name``: a file copied or renamed
        over another model's would otherwise be used, and credited, as that model."""
        if self.model_name != name:
            raise DataError(
                f"{label or self.origin}: holds a {self.model_name!r} checkpoint, not "
                f"{name!r} (a file copied or renamed over another model's?); restore the "
                f"right file or rerun `{command}`"
            )
        return self

    def expect_method(
        self, method: str, label: str | None = None, command: str = "kedro run --pipelines=distill"
    ) -> Checkpoint:
        """Refuse a student distilled with another method than ``method`` (a checkpoint that
        records none, from before methods were recorded, passes)."""
        recorded = self._payload.get("method")
        if recorded not in (None, method):
            raise DataError(
                f"{label or self.origin}: holds a student distilled with {recorded!r}, not "
                f"{method!r} (a file copied over another method's?); rerun `{command}`"
            )
        return self

    def expect_role(self, role: str, label: str | None = None) -> Checkpoint:
        """Refuse a checkpoint whose model is not a ``role`` (``teacher`` / ``student``)."""
        if self.role != role:
            raise DataError(f"{label or self.origin}: holds a {self.model_name!r}, not a {role}")
        return self

    def check_trained_on(
        self, windows: Any, label: str | None = None, command: str = "kedro run --pipelines=teacher"
    ) -> Checkpoint:
        """Refuse a checkpoint trained on other data than ``windows`` (a ``WindowDataset``:
        its ``model_shape``, ``mean`` and ``std``), naming what differs and ``command``."""
        check_checkpoint_matches(
            label or self.origin, command, self, windows.model_shape, windows.mean, windows.std
        )
        return self

    def build_model(self) -> torch.nn.Module:
        """The trained model in eval mode (on the CPU)."""
        from sdkd_pipeline.models.registry import model_from_checkpoint

        try:
            return model_from_checkpoint(self)
        except RuntimeError as exc:  # load_state_dict: the weights do not fit the config
            first = str(exc).strip().splitlines()[0]
            raise DataError(
                f"{self.origin}: its weights do not fit its {self.model_name!r} config ({first})"
            ) from None
