"""The distillation settings of one student run, read from the ``distill`` parameters.

A *method* is one of the built-in losses (``METHODS``); a *variant* is a named method with its
own settings, declared under ``distill.variants`` so that evaluation can compare, say, the
advantage-weighted bands with the paper's fixed two-band form side by side::

    distill:
      methods: [none, sdkd, sdkd_fixed, aekd]
      lambda: 1.0
      bands: 3
      variants:
        sdkd_fixed: {method: sdkd, weighting: fixed, alpha: 1.0, cutoff: {mode: fixed, k: 4}}

Shared settings sit at the top of ``distill``; a variant overrides any of them. Every bad value
is a ``ConfigError`` naming the parameter as written in the YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from sdkd_pipeline import config_utils
from sdkd_pipeline.config_utils import list_param, param
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral.wavelet import WAVELETS

METHODS = ("none", "output_mse", "sdkd", "sdkd_latent", "aver_mkd", "aekd", "camkd", "sdkd_multi")
SINGLE_TEACHER = frozenset({"output_mse", "sdkd", "sdkd_latent"})
MULTI_TEACHER = frozenset({"aver_mkd", "aekd", "camkd", "sdkd_multi"})
CUTOFF_MODES = ("fixed", "energy")
BALANCE_MODES = ("fixed", "loss_ratio", "grad_ratio")
# band weighting of sdkd, sdkd_latent and sdkd_multi: ``advantage`` weighs log-spaced bands by
# the teacher's advantage in each (distill/band_weights.py); ``fixed`` is the paper's two-band
# form D_high + alpha D_low (alpha = 1: plain output KD), kept as a control; ``local`` weighs
# (region, wavelet band) cells by the teacher's advantage in each (distill/local.py)
WEIGHTINGS = ("advantage", "fixed", "local")
FM_SOURCES = ("auto", "solver", "mixup")
AEKD_GRADIENTS = ("output", "parameters")
BAND_WEIGHTINGS = ("aver", "aekd", "camkd")
CACHE_MODES = ("auto", "on", "off")


def _auto_levels(value: Any) -> Any:
    """``local.levels: auto`` (null too): the most the grid allows, read as ``None``."""
    return None if value == "auto" else value


def _tile_pair(value: Any) -> Any:
    """``local.tiles: 4`` is 4 x 4 tiles; a pair is [rows, columns]."""
    return [value, value] if isinstance(value, int) and not isinstance(value, bool) else value


def _teacher_names(value: Any) -> Any:
    """``teachers`` also in the command line's list syntax (``simvp+st_alternet``); null: none."""
    return list_param(value or "") if value is None or isinstance(value, str) else value


