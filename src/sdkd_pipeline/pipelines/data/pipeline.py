"""One modular data pipeline, reused under a namespace per dataset."""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from sdkd_pipeline.pipelines.data import nodes


def _bound(func, dataset: str):
    bound = partial(func, dataset)
    update_wrapper(bound, func)
    return bound


def create_dataset_pipeline(dataset: str) -> Pipeline:
    """raw source -> ``<dataset>.raw`` -> ``<dataset>.tensors`` -> ``<dataset>.data_summary``;
    the node names carry the dataset (``acquire_navier_stokes_raw_fields``), so a label in
    kedro-viz says what it does without its namespace."""
    template = Pipeline(
        [
            node(
                _bound(nodes.acquire_raw, dataset),
                inputs=["params:source", "params:data.progress"],
                outputs="raw",
                name=f"acquire_{dataset}_raw_fields",
                tags=["dask"],
            ),
            node(
                nodes.build_tensors,
                inputs=["raw", "params:window", "params:split", "params:store", "params:forcings"],
                outputs="tensors",
                name=f"build_{dataset}_tensor_store",
                tags=["dask"],
            ),
            node(
                nodes.summarize_tensors,
                inputs="tensors",
                outputs="data_summary",
                name=f"summarize_{dataset}_tensor_store",
            ),
        ]
    )
    return pipeline(
        template,
        namespace=dataset,
        parameters={"params:data.progress": "params:data.progress"},
        tags=["data", dataset],
    )


def create_pipeline(datasets: list[str] | None = None, **kwargs) -> Pipeline:
    from sdkd_pipeline.pipelines.selection import enabled_datasets

    names = enabled_datasets() if datasets is None else datasets
    return sum((create_dataset_pipeline(n) for n in names), Pipeline([]))
