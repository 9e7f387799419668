"""The shared ``training:`` block (conf/base/parameters.yml) under each stage's own block."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.settings import CONFIG_LOADER_ARGS
from sdkd_pipeline.training import stage_config

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_stage_block_wins_over_the_shared_one():
    cfg = stage_config(
        {"lr": 1e-3, "batch_size": 16, "seed": 3}, {"lr": 5e-4, "epochs": 7}, "teacher.training"
    )
    assert (cfg.lr, cfg.batch_size, cfg.seed, cfg.epochs) == (5e-4, 16, 3, 7)


def test_unknown_key_is_named_under_the_block_that_holds_it():
    with pytest.raises(ConfigError, match=r"^training\.lrate: unknown parameter"):
        stage_config({"lrate": 1e-3}, {}, "teacher.training")
    with pytest.raises(ConfigError, match=r"^distill\.training\.epoch: unknown parameter"):
        stage_config({}, {"epoch": 3}, "distill.training")


@pytest.mark.parametrize("env", ["local", "smoke", "paper", "era5_sample"])
def test_every_env_resolves_both_stages(env):
    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    params = OmegaConfigLoader(str(CONF), default_run_env=env, **args)["parameters"]
    for stage in ("teacher", "distill"):
        cfg = stage_config(params["training"], params[stage]["training"], f"{stage}.training")
        if env == "paper":  # the paper's schedule: Adam 1e-4, no clipping, 300 epochs
            assert (cfg.lr, cfg.grad_clip, cfg.epochs, cfg.num_workers) == (1e-4, None, 300, 4)
        else:
            assert cfg.lr == 1e-3 and cfg.grad_clip == 1.0 and cfg.seed == 0
    assert params["tracking"]["experiment"] == "sdkd_pipeline"
    if env == "era5_sample":  # every stage on the real sample, every model residual
        assert params["data"]["datasets"] == ["weatherbench"]
        assert params["teacher"]["datasets"] == params["distill"]["datasets"] == ["weatherbench"]
        models = params["teacher"]["models"] + params["distill"]["students"]
        block = {
            m: params["teacher" if m in params["teacher"]["models"] else "distill"] for m in models
        }
        assert all(block[m][m]["residual"] is True for m in models)
