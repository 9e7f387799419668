"""One module or package per dataset (a package splits config, solver and readers); each
returns a *raw dataset* as defined in ``data/raw.py``.

``load_raw(dataset, source)`` is the single entry point the pipelines use. ``source`` is the
``<dataset>.source`` parameter section: ``kind`` names a generator or reader, and the section of
the same name holds its options, e.g.::

    navier_stokes:
      source:
        kind: generate
        generate: {n_trajectories: 48, viscosity: 1.0e-3}
        fno_mat: {path: data/01_raw/navier_stokes/ns_V1e-3_N5000_T50.mat}
"""

from __future__ import annotations

import difflib
import inspect
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xarray as xr

from sdkd_pipeline.config_utils import unknown_parameter
from sdkd_pipeline.data.cluster import run_on_cluster, sources_client
from sdkd_pipeline.errors import ConfigError, SDKDError

DATASETS = ("navier_stokes", "rayleigh_benard", "weatherbench", "taxibj", "taxibj_plus")


def _call_with_options(
    reader: Callable[..., xr.Dataset], opts: dict, param_path: str
) -> xr.Dataset:
    """``reader(**opts)``, with an option the reader does not take named by its full parameter
    path, the reader's options and the nearest one (the wording of the config loader) instead
    of Python's ``unexpected keyword argument``."""
    params = [
        p
        for p in inspect.signature(reader).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    known = [p.name for p in params]
    for key in sorted(opts, key=str):
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise unknown_parameter(param_path, key, known, hint)
    missing = [p.name for p in params if p.default is p.empty and p.name not in opts]
    if missing:
        raise ConfigError(f"{param_path}.{missing[0]}: required parameter missing")
    return reader(**opts)


def _navier_stokes_generate(opts: dict, progress: bool) -> xr.Dataset:
    from sdkd_pipeline.data.sources.navier_stokes import generate_navier_stokes

    return generate_navier_stokes(opts, progress=progress)


def _navier_stokes_fno_mat(opts: dict, progress: bool) -> xr.Dataset:
    from sdkd_pipeline.data.sources.navier_stokes import read_fno_mat

    return _call_with_options(read_fno_mat, opts, "navier_stokes.source.fno_mat")


def _rayleigh_benard_free_slip(opts: dict, progress: bool) -> xr.Dataset:
    from sdkd_pipeline.data.sources.rayleigh_benard import generate_rayleigh_benard_free_slip

    return generate_rayleigh_benard_free_slip(opts, progress=progress)


def _rayleigh_benard_the_well(opts: dict, progress: bool) -> xr.Dataset:
    from sdkd_pipeline.data.sources.rayleigh_benard import read_the_well_rbc

    return _call_with_options(read_the_well_rbc, opts, "rayleigh_benard.source.the_well")


def _weatherbench(fmt: str) -> Callable[[dict, bool], xr.Dataset]:
    def read(opts: dict, progress: bool) -> xr.Dataset:
        from sdkd_pipeline.data.sources.weatherbench import read_weatherbench

        options = {"format": fmt, "progress": progress, **opts}
        return read_weatherbench(options, f"weatherbench.source.{fmt}")

    return read


def _taxibj(which: str, kind: str) -> Callable[[dict, bool], xr.Dataset]:
    def read(opts: dict, progress: bool) -> xr.Dataset:
        from sdkd_pipeline.data.sources.taxibj import read_taxibj_source

        return read_taxibj_source(opts, which, f"{which}.source.{kind}")

    return read


SOURCE_KINDS: dict[str, dict[str, Callable[[dict, bool], xr.Dataset]]] = {
    "navier_stokes": {"generate": _navier_stokes_generate, "fno_mat": _navier_stokes_fno_mat},
    "rayleigh_benard": {
        "generate_free_slip": _rayleigh_benard_free_slip,
        "the_well": _rayleigh_benard_the_well,
    },
    "weatherbench": {fmt: _weatherbench(fmt) for fmt in ("wb1_netcdf", "wb2_zarr", "era5")},
    "taxibj": {"deepst_h5": _taxibj("taxibj", "deepst_h5")},
    "taxibj_plus": {"arrays": _taxibj("taxibj_plus", "arrays")},
}


GENERATOR_KINDS = {"generate", "generate_free_slip"}
# Sources that split their own work into cluster tasks (``data/cluster.py``); every other source
# runs as one task when sources run on the cluster.
SPLIT_ON_CLUSTER = {
    ("navier_stokes", "generate"),
    ("rayleigh_benard", "the_well"),
    ("taxibj_plus", "arrays"),
}
_PATH_OPTIONS = ("path", "paths", "dir", "root", "files")


def check_raw_files(dataset: str, source: dict[str, Any]) -> None:
    """Fail fast, before any long generation runs, when a reader's raw files are absent.

    Generators need no files. For a reader whose configured paths are missing (or empty
    folders) the reader itself is called: it raises at once with its own message saying where
    the files go or which command downloads them.
    """
    kind = (source or {}).get("kind")
    if kind in GENERATOR_KINDS:
        _warn_unused_raw_files(dataset, kind)
    if kind in GENERATOR_KINDS or dataset not in SOURCE_KINDS:
        return
    opts = (source or {}).get(kind) or {}
    paths: list[Path] = []
    for key in _PATH_OPTIONS:
        value = opts.get(key) if isinstance(opts, dict) else None
        if value:
            paths += [Path(v) for v in (value if isinstance(value, list | tuple) else [value])]
    present = paths and all(p.is_file() or (p.is_dir() and any(p.iterdir())) for p in paths)
    if not present:
        load_raw(dataset, source, progress=False)


def _warn_unused_raw_files(dataset: str, kind: str, root: Path = Path("data/01_raw")) -> None:
    """Raw files sit in ``data/01_raw/<dataset>/`` but the source still generates: say so,
    naming the key that would read them (a user who downloaded files expects them used)."""
    folder = root / dataset
    files = sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if not files:
        return
    readers = [k for k in SOURCE_KINDS.get(dataset, {}) if k not in GENERATOR_KINDS]
    logging.getLogger(__name__).warning(
        "%s.source.kind is %r, so the data are generated, but %s/ holds %d file(s) (%s); to "
        "read them set %s.source.kind to %s",
        dataset,
        kind,
        folder,
        len(files),
        ", ".join(files[:3]) + (", ..." if len(files) > 3 else ""),
        dataset,
        " or ".join(repr(r) for r in readers) or "a reader",
    )


def _generated_layout(dataset: str, kind: str, opts: dict) -> tuple[int, Any] | None:
    """``(n_trajectories, record times)`` a generator will produce, from its config alone."""
    if kind == "generate" and dataset == "navier_stokes":
        from sdkd_pipeline.data.sources.navier_stokes.config import NavierStokesConfig

        cfg = NavierStokesConfig.from_params(opts)
    elif kind == "generate_free_slip" and dataset == "rayleigh_benard":
        from sdkd_pipeline.data.sources.rayleigh_benard.config import FreeSlipRBCConfig

        cfg = FreeSlipRBCConfig.from_params(opts, f"{dataset}.source.{kind}")
    else:
        return None
    return int(cfg.n_trajectories), cfg.record_times


def check_windows_fit(
    dataset: str, source: dict[str, Any], window: dict[str, Any], split: dict[str, Any]
) -> None:
    """Before a generation of minutes: the ``<dataset>.window`` and ``<dataset>.split``
    parameters are valid, and for a generated dataset (whose size its config says) every split
    will hold a complete window; errors name the parameter, as the data stage would."""
    from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, split_ranges

    window_cfg = WindowConfig.from_params(window, f"{dataset}.window")
    split_cfg = SplitConfig.from_params(split, f"{dataset}.split")
    kind = (source or {}).get("kind")
    if kind not in GENERATOR_KINDS:
        return
    layout = _generated_layout(dataset, kind, dict((source or {}).get(kind) or {}))
    if layout is None:
        return
    n_traj, times = layout
    shell = xr.Dataset(
        coords={"trajectory": range(n_traj), "time": times}, attrs={"dataset": dataset}
    )
    split_ranges(shell, split_cfg, window_cfg)


def load_raw(dataset: str, source: dict[str, Any], progress: bool = True) -> xr.Dataset:
    """Generate or read the raw dataset ``dataset`` as its ``source`` parameters say; on the
    Dask cluster when sources run there (``data/cluster.py``), the result then dask-backed."""
    if dataset not in SOURCE_KINDS:
        raise ConfigError(
            f"parameter data.datasets: unknown dataset {dataset!r}; known: {list(DATASETS)}"
        )
    kinds = SOURCE_KINDS[dataset]
    source = dict(source or {})
    kind = source.get("kind")
    if kind not in kinds:
        raise ConfigError(
            f"parameter {dataset}.source.kind: {kind!r} is not one of {sorted(kinds)}"
        )
    opts = source.get(kind) or {}
    if not isinstance(opts, dict):
        raise ConfigError(f"parameter {dataset}.source.{kind}: expected a mapping, got {opts!r}")
    try:
        client = sources_client() if (dataset, kind) not in SPLIT_ON_CLUSTER else None
        if client is not None:
            raw = run_on_cluster(client, kinds[kind], dict(opts), progress)
        else:
            raw = kinds[kind](dict(opts), progress)
    except SDKDError as exc:
        # Readers name their options relative to the dataset ("weatherbench.path"); point the
        # user at where those options live in parameters_data.yml.
        message = _source_parameter_path(str(exc), dataset, kind)
        if message != str(exc):
            raise type(exc)(message) from exc
        raise
    raw.attrs["dataset"] = dataset
    raw.attrs["source_kind"] = kind
    return raw


def _source_parameter_path(message: str, dataset: str, kind: str) -> str:
    """Rewrite the first ``<dataset>.<key>`` or ``<dataset>.<kind>.<key>`` in ``message`` to the
    full parameter path ``<dataset>.source.<kind>.<key>``."""
    full = f"{dataset}.source.{kind}."
    for short in (rf"(?<![\w./]){dataset}\.{kind}\.", rf"(?<![\w./]){dataset}\.(?!source\.)"):
        rewritten = re.sub(short, full, message, count=1)
        if rewritten != message:
            return rewritten
    return message


_DOWNLOAD_KEYS = {"dest", "files", "wb1", "the_well"}


def download_raw(dataset: str, download: dict[str, Any], progress: bool = True) -> list[Path]:
    """Fetch the raw files of ``dataset`` as its ``<dataset>.download`` parameters say.

    Keys (all optional): ``dest`` (folder, default ``data/01_raw/<dataset>``); ``files``: a list
    of ``{url, filename, sha256, size}`` fetched as they are (any dataset, e.g. a mirror of the
    FNO ``.mat`` files); ``wb1`` (weatherbench): ``{variables, resolution, base_url}`` for the
    WeatherBench 1 archives; ``the_well`` (rayleigh_benard): ``{split, files, base_url}``.
    Every transfer resumes, retries, checks size/sha256 where given and is renamed into place
    only when complete. Returns the files now present.
    """
    from sdkd_pipeline.data.download import RemoteFile, fetch_all

    prefix = f"{dataset}.download"
    download = dict(download or {})
    unknown = sorted(set(download) - _DOWNLOAD_KEYS)
    if unknown:
        raise unknown_parameter(prefix, unknown[0], _DOWNLOAD_KEYS)
    dest = Path(download.get("dest") or f"data/01_raw/{dataset}")
    fetched: list[Path] = []
    entries = download.get("files") or []
    if entries:
        remote = [RemoteFile.from_config(e, f"{prefix}.files[{i}]") for i, e in enumerate(entries)]
        fetched += fetch_all(remote, dest, progress=progress)
    if download.get("wb1"):
        if dataset != "weatherbench":
            raise ConfigError(f"parameter {prefix}.wb1: only the weatherbench dataset has it")
        from sdkd_pipeline.data.sources.weatherbench import download_weatherbench1

        wb1 = _options(download["wb1"], download_weatherbench1, f"{prefix}.wb1", {"variables"})
        for variable in wb1.pop("variables", ["2m_temperature"]):
            fetched += download_weatherbench1(variable, dest, progress=progress, **wb1)
    if download.get("the_well"):
        if dataset != "rayleigh_benard":
            raise ConfigError(f"parameter {prefix}.the_well: only rayleigh_benard has it")
        from sdkd_pipeline.data.sources.rayleigh_benard import download_the_well_rbc

        well = _options(download["the_well"], download_the_well_rbc, f"{prefix}.the_well")
        fetched += download_the_well_rbc(dest, progress=progress, **well)
    return fetched


def _options(opts: Any, func: Callable, param: str, extra: set[str] = frozenset()) -> dict:
    """``opts`` as keyword arguments of ``func``, rejecting keys it does not take."""
    import inspect

    if not isinstance(opts, dict):
        raise ConfigError(f"parameter {param}: expected a mapping, got {opts!r}")
    accepted = set(inspect.signature(func).parameters) - {"dest_dir", "progress", "variable"}
    unknown = sorted(set(opts) - accepted - set(extra))
    if unknown:
        raise unknown_parameter(param, unknown[0], accepted | set(extra))
    return dict(opts)
