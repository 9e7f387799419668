"""sdkd-pipeline: frequency-aligned knowledge distillation for spatiotemporal forecasting.

The science (``data``, ``models``, ``spectral``, ``distill``, ``training``, ``metrics``) imports
without Kedro, MLflow, Zarr or Dask; ``io`` and ``pipelines`` are the Kedro layer on top.
"""

# eccodes' wheel (used by cfgrib for GRIB) bundles SQLite 3.26 and loads it globally; once it is
# in the process, Python's sqlite3 binds to it and MLflow's SQLite store refuses to start
# (it needs >= 3.31). Binding sqlite3 to the system library first avoids that.
import sqlite3  # noqa: F401, E402
import warnings

# Third-party notices printed on every `kedro` call that a user of this project cannot act on:
# Kedro's own use of OmegaConf's deprecated register_new_resolver, and MLflow's hint about type
# hints on pyfunc models (this project logs none). Only these exact messages are hidden.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)
warnings.filterwarnings(
    "ignore", message=r".*Add type hints to the `predict` method", category=UserWarning
)

__version__ = "0.1.0"
