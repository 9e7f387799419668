"""Where a project's MLflow artifacts go, and what to do with a copied (or moved) project.

MLflow keeps an experiment's artifact location as an absolute path: with the embedded store
(``sqlite:///mlflow.db``) an experiment created in ``/a/project`` stores its artifacts under
``/a/project/mlruns/<experiment id>``, written into ``mlflow.db`` itself. A copy of the
project that keeps ``mlflow.db`` (``cp -r``) would therefore log every new run's checkpoints,
figures and models into ``/a/project/mlruns``, the original's folder.

``copied_experiments`` finds such experiments: the tracking store is a SQLite file in the
project (the working directory, as MLflow's default artifact root ``./mlruns`` is) and an
experiment's artifact location has MLflow's default layout ``<root>/mlruns/<its id>`` with
``<root>`` another folder: the database was created there. An experiment given an artifact
location of its own (``artifact_location`` in ``conf/base/mlflow.yml``, e.g. a shared disk) does
not have that layout and is left alone, as is any other tracking store (a server).

``separate_copied_experiments`` then, per ``tracking.copied_store``: ``separate`` (the default)
renames each such experiment to ``<name> (copied from <root>)`` (its runs stay readable, their
artifacts are the original's) and creates a fresh ``<name>`` whose artifacts go to this
project's ``mlruns/``, with one warning saying so; ``error`` refuses to run, naming the fix.
It runs at the start of every ``kedro run`` (``hooks.MLflowSchemaHook``, before kedro-mlflow
opens the experiment) and whenever ``MLflowTracker`` opens an experiment outside Kedro.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from sdkd_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

COPIED_FROM_TAG = "sdkd.copied_from"
COPIED_STORE_CHOICES = ("separate", "error")
DEFAULT_EXPERIMENT_ID = "0"  # MLflow's "Default" experiment, never renamed


def local_store_file(tracking_uri: str) -> Path | None:
    """The SQLite file of a ``sqlite:///`` tracking URI (a relative path is relative to the
    working directory, as for MLflow), or ``None`` for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path.cwd() / tracking_uri.removeprefix("sqlite:///")).resolve()


def local_path(location: str | None) -> Path | None:
    """A ``file:`` URI or a plain path as an absolute path; ``None`` for a remote location
    (``s3://``, ``mlflow-artifacts:``, ...)."""
    if not location:
        return None
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).resolve()
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        return None
    return Path(location).resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def foreign_root(experiment: Any, project: Path) -> Path | None:
    """The folder ``experiment``'s artifacts were laid out for (``<root>/mlruns/<id>``) when it
    is not ``project``; ``None`` when they belong to ``project`` or were placed on purpose."""
    location = local_path(experiment.artifact_location)
    if location is None or location.name != str(experiment.experiment_id):
        return None
    if location.parent.name != "mlruns":
        return None
    root = location.parent.parent
    project = project.resolve()
    return None if root == project else root


def copied_experiments(
    client: Any, tracking_uri: str, project: str | Path | None = None
) -> list[tuple[Any, Path]]:
    """``(experiment, root)`` for each active experiment of the project's own SQLite store whose
    artifacts would go to the ``mlruns/`` of another folder ``root`` (see the module docstring),
    except those ``separate_copied_experiments`` renamed already (tag ``sdkd.copied_from``,
    kept as the copied runs' home). Empty unless the store is a SQLite file inside ``project`` (default: the working
    directory)."""
    from mlflow.entities import ViewType

    project = Path(project or Path.cwd()).resolve()
    store = local_store_file(tracking_uri)
    if store is None or not _inside(store, project):
        return []
    found = []
    for experiment in client.search_experiments(view_type=ViewType.ACTIVE_ONLY):
        if str(experiment.experiment_id) == DEFAULT_EXPERIMENT_ID:
            continue
        if COPIED_FROM_TAG in (experiment.tags or {}):  # separated already: its old runs
            continue
        root = foreign_root(experiment, project)
        if root is not None:
            found.append((experiment, root))
    return found


def _free_name(client: Any, name: str) -> str:
    candidate, n = name, 1
    while client.get_experiment_by_name(candidate) is not None:
        n += 1
        candidate = f"{name} #{n}"
    return candidate


def separate_copied_experiments(
    client: Any,
    tracking_uri: str,
    mode: str = "separate",
    project: str | Path | None = None,
    *,
    only: Iterable[str] | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, str]:
    """Handle the experiments ``copied_experiments`` finds (``only``: just those ids) per
    ``mode`` (``tracking.copied_store``, see the module docstring); returns ``{experiment name:
    the name its old runs now have}``, and the new experiments get ``tags``."""
    if mode not in COPIED_STORE_CHOICES:
        raise ConfigError(
            f"tracking.copied_store must be one of {', '.join(COPIED_STORE_CHOICES)}, got {mode!r}"
        )
    project = Path(project or Path.cwd()).resolve()
    wanted = None if only is None else {str(i) for i in only}
    renamed: dict[str, str] = {}
    for experiment, root in copied_experiments(client, tracking_uri, project):
        if wanted is not None and str(experiment.experiment_id) not in wanted:
            continue
        name, location = experiment.name, experiment.artifact_location
        if mode == "error":
            raise ConfigError(
                f"tracking.copied_store: the MLflow store {tracking_uri} was copied from {root}: "
                f"experiment {name!r} keeps its artifacts in {location}, outside this project "
                f"({project}), so new runs would write into that project's mlruns/. Copy the "
                "project without mlflow.db and mlruns/, or set tracking.copied_store: separate "
                "(renames the copied experiment and starts a new one here)"
            )
        old = _free_name(client, f"{name} (copied from {root})")
        client.rename_experiment(experiment.experiment_id, old)
        client.set_experiment_tag(experiment.experiment_id, COPIED_FROM_TAG, str(root))
        new_id = client.create_experiment(name, tags=tags or None)
        new_location = client.get_experiment(new_id).artifact_location
        renamed[name] = old
        log.warning(
            "MLflow: %s was copied from %s, whose experiment %r keeps its artifacts in %s; so "
            "that runs here do not write into that project, it is now %r (its runs stay "
            "readable) and a new %r logs to %s. Copy a project without mlflow.db and mlruns/ "
            "to start clean (tracking.copied_store: error refuses instead)",
            tracking_uri,
            root,
            name,
            location,
            old,
            name,
            new_location,
        )
    return renamed
