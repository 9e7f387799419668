"""Data layer: sources (generate / download / read raw), tensors (normalize, split, window,
write Zarr, locally or at an fsspec URL), a torch Dataset over the stores, the channels' CF
metadata (``cf``) and running the sources on a Dask cluster (``cluster``). Imports without
Kedro, Zarr or Dask."""
