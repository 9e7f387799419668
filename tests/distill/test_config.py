"""``DistillConfig.from_params``: methods, variants, and a ConfigError naming every bad value."""

from __future__ import annotations

import pytest

from sdkd_pipeline.distill import METHODS, MULTI_TEACHER, SINGLE_TEACHER, DistillConfig
from sdkd_pipeline.errors import ConfigError

SHARED = {
    "methods": ["none", "sdkd", "sdkd_energy"],
    "students": ["unet"],
    "lambda": 2.0,
    "alpha": 0.5,
    "cutoff": {"mode": "fixed", "k": 5, "energy_fraction": 0.8},
    "balance": {"lambda": "loss_ratio", "momentum": 0.5},
    "advantage": {"w_max": 2.0},
    "camkd": {"temperature": 0.25},
    "variants": {
        # the paper's two-band weighting with a cutoff from the teachers' spectrum
        "sdkd_energy": {
            "method": "sdkd",
            "weighting": "fixed",
            "cutoff": {"mode": "energy"},
            "balance": {"lambda": "grad_ratio"},
            "advantage": {"momentum": 0.5},
        },
        "aekd_wide": {"method": "aekd", "aekd": {"cap": 0.9}, "lambda": 0.5},
    },
    "unet": {"hidden": 8},
}


def test_method_sets_partition_the_methods():
    assert set(METHODS) == SINGLE_TEACHER | MULTI_TEACHER | {"none"}
    assert not SINGLE_TEACHER & MULTI_TEACHER


@pytest.mark.parametrize("method", METHODS)
def test_every_method_name_resolves_with_defaults(method):
    cfg = DistillConfig.from_params(method, None)
    assert (cfg.method, cfg.name) == (method, method)
    assert cfg.needs_teachers == (method != "none")
    assert cfg.multi_teacher == (method in MULTI_TEACHER)
    assert cfg.needs_latents == (method == "sdkd_latent")
    assert cfg.uses_bands == (method in ("sdkd", "sdkd_latent", "sdkd_multi"))
    assert (cfg.lam, cfg.alpha, cfg.cutoff_mode, cfg.cutoff_k) == (1.0, 1.0, "fixed", 4.0)
    assert cfg.to_dict()["method"] == method and isinstance(cfg.to_dict()["teachers"], list)
    # band methods weigh log-spaced bands by the teacher's advantage: no cutoff to choose
    assert (cfg.weighting, cfg.bands, cfg.uses_cutoff) == ("advantage", 3, False)
    assert (cfg.advantage_w_max, cfg.advantage_momentum, cfg.advantage_whiten) == (4.0, 0.9, False)
    assert (cfg.latent_share, cfg.latent_weight) == (0.2, 0.1)
    assert (cfg.fm_enabled, cfg.fm_source, cfg.fm_ratio, cfg.fm_mixup_alpha, cfg.fm_seed) == (
        False,
        "auto",
        1.0,
        0.4,
        0,
    )


@pytest.mark.parametrize("method", METHODS)
def test_only_the_fixed_weighting_of_a_band_method_uses_a_cutoff(method):
    fixed = DistillConfig.from_params(method, {"weighting": "fixed"})
    assert fixed.weighting == "fixed"
    assert fixed.uses_cutoff == (method in ("sdkd", "sdkd_latent", "sdkd_multi"))
    assert fixed.uses_cutoff == fixed.uses_bands


def test_advantage_latent_and_function_matching_settings_are_read():
    cfg = DistillConfig.from_params(
        "sdkd_latent",
        {
            "bands": 5,
            "advantage": {"w_max": 2.5, "momentum": 0.5, "whiten": True, "whiten_max": 10},
            "latent": {"share": None, "weight": 0.3},
            "function_matching": {
                "enabled": True,
                "source": "mixup",
                "ratio": 0.5,
                "mixup_alpha": 1.0,
                "seed": 3,
            },
        },
    )
    assert cfg.bands == 5
    assert (
        cfg.advantage_w_max,
        cfg.advantage_momentum,
        cfg.advantage_whiten,
        cfg.advantage_whiten_max,
    ) == (2.5, 0.5, True, 10.0)
    assert (cfg.latent_share, cfg.latent_weight) == (None, 0.3)
    assert (cfg.fm_enabled, cfg.fm_source, cfg.fm_ratio, cfg.fm_mixup_alpha, cfg.fm_seed) == (
        True,
        "mixup",
        0.5,
        1.0,
        3,
    )
    assert DistillConfig.from_params("sdkd_latent", {"latent": {"share": 0.5}}).latent_share == 0.5


