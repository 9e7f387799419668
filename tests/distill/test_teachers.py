"""Teachers: choosing them, checking they fit the data, caching their outputs; the cutoff."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sdkd_pipeline.distill import DistillConfig, choose_cutoff
from sdkd_pipeline.distill.losses import max_wavenumber
from sdkd_pipeline.distill.teachers import (
    TEACHER_COMMAND,
    WithTeacherTargets,
    cache_bytes,
    check_teacher_matches,
    choose_teachers,
    finite_or_raise,
    freeze,
    precompute_teacher_outputs,
    run_teacher,
    should_cache,
)
from sdkd_pipeline.errors import ConfigError, DataError
from sdkd_pipeline.models import build_model
from sdkd_pipeline.spectral import radial_wavenumber

SHAPE = {"in_frames": 3, "out_frames": 3, "channels": 1, "height": 16, "width": 16}
VAL = {"simvp": 0.30, "st_alternet": 0.10}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(method: str, **params) -> DistillConfig:
    return DistillConfig.from_params(method, params)


# --------------------------------------------------------------------------------------------
# choose_teachers


def test_best_picks_the_lowest_validation_loss():
    assert choose_teachers(_cfg("sdkd"), VAL) == ["st_alternet"]
    assert choose_teachers(_cfg("sdkd"), {"simvp": 0.05, "st_alternet": 0.10}) == ["simvp"]
    assert choose_teachers(_cfg("sdkd"), {"simvp": math.inf, "st_alternet": 2.0}) == ["st_alternet"]
    assert choose_teachers(_cfg("sdkd"), {"b": 0.1, "a": 0.1}) == ["a"]  # ties: by name
    assert choose_teachers(_cfg("output_mse"), {"simvp": 1.0}) == ["simvp"]


def test_a_named_teacher_must_exist():
    assert choose_teachers(_cfg("sdkd_latent", teacher="simvp"), VAL) == ["simvp"]
    with pytest.raises(ConfigError, match=r"distill\.teacher: 'unet'") as error:
        choose_teachers(_cfg("sdkd", teacher="unet"), VAL)
    assert "simvp" in str(error.value) and "st_alternet" in str(error.value)


def test_multi_teacher_methods_take_every_or_the_named_teachers():
    three = {**VAL, "other": 0.2}
    assert choose_teachers(_cfg("aekd"), three) == ["other", "simvp", "st_alternet"]
    assert choose_teachers(_cfg("camkd", teachers=["st_alternet", "simvp"]), three) == [
        "st_alternet",
        "simvp",
    ]
    with pytest.raises(ConfigError, match=r"distill\.teachers: \['unet'\]"):
        choose_teachers(_cfg("aver_mkd", teachers=["simvp", "unet"]), three)


@pytest.mark.parametrize("method", ["aver_mkd", "aekd", "camkd", "sdkd_multi"])
def test_multi_teacher_methods_need_two_teachers(method):
    with pytest.raises(ConfigError, match="several teachers"):
        choose_teachers(_cfg(method), {"simvp": 0.1})
    with pytest.raises(ConfigError, match="several teachers"):
        choose_teachers(_cfg(method, teachers=["simvp"]), VAL)


def test_none_needs_no_teacher_and_others_need_some():
    assert choose_teachers(_cfg("none"), {}) == []
    assert choose_teachers(_cfg("none"), VAL) == []
    for method in ("sdkd", "aekd"):
        with pytest.raises(ConfigError, match=TEACHER_COMMAND):
            choose_teachers(_cfg(method), {})


# --------------------------------------------------------------------------------------------
# check_teacher_matches


def _checkpoint(shape=None, mean=0.5, std=2.0) -> dict:
    return {"shape": dict(shape or SHAPE), "mean": torch.tensor([mean]), "std": torch.tensor([std])}


def test_a_matching_teacher_passes():
    check_teacher_matches("simvp", _checkpoint(), SHAPE, torch.tensor([0.5]), torch.tensor([2.0]))
    # float rounding of the statistics is tolerated
    check_teacher_matches(
        "simvp",
        _checkpoint(mean=0.5 + 1e-9),
        SHAPE,
        torch.tensor([0.5], dtype=torch.float64),
        torch.tensor([2.0]),
    )


@pytest.mark.parametrize(
    "shape",
    [
        {**SHAPE, "height": 32},
        {**SHAPE, "out_frames": 2},
        {k: v for k, v in SHAPE.items() if k != "channels"},
    ],
)
def test_a_teacher_of_another_shape_is_stale(shape):
    with pytest.raises(DataError, match=r"kedro run --pipelines=teacher") as error:
        check_teacher_matches(
            "simvp", _checkpoint(shape), SHAPE, torch.tensor([0.5]), torch.tensor([2.0])
        )
    assert "'simvp'" in str(error.value) and "shape" in str(error.value)
    with pytest.raises(DataError, match=r"kedro run --pipelines=teacher"):
        check_teacher_matches(
            "simvp", {"mean": 0.5, "std": 2.0}, SHAPE, torch.tensor([0.5]), torch.tensor([2.0])
        )


@pytest.mark.parametrize(("mean", "std"), [(0.6, 2.0), (0.5, 2.1)])
def test_a_teacher_with_other_statistics_is_stale(mean, std):
    with pytest.raises(DataError, match=r"kedro run --pipelines=teacher") as error:
        check_teacher_matches(
            "st_alternet",
            _checkpoint(mean=mean, std=std),
            SHAPE,
            torch.tensor([0.5]),
            torch.tensor([2.0]),
        )
    assert "normalization" in str(error.value)


# --------------------------------------------------------------------------------------------
# caching the teachers' outputs


@pytest.mark.parametrize(
    ("mode", "n_bytes", "limit_gb", "expected"),
    [
        ("on", 10 * 2**30, 2.0, True),
        ("off", 1, 2.0, False),
        ("auto", 2 * 2**30, 2.0, True),
        ("auto", 2 * 2**30 + 1, 2.0, False),
        ("auto", 100 * 2**20, 0.05, False),
        ("auto", 0, 0.0, True),
    ],
)
def test_should_cache(mode, n_bytes, limit_gb, expected):
    cfg = _cfg("sdkd", teacher_cache=mode, cache_max_gb=limit_gb)
    assert should_cache(cfg, n_bytes) is expected


def _teachers() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "st_alternet": freeze(
            build_model(
                "st_alternet",
                **SHAPE,
                hidden=16,
                depth=1,
                heads=2,
                frame_hidden=8,
                spatial_layers=2,
            )
        ),
        "simvp": freeze(
            build_model("simvp", **SHAPE, frame_hidden=8, hidden=16, spatial_layers=2, depth=2)
        ),
    }


def _dataset(n: int = 6) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(
        torch.randn(n, 3, 1, 16, 16, generator=g), torch.randn(n, 3, 1, 16, 16, generator=g)
    )


def test_freeze_puts_a_teacher_in_eval_mode_without_gradients():
    teacher = _teachers()["simvp"]
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())


def test_precomputed_outputs_match_running_the_teachers_and_cache_bytes_counts_them():
    teachers, data = _teachers(), _dataset()
    cache = precompute_teacher_outputs(
        teachers, data, latents=True, batch_size=4, device=torch.device("cpu")
    )
    assert set(cache) == set(teachers)
    x = data.tensors[0]
    for name, model in teachers.items():
        # the latent the loss aligns with: the teacher's state after its last block
        assert set(cache[name]) == {"prediction", "state"}
        assert cache[name]["prediction"].shape == (6, 3, 1, 16, 16)
        assert cache[name]["state"].shape == (6, model.latent_channels, 8, 8) == (6, 16, 8, 8)
        _, features = model.forward_features(x[:2])
        torch.testing.assert_close(
            cache[name]["state"][:2], features["state"], rtol=1e-6, atol=1e-6
        )
        direct = run_teacher(model, x[4:], latents=True)
        for key, value in direct.items():
            torch.testing.assert_close(cache[name][key][4:], value, rtol=1e-6, atol=1e-6)
            assert not value.requires_grad
    expected = sum(t.numel() * 4 for outs in cache.values() for t in outs.values())
    assert cache_bytes(teachers, data, latents=True) == expected
    no_latents = precompute_teacher_outputs(
        teachers, data, latents=False, batch_size=4, device=torch.device("cpu")
    )
    assert all(set(outs) == {"prediction"} for outs in no_latents.values())
    assert cache_bytes(teachers, data, latents=False) == 2 * 6 * 3 * 16 * 16 * 4


def test_with_teacher_targets_attaches_each_windows_outputs():
    data = _dataset()
    cache = {"t": {"prediction": torch.arange(6.0)[:, None].expand(6, 5).clone()}}
    wrapped = WithTeacherTargets(data, cache)
    assert len(wrapped) == 6
    x, target = wrapped[3]
    assert torch.equal(x, data.tensors[0][3]) and torch.equal(target["y"], data.tensors[1][3])
    assert torch.equal(target["teachers"]["t"]["prediction"], torch.full((5,), 3.0))
    batch = wrapped.__getitems__([5, 1])
    assert [float(item[1]["teachers"]["t"]["prediction"][0]) for item in batch] == [5.0, 1.0]
    xs, ys = next(iter(DataLoader(wrapped, batch_size=4, shuffle=False)))
    assert xs.shape == (4, 3, 1, 16, 16) and ys["teachers"]["t"]["prediction"].shape == (4, 5)
    with pytest.raises(ValueError, match=r"t\.prediction has 5 windows, the dataset 6"):
        WithTeacherTargets(data, {"t": {"prediction": torch.zeros(5, 2)}})


def test_latents_need_a_teacher_with_a_state_and_outputs_must_be_finite():
    torch.manual_seed(0)
    unet = freeze(build_model("unet", **SHAPE, hidden=8, base_width=8))
    with pytest.raises(ConfigError, match=r"latent 'state'; UNet has \['bottleneck'\]"):
        run_teacher(unet, torch.zeros(1, 3, 1, 16, 16), latents=True)
    teacher = _teachers()["simvp"]
    outputs = run_teacher(teacher, torch.zeros(1, 3, 1, 16, 16), latents=True)
    assert set(outputs) == {"prediction", "state"}
    assert set(run_teacher(teacher, torch.zeros(1, 3, 1, 16, 16), latents=False)) == {"prediction"}
    finite_or_raise("t", {"prediction": torch.zeros(3)})
    with pytest.raises(DataError, match=r"'t' produced non-finite prediction.*pipelines=teacher"):
        finite_or_raise("t", {"prediction": torch.tensor([0.0, math.nan])})


# --------------------------------------------------------------------------------------------
# choose_cutoff (the paper's fixed two-band weighting is what uses a cutoff)


def test_a_fixed_cutoff_is_returned_as_given():
    assert choose_cutoff(_cfg("sdkd", weighting="fixed", cutoff={"k": 4}), 32, 32) == 4.0
    assert choose_cutoff(_cfg("sdkd", weighting="fixed", cutoff={"k": 0.5}), 16, 16) == 0.5
    assert choose_cutoff(_cfg("sdkd", weighting="fixed", cutoff={"k": 22.6}), 32, 32) == 22.6


@pytest.mark.parametrize(
    ("k", "height", "width"), [(23, 32, 32), (22.7, 32, 32), (12, 16, 16), (8.0, 8, 8)]
)
def test_a_cutoff_beyond_the_grid_names_distill_cutoff_k(k, height, width):
    assert k >= max_wavenumber(height, width)
    with pytest.raises(ConfigError, match=r"distill\.cutoff\.k"):
        choose_cutoff(_cfg("sdkd", weighting="fixed", cutoff={"k": k}), height, width)


def _sinusoid(ky: int, kx: int, n: int = 32, batch: int = 2) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    phase = 2 * math.pi * (ky * i[:, None] + kx * i[None, :]) / n
    return torch.cos(phase + 0.3).expand(batch, 3, 1, n, n).float()


@pytest.mark.parametrize(("ky", "kx"), [(0, 3), (3, 0), (2, 2)])  # |k| = 3, 3, 2.83 (shell 3)
def test_the_energy_cutoff_puts_a_sinusoids_shell_in_the_low_band(ky, kx):
    cfg = _cfg("sdkd", weighting="fixed", cutoff={"mode": "energy", "energy_fraction": 0.9})
    cutoff = choose_cutoff(cfg, 32, 32, [_sinusoid(ky, kx)])
    assert 3 < cutoff < 4
    assert cutoff == pytest.approx(3.5)


def test_the_energy_cutoff_averages_the_teachers_spectra():
    cfg = _cfg("sdkd", weighting="fixed", cutoff={"mode": "energy", "energy_fraction": 0.9})
    # half of the energy at shell 3, half at shell 10: 90 % is reached at shell 10 only
    cutoff = choose_cutoff(cfg, 32, 32, [_sinusoid(0, 3), _sinusoid(10, 0)])
    assert cutoff == pytest.approx(10.5)
    less = _cfg("sdkd", weighting="fixed", cutoff={"mode": "energy", "energy_fraction": 0.4})
    assert choose_cutoff(less, 32, 32, [_sinusoid(0, 3), _sinusoid(10, 0)]) == pytest.approx(3.5)
    with pytest.raises(ConfigError, match="energy"):
        choose_cutoff(cfg, 32, 32, None)


def test_the_energy_cutoff_of_the_last_shell_stays_below_the_largest_wavenumber_16x16():
    # 16x16: k_max = 11.31 rounds down to the last shell 11, which the clamp keeps inside
    noise = torch.randn(16, 1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    cfg = _cfg("sdkd", weighting="fixed", cutoff={"mode": "energy", "energy_fraction": 0.9999})
    cutoff = choose_cutoff(cfg, 16, 16, [noise])
    assert 10.5 < cutoff < max_wavenumber(16, 16)


@pytest.mark.parametrize(("n", "fraction"), [(32, 0.9999), (8, 0.99)])
def test_the_energy_cutoff_of_the_last_shell_stays_below_the_largest_wavenumber(n, fraction):
    noise = torch.randn(16, 1, 1, n, n, generator=torch.Generator().manual_seed(0))
    cfg = _cfg("sdkd", weighting="fixed", cutoff={"mode": "energy", "energy_fraction": fraction})
    cutoff = choose_cutoff(cfg, n, n, [noise])
    # everything but the grid's largest wavenumber(s) goes to the low band
    distinct = torch.unique(radial_wavenumber(n, n))
    assert cutoff == pytest.approx(float(distinct[-2]))
    assert cutoff < max_wavenumber(n, n)
