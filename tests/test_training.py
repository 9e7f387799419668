"""The training engine: config, loop semantics, checkpoints, resume after SIGKILL, DDP."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sdkd_pipeline import training
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.training import (
    LRSchedule,
    MSELoss,
    TrainConfig,
    TrainingLoss,
    evaluate_mse,
    load_checkpoint,
    resolve_device,
    train,
)
from tests.engine_worker import FileRecordingTracker, SyntheticWindows, TinyForecaster

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "engine_worker.py"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(**overrides) -> TrainConfig:
    base = dict(epochs=3, batch_size=4, lr=3e-3, seed=0, patience=None)
    base.update(overrides)
    return TrainConfig(**base)


def _model() -> TinyForecaster:
    torch.manual_seed(0)
    return TinyForecaster()


def test_engine_and_tracking_import_without_kedro_mlflow_zarr_dask_matplotlib():
    code = (
        "import sys, sdkd_pipeline.training, sdkd_pipeline.tracking; "
        "heavy = {'kedro', 'mlflow', 'zarr', 'dask', 'matplotlib'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


# --------------------------------------------------------------------------------------------
# configuration


def test_config_from_params_defaults_and_unknown_key():
    cfg = TrainConfig.from_params({"epochs": 5, "lr": 1}, "teacher.train")
    assert cfg.epochs == 5 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.device == "auto" and cfg.param_path == "teacher.train"
    assert cfg.precision == "auto" and cfg.schedule is None and cfg.grad_clip is None
    assert "param_path" not in cfg.to_dict() and TrainConfig.from_params(None) == TrainConfig()
    with pytest.raises(ConfigError, match=r"teacher\.train\.learning_rate: unknown parameter"):
        TrainConfig.from_params({"learning_rate": 1e-3}, "teacher.train")
    # the old spelling, still called with prefix=
    assert TrainConfig.from_dict({"epochs": 5}, prefix="teacher.train").param_path == (
        "teacher.train"
    )
    with pytest.raises(ConfigError, match=r"^teacher\.train\.param_path: unknown parameter"):
        TrainConfig.from_dict({"param_path": "x"}, prefix="teacher.train")


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("epochs", 0, "must be >= 1, got 0"),
        ("batch_size", 2.5, "must be an integer, got 2.5"),
        ("lr", -1.0, "must be > 0, got -1.0"),
        ("lr", float("nan"), "must be a finite number, got nan"),
        ("schedule", "step", "must be one of null, 'cosine', 'plateau', got 'step'"),
        ("precision", "fp16", "must be one of 'auto', 'bf16', 'fp32', got 'fp16'"),
        ("device", "tpu", ": "),
        ("grad_clip", 0.0, "must be > 0, got 0.0"),
        ("patience", 0, "must be >= 1, got 0"),
        ("channels_last", "yes", "must be true or false, got 'yes'"),
        ("plateau_factor", 1.5, "must be < 1, got 1.5"),
        ("epochs", True, "must be an integer, got True"),
        ("min_lr", 1.0, "(1.0) must not exceed lr (0.0001)"),
        ("deterministic", "on", "must be true or false or null, got 'on'"),
    ],
)
def test_config_rejects_bad_values_naming_the_key(key, value, what):
    with pytest.raises(ConfigError, match=rf"^student\.train\.{key} ?" + re.escape(what)):
        TrainConfig.from_params({key: value}, "student.train")


def test_config_built_in_code_is_checked_too():
    with pytest.raises(ConfigError, match=r"^train\.warmup_steps must be >= 0, got -1$"):
        TrainConfig(warmup_steps=-1)
    with pytest.raises(ConfigError, match=r"^teacher\.training\.eval_every must be >= 1"):
        TrainConfig(eval_every=0, param_path="teacher.training")


def test_resolve_device_and_precision():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert training.autocast_dtype("auto", torch.device("cpu")) is None
    assert training.autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert training.autocast_dtype("fp32", torch.device("cuda")) is None
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_lr_schedule_warmup_cosine_and_plateau():
    cosine = LRSchedule(_config(lr=1.0, min_lr=0.1, schedule="cosine", warmup_steps=3), 10)
    rates = []
    for _ in range(10):
        rates.append(cosine.lr())
        cosine.step()
    assert rates[:3] == pytest.approx([0.25 * f for f in (1, 2, 3)], rel=0.2)
    assert rates[0] < rates[1] < rates[2]
    assert all(a >= b for a, b in zip(rates[3:], rates[4:], strict=False))
    assert cosine.lr() == pytest.approx(0.1)

    plateau = LRSchedule(
        _config(lr=1.0, schedule="plateau", plateau_patience=2, plateau_factor=0.5), 10
    )
    for val in (1.0, 1.0, 1.0, 0.5, 0.6, 0.7):
        plateau.observe_validation(val)
    assert plateau.lr() == pytest.approx(0.25)
    restored = LRSchedule(plateau.cfg, 10)
    restored.load_state_dict(plateau.state_dict())
    assert restored.lr() == plateau.lr()


# --------------------------------------------------------------------------------------------
# the loop


def test_training_learns_writes_loadable_checkpoints_and_reloads_best(tmp_path):
    model = _model()
    train_set, val_set, test_set = (
        SyntheticWindows(24, 1),
        SyntheticWindows(8, 2),
        SyntheticWindows(6, 3),
    )
    initial_val = evaluate_mse(model, val_set, batch_size=5, device="cpu")
    result = train(
        model,
        train_set,
        val_set,
        _config(epochs=4),
        out_dir=tmp_path,
        test_set=test_set,
        progress=False,
    )
    assert result.epochs_run == 4 and not result.stopped_early
    assert result.stop_reason == "max_epochs"
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert {"train_loss", "val_loss", "lr", "time_s", "samples"} <= set(result.history[0])
    assert result.best_val_loss < 0.95 * initial_val
    assert result.best_val_loss == min(row["val_loss"] for row in result.history)
    assert result.samples_per_second > 0

    best = torch.load(result.best_checkpoint, weights_only=True)
    last = torch.load(result.last_checkpoint, weights_only=True)
    assert best["epoch"] == result.best_epoch and best["val_loss"] == result.best_val_loss
    assert best["config"]["lr"] == 3e-3
    assert {"model", "optimizer", "schedule", "rng", "state"} <= set(last)
    assert last["state"]["finished"] and len(last["state"]["history"]) == 4
    # the model holds the best weights, and val/test losses are plain MSEs of those weights
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model"][name])
    assert evaluate_mse(model, val_set, 3, "cpu") == pytest.approx(result.best_val_loss)
    assert evaluate_mse(model, test_set, 4, "cpu") == pytest.approx(result.test_loss)
    assert json.loads((tmp_path / "history.json").read_text())[-1]["epoch"] == 4
    assert not list(tmp_path.glob(".*tmp*"))


def test_same_seed_gives_identical_runs_on_cpu(tmp_path):
    data = SyntheticWindows(12, 1), SyntheticWindows(4, 2)
    runs = []
    for name in ("a", "b"):
        model = _model()
        result = train(model, *data, _config(epochs=2), out_dir=tmp_path / name, progress=False)
        runs.append((model.state_dict(), result.history))
    for key, tensor in runs[0][0].items():
        assert torch.equal(tensor, runs[1][0][key])
    assert [r["val_loss"] for r in runs[0][1]] == [r["val_loss"] for r in runs[1][1]]


def test_train_cli_twice_gives_identical_best_checkpoints(tmp_path):
    """Two ``python -m sdkd_pipeline.training`` processes (each with its own random initial
    torch seed) on a NetCDF store: the same best checkpoint, bit for bit."""
    import yaml

    from tests.demo_store import write_demo_store

    _, store = write_demo_store(tmp_path)
    params = tmp_path / "parameters_teacher.yml"
    params.write_text(
        yaml.safe_dump(
            {
                "teacher": {
                    "simvp": {"frame_hidden": 4, "hidden": 8, "spatial_layers": 2, "depth": 2},
                    "training": {
                        "epochs": 2,
                        "batch_size": 4,
                        "lr": 1e-3,
                        "patience": None,
                        "seed": 0,
                        "max_batches_per_epoch": 2,
                        "device": "cpu",
                    },
                }
            }
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread count for both (see README)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    outputs = []
    # b loads its batches in two DataLoader workers: that must not change a bit either
    for run, extra in (("a", []), ("b", ["--set", "num_workers=2"])):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sdkd_pipeline.training",
                "--store",
                str(store),
                "--model",
                "simvp",
                "--out",
                str(tmp_path / run),
                "--params-file",
                str(params),
                "--no-progress",
                *extra,
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert outputs[0].pop("best_checkpoint") != outputs[1].pop("best_checkpoint")
    assert outputs[0] == outputs[1]  # best_val_mse, best_epoch, test_mse: ==, not approx
    first, second = (load_checkpoint(tmp_path / run / "best.pt") for run in ("a", "b"))
    assert (first["epoch"], first["val_loss"]) == (second["epoch"], second["val_loss"])
    assert first["model"].keys() == second["model"].keys()
    for key, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][key]), key


class IndexedWindows(torch.utils.data.Dataset):
    """x carries its own index, so a loss can see which samples each batch held."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        x = torch.full((3, 2, 8, 8), float(index))
        return x, torch.zeros(2, 2, 8, 8)


