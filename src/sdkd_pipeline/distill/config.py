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

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any

from sdkd_pipeline.config_utils import list_param
from sdkd_pipeline.errors import ConfigError

METHODS = ("none", "output_mse", "sdkd", "sdkd_latent", "aver_mkd", "aekd", "camkd", "sdkd_multi")
SINGLE_TEACHER = frozenset({"output_mse", "sdkd", "sdkd_latent"})
MULTI_TEACHER = frozenset({"aver_mkd", "aekd", "camkd", "sdkd_multi"})
CUTOFF_MODES = ("fixed", "energy")
BALANCE_MODES = ("fixed", "loss_ratio", "grad_ratio")
# band weighting of sdkd, sdkd_latent and sdkd_multi: ``advantage`` weighs log-spaced bands by
# the teacher's advantage in each (distill/band_weights.py); ``fixed`` is the paper's two-band
# form D_high + alpha D_low (alpha = 1: plain output KD), kept as a control
WEIGHTINGS = ("advantage", "fixed")
FM_SOURCES = ("auto", "solver", "mixup")
AEKD_GRADIENTS = ("output", "parameters")
BAND_WEIGHTINGS = ("aver", "aekd", "camkd")
CACHE_MODES = ("auto", "on", "off")

# the keys of ``distill`` that configure a loss (the rest: lists, training, student configs)
LOSS_KEYS = frozenset(
    {
        "teacher",
        "teachers",
        "lambda",
        "alpha",
        "cutoff",
        "balance",
        "latent",
        "aekd",
        "camkd",
        "sdkd_multi",
        "teacher_cache",
        "cache_max_gb",
        "weighting",
        "bands",
        "advantage",
        "function_matching",
    }
)
PIPELINE_KEYS = frozenset({"students", "methods", "datasets", "training", "variants"})


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
      cutoff (alpha = 1 is plain output KD);
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
    teachers: tuple[str, ...] = ()
    lam: float = 1.0
    alpha: float = 1.0
    cutoff_mode: str = "fixed"
    cutoff_k: float = 4.0
    cutoff_energy_fraction: float = 0.9
    balance_alpha: str = "fixed"
    balance_lambda: str = "fixed"
    balance_momentum: float = 0.9
    balance_min: float = 1e-3
    balance_max: float = 1e3
    latent_weight: float = 0.1
    latent_share: float | None = 0.2
    weighting: str = "advantage"
    bands: int = 3
    advantage_w_max: float = 4.0
    advantage_momentum: float = 0.9
    advantage_whiten: bool = False
    advantage_whiten_max: float = 100.0
    fm_enabled: bool = False
    fm_source: str = "auto"
    fm_ratio: float = 1.0
    fm_mixup_alpha: float = 0.4
    fm_seed: int = 0
    aekd_cap: float = 0.6
    aekd_gradients: str = "output"
    camkd_temperature: float = 0.5
    band_weighting: str = "camkd"
    teacher_cache: str = "auto"
    cache_max_gb: float = 2.0

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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["teachers"] = list(self.teachers)
        return out

    @classmethod
    def from_params(cls, name: str, params: Mapping[str, Any] | None) -> DistillConfig:
        """The config of method or variant ``name`` from the ``distill`` parameters."""
        params = dict(params or {})
        variants = params.get("variants") or {}
        if not isinstance(variants, Mapping):
            raise ConfigError("distill.variants must be a mapping of name -> settings")
        where = "distill"
        settings = {k: v for k, v in params.items() if k in LOSS_KEYS}
        unknown = sorted(set(params) - LOSS_KEYS - PIPELINE_KEYS - {"unet", "resnet", "mlp_mixer"})
        if unknown:
            raise ConfigError(
                f"distill.{unknown[0]}: unknown parameter (allowed: "
                f"{', '.join(sorted(LOSS_KEYS | PIPELINE_KEYS))}, and student "
                "model configs)"
            )
        if name in variants:
            where = f"distill.variants.{name}"
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
                f"distill.methods: {name!r} is neither a method ({', '.join(METHODS)}) nor a "
                f"variant declared under distill.variants ({', '.join(variants) or 'none'})"
            )
        return _build(cls, name, method, settings, where)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _section(
    settings: Mapping[str, Any], key: str, allowed: set[str], where: str
) -> dict[str, Any]:
    value = settings.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.{key} must be a mapping, got {value!r}")
    bad = sorted(set(value) - allowed)
    if bad:
        raise ConfigError(
            f"{where}.{key}.{bad[0]}: unknown parameter (allowed: {', '.join(sorted(allowed))})"
        )
    return dict(value)


