"""Kedro project settings."""

import os

from kedro.config import OmegaConfigLoader

from sdkd_pipeline.hooks import (
    DaskClusterHook,
    EnabledDatasetsHook,
    MLflowRunsHook,
    MLflowSchemaHook,
    ProjectLockHook,
    RawFilesPreflightHook,
    RunTimesHook,
    UpstreamOutputsHook,
)

HOOKS = (
    MLflowSchemaHook(),
    ProjectLockHook(),
    EnabledDatasetsHook(),
    RawFilesPreflightHook(),
    UpstreamOutputsHook(),
    DaskClusterHook(),
    MLflowRunsHook(),
    RunTimesHook(),
)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # envs (paper, smoke, era5_sample) override single keys of base's nested parameters
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
    # Kedro allows oc.env only in credentials; mlflow.yml reads MLFLOW_TRACKING_URI with it so a
    # remote tracking server needs no file edit.
    "custom_resolvers": {"oc.env": lambda key, default=None: os.environ.get(key, default)},
}
