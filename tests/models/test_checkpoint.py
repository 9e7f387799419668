"""The Checkpoint type: loading safely, naming the file, refusing the wrong model or data."""

from __future__ import annotations

import pickle

import pytest
import torch

from sdkd_pipeline.errors import DataError
from sdkd_pipeline.models import Checkpoint, build_model

SHAPE = {"in_frames": 2, "out_frames": 2, "channels": 1, "height": 16, "width": 16}


class _Windows:
    model_shape = SHAPE
    mean = torch.tensor([0.5])
    std = torch.tensor([2.0])


def _payload(model="unet", **extra) -> dict:
    torch.manual_seed(0)
    config = {"hidden": 8, "base_width": 8, "levels": 2}
    net = build_model(model, **SHAPE, **config)
    return {
        "model": model,
        "model_config": net.config.to_dict(),
        "shape": dict(SHAPE),
        "channels": ["vorticity"],
        "mean": torch.tensor([0.5]),
        "std": torch.tensor([2.0]),
        "state_dict": net.state_dict(),
        "method": "none",
        **extra,
    }


def test_a_saved_checkpoint_loads_and_rebuilds_the_same_model(tmp_path):
    payload = _payload()
    torch.save(payload, tmp_path / "unet.pt")
    ckpt = Checkpoint.load(tmp_path / "unet.pt")
    assert ckpt.model_name == "unet" and ckpt.role == "student" and ckpt.shape == SHAPE
    assert ckpt["method"] == "none" and dict(ckpt).keys() == payload.keys()
    x = torch.randn(3, 2, 1, 16, 16)
    reference = build_model("unet", **SHAPE, **payload["model_config"])
    reference.load_state_dict(payload["state_dict"])
    with torch.no_grad():
        assert torch.equal(ckpt.build_model()(x), reference.eval()(x))
    assert Checkpoint.of(ckpt) is ckpt and Checkpoint.of(payload).model_name == "unet"
    # what torch.save and the catalog take: a plain dict again
    assert type(ckpt.to_dict()) is dict


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.pt: no checkpoint file there"):
        Checkpoint.load(tmp_path / "nowhere.pt")
    torch.save(_payload(), tmp_path / "cut.pt")
    data = (tmp_path / "cut.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.pt: cannot be read as a checkpoint"):
        Checkpoint.load(tmp_path / "cut.pt")
    # a pickle payload is never executed: weights_only refuses the class
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_Windows()))
    with pytest.raises(DataError, match=r"evil\.pt: cannot be read as a checkpoint"):
        Checkpoint.load(tmp_path / "evil.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(DataError, match=r"list\.pt: not a checkpoint dict \(got list\)"):
        Checkpoint.load(tmp_path / "list.pt")
    torch.save({"model": "unet"}, tmp_path / "bare.pt")
    with pytest.raises(
        DataError,
        match=r"bare\.pt: not a checkpoint of the training node "
        r"\(lacks model_config, shape",
    ):
        Checkpoint.load(tmp_path / "bare.pt")


def test_another_architecture_or_role_is_refused():
    ckpt = Checkpoint(_payload("unet"), origin="data/06_models/ns/st_alternet.pt")
    assert ckpt.expect_model("unet") is ckpt
    with pytest.raises(
        DataError,
        match=r"st_alternet\.pt: holds a 'unet' checkpoint, not "
        r"'st_alternet'.*kedro run --pipelines=teacher",
    ):
        ckpt.expect_model("st_alternet")
    with pytest.raises(DataError, match=r"--teacher x: holds a 'unet', not a teacher"):
        ckpt.expect_role("teacher", "--teacher x")


def test_weights_that_do_not_fit_the_config_are_named():
    payload = _payload()
    payload["model_config"] = {**payload["model_config"], "hidden": 16}
    with pytest.raises(DataError, match=r"m\.pt: its weights do not fit its 'unet' config"):
        Checkpoint(payload, origin="m.pt").build_model()


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"shape": {**SHAPE, "height": 32}}, "shape"),
        ({"mean": torch.tensor([0.6])}, "normalization"),
        ({"std": torch.tensor([2.0, 2.0])}, "normalization"),
    ],
)
def test_a_checkpoint_trained_on_other_data_is_refused(change, what):
    Checkpoint(_payload()).check_trained_on(_Windows())
    stale = Checkpoint({**_payload(), **change}, origin="unet.pt")
    with pytest.raises(DataError, match=rf"unet\.pt was trained .*{what}.*rerun `make it`"):
        stale.check_trained_on(_Windows(), command="make it")
