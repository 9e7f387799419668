"""The band cutoff k_c of the two-band (``weighting: fixed``) distillation losses.

Chosen once per run, before training (``choose_cutoff``): a fixed wavenumber or the shell holding
a given fraction of the teachers' energy. Re-exported by ``sdkd_pipeline.distill.losses``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from sdkd_pipeline.distill.config import DistillConfig
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral import energy_fraction_cutoff, radial_energy_spectrum, radial_wavenumber

log = logging.getLogger(__name__)


def max_wavenumber(height: int, width: int) -> float:
    return float(radial_wavenumber(height, width).max())


def choose_cutoff(
    cfg: DistillConfig,
    height: int,
    width: int,
    teacher_predictions: list[torch.Tensor] | None = None,
) -> float:
    """The band cutoff k_c of a run, in cycles per domain length of the longer axis.

    ``fixed``: ``cfg.cutoff_k``. ``energy``: the smallest shell k holding
    ``cfg.cutoff_energy_fraction`` of the energy of the teachers' predictions (radially binned,
    averaged over windows, frames, channels and teachers): the low band is then "what the
    teachers' fields are mostly made of" and the high band their fine detail, whatever the
    dataset's resolution.
    """
    k_max = max_wavenumber(height, width)
    if cfg.cutoff_mode == "fixed":
        cutoff = cfg.cutoff_k
    else:
        if not teacher_predictions:
            raise ConfigError("cutoff.mode 'energy' needs the teachers' predictions")
        spectra = [radial_energy_spectrum(p.detach().float().cpu()) for p in teacher_predictions]
        k = spectra[0][0]
        energy = np.mean([e for _, e in spectra], axis=0)
        shell = float(energy_fraction_cutoff(k, energy, cfg.cutoff_energy_fraction))
        # shell s holds s - 1/2 <= |k| < s + 1/2: the low band takes shells 0..s whole
        cutoff = shell + 0.5
        if cutoff >= k_max:
            # the fraction is reached only in the outermost shell: leave the grid's largest
            # wavenumber(s) alone in the high band
            distinct = torch.unique(radial_wavenumber(height, width))
            cutoff = float(distinct[-2])
            log.warning(
                "cutoff.energy_fraction %g is reached only in the outermost shell of "
                "the %dx%d grid: k_c = %g",
                cfg.cutoff_energy_fraction,
                height,
                width,
                cutoff,
            )
    if not 0 < cutoff < k_max:  # only a fixed cutoff can get here
        raise ConfigError(
            f"distill cutoff k_c={cutoff:g} leaves an empty band on the {height}x{width} grid "
            f"(wavenumbers 0..{k_max:.2f}): set distill.cutoff.k between 0 and {k_max:.2f}"
        )
    return cutoff