class RecordingLoss(nn.Module):
    """MSE that records the indices of each batch and reports a component."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[int]] = []

    def forward(self, model, x, y):
        self.batches.append([int(v) for v in x[:, 0, 0, 0, 0]])
        prediction = model(x)
        mse = torch.nn.functional.mse_loss(prediction, y)
        return mse, {"mse_copy": mse.detach()}


def test_last_partial_batch_is_used_and_each_sample_once_per_epoch(tmp_path):
    loss = RecordingLoss()
    result = train(
        _model(),
        IndexedWindows(10),
        IndexedWindows(3),
        _config(epochs=2),
        loss=loss,
        out_dir=tmp_path,
        progress=False,
    )
    assert [len(b) for b in loss.batches] == [4, 4, 2, 4, 4, 2]
    for epoch in range(2):
        seen = sorted(i for b in loss.batches[3 * epoch : 3 * epoch + 3] for i in b)
        assert seen == list(range(10))
    assert loss.batches[0] + loss.batches[1] != loss.batches[3] + loss.batches[4]  # reshuffled
    assert result.history[0]["samples"] == 10
    assert result.history[0]["train_mse_copy"] == pytest.approx(result.history[0]["train_loss"])
    assert isinstance(loss, TrainingLoss) and isinstance(MSELoss(), TrainingLoss)


def test_max_batches_per_epoch_caps_an_epoch(tmp_path):
    loss = RecordingLoss()
    train(
        _model(),
        IndexedWindows(10),
        IndexedWindows(3),
        _config(epochs=2, max_batches_per_epoch=2),
        loss=loss,
        out_dir=tmp_path,
        progress=False,
    )
    assert [len(b) for b in loss.batches] == [4, 4, 4, 4]


def test_early_stopping_triggers_after_patience(tmp_path):
    # min_delta larger than any loss: only the first validation counts as an improvement
    cfg = _config(epochs=20, patience=2, min_delta=1e6)
    result = train(
        _model(),
        SyntheticWindows(8, 1),
        SyntheticWindows(4, 2),
        cfg,
        out_dir=tmp_path,
        progress=False,
    )
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    assert result.stop_reason == "early_stopping"
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_gradient_clipping_bounds_the_norm_the_optimizer_sees(tmp_path):
    norms: list[float] = []

    def record_norm(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(
            float(
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            )
        )

    class LoudLoss:  # large gradients, so clipping has something to do
        def __call__(self, model, x, y):
            return 1e3 * torch.nn.functional.mse_loss(model(x), y), {}

    handle = register_optimizer_step_pre_hook(record_norm)
    try:
        data = SyntheticWindows(8, 1), SyntheticWindows(4, 2)
        train(
            _model(),
            *data,
            _config(epochs=1),
            loss=LoudLoss(),
            out_dir=tmp_path / "free",
            progress=False,
        )
        unclipped, norms[:] = list(norms), []
        train(
            _model(),
            *data,
            _config(epochs=1, grad_clip=0.5),
            loss=LoudLoss(),
            out_dir=tmp_path / "clipped",
            progress=False,
        )
    finally:
        handle.remove()
    assert max(unclipped) > 0.5
    assert len(norms) == 2 and max(norms) <= 0.5 * (1 + 1e-5)


class ProjectorLoss(nn.Module):
    """A loss with its own trainable parameter (like a distillation projector)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.2))

    def forward(self, model, x, y):
        return torch.nn.functional.mse_loss(self.scale * model(x), y), {}


