"""The band weights that vary in space: ``weighting: local`` (distill/local.py).

What the local loss reduces to (one region: the global advantage loss over the wavelet bands;
an exact teacher: output KD), weights per region (zero where the student beats the teacher,
positive where the teacher is better, in the same band), the exact gradient, resume, the
config and its errors.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sdkd_pipeline.distill import DistillConfig, build_loss
from sdkd_pipeline.distill.band_weights import BandAdvantage, advantage_weights
from sdkd_pipeline.distill.local import RegionBands
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral import WaveletSplit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H = W = 16
SHAPE = (4, 2, 1, H, W)
LAMBDA = 2.0


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class Fixed(nn.Module):
    """A 'model' returning a learnable field (initialized to ``output``): its gradient is the
    loss's gradient with respect to the prediction."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = nn.Parameter(output.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output


def _config(name: str = "sdkd_local", **local) -> DistillConfig:
    variant = {"method": "sdkd", "weighting": "local", "lambda": LAMBDA, "local": local}
    return DistillConfig.from_params(name, {"variants": {name: variant}})


def _local_loss(teacher: torch.Tensor, **local):
    return build_loss(_config(**local), {"t": Fixed(teacher).eval()}, height=H, width=W)


def _in_cell(split: WaveletSplit, band: int, region: int, seed: int) -> torch.Tensor:
    """Random fields ``SHAPE`` whose wavelet coefficients lie in one (band, region) cell."""
    noise = split.transform(_randn(*SHAPE, seed=seed))
    kept = [torch.zeros_like(c) for c in noise]
    mask = split._region_mask(tuple(noise[band].shape[-2:]), region, noise[band].device)
    kept[band] = noise[band] * mask
    return split.inverse(kept)


def test_one_region_is_the_global_advantage_loss_over_the_wavelet_bands():
    """tiles: 1 gives what sdkd gives with its radial BandSplit replaced by the wavelet bands,
    step by step (the running estimates included), and the hand formula on the first step."""
    truth = _randn(*SHAPE, seed=0)
    teacher = truth + 0.3 * _randn(*SHAPE, seed=1)
    local = _local_loss(teacher, tiles=1, levels=2, wavelet="db2")
    glob = build_loss(
        DistillConfig.from_params("sdkd", {"lambda": LAMBDA}),
        {"t": Fixed(teacher).eval()},
        height=H,
        width=W,
    )
    wavelets = WaveletSplit(H, W, levels=2, tiles=1, wavelet="db2")
    glob.split = wavelets
    glob.advantage = BandAdvantage(wavelets, w_max=4.0, momentum=0.9)
    x = torch.zeros(SHAPE)
    for step in range(3):
        student = truth + (0.5 + 0.2 * step) * _randn(*SHAPE, seed=10 + step)
        a, parts_a = local(Fixed(student), x, truth)
        b, parts_b = glob(Fixed(student), x, truth)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
        for band in range(3):
            torch.testing.assert_close(parts_a[f"w_band{band}"], parts_b[f"w_band{band}"])
            torch.testing.assert_close(parts_a[f"kd_band{band}"], parts_b[f"kd_band{band}"])
            assert parts_a[f"w_band{band}_min"] == parts_a[f"w_band{band}_max"]  # one region
        if step == 0:  # the first running means are the batch's own band errors
            d = wavelets.band_mse(student, teacher)
            w = advantage_weights(
                wavelets.band_mse(student, truth), wavelets.band_mse(teacher, truth), d, 4.0
            )
            expected = F.mse_loss(student, truth) + LAMBDA * (w * d).sum()
            torch.testing.assert_close(a, expected, rtol=1e-5, atol=1e-8)
            assert (w > 0).all() and not torch.allclose(w, torch.ones(3))


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_an_exact_teacher_gives_output_kd_in_every_region(wavelet):
    truth = _randn(*SHAPE, seed=2)
    student = truth + 0.5 * _randn(*SHAPE, seed=3)
    total, parts = _local_loss(truth, tiles=4, wavelet=wavelet)(
        Fixed(student), torch.zeros(SHAPE), truth
    )
    output_kd = build_loss(
        DistillConfig.from_params("output_mse", {"lambda": LAMBDA}),
        {"t": Fixed(truth).eval()},
        height=H,
        width=W,
    )
    reference, _ = output_kd(Fixed(student), torch.zeros(SHAPE), truth)
    torch.testing.assert_close(total, reference, rtol=1e-5, atol=1e-8)
    for band in range(3):  # 16x16 in 4x4 tiles: 2 levels, 3 bands
        assert float(parts[f"w_band{band}_min"]) == pytest.approx(1.0, rel=1e-4)
        assert float(parts[f"w_band{band}_max"]) == pytest.approx(1.0, rel=1e-4)
    assert "w_band3" not in parts and float(parts["w_zero"]) == 0.0


