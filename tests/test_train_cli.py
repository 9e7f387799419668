"""The train CLI trains students too: ``none`` from the data, or a distillation method from
teacher checkpoints of the teacher pipeline, with clear errors for a bad ``--teacher``."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from sdkd_pipeline.data.store import load_store_in_memory
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.models import build_model
from sdkd_pipeline.training import __main__ as train_cli
from tests.demo_store import write_demo_store

TRAINING = {
    "epochs": 2,
    "batch_size": 4,
    "lr": 1e-3,
    "patience": None,
    "seed": 0,
    "max_batches_per_epoch": 2,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    zarr_path, store = write_demo_store(root)
    train_set = WindowDataset(load_store_in_memory(zarr_path), "train")
    shape = train_set.model_shape
    assert shape == {"in_frames": 3, "out_frames": 3, "channels": 1, "height": 16, "width": 16}
    config = {"frame_hidden": 4, "hidden": 8, "spatial_layers": 2, "depth": 2}
    torch.manual_seed(0)
    teacher = build_model("simvp", **shape, **config)
    ckpt = {
        "model": "simvp",
        "role": "teacher",
        "shape": shape,
        "channels": ["vorticity"],
        "model_config": teacher.config.to_dict(),
        "mean": train_set.mean.clone(),
        "std": train_set.std.clone(),
        "state_dict": teacher.state_dict(),
        "best_val_loss": 0.5,
        "best_epoch": 1,
    }
    torch.save(ckpt, root / "simvp.pt")
    torch.save({**ckpt, "shape": {**shape, "height": 32}}, root / "stale.pt")
    torch.save({**ckpt, "model": "unet"}, root / "student.pt")
    (root / "garbage.pt").write_bytes(b"not a checkpoint")
    params = root / "parameters_distill.yml"
    params.write_text(
        yaml.safe_dump(
            {"distill": {"unet": {"hidden": 8, "base_width": 8, "levels": 2}, "training": TRAINING}}
        )
    )
    return root, store, params


def _run(setup, out, *extra):
    root, store, params = setup
    return train_cli.main(
        [
            "--store",
            str(store),
            "--model",
            "unet",
            "--out",
            str(root / out),
            "--params-file",
            str(params),
            "--no-progress",
            *extra,
        ]
    )


def test_a_student_trains_with_none_and_distills_from_a_teacher_checkpoint(setup, capsys):
    root = setup[0]
    assert _run(setup, "none") == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plain["method"] == "none" and plain["stop_reason"] == "max_epochs"
    assert _run(setup, "sdkd", "--method", "sdkd", "--teacher", str(root / "simvp.pt")) == 0
    distilled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert distilled["method"] == "sdkd"
    rows = json.loads((root / "sdkd" / "history.json").read_text())
    rows = rows if isinstance(rows, list) else rows["history"]
    assert {"train_kd", "train_w_band0", "train_task"} <= set(rows[-1])
    # an untrained teacher is worse than the student in every band: nothing is distilled
    assert all(rows[-1][f"train_w_band{b}"] == 0 for b in range(3))
    assert distilled["best_val_mse"] == plain["best_val_mse"]
    # output KD follows any teacher, and so changes the run
    assert _run(setup, "kd", "--method", "output_mse", "--teachers", str(root / "simvp.pt")) == 0
    output_kd = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert output_kd["method"] == "output_mse"
    assert output_kd["best_val_mse"] != plain["best_val_mse"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            ["--method", "sdkd"],
            "give their checkpoints with --teacher",
            marks=pytest.mark.bad_input,
        ),
        pytest.param(
            ["--method", "sdkd", "--teacher", "nowhere.pt"],
            "--teacher nowhere.pt: no such file",
            marks=pytest.mark.bad_input,
        ),
        (["--method", "sdkd", "--teacher", "{root}/garbage.pt"], "not a readable checkpoint"),
        (["--method", "sdkd", "--teacher", "{root}/student.pt"], "holds a 'unet', not a teacher"),
        (["--method", "sdkd", "--teacher", "{root}/stale.pt"], "rerun `kedro run"),
        (["--method", "sdkd_typo", "--teacher", "{root}/simvp.pt"], "sdkd_typo"),
    ],
)
def test_bad_student_arguments_exit_2_with_a_message_and_write_nothing(
    setup, capsys, extra, message
):
    root = setup[0]
    extra = [e.replace("{root}", str(root)) for e in extra]
    with pytest.raises(SystemExit) as exit_info:
        _run(setup, "bad", *extra)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (root / "bad").exists()


@pytest.mark.bad_input
def test_a_teacher_refuses_student_options(setup, capsys):
    root, store, _ = setup
    with pytest.raises(SystemExit):
        train_cli.main(
            [
                "--store",
                str(store),
                "--model",
                "simvp",
                "--out",
                str(root / "t"),
                "--method",
                "sdkd",
            ]
        )
    assert "--method and --teacher are for students" in capsys.readouterr().err
    assert not (root / "t").exists()


def test_a_student_distils_under_torchrun_on_two_cpu_processes(setup):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root, store, params = setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "sdkd_pipeline.training",
            "--store",
            str(store),
            "--model",
            "unet",
            "--method",
            "sdkd",
            "--teacher",
            str(root / "simvp.pt"),
            "--out",
            str(root / "ddp"),
            "--params-file",
            str(params),
            "--no-progress",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 alone reports
    assert json.loads(lines[0])["method"] == "sdkd"
    assert (root / "ddp" / "best.pt").is_file()