@pytest.mark.parametrize("mode", ["loss_ratio", "grad_ratio"])
def test_balancing_alpha_is_refused_and_balancing_lambda_is_not(mode):
    # it scaled alpha D_low to match D_high: the band where the teacher is better was muted
    with pytest.raises(ConfigError, match=rf"distill\.balance\.alpha: '{mode}'.*mutes the band"):
        DistillConfig.from_params("sdkd", {"weighting": "fixed", "balance": {"alpha": mode}})
    with pytest.raises(ConfigError, match=r"distill\.variants\.v\.balance\.alpha"):
        DistillConfig.from_params(
            "v", {"variants": {"v": {"method": "sdkd_multi", "balance": {"alpha": mode}}}}
        )
    # an inherited shared setting is refused for the variant that uses it, too
    with pytest.raises(ConfigError, match=r"distill\.variants\.v\.balance\.alpha"):
        DistillConfig.from_params(
            "v", {"balance": {"alpha": mode}, "variants": {"v": {"method": "sdkd"}}}
        )
    for method in ("sdkd", "aekd"):
        cfg = DistillConfig.from_params(method, {"balance": {"lambda": mode, "alpha": "fixed"}})
        assert (cfg.balance_lambda, cfg.balance_alpha) == (mode, "fixed")


def test_shared_settings_apply_to_a_plain_method():
    cfg = DistillConfig.from_params("sdkd", SHARED)
    assert (cfg.lam, cfg.alpha, cfg.cutoff_mode, cfg.cutoff_k) == (2.0, 0.5, "fixed", 5.0)
    assert cfg.cutoff_energy_fraction == 0.8
    assert (cfg.balance_alpha, cfg.balance_lambda, cfg.balance_momentum) == (
        "fixed",
        "loss_ratio",
        0.5,
    )
    assert cfg.camkd_temperature == 0.25


def test_a_variant_overrides_shared_settings_deeply_and_keeps_the_others():
    cfg = DistillConfig.from_params("sdkd_energy", SHARED)
    assert (cfg.name, cfg.method) == ("sdkd_energy", "sdkd")
    assert cfg.weighting == "fixed" and cfg.uses_cutoff
    assert cfg.cutoff_mode == "energy"  # overridden inside the cutoff section
    assert cfg.cutoff_k == 5.0 and cfg.cutoff_energy_fraction == 0.8  # kept from the section
    assert cfg.balance_lambda == "grad_ratio" and cfg.balance_alpha == "fixed"
    assert cfg.balance_momentum == 0.5
    assert (cfg.advantage_w_max, cfg.advantage_momentum) == (2.0, 0.5)
    assert (cfg.lam, cfg.alpha) == (2.0, 0.5)

    wide = DistillConfig.from_params("aekd_wide", SHARED)
    assert (wide.method, wide.aekd_cap, wide.lam, wide.alpha) == ("aekd", 0.9, 0.5, 0.5)
    # the variant did not leak into the shared settings
    assert DistillConfig.from_params("aekd", SHARED).aekd_cap == 0.6
    plain = DistillConfig.from_params("sdkd", SHARED)
    assert plain.cutoff_mode == "fixed" and plain.weighting == "advantage"
    assert (plain.balance_lambda, plain.advantage_momentum) == ("loss_ratio", 0.9)


def test_teachers_accept_a_list_and_a_teacher_name():
    cfg = DistillConfig.from_params(
        "aver_mkd", {"teachers": ["simvp", "st_alternet"], "teacher": "simvp"}
    )
    assert cfg.teachers == ("simvp", "st_alternet") and cfg.teacher == "simvp"
    # the command line's list syntax (Kedro splits --params at commas)
    cli = DistillConfig.from_params("aver_mkd", {"teachers": "simvp+st_alternet"})
    assert cli.teachers == ("simvp", "st_alternet")
    with pytest.raises(ConfigError, match=r"distill\.teachers"):
        DistillConfig.from_params("aver_mkd", {"teachers": [1, 2]})
    with pytest.raises(ConfigError, match=r"distill\.teacher\b"):
        DistillConfig.from_params("sdkd", {"teacher": ""})


