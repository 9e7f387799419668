"""The one atomic writer: old or complete new, never a part; a full disk named, nothing left."""

from __future__ import annotations

import errno

import pytest
import torch

from sdkd_pipeline.atomic import TMP_MARK, atomic_path, write_text
from sdkd_pipeline.errors import DataError
from sdkd_pipeline.training import TrainConfig, train
from tests.engine_worker import SyntheticWindows, TinyForecaster


def test_a_file_and_a_folder_are_replaced_whole(tmp_path):
    target = tmp_path / "a.json"
    write_text("old", target)
    write_text("new", target)
    assert target.read_text() == "new"
    store = tmp_path / "s.zarr"
    for version in ("1", "2"):
        with atomic_path(store, suffix=".zarr") as tmp:
            tmp.mkdir()
            (tmp / "v").write_text(version)
    assert (store / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "s.zarr"]


def test_a_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    write_text("old", target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_a_full_disk_names_the_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "runs" / "last.pt"
    with pytest.raises(DataError, match=r"runs/last\.pt: could not be written \(No space left"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not target.exists() and not list(target.parent.iterdir())


def test_the_engine_names_the_checkpoint_when_the_disk_is_full(tmp_path, monkeypatch):
    def full_disk(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-3, seed=0, device="cpu")
    with pytest.raises(DataError, match=r"run/(last|best)\.pt: could not be written"):
        train(
            TinyForecaster(),
            SyntheticWindows(8, 1),
            SyntheticWindows(4, 2),
            cfg,
            out_dir=tmp_path / "run",
            progress=False,
        )
    assert not [p for p in (tmp_path / "run").iterdir() if TMP_MARK in p.name]