@dataclass(frozen=True)
class DistillConfig:
    """Settings of one distillation loss (see the module docstring for the YAML layout).

    - ``teacher``: the teacher of single-teacher methods, a name or ``"best"`` (the teacher
      with the lowest *validation* MSE; never the test split);
    - ``teachers``: those of multi-teacher methods (empty: every teacher checkpoint given);
    - ``lam`` (``lambda``), ``alpha``: L = MSE(G, Y) + lambda (D_high + alpha D_low);
    - ``cutoff_mode``: ``fixed`` (``cutoff_k``, in cycles per domain length of the longer
      axis) or ``energy`` (the smallest k holding ``cutoff_energy_fraction`` of the teachers'
      predicted energy on training windows);
    - ``balance_lambda``: ``fixed``, or adapted each step from running means of the loss
      terms: ``loss_ratio`` makes the task and KD terms contribute equally, ``grad_ratio``
      equalises their gradient norms at the student's output (the square root of the loss
      ratio for these squared errors); ``lambda`` then scales the balanced value.
      ``balance_alpha`` is ``fixed`` only: balancing alpha D_low against D_high muted the band
      where the teacher's advantage lay, so those modes are refused;
    - ``weighting``: how ``sdkd``, ``sdkd_latent`` and ``sdkd_multi`` weigh wavenumber bands:
      ``advantage`` (default) gives each of ``bands`` log-spaced radial bands the weight
      ``clip((E_b(G,Y) - E_b(F,Y)) / E_b(G,F), 0, advantage_w_max)`` from running estimates
      (momentum ``advantage_momentum``; ``advantage_whiten`` also divides each band by the
      teacher's share of energy in it); ``fixed`` is the paper's D_high + alpha D_low at the
      cutoff (alpha = 1 is plain output KD); ``local`` (``sdkd`` and ``sdkd_latent``) gives
      each (region, wavelet band) cell its own advantage weight: an orthogonal wavelet
      transform (``local_wavelet``, ``local_levels`` levels: ``None`` = the most the grid
      allows) with its coefficients cut into ``local_tiles`` (rows, columns) tiles
      (``sdkd_pipeline.spectral.WaveletSplit``, ``distill/local.py``);
    - ``latent_share``: ``sdkd_latent``'s latent term is weighted so that it is this share of
      the loss (running means of both terms); ``latent_weight`` instead fixes its weight when
      ``latent_share`` is null;
    - ``fm_*``: function matching (Beyer et al. 2022): the student also learns the teachers'
      outputs on ``fm_ratio`` times as many unlabelled inputs as there are training windows,
      from the solver's fresh initial states (``solver``) or mixup of training inputs
      (``mixup``, Beta(``fm_mixup_alpha``)); ``auto`` picks the solver where the dataset is
      generated. Never from validation or test data;
    - ``aekd_cap`` (C), ``aekd_gradients`` (``output``: gradients at the student's output,
      flattened over the batch; ``parameters``: w.r.t. all student parameters, M extra
      backward passes as in the AEKD paper);
    - ``camkd_temperature``: CA-MKD softmax temperature relative to the batch's mean teacher
      error;
    - ``band_weighting``: the per-band teacher weighting rule of ``sdkd_multi``;
    - ``teacher_cache``: ``on`` precomputes the teachers' outputs on the training windows once,
      ``off`` runs the teachers at every step, ``auto`` caches when it fits ``cache_max_gb``.
    """

    method: str
    name: str
    teacher: str = "best"
    teachers: tuple[str, ...] = param((), convert=_teacher_names)
    lam: float = param(1.0, ge=0, key="lambda")
    alpha: float = param(1.0, ge=0)
    cutoff_mode: str = param("fixed", choices=CUTOFF_MODES, key="cutoff.mode")
    cutoff_k: float = param(4.0, gt=0, key="cutoff.k")
    cutoff_energy_fraction: float = param(0.9, gt=0, lt=1, key="cutoff.energy_fraction")
    balance_alpha: str = param("fixed", choices=BALANCE_MODES, key="balance.alpha")
    balance_lambda: str = param("fixed", choices=BALANCE_MODES, key="balance.lambda")
    balance_momentum: float = param(0.9, ge=0, le=0.9999, key="balance.momentum")
    balance_min: float = param(1e-3, gt=0, key="balance.min")
    balance_max: float = param(1e3, gt=0, key="balance.max")
    latent_weight: float = param(0.1, ge=0, key="latent.weight")
    latent_share: float | None = param(0.2, gt=0, le=0.9, key="latent.share")
    weighting: str = param("advantage", choices=WEIGHTINGS)
    bands: int = param(3, ge=2)
    advantage_w_max: float = param(4.0, gt=0, key="advantage.w_max")
    advantage_momentum: float = param(0.9, ge=0, le=0.9999, key="advantage.momentum")
    advantage_whiten: bool = param(False, key="advantage.whiten")
    advantage_whiten_max: float = param(100.0, ge=1, key="advantage.whiten_max")
    local_wavelet: str = param("haar", choices=tuple(WAVELETS), key="local.wavelet")
    local_levels: int | None = param(
        None,
        ge=1,
        key="local.levels",
        convert=_auto_levels,
        note="an integer >= 1, or auto: the most the grid allows",
    )
    local_tiles: tuple[int, ...] = param((4, 4), ge=1, key="local.tiles", convert=_tile_pair)
    fm_enabled: bool = param(False, key="function_matching.enabled")
    fm_source: str = param("auto", choices=FM_SOURCES, key="function_matching.source")
    fm_ratio: float = param(1.0, gt=0, key="function_matching.ratio")
    fm_mixup_alpha: float = param(0.4, gt=0, key="function_matching.mixup_alpha")
    fm_seed: int = param(0, ge=0, key="function_matching.seed")
    aekd_cap: float = param(0.6, gt=0, key="aekd.cap")
    aekd_gradients: str = param("output", choices=AEKD_GRADIENTS, key="aekd.gradients")
    camkd_temperature: float = param(0.5, gt=0, key="camkd.temperature")
    band_weighting: str = param("camkd", choices=BAND_WEIGHTINGS, key="sdkd_multi.weighting")
    teacher_cache: str = param("auto", choices=CACHE_MODES)
    cache_max_gb: float = param(2.0, ge=0)
    # where the settings were read (``distill`` or ``distill.variants.<name>``), for errors
    # that need the grid (``local.levels``); not a parameter, not in ``to_dict``
    param_path: str = param("distill", compare=False)

    @property
    def needs_teachers(self) -> bool:
        return self.method != "none"

    @property
    def multi_teacher(self) -> bool:
        return self.method in MULTI_TEACHER

    @property
    def needs_latents(self) -> bool:
        return self.method == "sdkd_latent"

    @property
    def uses_bands(self) -> bool:
        return self.method in ("sdkd", "sdkd_latent", "sdkd_multi")

    @property
    def uses_cutoff(self) -> bool:
        """The paper's two-band split at k_c (the ``fixed`` weighting) needs a cutoff."""
        return self.uses_bands and self.weighting == "fixed"

    @property
    def uses_local(self) -> bool:
        """Advantage weights per (region, wavelet band) cell: ``weighting: local``."""
        return self.uses_bands and self.weighting == "local"

    def to_dict(self) -> dict[str, Any]:
        """The settings as logged and hashed into a run's identity; the ``local_*`` settings
        only where the weighting is ``local`` (so the runs of other weightings keep the
        identity they had before those settings existed)."""
        out = asdict(self)
        out["teachers"] = list(self.teachers)
        out.pop("param_path")
        if self.weighting != "local":
            for key in [k for k in out if k.startswith("local_")]:
                del out[key]
        else:
            out["local_tiles"] = list(self.local_tiles)
        return out

    def validate(self, param_path: str) -> None:
        """What the per-field bounds cannot say (``from_params`` checks those)."""
        if not self.teacher:
            raise ConfigError(
                f"{param_path}.teacher must be a teacher name or 'best', got {self.teacher!r}"
            )
        if self.balance_alpha in ("loss_ratio", "grad_ratio"):
            raise ConfigError(
                f"{param_path}.balance.alpha: {self.balance_alpha!r} is no longer offered: it "
                "scaled alpha D_low to match D_high, which mutes the band where the teacher's "
                "advantage lies; use weighting: advantage (bands weighted by the teacher's "
                "advantage in each) or a fixed alpha"
            )
        if len(self.local_tiles) != 2:
            raise ConfigError(
                f"{param_path}.local.tiles must be one integer or a pair [rows, columns], got "
                f"{list(self.local_tiles)}"
            )
        if self.weighting == "local" and self.method == "sdkd_multi":
            raise ConfigError(
                f"{param_path}.weighting: 'local' weighs the regions of one teacher's bands; "
                "it is offered for sdkd and sdkd_latent, not sdkd_multi (use advantage)"
            )
        if self.balance_min > self.balance_max:
            raise ConfigError(
                f"{param_path}.balance.min ({self.balance_min}) exceeds balance.max "
                f"({self.balance_max})"
            )

    @classmethod
    def from_params(
        cls, name: str, params: Mapping[str, Any] | None, param_path: str = "distill"
    ) -> DistillConfig:
        """The config of method or variant ``name`` from the ``distill`` parameters (at
        ``param_path``)."""
        params = dict(params or {})
        variants = params.get("variants") or {}
        if not isinstance(variants, Mapping):
            raise ConfigError(f"{param_path}.variants must be a mapping of name -> settings")
        where = param_path
        settings = {k: v for k, v in params.items() if k in LOSS_KEYS}
        unknown = sorted(set(params) - LOSS_KEYS - PIPELINE_KEYS - STUDENT_KEYS)
        if unknown:
            raise ConfigError(
                f"{param_path}.{unknown[0]}: unknown parameter (allowed: "
                f"{', '.join(sorted(LOSS_KEYS | PIPELINE_KEYS))}, and student "
                "model configs)"
            )
        if name in variants:
            where = f"{param_path}.variants.{name}"
            if not isinstance(variants[name] or {}, Mapping):
                raise ConfigError(
                    f"{where} must be a mapping with a 'method' and settings to "
                    f"override, got {variants[name]!r}"
                )
            override = dict(variants[name] or {})
            method = override.pop("method", None)
            if method not in METHODS:
                raise ConfigError(
                    f"{where}.method must be one of {', '.join(METHODS)}, got {method!r}"
                )
            bad = sorted(set(override) - LOSS_KEYS)
            if bad:
                raise ConfigError(
                    f"{where}.{bad[0]}: unknown parameter (allowed: method, "
                    f"{', '.join(sorted(LOSS_KEYS))})"
                )
            settings = _deep_merge(settings, override)
        elif name in METHODS:
            method = name
        else:
            raise ConfigError(
                f"{param_path}.methods: {name!r} is neither a method ({', '.join(METHODS)}) nor "
                f"a variant declared under {param_path}.variants "
                f"({', '.join(variants) or 'none'})"
            )
        return config_utils.from_params(cls, settings, where, method=method, name=name)


# the keys of ``distill`` that configure a loss (the fields' parameters and their sections; the
# rest: lists, training, student configs)
LOSS_KEYS = frozenset(
    f.metadata.get("key", f.name).split(".")[0]
    for f in fields(DistillConfig)
    if f.name not in ("method", "name", "param_path")
)
PIPELINE_KEYS = frozenset({"students", "methods", "datasets", "training", "variants"})
STUDENT_KEYS = frozenset({"unet", "resnet", "mlp_mixer"})


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
