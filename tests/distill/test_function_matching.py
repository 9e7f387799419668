"""Function matching: unlabelled inputs from the solver or mixup, never from val/test data.

Tiny generated stores are built in memory (32x32 Navier-Stokes, an 8x16 free-slip
Rayleigh-Benard cell, a random non-generated store): seconds, not minutes.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset, default_collate

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.sources import navier_stokes as ns
from sdkd_pipeline.data.sources import rayleigh_benard as rb
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.distill import METHODS, DistillConfig, build_loss
from sdkd_pipeline.distill import function_matching as fm
from sdkd_pipeline.distill.function_matching import (
    FunctionMatchingSet,
    UnlabelledInputs,
    function_matching_inputs,
    mixup_inputs,
    solver_inputs,
)
from sdkd_pipeline.distill.setup import DistillCache, prepare_distillation
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 6 trajectories of 6 frames (t = 1.5 .. 4: the first second is spin-up), windows of 2 + 2
# frames: 3 per trajectory; trajectories 0-3 train, 4 val, 5 test
NS_CONFIG = ns.NavierStokesConfig(
    n_trajectories=6,
    resolution=32,
    record_resolution=32,
    t_final=4.0,
    t_spinup=1.0,
    record_every=0.5,
    dt=None,
    device="cpu",
)
RBC_CONFIG = rb.FreeSlipRBCConfig(
    nx=16,
    nz=8,
    t_final=0.6,
    t_spinup=0.2,
    record_interval=0.1,
    n_trajectories=4,
    perturbation_amplitude=1e-2,
    include_pressure=True,
    device="cpu",
)
SPLIT = SplitConfig(train=4, val=1, test=1)
WINDOW = WindowConfig(t_in=2, t_out=2)


def _splits(store) -> dict[str, WindowDataset]:
    return {name: WindowDataset(store, name) for name in ("train", "val", "test")}


@pytest.fixture(scope="module")
def ns_store():
    torch.set_num_threads(1)
    raw = ns.generate_navier_stokes(NS_CONFIG, progress=False)
    return build_tensor_dataset(raw, split=SPLIT, window=WINDOW)


@pytest.fixture(scope="module")
def rbc_store():
    torch.set_num_threads(1)
    raw = rb.generate_rayleigh_benard_free_slip(RBC_CONFIG, progress=False)
    return build_tensor_dataset(
        raw, split=SplitConfig(train=2, val=1, test=1), window=WindowConfig(t_in=2, t_out=1)
    )


@pytest.fixture(scope="module")
def random_store():
    """A store no built-in solver made (weather, traffic...): function matching uses mixup."""
    fields = np.random.default_rng(0).normal(size=(6, 6, 1, 16, 16)).astype(np.float32)
    raw = make_raw(
        fields, dataset="demo", source="test:random", channels=["w"], time=np.arange(6.0)
    )
    return build_tensor_dataset(raw, split=SPLIT, window=WINDOW)


def _inputs(windows: WindowDataset) -> torch.Tensor:
    return torch.stack([windows[i][0] for i in range(len(windows))])


def _min_distance(inputs: torch.Tensor, others: torch.Tensor) -> float:
    """The smallest max-abs difference between any input and any of ``others``."""
    diff = (inputs[:, None] - others[None]).flatten(2).abs().amax(-1)
    return float(diff.min())


def _assert_fresh(unlabelled: UnlabelledInputs, splits: dict[str, WindowDataset]) -> None:
    """No solver input equals (or copies) any window input of any split."""
    for name, windows in splits.items():
        distance = _min_distance(unlabelled.inputs, _inputs(windows))
        assert distance > 1e-2, (name, distance)


# --------------------------------------------------------------------------------------------
# (a) Navier-Stokes: fresh trajectories of the dataset's own solver


def test_ns_solver_inputs_come_from_fresh_trajectories_never_val_or_test(ns_store):
    splits = _splits(ns_store)
    train = splits["train"]
    n_traj = int(train.attrs["n_trajectories"])
    assert n_traj == 6 and len(train) == 12
    unlabelled = function_matching_inputs(train, ratio=1.0, source="auto")
    assert unlabelled.source == "solver" and len(unlabelled) == 12
    assert unlabelled.inputs.shape == (12, 2, 1, 32, 32)
    prov = unlabelled.provenance
    first, stop = prov["trajectories"]
    assert first >= n_traj and (first, stop) == (6, 10)  # 4 trajectories x 3 window starts
    assert prov["dataset_trajectories"] == n_traj
    # simulated only as far as the last input needs: T_out frames short of a labelled trajectory
    assert prov["frames_simulated"] == train.shape[1] - train.t_out == 4
    assert sorted({t0 for _, t0 in prov["windows"]}) == [0, 1, 2]
    _assert_fresh(unlabelled, splits)

    # recomputed independently: the solver's trajectories first..stop of the same settings,
    # normalized with the training split's statistics
    records = prov["frames_simulated"]
    cfg = replace(
        NS_CONFIG,
        n_trajectories=stop - first,
        t_final=NS_CONFIG.t_spinup + records * NS_CONFIG.record_every,
        dt=float(train.attrs["dt_used"]),
    )
    raw = ns.generate_navier_stokes(cfg, progress=False, first_trajectory=first)
    fields = torch.as_tensor(raw["fields"].values)
    expected = (fields - train.mean.view(1, 1, -1, 1, 1)) / train.std.view(1, 1, -1, 1, 1)
    windows = torch.stack([expected[i, t0 : t0 + 2] for i, t0 in prov["windows"]])
    torch.testing.assert_close(unlabelled.inputs, windows, rtol=1e-5, atol=1e-5)
    # the seed shifts the fresh trajectories, still beyond the dataset
    other = function_matching_inputs(train, ratio=0.25, seed=1)
    assert other.provenance["trajectories"][0] >= n_traj + 1
    _assert_fresh(other, splits)
    assert _min_distance(other.inputs, unlabelled.inputs) > 1e-2


def test_ns_attrs_rebuild_the_solver_config_and_regenerate_the_stored_frames(ns_store, tmp_path):
    from sdkd_pipeline.data.store import write_store

    train = WindowDataset(write_store(ns_store, tmp_path / "ns.zarr"), "train")  # attrs on disk
    rebuilt = fm._config_from_attrs(ns.NavierStokesConfig, train.attrs)
    assert rebuilt == NS_CONFIG and rebuilt.t_spinup == 1.0
    # trajectory 0 (a training trajectory) regenerated through the function-matching path
    n_frames = train.shape[1] - train.t_out
    frames = fm._navier_stokes_frames(train.attrs, 0, 1, n_frames, "cpu")
    regenerated = train.normalize(torch.as_tensor(frames))[0]
    stored = torch.as_tensor(train.frames(0, 0, n_frames))
    torch.testing.assert_close(regenerated, stored, rtol=1e-5, atol=1e-5)
    # ... and through solver_inputs itself, pretending the store held no trajectory
    pretend = copy.copy(train)
    pretend.attrs = {**train.attrs, "n_trajectories": 0}
    again = solver_inputs(pretend, 3)
    assert again.provenance["trajectories"] == [0, 1]
    torch.testing.assert_close(again.inputs, _inputs(train)[:3], rtol=1e-5, atol=1e-5)
    # the check is sensitive to the spin-up: without it the frames are other ones
    no_spinup = fm._navier_stokes_frames({**train.attrs, "t_spinup": 0.0}, 0, 1, n_frames, "cpu")
    assert not torch.allclose(train.normalize(torch.as_tensor(no_spinup))[0], stored, atol=1e-2)


# --------------------------------------------------------------------------------------------
# (b) free-slip Rayleigh-Benard


def test_rbc_solver_inputs_are_fresh_and_the_attrs_rebuild_the_solver(rbc_store):
    splits = _splits(rbc_store)
    train = splits["train"]
    # the free-slip generator records its settings as solver_<field> (booleans as strings)
    rebuilt = fm._config_from_attrs(rb.FreeSlipRBCConfig, train.attrs, prefix="solver_")
    assert rebuilt == RBC_CONFIG
    n_frames = train.shape[1] - train.t_out
    frames = fm._rayleigh_benard_frames(train.attrs, 0, 1, n_frames, "cpu")
    assert frames.shape == (1, n_frames, 4, 8, 16)  # pressure included, as in the store
    regenerated = train.normalize(torch.as_tensor(frames))[0]
    torch.testing.assert_close(
        regenerated, torch.as_tensor(train.frames(0, 0, n_frames)), rtol=1e-5, atol=1e-5
    )

    unlabelled = function_matching_inputs(train, ratio=1.0)
    assert unlabelled.source == "solver" and unlabelled.provenance["solver"] == "rayleigh_benard"
    assert unlabelled.provenance["trajectories"][0] >= RBC_CONFIG.n_trajectories
    assert unlabelled.inputs.shape == (len(train), 2, 4, 8, 16)
    _assert_fresh(unlabelled, splits)
    # recomputed: the generator's own noise for trajectories first.., normalized (train stats)
    first, stop = unlabelled.provenance["trajectories"]
    cfg = replace(
        RBC_CONFIG,
        n_trajectories=stop - first,
        t_final=float(RBC_CONFIG.record_times[n_frames - 1]),
    )
    raw = rb.generate_rayleigh_benard_free_slip(
        cfg, progress=False, initial_theta=rb.initial_theta(cfg, first_trajectory=first)
    )
    expected = train.normalize(torch.as_tensor(raw["fields"].values))
    windows = torch.stack([expected[i, t0 : t0 + 2] for i, t0 in unlabelled.provenance["windows"]])
    torch.testing.assert_close(unlabelled.inputs, windows, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# (c) mixup of training inputs


@pytest.mark.parametrize("store_name", ["random_store", "ns_store"])
def test_mixup_inputs_are_convex_combinations_of_two_training_windows(store_name, request):
    store = request.getfixturevalue(store_name)
    splits = _splits(store)
    train = splits["train"]
    source = "auto" if store_name == "random_store" else "mixup"
    unlabelled = function_matching_inputs(train, ratio=1.5, source=source, mixup_alpha=0.4, seed=2)
    assert unlabelled.source == "mixup" and len(unlabelled) == 18  # ceil(1.5 * 12)
    pairs = np.asarray(unlabelled.provenance["pairs"])
    lam = np.asarray(unlabelled.provenance["lambda"])
    assert pairs.shape == (18, 2) and lam.shape == (18,)
    assert pairs.min() >= 0 and pairs.max() < len(train)  # indices into the training split
    assert ((lam >= 0) & (lam <= 1)).all()
    train_inputs = _inputs(train)
    recomputed = torch.stack(
        [
            float(w) * train_inputs[i] + (1 - float(w)) * train_inputs[j]
            for (i, j), w in zip(pairs, lam, strict=True)
        ]
    )
    torch.testing.assert_close(unlabelled.inputs, recomputed, rtol=0, atol=1e-6)
    # the training windows are other trajectories than val and test: no mixture is near them
    for name in ("val", "test"):
        assert _min_distance(unlabelled.inputs, _inputs(splits[name])) > 1e-2, name
    # seeded: the same inputs again, others for another seed
    again = function_matching_inputs(train, ratio=1.5, source=source, mixup_alpha=0.4, seed=2)
    assert torch.equal(again.inputs, unlabelled.inputs)
    other = function_matching_inputs(train, ratio=1.5, source=source, mixup_alpha=0.4, seed=3)
    assert not torch.equal(other.inputs, unlabelled.inputs)


def test_inputs_are_drawn_for_the_training_split_only(random_store, ns_store):
    for store in (random_store, ns_store):
        for split in ("val", "test"):
            with pytest.raises(ConfigError, match="training split only"):
                function_matching_inputs(WindowDataset(store, split), ratio=1.0)


# --------------------------------------------------------------------------------------------
# (d) the training set and the loss's task term


def test_function_matching_set_marks_labelled_and_unlabelled_samples():
    g = torch.Generator().manual_seed(0)
    labelled = TensorDataset(
        torch.randn(3, 2, 1, 8, 8, generator=g), torch.randn(3, 2, 1, 8, 8, generator=g)
    )
    unlabelled = UnlabelledInputs(torch.randn(2, 2, 1, 8, 8, generator=g), "mixup")
    plain = FunctionMatchingSet(labelled, unlabelled)
    assert len(plain) == 5
    for i in range(3):
        x, target = plain[i]
        assert bool(target["labelled"]) and "teachers" not in target
        assert torch.equal(x, labelled.tensors[0][i]) and torch.equal(
            target["y"], labelled.tensors[1][i]
        )
    for i in (3, 4):
        x, target = plain[i]
        assert not bool(target["labelled"])
        assert torch.equal(x, unlabelled.inputs[i - 3])
        assert torch.equal(target["y"], torch.zeros(2, 1, 8, 8))  # no truth: a stand-in

    def constant(values: torch.Tensor) -> torch.Tensor:  # one constant field per sample
        return values[:, None, None, None, None].expand(-1, 2, 1, 8, 8).clone()

    labelled_cache = {"t": {"prediction": constant(torch.arange(3.0))}}
    unlabelled_cache = {"t": {"prediction": constant(10 + torch.arange(2.0))}}
    cached = FunctionMatchingSet(labelled, unlabelled, labelled_cache, unlabelled_cache)
    x, target = cached[1]
    assert bool(target["labelled"]) and torch.equal(target["y"], labelled.tensors[1][1])
    assert float(target["teachers"]["t"]["prediction"].unique()) == 1.0
    x, target = cached[4]
    assert not bool(target["labelled"])
    assert float(target["teachers"]["t"]["prediction"].unique()) == 11.0
    assert torch.equal(target["y"], target["teachers"]["t"]["prediction"])  # the stand-in
    xs, targets = default_collate([cached[i] for i in (0, 3, 4, 2)])
    assert targets["labelled"].tolist() == [True, False, False, True]
    assert xs.shape == targets["y"].shape == (4, 2, 1, 8, 8)
    assert targets["teachers"]["t"]["prediction"][:, 0, 0, 0, 0].tolist() == [0, 10, 11, 2]
    with pytest.raises(ValueError, match="both parts or on neither"):
        FunctionMatchingSet(labelled, unlabelled, labelled_cache, None)


class Shifted(nn.Module):
    """A fixed prediction plus a learnable shift; a learnable bottleneck for sdkd_latent."""

    latent_channels = 4

    def __init__(self, base: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("base", base)
        self.shift = nn.Parameter(torch.zeros(base.shape[1:]))
        self.latent = nn.Parameter(
            torch.randn(base.shape[0], 4, 4, 4, generator=torch.Generator().manual_seed(9))
        )

    def forward(self, x, return_features: bool = False):
        out = self.base + self.shift
        return (out, {"bottleneck": self.latent}) if return_features else out


@pytest.mark.parametrize("method", [m for m in METHODS if m != "none"])
def test_the_task_term_fits_the_truth_of_labelled_samples_only(method):
    g = torch.Generator().manual_seed(1)
    shape = (4, 2, 1, 16, 16)
    truth, student_out = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    teachers = {
        name: truth + s * torch.randn(shape, generator=g) for name, s in (("a", 0.3), ("b", 0.6))
    }
    state = torch.randn(4, 4, 4, 4, generator=g)
    cfg = DistillConfig.from_params(method, {})
    names = ["a", "b"] if cfg.multi_teacher else ["a"]

    def target(y: torch.Tensor, labelled: list[bool]) -> dict:
        return {
            "y": y,
            "labelled": torch.tensor(labelled),
            "teachers": {n: {"prediction": teachers[n], "state": state} for n in names},
        }

    def run(y: torch.Tensor, labelled: list[bool]):
        torch.manual_seed(0)  # the same projector
        loss = build_loss(
            cfg,
            {n: nn.Identity() for n in names},
            height=16,
            width=16,
            student_latent_channels=4,
            teacher_latent_channels=4,
        )
        student = Shifted(student_out)
        total, parts = loss(student, torch.zeros(shape), target(y, labelled))
        total.backward()
        return total.detach(), parts, student.shift.grad

    mixed = [True, False, False, True]
    total, parts, _ = run(truth, mixed)
    expected = nn.functional.mse_loss(student_out[[0, 3]], truth[[0, 3]])
    assert float(parts["task"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(parts["labelled"]) == 0.5
    # whatever stands in for the missing truths changes nothing (task, teacher weights, bands)
    garbage = truth.clone()
    garbage[[1, 2]] = 1e3
    total_g, parts_g, _ = run(garbage, mixed)
    assert torch.equal(total, total_g)
    for key in parts:
        assert torch.equal(parts[key], parts_g[key]), key
    # a batch without any truth: no task term, and the KD term still teaches the student
    total, parts, grad = run(garbage, [False] * 4)
    assert float(parts["task"]) == 0.0 and float(parts["labelled"]) == 0.0
    assert float(parts["kd"]) > 0 and grad is not None and float(grad.abs().max()) > 0
    # an all-labelled batch is the plain loss (and is logged as such: the engine averages the
    # labelled share over every sample of the epoch)
    plain, plain_parts, _ = run(truth, [True] * 4)
    assert float(plain_parts["task"]) == pytest.approx(
        float(nn.functional.mse_loss(student_out, truth)), rel=1e-6
    )
    assert float(plain_parts["labelled"]) == 1.0


# --------------------------------------------------------------------------------------------
# (e) every method through prepare_distillation; (f) bad values


def _tiny_models(height: int, width: int):
    shape = {"in_frames": 2, "out_frames": 2, "channels": 1, "height": height, "width": width}
    torch.manual_seed(0)
    teachers = {
        "simvp": build_model(
            "simvp", **shape, frame_hidden=4, hidden=8, depth=2, mlp_ratio=2.0
        ).eval(),
        "st_alternet": build_model(
            "st_alternet", **shape, hidden=8, depth=1, heads=2, frame_hidden=4
        ).eval(),
    }
    for model in teachers.values():
        model.requires_grad_(False)
    student = build_model("unet", **shape, hidden=4, base_width=4, levels=2)
    return teachers, student


@pytest.fixture(scope="module")
def ns_models():
    return _tiny_models(32, 32)


def test_every_method_trains_with_function_matching_through_prepare_distillation(
    ns_store, ns_models
):
    train = WindowDataset(ns_store, "train")
    teachers, student = ns_models
    cache = DistillCache()
    fm_params = {"function_matching": {"enabled": True, "ratio": 0.5}}
    for method in METHODS:
        cfg = DistillConfig.from_params(method, fm_params)
        if method == "none":
            with pytest.raises(ConfigError, match=r"function_matching\.enabled"):
                prepare_distillation(cfg, teachers, student, train, cache=cache)
            continue
        chosen = teachers if cfg.multi_teacher else {"simvp": teachers["simvp"]}
        prepared = prepare_distillation(cfg, chosen, student, train, batch_size=8, cache=cache)
        data = prepared.train_set
        assert isinstance(data, FunctionMatchingSet), method
        assert len(data) == len(train) + 6 and prepared.unlabelled.source == "solver"
        assert prepared.params["function_matching_inputs"] == 6
        assert prepared.params["function_matching_source"] == "solver"
        labelled = [bool(data[i][1]["labelled"]) for i in range(len(data))]
        assert labelled == [True] * len(train) + [False] * 6
        x, y = default_collate([data[i] for i in (0, 5, 12, 17)])
        assert torch.equal(x[2], prepared.unlabelled.inputs[0])
        student.zero_grad(set_to_none=True)
        total, parts = prepared.loss(student, x, y)
        total.backward()
        assert torch.isfinite(total), method
        assert float(parts["labelled"]) == 0.5
        grads = [p.grad for p in student.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), method
    # drawn once for all methods (same store and settings)
    assert len(cache.inputs) == 1


def test_cached_and_online_teachers_agree_on_function_matching_batches(ns_store, ns_models):
    train = WindowDataset(ns_store, "train")
    teachers, student = ns_models
    totals = []
    for mode in ("on", "off"):
        cfg = DistillConfig.from_params(
            "sdkd", {"teacher_cache": mode, "function_matching": {"enabled": True, "ratio": 0.5}}
        )
        prepared = prepare_distillation(cfg, {"simvp": teachers["simvp"]}, student, train)
        assert prepared.params["teacher_cache"] == (mode == "on")
        x, y = default_collate([prepared.train_set[i] for i in (1, 14, 15, 3)])
        assert ("teachers" in y) == (mode == "on")
        total, parts = prepared.loss(student, x, y)
        totals.append((total.detach(), parts))
    (a, pa), (b, pb) = totals
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for key in pa:
        torch.testing.assert_close(pa[key], pb[key], rtol=1e-5, atol=1e-7)


def test_bad_function_matching_values_name_the_parameter(random_store, ns_store):
    for params, path in (
        ({"ratio": 0}, "ratio"),
        ({"ratio": -1.0}, "ratio"),
        ({"mixup_alpha": -1}, "mixup_alpha"),
        ({"mixup_alpha": 0}, "mixup_alpha"),
        ({"source": "teacher"}, "source"),
    ):
        with pytest.raises(ConfigError, match=rf"distill\.function_matching\.{path}"):
            DistillConfig.from_params("sdkd", {"function_matching": {"enabled": True, **params}})
    train = WindowDataset(random_store, "train")
    with pytest.raises(ConfigError, match=r"function_matching\.ratio must be > 0"):
        function_matching_inputs(train, ratio=0)
    with pytest.raises(ConfigError, match=r"function_matching\.mixup_alpha must be > 0"):
        mixup_inputs(train, 4, alpha=-1)
    with pytest.raises(ConfigError, match=r"function_matching\.source"):
        function_matching_inputs(train, ratio=1.0, source="teacher")
    # the solver needs a store a built-in solver made; the refusal names the parameter
    teachers, student = _tiny_models(16, 16)
    cfg = DistillConfig.from_params(
        "sdkd", {"function_matching": {"enabled": True, "source": "solver"}}
    )
    with pytest.raises(ConfigError, match=r"function_matching\.source 'solver'.*test:random"):
        prepare_distillation(cfg, {"simvp": teachers["simvp"]}, student, train)
    # on a generated store it is fine (and auto picks it)
    assert (
        function_matching_inputs(
            WindowDataset(ns_store, "train"), ratio=0.1, source="solver"
        ).source
        == "solver"
    )
