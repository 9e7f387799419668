"""Band weights from the teacher's advantage, and the sdkd loss built on them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sdkd_pipeline.distill import DistillConfig, build_loss
from sdkd_pipeline.distill.band_weights import BandAdvantage, RunningMean, advantage_weights
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral import BandSplit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H = W = 16


def _band_field(split: BandSplit, band: int, batch: int = 4, seed: int = 0) -> torch.Tensor:
    """Random fields (batch, 2, 1, H, W) whose energy lies in one band only."""
    torch.manual_seed(seed)
    return split.filter(torch.randn(batch, 2, 1, H, W), band)


class Fixed(nn.Module):
    """A 'model' that returns a fixed tensor plus a learnable offset (so gradients exist)."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output
        self.offset = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output + self.offset


def test_advantage_weight_is_zero_where_the_student_is_better_and_positive_where_the_teacher_is():
    split = BandSplit.log_spaced(H, W, 3)
    truth = sum(_band_field(split, b, seed=b) for b in range(3))
    low_error, high_error = _band_field(split, 0, seed=10), _band_field(split, 2, seed=11)
    # the teacher errs only in the low band, the student only in the high band
    teacher, student = truth + low_error, truth + high_error
    adv = BandAdvantage(split, w_max=4.0, momentum=0.9)
    adv.update(student, truth, teacher)
    w = adv.weights()
    assert w[0] == 0.0  # low band: the student is exact there, the teacher is not
    assert w[2] > 0.5  # high band: the teacher is exact there, the student is not
    # the closed form: (E(G,Y) - E(F,Y)) / E(G,F) = 1 where the teacher is exact
    assert w[2] == pytest.approx(1.0, rel=1e-5)
    assert (
        advantage_weights(
            torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([0.5]), w_max=2.5
        ).item()
        == 2.5
    )  # capped at w_max


def test_unlabelled_samples_inform_the_distance_but_not_the_errors():
    split = BandSplit.log_spaced(H, W, 3)
    truth = _band_field(split, 1)
    adv = BandAdvantage(split, w_max=4.0, momentum=0.5)
    labelled = torch.tensor([True, False, False, False])
    adv.update(truth + 1.0, truth, truth, labelled)
    assert torch.allclose(adv.student_error.get(), split.band_mse(truth[:1] + 1.0, truth[:1]))
    adv2 = BandAdvantage(split, w_max=4.0, momentum=0.5)
    adv2.update(truth, truth, truth, torch.zeros(4, dtype=torch.bool))
    assert adv2.student_error.get() is None  # no truth seen yet: weights stay 1 (plain KD)
    assert torch.equal(adv2.weights(), torch.ones(3))


def test_running_mean_is_bias_corrected_and_survives_a_state_round_trip():
    mean = RunningMean(0.9)
    mean.update(torch.tensor([2.0]))
    assert mean.get().item() == pytest.approx(2.0)  # not 0.2: bias-corrected
    mean.update(torch.tensor([4.0]))
    expected = (0.9 * 0.1 * 2.0 + 0.1 * 4.0) / (1 - 0.9**2)
    assert mean.get().item() == pytest.approx(expected)
    copy = RunningMean(0.9)
    copy.load_state_dict(mean.state_dict())
    assert copy.get().item() == pytest.approx(expected)


def _loss(method: str, teacher_out: torch.Tensor, **settings):
    cfg = DistillConfig.from_params(method, settings)
    return build_loss(
        cfg,
        {"t": Fixed(teacher_out).eval()},
        height=H,
        width=W,
        cutoff=4.0 if cfg.uses_cutoff else None,
    )


def test_sdkd_equals_output_kd_when_the_weights_are_uniform_and_differs_when_they_are_not():
    split = BandSplit.log_spaced(H, W, 3)
    x = torch.zeros(4, 2, 1, H, W)
    truth = sum(_band_field(split, b, seed=b) for b in range(3))
    student = Fixed(
        truth + 0.3 * _band_field(split, 0, seed=5) + 0.3 * _band_field(split, 2, seed=6)
    )

    # an exact teacher has the advantage in every band: w_b = 1, sdkd = output KD
    sdkd, plain = _loss("sdkd", truth), _loss("output_mse", truth)
    total, parts = sdkd(student, x, truth)
    reference, _ = plain(student, x, truth)
    torch.testing.assert_close(total, reference, rtol=1e-5, atol=1e-7)
    # where the student errs the weight is 1 (the mid band, where it is exact, has D = 0)
    assert [float(parts[f"w_band{b}"]) for b in (0, 2)] == pytest.approx([1, 1], rel=1e-4)

    # a teacher worse than the student in the low band: that band gets no weight
    bad_low = truth + 0.6 * _band_field(split, 0, seed=7)
    total, parts = _loss("sdkd", bad_low)(student, x, truth)
    reference, _ = _loss("output_mse", bad_low)(student, x, truth)
    assert float(parts["w_band0"]) == 0.0 and float(parts["w_band2"]) > 0
    assert total < reference  # the low band's distance is no longer pulled on
    expected = F.mse_loss(student.output, truth) + sum(
        float(parts[f"w_band{b}"]) * split.band_mse(student.output, bad_low)[b] for b in range(3)
    )
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-7)


