"""What the engine minimises: the ``TrainingLoss`` protocol (how distillation plugs in), the
default ``MSELoss``, the output/target shape check shared with validation, and the extra
parameters a loss brings to the optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


@runtime_checkable
class TrainingLoss(Protocol):
    """What the engine minimises: ``loss(model, x, y) -> (scalar, components)``.

    ``model`` is the (possibly DDP-wrapped) model in training mode; call it as ``model(x)`` so
    DDP synchronises gradients (extra outputs such as latent features should come from
    ``forward`` keyword arguments for the same reason). ``components`` maps names to detached
    scalars (tensors or floats) that are averaged over the epoch and logged as
    ``train_<name>``; keep them as tensors to avoid a device sync per step.

    Optional members, used when present (an ``nn.Module`` loss has them all):
    - ``to(device)``: move the loss's own modules (a frozen teacher, a projector);
    - ``parameters()``: extra parameters to optimise with the model (those with
      ``requires_grad``), e.g. a 1x1 projector of latent distillation; under DDP their
      gradients are averaged across ranks by the engine;
    - ``state_dict()`` / ``load_state_dict(state)``: saved in ``last.pt`` so a resumed run
      continues with the same extra parameters. A loss holding a frozen teacher should keep it
      out of its state dict (the teacher has its own checkpoint).
    """

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, Mapping[str, torch.Tensor | float]]: ...


class MSELoss:
    """The default loss: mean squared error of ``model(x)`` against ``y``."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        prediction = model(x)
        _check_same_shape(prediction, y)
        return F.mse_loss(prediction.float(), y.float()), {}


def _check_same_shape(prediction: torch.Tensor, target: torch.Tensor) -> None:
    # broadcasting would silently compute a meaningless loss
    if prediction.shape != target.shape:
        raise ValueError(
            f"model output shape {tuple(prediction.shape)} differs from target shape "
            f"{tuple(target.shape)}"
        )


def _loss_parameters(loss: Any) -> list[nn.Parameter]:
    params = getattr(loss, "parameters", None)
    if params is None:
        return []
    return [p for p in params() if p.requires_grad]