def test_loss_parameters_are_optimised_and_checkpointed(tmp_path):
    loss = ProjectorLoss()
    train(
        _model(),
        SyntheticWindows(12, 1),
        SyntheticWindows(4, 2),
        _config(epochs=2),
        loss=loss,
        out_dir=tmp_path,
        progress=False,
    )
    assert loss.scale.item() != pytest.approx(0.2)
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["loss_state"]["scale"].item() == loss.scale.item()


def test_shape_mismatch_is_a_clear_error(tmp_path):
    class Wrong(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x * self.w  # T_in frames, not T_out

    with pytest.raises(ValueError, match=r"model output shape \(4, 3, 2, 8, 8\) differs"):
        train(
            Wrong(),
            SyntheticWindows(8, 1),
            SyntheticWindows(4, 2),
            _config(),
            out_dir=tmp_path,
            progress=False,
        )


def test_tracker_receives_params_epoch_metrics_final_metrics_and_artifacts(tmp_path):
    log_file = tmp_path / "tracker.jsonl"
    train(
        _model(),
        SyntheticWindows(8, 1),
        SyntheticWindows(4, 2),
        _config(epochs=2),
        out_dir=tmp_path / "run",
        tracker=FileRecordingTracker(log_file),
        test_set=SyntheticWindows(4, 3),
        progress=False,
    )
    calls = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert calls[0]["method"] == "log_params" and calls[0]["params"]["train.lr"] == 3e-3
    epochs = [c for c in calls if c["method"] == "log_metrics" and "val_loss" in c["metrics"]]
    assert [c["step"] for c in epochs] == [1, 2]
    assert {"train_loss", "val_loss", "lr", "epoch_time_s"} <= set(epochs[0]["metrics"])
    final = [c for c in calls if c["method"] == "log_metrics" and "test_loss" in c["metrics"]]
    assert len(final) == 1 and final[0]["metrics"]["best_val_loss"] > 0
    artifacts = {Path(c["path"]).name for c in calls if c["method"] == "log_artifact"}
    assert artifacts == {"best.pt", "history.json"}
    assert {c["name"] for c in calls if c["method"] in ("log_dict", "log_figure")} == {
        "train_config.json",
        "loss_curves.png",
    }


# --------------------------------------------------------------------------------------------
# resume


def _run_worker(out_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, str(WORKER), str(out_dir), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _final_state(out_dir: Path, rank: int = 0) -> tuple[dict, dict]:
    records = out_dir.parent / f"{out_dir.name}-records"
    weights = torch.load(records / f"final_model_rank{rank}.pt", weights_only=True)
    return weights, json.loads((records / f"result_rank{rank}.json").read_text())


def test_run_killed_with_sigkill_resumes_and_ends_identical(tmp_path):
    reference = _run_worker(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    # 22 samples, batch 4: 6 batches (the last of 2) per epoch, a checkpoint every 2 batches.
    # Killed while reading item 33 (epoch 2, fetching batch 3: after the step-2 checkpoint)...
    killed = _run_worker(tmp_path / "resumed", "--kill-after-items", "33")
    assert killed.returncode == -9, killed.stderr
    state = load_checkpoint(tmp_path / "resumed" / "last.pt")["state"]
    assert (state["epochs_done"], state["step_in_epoch"]) == (1, 2)
    # ... then the resumed process reads the 14 remaining items of epoch 2 and is killed at
    # item 10 of epoch 3 (after that epoch's step-2 checkpoint)
    killed_again = _run_worker(tmp_path / "resumed", "--kill-after-items", "24")
    assert killed_again.returncode == -9, killed_again.stderr
    state = load_checkpoint(tmp_path / "resumed" / "last.pt")["state"]
    assert (state["epochs_done"], state["step_in_epoch"]) == (2, 2)
    finished = _run_worker(tmp_path / "resumed")
    assert finished.returncode == 0, finished.stderr

    weights_ref, summary_ref = _final_state(tmp_path / "reference")
    weights, summary = _final_state(tmp_path / "resumed")
    assert summary["resumed_from_epoch"] == 2  # the last start was inside epoch 3
    for key, tensor in weights_ref.items():
        assert torch.equal(tensor, weights[key]), key
    assert summary["history"] == summary_ref["history"]
    assert summary["test_loss"] == summary_ref["test_loss"]
    assert summary["best_val_loss"] == summary_ref["best_val_loss"]


def test_resume_with_a_different_config_is_refused_unless_resume_false(tmp_path):
    data = SyntheticWindows(8, 1), SyntheticWindows(4, 2)
    train(_model(), *data, _config(epochs=1), out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"different training config \(lr: 0.003 -> 0.001"):
        train(_model(), *data, _config(epochs=1, lr=1e-3), out_dir=tmp_path, progress=False)
    fresh = train(
        _model(), *data, _config(epochs=1, lr=1e-3, resume=False), out_dir=tmp_path, progress=False
    )
    assert fresh.resumed_from_epoch is None
    assert load_checkpoint(tmp_path / "last.pt")["config"]["lr"] == 1e-3
    # a finished run with the same config returns at once, from its checkpoints
    again = train(
        _model(),
        *data,
        _config(epochs=1, lr=1e-3, resume=False, num_workers=0),
        out_dir=tmp_path,
        progress=False,
    )
    same = train(_model(), *data, _config(epochs=1, lr=1e-3), out_dir=tmp_path, progress=False)
    assert same.resumed_from_epoch == 1 and same.best_val_loss == again.best_val_loss


@pytest.mark.parametrize("damage", ["truncated", "pickle", "garbage"])
def test_an_unreadable_last_pt_is_moved_aside_and_the_run_starts_afresh(tmp_path, caplog, damage):
    import pickle

    data = SyntheticWindows(8, 1), SyntheticWindows(4, 2)
    reference = train(_model(), *data, _config(epochs=1), out_dir=tmp_path / "ref", progress=False)
    train(_model(), *data, _config(epochs=1), out_dir=tmp_path, progress=False)
    last = tmp_path / "last.pt"
    if damage == "truncated":  # a full disk or a killed copy
        last.write_bytes(last.read_bytes()[:1000])
    elif damage == "pickle":  # never unpickled: weights_only refuses it
        last.write_bytes(pickle.dumps(SyntheticWindows(2, 3)))
    else:
        last.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match=str(last)):
        load_checkpoint(last)
    with caplog.at_level("WARNING", logger="sdkd_pipeline"):
        result = train(_model(), *data, _config(epochs=1), out_dir=tmp_path, progress=False)
    assert f"{last}: cannot be read as a training checkpoint" in caplog.text
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("last.pt.unreadable-")]
    assert len(aside) == 1 and str(aside[0]) in caplog.text
    # afresh from the seed: the same as an undisturbed run, and a readable last.pt again
    assert result.resumed_from_epoch is None
    assert result.best_val_loss == reference.best_val_loss
    assert load_checkpoint(last)["config"]["epochs"] == 1


def test_resumed_run_tags_its_tracker_run_with_the_run_it_continues(tmp_path):
    data = SyntheticWindows(8, 1), SyntheticWindows(4, 2)
    first = FileRecordingTracker(tmp_path / "first.jsonl")
    first.run_id = "run-of-the-killed-process"
    train(
        _model(), *data, _config(epochs=1), out_dir=tmp_path / "run", tracker=first, progress=False
    )
    assert load_checkpoint(tmp_path / "run" / "last.pt")["tracker_run_id"] == first.run_id
    first_tags = [
        json.loads(line)["tags"]
        for line in (tmp_path / "first.jsonl").read_text().splitlines()
        if json.loads(line)["method"] == "set_tags"
    ]
    assert first_tags == [{"stop_reason": "max_epochs"}]  # no resume tags on a fresh run

    second = FileRecordingTracker(tmp_path / "second.jsonl")
    train(
        _model(), *data, _config(epochs=1), out_dir=tmp_path / "run", tracker=second, progress=False
    )
    calls = [json.loads(line) for line in (tmp_path / "second.jsonl").read_text().splitlines()]
    tags = [c["tags"] for c in calls if c["method"] == "set_tags"]
    assert tags == [
        {
            "resumed_from_epoch": 1,
            "resumed_from_batch": 0,
            "resumed_from_run": "run-of-the-killed-process",
        },
        {"stop_reason": "max_epochs"},
    ]


# --------------------------------------------------------------------------------------------
# DDP


def test_two_process_ddp_on_cpu_trains_and_only_rank0_writes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(out),
        "--record-writes",
        "--n-train",
        "13",
    ]
    completed = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    records = tmp_path / "ddp-records"
    weights0, summary0 = _final_state(out, 0)
    weights1, summary1 = _final_state(out, 1)
    for key, tensor in weights0.items():  # DDP kept the replicas identical
        assert torch.equal(tensor, weights1[key])
    assert summary0 == summary1  # all-reduced validation: same numbers, same decisions
    history = summary0["history"]
    assert len(history) == 3 and history[-1]["val_loss"] < history[0]["val_loss"]
    # 13 samples over 2 ranks: 7 each (one padded), the epoch's 3 + 4 sized batches all used
    assert history[0]["samples"] == 14
    writes0 = (records / "writes_rank0.txt").read_text().split()
    assert {Path(p).name for p in writes0} == {"best.pt", "last.pt"}
    assert not (records / "writes_rank1.txt").exists()
    assert (records / "tracker_rank0.jsonl").stat().st_size > 0
    assert not (records / "tracker_rank1.jsonl").exists()
    assert load_checkpoint(out / "last.pt")["world_size"] == 2
    assert math.isfinite(summary0["test_loss"])


@pytest.mark.bad_input
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_the_parameter(tmp_path):
    cfg = TrainConfig.from_params({"epochs": 1, "device": "cuda"}, "teacher.training")
    data = SyntheticWindows(8, 1), SyntheticWindows(4, 2)
    with pytest.raises(
        ConfigError,
        match=r"^teacher\.training\.device: device 'cuda' requested "
        r"but CUDA is not available.*use auto",
    ):
        train(_model(), *data, cfg, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