def test_sdkd_gradients_reach_the_student_and_only_weighted_bands_pull():
    split = BandSplit.log_spaced(H, W, 3)
    truth = _band_field(split, 1, seed=3)
    teacher = truth + 0.5 * _band_field(split, 0, seed=4)  # worse than the student everywhere
    student = Fixed(truth + 0.2 * _band_field(split, 2, seed=8))
    loss = _loss("sdkd", teacher)
    total, parts = loss(student, torch.zeros(4, 2, 1, H, W), truth)
    total.backward()
    assert student.offset.grad is not None and torch.isfinite(student.offset.grad)
    assert float(parts["w_band0"]) == 0.0  # the teacher's low-band error is not distilled

    model = nn.Conv2d(1, 1, 3, padding=1)

    class Net(nn.Module):
        def forward(self, x):
            b, t, c, h, w = x.shape
            return model(x.reshape(b * t, c, h, w)).reshape(b, t, c, h, w)

    loss = _loss("sdkd", truth)
    total, _ = loss(Net(), truth, truth)
    total.backward()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0


def test_whitening_scales_bands_by_the_teachers_energy():
    split = BandSplit.log_spaced(H, W, 3)
    teacher = 10 * _band_field(split, 0) + _band_field(split, 2, seed=1)
    adv = BandAdvantage(split, w_max=4.0, momentum=0.9, whiten=True, whiten_max=1e6)
    adv.update(teacher, teacher, teacher)
    energy = adv.teacher_energy.get()
    torch.testing.assert_close(adv.scales()[[0, 2]], (energy.mean() / energy)[[0, 2]])
    assert adv.scales()[1] == 1e6  # an empty band: capped at whiten_max
    assert adv.scales()[2] > adv.scales()[0]  # the weak fine band is scaled up
    plain = BandAdvantage(split, w_max=4.0, momentum=0.9)
    plain.update(teacher, teacher, teacher)
    assert torch.equal(plain.scales(), torch.ones(3))


def test_the_alpha_balancer_that_muted_the_teachers_band_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match=r"balance\.alpha: 'loss_ratio'.*mutes the band"):
        DistillConfig.from_params("sdkd", {"balance": {"alpha": "loss_ratio"}})
    cfg = DistillConfig.from_params(
        "sdkd", {"weighting": "fixed", "balance": {"lambda": "grad_ratio"}}
    )
    assert cfg.uses_cutoff and cfg.balance_lambda == "grad_ratio"
    with pytest.raises(ConfigError, match=r"distill\.bands must be >= 2, got 1"):
        DistillConfig.from_params("sdkd", {"bands": 1})
    with pytest.raises(ConfigError, match=r"distill\.weighting must be one of"):
        DistillConfig.from_params("sdkd", {"weighting": "focal"})


def test_the_latent_term_is_the_stated_share_of_the_loss_and_uses_the_standardized_state():
    torch.manual_seed(0)

    class Teacher(nn.Module):
        latent_channels = 3

        def forward(self, x):
            return x

        def forward_features(self, x):
            b = x.shape[0]
            return x, {"state": 100 + 50 * torch.randn(b, 3, 4, 4)}  # far from unit scale

    class Student(nn.Module):
        latent_channels = 2

        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x, return_features=False):
            out = x * self.scale
            if return_features:
                return out, {"bottleneck": torch.randn(x.shape[0], 2, 4, 4) * self.scale}
            return out

    cfg = DistillConfig.from_params("sdkd_latent", {"latent": {"share": 0.25}})
    student = Student()
    loss = build_loss(
        cfg,
        {"t": Teacher().eval()},
        height=H,
        width=W,
        student_latent_channels=2,
        teacher_latent_channels=3,
    )
    x = torch.randn(8, 2, 1, H, W)
    total, parts = loss(student, x, x + 0.1)
    assert float(parts["latent_share"]) == pytest.approx(0.25, rel=1e-4)
    # standardized: the latent MSE is of order one, not of order 100^2
    assert 0.1 < float(parts["latent"]) < 10
    total.backward()
    assert loss.projector.weight.grad is not None