def test_weights_are_zero_where_the_student_beats_the_teacher_and_positive_where_not():
    """In the finest band, the teacher errs in region 0 only and the student in region 5 only,
    with the same energy: the local weights distil region 5 and leave region 0; one region
    (the global weighting) sees no advantage in that band at all."""
    split = WaveletSplit(H, W, tiles=4)
    truth = _randn(*SHAPE, seed=4)
    teacher_error = _in_cell(split, 2, 0, seed=5)
    student_error = _in_cell(split, 2, 5, seed=6)
    student_error = student_error * (teacher_error.norm() / student_error.norm())
    teacher, student = truth + teacher_error, truth + student_error

    loss = _local_loss(teacher, tiles=4)
    total, parts = loss(Fixed(student), torch.zeros(SHAPE), truth)
    weights = loss.split.cells(loss.advantage.weights())  # (regions, bands)
    assert weights[0, 2] == 0.0  # the student is exact there, the teacher is not
    assert weights[5, 2] == pytest.approx(1.0, rel=1e-5)  # the teacher is exact there
    assert float(parts["w_band2_min"]) == 0.0 and float(parts["w_band2_max"]) > 0.99
    # the KD term pulls region 5 only: D in region 0 (the teacher's error) gets no weight
    cells = split.region_band_mse(student, teacher)
    torch.testing.assert_close(
        total, F.mse_loss(student, truth) + LAMBDA * cells[5, 2], rtol=1e-5, atol=1e-8
    )

    one_region = _local_loss(teacher, tiles=1)
    one_region(Fixed(student), torch.zeros(SHAPE), truth)
    assert float(one_region.advantage.weights()[2]) == pytest.approx(0.0, abs=1e-5)


def test_the_gradient_is_the_weighted_projection_of_the_residual():
    """d L / d G = 2 (G - Y) / N + 2 lambda / N sum_rb w_rb P_rb (G - F): the gradient reaches
    the student through every weighted cell and no other."""
    split = WaveletSplit(H, W, tiles=4, wavelet="db2")
    truth = _randn(*SHAPE, seed=7)
    teacher = truth + 0.2 * _randn(*SHAPE, seed=8) + _in_cell(split, 1, 3, seed=9)
    student = Fixed(truth + 0.4 * _randn(*SHAPE, seed=10))
    loss = _local_loss(teacher, tiles=4, wavelet="db2")
    total, _ = loss(student, torch.zeros(SHAPE), truth)
    total.backward()
    weights = loss.split.cells(loss.advantage.weights())
    assert weights[3, 1] == 0.0 and (weights > 0).sum() > 30  # one cell left out, most pull
    g = student.output.detach()
    n = g.numel()
    expected = 2 * (g - truth) / n
    for region in range(split.n_regions):
        for band in range(split.n_bands):
            part = split.filter(g - teacher, band, region)
            expected = expected + 2 * LAMBDA / n * weights[region, band] * part
    torch.testing.assert_close(student.output.grad, expected, rtol=1e-4, atol=1e-9)

    model = nn.Conv2d(1, 1, 3, padding=1)

    class Net(nn.Module):
        def forward(self, x):
            b, t, c, h, w = x.shape
            return model(x.reshape(b * t, c, h, w)).reshape(b, t, c, h, w)

    total, _ = _local_loss(truth, tiles=2)(Net(), truth, truth)
    total.backward()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0


