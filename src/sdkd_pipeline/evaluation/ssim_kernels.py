"""The skimage-convention SSIM of ``metrics`` (whose docstring defines it) as batched torch
kernels: a 7 x 7 uniform window as two separable average pools."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_UNIFORM_WINDOW = 7


def _uniform_window_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over each 7 x 7 window lying inside the frame (last two dims): ``(..., H - 6, W - 6)``,
    as two separable passes."""
    window = SSIM_UNIFORM_WINDOW
    rows = F.avg_pool2d(x, (window, 1), stride=1)
    return F.avg_pool2d(rows, (1, window), stride=1)


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """skimage's ``structural_similarity`` of every frame of ``(B, n, H, W)``: ``(B, n)``.

    With its defaults (a 7 x 7 uniform window, sample covariances, k1 = 0.01, k2 = 0.03) and an
    explicit ``data_range``; the map is averaged over the pixels whose window lies inside the
    frame, which is skimage's crop of 3 cells along each border (the values its reflect
    padding produces there never enter the mean).
    """
    points = SSIM_UNIFORM_WINDOW**2
    covariance_norm = points / (points - 1)  # sample covariance, as skimage's default
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mean_x, mean_y = _uniform_window_mean(x), _uniform_window_mean(y)
    var_x = covariance_norm * (_uniform_window_mean(x * x) - mean_x * mean_x)
    var_y = covariance_norm * (_uniform_window_mean(y * y) - mean_y * mean_y)
    cov_xy = covariance_norm * (_uniform_window_mean(x * y) - mean_x * mean_y)
    numerator = (2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)
    denominator = (mean_x.square() + mean_y.square() + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean((-2, -1))