@pytest.mark.parametrize("name", ["sdkdd", "variant_x", "None"])
def test_an_unknown_method_or_variant_names_distill_methods(name):
    with pytest.raises(ConfigError, match=r"distill\.methods") as error:
        DistillConfig.from_params(name, SHARED)
    assert repr(name) in str(error.value)
    assert "sdkd_energy" in str(error.value)  # the declared variants are listed


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"lamda": 1.0}, r"distill\.lamda"),
        ({"cutoff": {"kk": 3}}, r"distill\.cutoff\.kk"),
        ({"balance": {"beta": "fixed"}}, r"distill\.balance\.beta"),
        ({"aekd": {"C": 0.6}}, r"distill\.aekd\.C"),
        ({"camkd": {"temp": 1}}, r"distill\.camkd\.temp"),
        ({"latent": {"weights": 1}}, r"distill\.latent\.weights"),
        ({"sdkd_multi": {"rule": "aver"}}, r"distill\.sdkd_multi\.rule"),
        ({"advantage": {"wmax": 2}}, r"distill\.advantage\.wmax"),
        ({"function_matching": {"enable": True}}, r"distill\.function_matching\.enable"),
        ({"latent": {"shares": 0.2}}, r"distill\.latent\.shares"),
    ],
)
def test_an_unknown_key_names_its_full_path(params, path):
    with pytest.raises(ConfigError, match=path + ": unknown parameter"):
        DistillConfig.from_params("sdkd", params)


@pytest.mark.parametrize(
    ("variant", "path"),
    [
        ({"method": "sdkd", "cutof": {"k": 3}}, r"distill\.variants\.v\.cutof"),
        ({"method": "sdkd", "cutoff": {"kk": 3}}, r"distill\.variants\.v\.cutoff\.kk"),
        ({"method": "sdkd", "methods": ["sdkd"]}, r"distill\.variants\.v\.methods"),
    ],
)
def test_an_unknown_key_in_a_variant_names_its_full_path(variant, path):
    with pytest.raises(ConfigError, match=path + ": unknown parameter"):
        DistillConfig.from_params("v", {"variants": {"v": variant}})


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"lambda": -1}, r"distill\.lambda"),
        ({"lambda": True}, r"distill\.lambda"),
        ({"lambda": float("nan")}, r"distill\.lambda"),
        ({"alpha": "1"}, r"distill\.alpha"),
        ({"cutoff": {"k": 0}}, r"distill\.cutoff\.k"),
        ({"cutoff": {"k": -2.0}}, r"distill\.cutoff\.k"),
        ({"cutoff": {"mode": "adaptive"}}, r"distill\.cutoff\.mode"),
        ({"cutoff": {"energy_fraction": 1.0}}, r"distill\.cutoff\.energy_fraction"),
        ({"cutoff": {"energy_fraction": 0.0}}, r"distill\.cutoff\.energy_fraction"),
        ({"cutoff": "fixed"}, r"distill\.cutoff"),
        ({"balance": {"alpha": "magic"}}, r"distill\.balance\.alpha"),
        ({"balance": {"lambda": "magic"}}, r"distill\.balance\.lambda"),
        ({"balance": {"momentum": 1.0}}, r"distill\.balance\.momentum"),
        ({"balance": {"min": 0}}, r"distill\.balance\.min"),
        ({"balance": {"min": 10, "max": 1}}, r"distill\.balance\.min"),
        ({"latent": {"weight": -0.1}}, r"distill\.latent\.weight"),
        ({"aekd": {"cap": 0}}, r"distill\.aekd\.cap"),
        ({"aekd": {"gradients": "x"}}, r"distill\.aekd\.gradients"),
        ({"camkd": {"temperature": 0}}, r"distill\.camkd\.temperature"),
        ({"sdkd_multi": {"weighting": "mean"}}, r"distill\.sdkd_multi\.weighting"),
        ({"teacher_cache": "maybe"}, r"distill\.teacher_cache"),
        ({"cache_max_gb": -1}, r"distill\.cache_max_gb"),
        ({"weighting": "focal"}, r"distill\.weighting"),
        ({"bands": 1}, r"distill\.bands"),
        ({"bands": 2.5}, r"distill\.bands"),
        ({"bands": True}, r"distill\.bands"),
        ({"advantage": {"w_max": 0}}, r"distill\.advantage\.w_max"),
        ({"advantage": {"momentum": 1.0}}, r"distill\.advantage\.momentum"),
        ({"advantage": {"whiten": "yes"}}, r"distill\.advantage\.whiten"),
        ({"advantage": {"whiten_max": 0.5}}, r"distill\.advantage\.whiten_max"),
        ({"latent": {"share": 0}}, r"distill\.latent\.share"),
        ({"latent": {"share": 0.95}}, r"distill\.latent\.share"),
        ({"function_matching": {"enabled": 1}}, r"distill\.function_matching\.enabled"),
        ({"function_matching": {"source": "teacher"}}, r"distill\.function_matching\.source"),
        ({"function_matching": {"ratio": 0}}, r"distill\.function_matching\.ratio"),
        ({"function_matching": {"mixup_alpha": -1}}, r"distill\.function_matching\.mixup_alpha"),
        ({"function_matching": {"seed": -1}}, r"distill\.function_matching\.seed"),
        ({"function_matching": "on"}, r"distill\.function_matching"),
    ],
)
def test_a_bad_value_names_the_parameter(params, path):
    with pytest.raises(ConfigError, match=path):
        DistillConfig.from_params("sdkd", params)


