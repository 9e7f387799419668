"""Data layer: sources (generate / download / read raw), tensors (normalize, split, window,
write Zarr) and a torch Dataset over the stores. Imports without Kedro, Zarr or Dask."""