def test_the_running_estimates_survive_a_state_round_trip():
    truth = _randn(*SHAPE, seed=11)
    teacher = truth + 0.3 * _randn(*SHAPE, seed=12)
    student = Fixed(truth + 0.3 * _randn(*SHAPE, seed=13))
    loss = _local_loss(teacher, tiles=2)
    loss(student, torch.zeros(SHAPE), truth)
    copy = _local_loss(teacher, tiles=2)
    copy.load_state_dict(loss.state_dict())
    torch.testing.assert_close(copy.advantage.weights(), loss.advantage.weights())
    assert loss.advantage.weights().shape == (4 * 4,)  # 2x2 regions x 4 bands (3 levels), flat


def test_local_config_defaults_identity_and_the_conf_variant():
    cfg = _config()
    assert (
        cfg.uses_local and not cfg.uses_cutoff and cfg.param_path == "distill.variants.sdkd_local"
    )
    assert (cfg.local_wavelet, cfg.local_levels, cfg.local_tiles) == ("haar", None, (4, 4))
    assert _config(levels="auto", tiles=[2, 4]).local_tiles == (2, 4)
    assert cfg.to_dict()["local_tiles"] == [4, 4] and "param_path" not in cfg.to_dict()
    # the local settings are not in the identity of runs with another weighting
    assert not any(k.startswith("local_") for k in DistillConfig.from_params("sdkd", {}).to_dict())
    cells = RegionBands(WaveletSplit(32, 32, tiles=4))
    assert cells.n_bands == 16 * 4  # 32x32 in 4x4 tiles: auto gives 3 levels, 4 bands


@pytest.mark.bad_input
def test_levels_the_grid_does_not_allow_name_the_parameter_and_the_allowed_levels():
    with pytest.raises(
        ConfigError,
        match=r"distill\.variants\.sdkd_local\.local\.levels = 3: a 16x16 grid in 4x4 tiles of "
        r"4x4 cells allows at most 2 level\(s\)",
    ):
        _local_loss(_randn(*SHAPE, seed=0), tiles=4, levels=3)


@pytest.mark.bad_input
def test_tiles_that_do_not_cut_the_grid_name_the_parameter():
    with pytest.raises(
        ConfigError, match=r"distill\.variants\.sdkd_local\.local\.tiles: 3x3 tiles do not cut"
    ):
        _local_loss(_randn(*SHAPE, seed=0), tiles=3)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("local", "match"),
    [
        ({"levels": "many"}, r"local\.levels must be an integer or null, got 'many' \(an integer"),
        ({"levels": 0}, r"local\.levels must be >= 1, got 0"),
        ({"tiles": [2, 2, 2]}, r"local\.tiles must be one integer or a pair"),
        ({"tiles": 0}, r"local\.tiles\[0\] must be >= 1"),
        ({"wavelet": "db9"}, r"local\.wavelet must be one of 'haar', 'db2', 'db3', 'db4'"),
        ({"size": 3}, r"local\.size: unknown parameter"),
    ],
)
def test_bad_local_settings_are_named(local, match):
    with pytest.raises(ConfigError, match=match):
        _config(**local)


@pytest.mark.bad_input
def test_local_weighting_of_several_teachers_is_refused():
    with pytest.raises(ConfigError, match=r"distill\.variants\.m\.weighting: 'local'.*sdkd_multi"):
        DistillConfig.from_params(
            "m", {"variants": {"m": {"method": "sdkd_multi", "weighting": "local"}}}
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    truth = _randn(*SHAPE, seed=14)
    teacher = truth + 0.3 * _randn(*SHAPE, seed=15)
    student = truth + 0.3 * _randn(*SHAPE, seed=16)
    cpu, _ = _local_loss(teacher, tiles=4, wavelet="db2")(Fixed(student), torch.zeros(SHAPE), truth)
    loss = _local_loss(teacher, tiles=4, wavelet="db2").to(torch.device("cuda"))
    model = Fixed(student).cuda()
    cuda, parts = loss(model, torch.zeros(SHAPE, device="cuda"), truth.cuda())
    cuda.backward()
    assert cuda.is_cuda and parts["w_band0"].is_cuda and model.output.grad.is_cuda
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-7)
