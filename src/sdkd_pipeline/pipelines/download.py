"""The download pipeline: fetch raw files named in ``<dataset>.download`` parameters."""

from __future__ import annotations

from functools import partial, update_wrapper
from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from sdkd_pipeline.data.sources import download_raw


def download_files(dataset: str, download: dict[str, Any], progress: bool = True) -> dict:
    """Download, then list what is on disk (name and size) as the run's manifest."""
    paths = download_raw(dataset, download, progress=progress)
    return {
        "dataset": dataset,
        "files": [{"path": str(p), "bytes": p.stat().st_size} for p in paths],
    }


def create_pipeline(datasets: list[str]) -> Pipeline:
    """One node ``<dataset>.download_<dataset>_raw_files`` per dataset with download parameters."""
    pipes = []
    for dataset in datasets:
        func = partial(download_files, dataset)
        update_wrapper(func, download_files)
        template = Pipeline(
            [
                node(
                    func,
                    inputs=["params:download", "params:data.progress"],
                    outputs="downloads",
                    name=f"download_{dataset}_raw_files",
                )
            ]
        )
        pipes.append(
            pipeline(
                template,
                namespace=dataset,
                parameters={"params:data.progress": "params:data.progress"},
                tags=["download", dataset],
            )
        )
    return sum(pipes, Pipeline([]))