def test_a_bad_value_in_a_variant_names_the_variant_path():
    params = {"variants": {"v": {"method": "camkd", "camkd": {"temperature": 0}}}}
    with pytest.raises(ConfigError, match=r"distill\.variants\.v\.camkd\.temperature"):
        DistillConfig.from_params("v", params)
    # an inherited bad shared value is reported under the variant that uses it
    params = {"lambda": -1, "variants": {"v": {"method": "sdkd"}}}
    with pytest.raises(ConfigError, match=r"distill\.variants\.v\.lambda"):
        DistillConfig.from_params("v", params)


@pytest.mark.parametrize(
    "variant", [{}, None, {"method": "sdkdd"}, {"method": None}, {"cutoff": {"k": 3}}]
)
def test_a_variant_without_a_valid_method_is_refused(variant):
    with pytest.raises(ConfigError, match=r"distill\.variants\.v\.method"):
        DistillConfig.from_params("v", {"variants": {"v": variant}})


def test_variants_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"distill\.variants"):
        DistillConfig.from_params("sdkd", {"variants": ["v"]})


def test_a_variant_that_is_not_a_mapping_names_its_path():
    with pytest.raises(ConfigError, match=r"distill\.variants\.v"):
        DistillConfig.from_params("v", {"variants": {"v": "sdkd"}})


def test_student_model_configs_and_pipeline_keys_are_allowed_at_the_top():
    params = {
        "unet": {"hidden": 8},
        "resnet": {},
        "mlp_mixer": {},
        "students": ["unet"],
        "methods": ["sdkd"],
        "datasets": ["ns"],
        "training": {"epochs": 1},
    }
    assert DistillConfig.from_params("sdkd", params).method == "sdkd"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lambda": -1}, r"^distill\.lambda must be >= 0, got -1\.0$"),
        ({"cutoff": {"k": 0}}, r"^distill\.cutoff\.k must be > 0, got 0\.0$"),
        ({"cutoff": {"energy_fraction": 1}}, r"^distill\.cutoff\.energy_fraction must be < 1"),
        ({"bands": 2.5}, r"^distill\.bands must be an integer, got 2\.5$"),
        ({"weighting": "focal"}, r"^distill\.weighting must be one of 'advantage', 'fixed', "),
        ({"teachers": ["simvp", 2]}, r"^distill\.teachers\[1\] must be a string, got 2$"),
        ({"cutoff": {"kk": 3}}, r"^distill\.cutoff\.kk: unknown parameter \(allowed: "),
        ({"balance": {"min": 10, "max": 1}}, r"^distill\.balance\.min \(10\.0\) exceeds"),
    ],
)
def test_messages_name_the_parameter_and_what_is_wrong(params, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig.from_params("sdkd", params)


def test_the_parameter_path_can_be_given_and_null_teachers_are_none():
    with pytest.raises(ConfigError, match=r"^study\.distill\.variants\.v\.cutoff\.k must be > 0"):
        DistillConfig.from_params(
            "v", {"variants": {"v": {"method": "sdkd", "cutoff": {"k": 0}}}}, "study.distill"
        )
    assert DistillConfig.from_params("aver_mkd", {"teachers": None, "cutoff": None}).teachers == ()
