"""``prepare_distillation`` (the one set-up of a distilled student) and ``DistillCache``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.distill import DistillConfig, choose_cutoff
from sdkd_pipeline.distill import setup as distill_setup
from sdkd_pipeline.distill.function_matching import FunctionMatchingSet
from sdkd_pipeline.distill.setup import DistillCache, prepare_distillation, windows_fingerprint
from sdkd_pipeline.distill.teachers import WithTeacherTargets, freeze
from sdkd_pipeline.models import build_model

SHAPE = {"in_frames": 2, "out_frames": 2, "channels": 1, "height": 16, "width": 16}
ENERGY = {
    "variants": {
        "sdkd_energy": {
            "method": "sdkd",
            "weighting": "fixed",
            "cutoff": {"mode": "energy", "energy_fraction": 0.9},
        }
    }
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _windows(seed: int = 0) -> WindowDataset:
    fields = np.random.default_rng(seed).normal(size=(4, 8, 1, 16, 16)).astype("float32")
    raw = make_raw(fields, dataset="test", source="random", channels=["w"], time=np.arange(8.0))
    store = build_tensor_dataset(
        raw, split=SplitConfig(train=0.5, val=0.25, test=0.25), window=WindowConfig(2, 2)
    )
    return WindowDataset(store, "train")


def _teacher(seed: int, kind: str = "simvp") -> nn.Module:
    torch.manual_seed(seed)
    if kind == "simvp":
        model = build_model("simvp", **SHAPE, frame_hidden=4, hidden=8, depth=2, mlp_ratio=2.0)
    else:
        model = build_model("st_alternet", **SHAPE, hidden=8, depth=1, heads=2, frame_hidden=4)
    return freeze(model)


def _student() -> nn.Module:
    torch.manual_seed(0)
    return build_model("unet", **SHAPE, hidden=4, base_width=4, levels=2)


def _cfg(method: str, **params) -> DistillConfig:
    return DistillConfig.from_params(method, {**ENERGY, **params})


def test_prepare_attaches_only_the_chosen_teachers_and_sets_the_cutoff():
    """(The former ``loss_from_cache``.) Cached outputs of the chosen teachers only; an energy
    cutoff from their predictions; the loss on cached targets equals the online one."""
    train = _windows()
    teachers = {"simvp": _teacher(0), "st_alternet": _teacher(1, "st_alternet")}
    student = _student()
    cache = DistillCache()
    # the other teacher was cached by an earlier run: it must not be attached
    cache.teacher_outputs(teachers, train, latents=False, batch_size=4, device=torch.device("cpu"))
    chosen = {"simvp": teachers["simvp"]}
    cfg = _cfg("sdkd_energy")
    prepared = prepare_distillation(cfg, chosen, student, train, batch_size=4, cache=cache)
    assert isinstance(prepared.train_set, WithTeacherTargets)
    x, target = prepared.train_set[0]
    assert set(target["teachers"]) == {"simvp"}
    predictions = target_predictions = torch.stack(
        [prepared.train_set[i][1]["teachers"]["simvp"]["prediction"] for i in range(len(train))]
    )
    with torch.no_grad():
        direct = teachers["simvp"](torch.stack([train[i][0] for i in range(len(train))]))
    torch.testing.assert_close(target_predictions, direct, rtol=1e-5, atol=1e-6)
    assert prepared.cutoff == choose_cutoff(cfg, 16, 16, [predictions])
    assert prepared.cutoff % 1 == 0.5 and prepared.loss.split.n_bands == 2
    assert prepared.params["cutoff"] == prepared.cutoff and prepared.params["teacher_cache"]
    assert prepared.params["teachers"] == ["simvp"]
    # the loss on the cached targets equals the loss with the teacher run on the batch
    xs, ys = next(iter(DataLoader(prepared.train_set, batch_size=len(train))))
    cached_total, _ = prepared.loss(student, xs, ys)
    online_total, _ = prepared.loss(student, xs, ys["y"])
    torch.testing.assert_close(cached_total, online_total, rtol=1e-5, atol=1e-6)

    # without a cache the energy cutoff comes from running the teachers: the same one
    uncached = prepare_distillation(
        _cfg("sdkd_energy", teacher_cache="off"), chosen, student, train, cache=DistillCache()
    )
    assert uncached.train_set is train and not uncached.params["teacher_cache"]
    assert uncached.cutoff == pytest.approx(prepared.cutoff)
    # no cutoff for methods without the fixed two-band weighting
    for method in ("output_mse", "sdkd", "sdkd_latent"):
        other = prepare_distillation(_cfg(method), chosen, student, train, cache=cache)
        assert other.cutoff is None and other.params["cutoff"] is None, method
    assert (
        prepare_distillation(_cfg("sdkd"), chosen, student, train, cache=cache).loss.advantage
        is not None
    )
    # none: the engine's plain loss on the plain windows, no teacher run
    baseline = prepare_distillation(_cfg("none"), {}, student, train, cache=cache)
    assert baseline.loss is None and baseline.train_set is train and baseline.cutoff is None


def test_the_cache_computes_each_teachers_outputs_once_across_methods(monkeypatch):
    calls: list[tuple[list[str], int]] = []
    real = distill_setup.precompute_teacher_outputs

    def counting(models, windows, **kwargs):
        calls.append((sorted(models), len(windows)))
        return real(models, windows, **kwargs)

    drawn: list[int] = []
    real_inputs = distill_setup.function_matching_inputs

    def counting_inputs(train_set, **kwargs):
        drawn.append(kwargs["seed"])
        return real_inputs(train_set, **kwargs)

    monkeypatch.setattr(distill_setup, "precompute_teacher_outputs", counting)
    monkeypatch.setattr(distill_setup, "function_matching_inputs", counting_inputs)
    train, student, cache = _windows(), _student(), DistillCache()
    n = len(train)
    a, b = _teacher(0), _teacher(1, "st_alternet")
    fm = {"function_matching": {"enabled": True, "ratio": 0.5}}  # mixup (a random store)

    def prepare(method: str, teachers: dict, **params):
        return prepare_distillation(
            _cfg(method, **params), teachers, student, train, batch_size=4, cache=cache
        )

    first = prepare("output_mse", {"a": a})
    for method in ("sdkd", "sdkd_energy", "camkd"):
        prepare(method, {"a": a, "b": b} if method == "camkd" else {"a": a})
    assert calls == [(["a"], n), (["b"], n)]  # b only when it was first needed
    again = prepare("sdkd", {"a": a})
    assert again.train_set.cache["a"]["prediction"] is first.train_set.cache["a"]["prediction"]

    # function matching: inputs drawn once for the same settings, teachers run once on them,
    # also when runs without function matching come in between
    with_fm = prepare("sdkd", {"a": a}, **fm)
    assert isinstance(with_fm.train_set, FunctionMatchingSet)
    n_fm = len(with_fm.unlabelled)
    assert drawn == [0] and calls[2:] == [(["a"], n_fm)]
    prepare("output_mse", {"a": a})
    prepare("aekd", {"a": a, "b": b}, **fm)
    assert drawn == [0] and calls[3:] == [(["b"], n_fm)]
    unlabelled_a = with_fm.train_set.unlabelled_cache["a"]["prediction"]
    with torch.no_grad():
        torch.testing.assert_close(unlabelled_a, a(with_fm.unlabelled.inputs), rtol=1e-5, atol=1e-6)
    # other settings: drawn again
    prepare("sdkd", {"a": a}, function_matching={"enabled": True, "ratio": 0.5, "seed": 1})
    assert drawn == [0, 1] and calls[4:] == [(["a"], n_fm)]
    del calls[:]

    # a retrained teacher (other weights, same name) is run again; latents are other outputs
    prepare("output_mse", {"a": _teacher(2)})
    assert calls == [(["a"], n)]
    prepare("sdkd_latent", {"a": a})
    assert calls[1:] == [(["a"], n)]
    prepare("sdkd_latent", {"a": a})
    assert len(calls) == 2

    # another store: computed again, and the previous store's outputs are let go
    other = _windows(seed=1)
    prepare_distillation(_cfg("output_mse"), {"a": a}, student, other, cache=cache)
    assert calls[2:] == [(["a"], len(other))]
    assert {key[2] for key in cache.outputs} == {windows_fingerprint(other)}