def _real(
    where: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    value = float(value)
    if low is not None and (value <= low if open_low else value < low):
        raise ConfigError(f"{where} must be {'>' if open_low else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{where} must be <= {high}, got {value}")
    return value


def _integer(where: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ConfigError(f"{where} must be an integer >= {low}, got {value!r}")
    return int(value)


def _flag(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def _choice(where: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ConfigError(f"{where} must be one of {', '.join(options)}, got {value!r}")
    return str(value)


def _build(
    cls: type[DistillConfig], name: str, method: str, s: Mapping[str, Any], where: str
) -> DistillConfig:
    cutoff = _section(s, "cutoff", {"mode", "k", "energy_fraction"}, where)
    balance = _section(s, "balance", {"alpha", "lambda", "momentum", "min", "max"}, where)
    latent = _section(s, "latent", {"weight", "share"}, where)
    advantage = _section(s, "advantage", {"w_max", "momentum", "whiten", "whiten_max"}, where)
    fm = _section(
        s, "function_matching", {"enabled", "source", "ratio", "mixup_alpha", "seed"}, where
    )
    if balance.get("alpha", "fixed") in ("loss_ratio", "grad_ratio"):
        raise ConfigError(
            f"{where}.balance.alpha: {balance['alpha']!r} is no longer offered: it scaled "
            "alpha D_low to match D_high, which mutes the band where the teacher's advantage "
            "lies; use weighting: advantage (bands weighted by the teacher's advantage in "
            "each) or a fixed alpha"
        )
    aekd = _section(s, "aekd", {"cap", "gradients"}, where)
    camkd = _section(s, "camkd", {"temperature"}, where)
    multi = _section(s, "sdkd_multi", {"weighting"}, where)
    teachers = s.get("teachers") or ()
    if isinstance(teachers, str):
        teachers = list_param(teachers)  # the command line's list syntax
    if not isinstance(teachers, list | tuple) or not all(isinstance(t, str) for t in teachers):
        raise ConfigError(f"{where}.teachers must be a list of teacher names, got {teachers!r}")
    teacher = s.get("teacher", "best")
    if not isinstance(teacher, str) or not teacher:
        raise ConfigError(f"{where}.teacher must be a teacher name or 'best', got {teacher!r}")
    cfg = cls(
        method=method,
        name=name,
        teacher=teacher,
        teachers=tuple(teachers),
        lam=_real(f"{where}.lambda", s.get("lambda", 1.0), low=0.0),
        alpha=_real(f"{where}.alpha", s.get("alpha", 1.0), low=0.0),
        cutoff_mode=_choice(f"{where}.cutoff.mode", cutoff.get("mode", "fixed"), CUTOFF_MODES),
        cutoff_k=_real(f"{where}.cutoff.k", cutoff.get("k", 4.0), low=0.0, open_low=True),
        cutoff_energy_fraction=_real(
            f"{where}.cutoff.energy_fraction",
            cutoff.get("energy_fraction", 0.9),
            low=0.0,
            high=1.0,
            open_low=True,
        ),
        balance_alpha=_choice(
            f"{where}.balance.alpha", balance.get("alpha", "fixed"), BALANCE_MODES
        ),
        balance_lambda=_choice(
            f"{where}.balance.lambda", balance.get("lambda", "fixed"), BALANCE_MODES
        ),
        balance_momentum=_real(
            f"{where}.balance.momentum", balance.get("momentum", 0.9), low=0.0, high=0.9999
        ),
        balance_min=_real(f"{where}.balance.min", balance.get("min", 1e-3), low=0.0, open_low=True),
        balance_max=_real(f"{where}.balance.max", balance.get("max", 1e3), low=0.0, open_low=True),
        latent_weight=_real(f"{where}.latent.weight", latent.get("weight", 0.1), low=0.0),
        latent_share=None
        if latent.get("share", 0.2) is None
        else _real(
            f"{where}.latent.share", latent.get("share", 0.2), low=0.0, high=0.9, open_low=True
        ),
        weighting=_choice(f"{where}.weighting", s.get("weighting", "advantage"), WEIGHTINGS),
        bands=_integer(f"{where}.bands", s.get("bands", 3), low=2),
        advantage_w_max=_real(
            f"{where}.advantage.w_max", advantage.get("w_max", 4.0), low=0.0, open_low=True
        ),
        advantage_momentum=_real(
            f"{where}.advantage.momentum", advantage.get("momentum", 0.9), low=0.0, high=0.9999
        ),
        advantage_whiten=_flag(f"{where}.advantage.whiten", advantage.get("whiten", False)),
        advantage_whiten_max=_real(
            f"{where}.advantage.whiten_max", advantage.get("whiten_max", 100.0), low=1.0
        ),
        fm_enabled=_flag(f"{where}.function_matching.enabled", fm.get("enabled", False)),
        fm_source=_choice(
            f"{where}.function_matching.source", fm.get("source", "auto"), FM_SOURCES
        ),
        fm_ratio=_real(
            f"{where}.function_matching.ratio", fm.get("ratio", 1.0), low=0.0, open_low=True
        ),
        fm_mixup_alpha=_real(
            f"{where}.function_matching.mixup_alpha",
            fm.get("mixup_alpha", 0.4),
            low=0.0,
            open_low=True,
        ),
        fm_seed=_integer(f"{where}.function_matching.seed", fm.get("seed", 0), low=0),
        aekd_cap=_real(f"{where}.aekd.cap", aekd.get("cap", 0.6), low=0.0, open_low=True),
        aekd_gradients=_choice(
            f"{where}.aekd.gradients", aekd.get("gradients", "output"), AEKD_GRADIENTS
        ),
        camkd_temperature=_real(
            f"{where}.camkd.temperature", camkd.get("temperature", 0.5), low=0.0, open_low=True
        ),
        band_weighting=_choice(
            f"{where}.sdkd_multi.weighting", multi.get("weighting", "camkd"), BAND_WEIGHTINGS
        ),
        teacher_cache=_choice(
            f"{where}.teacher_cache", s.get("teacher_cache", "auto"), CACHE_MODES
        ),
        cache_max_gb=_real(f"{where}.cache_max_gb", s.get("cache_max_gb", 2.0), low=0.0),
    )
    if cfg.balance_min > cfg.balance_max:
        raise ConfigError(
            f"{where}.balance.min ({cfg.balance_min}) exceeds balance.max ({cfg.balance_max})"
        )
    if cfg.cutoff_energy_fraction >= 1.0:
        raise ConfigError(
            f"{where}.cutoff.energy_fraction must be below 1, got {cfg.cutoff_energy_fraction}"
        )
    return cfg
