"""sdkd-pipeline: frequency-aligned knowledge distillation for spatiotemporal forecasting.

The science (``data``, ``models``, ``spectral``, ``distill``, ``training``, ``metrics``) imports
without Kedro, MLflow, Zarr or Dask; ``io`` and ``pipelines`` are the Kedro layer on top.
"""

# eccodes' wheel (used by cfgrib for GRIB) bundles SQLite 3.26 and loads it globally; once it is
# in the process, Python's sqlite3 binds to it and MLflow's SQLite store refuses to start
# (it needs >= 3.31). Binding sqlite3 to the system library first avoids that.
import sqlite3  # noqa: F401, E402

__version__ = "0.1.0"
