"""sdkd-pipeline: frequency-aligned knowledge distillation for spatiotemporal forecasting.

The science (``data``, ``models``, ``spectral``, ``distill``, ``training``, ``metrics``) imports
without Kedro, MLflow, Zarr or Dask; ``io`` and ``pipelines`` are the Kedro layer on top.
"""

__version__ = "0.1.0"
