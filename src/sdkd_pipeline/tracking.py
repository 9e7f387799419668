"""Experiment tracking: the ``Tracker`` protocol the training engine logs to, and MLflow helpers.

The engine only knows the protocol, so it runs without MLflow (``NullTracker``, or ``None``).
``MLflowTracker`` makes one MLflow run per trained model. MLflow and matplotlib are imported
inside the functions that need them, never at module import.

Tracking URI, in order: the ``tracking_uri`` argument; the store of an active outer run (e.g.
the one kedro-mlflow opens for a pipeline run), under which the model run is nested; the
``MLFLOW_TRACKING_URI`` environment variable; ``sqlite:///mlflow.db`` in the working directory
(MLflow 3 refuses a bare file store).

Runs of a killed process: every run this project opens carries the tag ``sdkd.owner`` (host, pid
and start time of the process that owns it). A process killed with SIGKILL cannot end its runs,
so ``close_orphaned_runs`` (called at the start of every ``kedro run`` by a hook) marks the
``RUNNING`` runs whose owner no longer exists as ``KILLED``. A training resumed from ``last.pt``
logs to a new run, tagged with the run it continues (see ``training``).

``TrackingConfig`` reads the ``tracking`` parameters (``conf/base/parameters.yml``). Sibling
modules: ``tracking_system`` (system metrics on a run), ``tracking_store`` (a copied project's
store), ``tracking_models`` (students as MLflow models, the model registry).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from sdkd_pipeline import config_utils
from sdkd_pipeline.config_utils import param
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.tracking_store import COPIED_STORE_CHOICES

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "sdkd_pipeline"
ROLES = ("teacher", "student")
# MLflow's limits (mlflow.utils.validation), fixed here so this module imports without MLflow
MAX_PARAM_VALUE_LENGTH = 6000
MAX_KEY_LENGTH = 250
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
OWNER_TAG = "sdkd.owner"  # "<host> <pid> <process start time>" of the process owning a run
CLOSED_TAG = "sdkd.closed_because"
# MLflow 3's UI opens an experiment without this tag in GenAI mode (traces, prompts); ours are
# model training experiments (runs, metrics, the Compare view)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


@dataclass(frozen=True)
class TrackingConfig:
    """The ``tracking`` parameters (``conf/base/parameters.yml``), read by
    ``config_utils.from_params``: ``key`` is a field's place in the nested YAML.

    ``system_metrics``: MLflow system metrics on every training run, sampled every
    ``system_metrics_interval`` seconds (``tracking_system``). ``log_models``: each student is
    logged as MLflow models on its own run at evaluation; ``register_models``: the best student
    of each dataset (lowest validation MSE) is registered as ``registered_name`` (``{dataset}``
    is replaced) (``tracking_models``). ``copied_store``: what a copied project does with its
    store's experiments (``tracking_store``).
    """

    experiment: str = DEFAULT_EXPERIMENT
    checkpoint_dir: str = "data/06_models/runs"
    system_metrics: bool = param(True, key="system_metrics.enabled")
    system_metrics_interval: float = param(10.0, gt=0, key="system_metrics.interval")
    log_models: bool = param(True, key="models.log")
    register_models: bool = param(True, key="models.register")
    registered_name: str = param("sdkd-{dataset}-student", key="models.registered_name")
    copied_store: Literal[COPIED_STORE_CHOICES] = "separate"

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, param_path: str = "tracking"
    ) -> TrackingConfig:
        """Read and check the ``tracking`` parameters (``ConfigError`` naming a bad one)."""
        return config_utils.from_params(cls, params, param_path)

    def validate(self, param_path: str) -> None:
        if not self.experiment.strip():
            raise ConfigError(f"{param_path}.experiment must not be empty")
        if self.register_models and not self.log_models:
            raise ConfigError(
                f"{param_path}.models.register needs {param_path}.models.log: true (the "
                "registry holds logged models)"
            )
        try:
            name = self.registered_name.format(dataset="navier_stokes")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"{param_path}.models.registered_name: {self.registered_name!r} may contain "
                f"only the placeholder {{dataset}} ({exc})"
            ) from None
        if "{dataset}" not in self.registered_name or not name.strip():
            raise ConfigError(
                f"{param_path}.models.registered_name must contain {{dataset}} (one registered "
                f"model per dataset), got {self.registered_name!r}"
            )

    def tracker_options(self) -> dict[str, Any]:
        """The ``MLflowTracker`` keyword arguments of a training run under these settings."""
        return {
            "experiment": self.experiment,
            "system_metrics": self.system_metrics_interval if self.system_metrics else None,
            "copied_store": self.copied_store,
        }


def mark_experiment_kind(client: Any, experiment_id: str) -> None:
    """Tag experiment ``experiment_id`` as model training (see ``EXPERIMENT_KIND``) unless it
    already says what it is."""
    tags = client.get_experiment(experiment_id).tags or {}
    for key, value in EXPERIMENT_KIND.items():
        if key not in tags:
            client.set_experiment_tag(experiment_id, key, value)


@runtime_checkable
class Tracker(Protocol):
    """Where a training run reports. Every method must be cheap to call once per epoch."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_dict(self, data: Mapping[str, Any], name: str) -> None: ...

    def log_figure(self, figure: Any, name: str) -> None: ...

    def close(self) -> None: ...


class NullTracker:
    """Logs nothing (the engine skips work such as plotting for it)."""

    is_null = True

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        pass

    def log_figure(self, figure: Any, name: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# helpers


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> dotted keys with string values cut to MLflow's length limit."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name))
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            text = text[: MAX_PARAM_VALUE_LENGTH - 3] + "..."
        if len(name) > MAX_KEY_LENGTH:
            raise ConfigError(
                f"parameter name {name[:60]}... is longer than MLflow's {MAX_KEY_LENGTH} characters"
            )
        flat[name] = text
    return flat


def run_tags(
    dataset: str, role: str, model: str, method: str | None = None, **extra: Any
) -> dict[str, str]:
    """The tags every model run carries: dataset, role (teacher/student), model, method."""
    if role not in ROLES:
        raise ConfigError(f"tracking role must be one of {', '.join(ROLES)}, got {role!r}")
    tags = {
        "dataset": dataset,
        "role": role,
        "model": model,
        "method": method or ("supervised" if role == "teacher" else "baseline"),
    }
    tags.update({k: str(v) for k, v in extra.items()})
    return tags


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def current_tracking_uri() -> str:
    """The store to log to now: the active (kedro-mlflow) run's, else ``default_tracking_uri``."""
    import mlflow

    return mlflow.get_tracking_uri() if mlflow.active_run() else default_tracking_uri()


def log_metrics_on_run(
    client: Any, run_id: str, metrics: list, what: str, tags: Mapping[str, str] | None = None
) -> bool:
    """Log ``metrics`` (``mlflow.entities.Metric``) and ``tags`` onto an existing run in
    MLflow-sized batches; a run deleted meanwhile gives a warning naming ``what``, not an
    error (the results are already written). Returns whether it worked."""
    try:
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])
        for key, value in (tags or {}).items():
            client.set_tag(run_id, key, value)
    except Exception as exc:  # noqa: BLE001 - MlflowException or the store's own error
        log.warning("could not log %s on its run %s: %s", what, run_id, exc)
        return False
    return True


def owner_tag(pid: int | None = None) -> dict[str, str]:
    """The ``sdkd.owner`` tag naming this process (or ``pid``) as the owner of a run."""
    pid = os.getpid() if pid is None else pid
    started = _process_start_time(pid)
    return {OWNER_TAG: f"{socket.gethostname()} {pid} {started or 0.0:.2f}"}


def _process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch): ``None`` when it does not exist
    (a zombie counts as gone), ``0.0`` when it exists but psutil is missing to tell."""
    try:
        import psutil  # installed with distributed
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.NoSuchProcess:
        return None


def owner_is_gone(value: str) -> bool:
    """Whether the process an ``sdkd.owner`` tag names no longer runs. Only an owner on this
    host can be checked; anything else (another host, an unreadable tag) counts as alive."""
    parts = value.split()
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        recorded = float(parts[2])
    except ValueError:
        return False
    started = _process_start_time(int(parts[1]))
    if started is None:
        return True
    # a different start time: the pid was reused by a later process
    return bool(recorded and started and abs(started - recorded) > 1.0)


def close_orphaned_runs(client: Any, experiment_ids: Iterable[str]) -> list[str]:
    """Mark as ``KILLED`` the ``RUNNING`` runs of ``experiment_ids`` whose owner process (tag
    ``sdkd.owner``) is gone from this host, e.g. killed with SIGKILL; returns their ids. Runs
    without the tag, or owned by another host, are left alone."""
    ids = sorted({str(e) for e in experiment_ids})
    running, token = [], None
    while ids:  # every page first: closing runs changes the result set being paged through
        page = client.search_runs(
            ids, filter_string="attributes.status = 'RUNNING'", max_results=1000, page_token=token
        )
        running.extend(page)
        token = page.token
        if not token:
            break
    closed: list[str] = []
    for run in running:
        owner = run.data.tags.get(OWNER_TAG)
        if owner is None or not owner_is_gone(owner):
            continue
        pid = owner.split()[1]
        client.set_tag(
            run.info.run_id,
            CLOSED_TAG,
            f"its process {pid} ended without closing it (killed); closed by process "
            f"{os.getpid()} at the next start",
        )
        client.set_terminated(run.info.run_id, "KILLED")
        log.warning(
            "MLflow run %r (%s) was left RUNNING by process %s, which no longer exists "
            "(killed?): marked KILLED",
            run.info.run_name,
            run.info.run_id,
            pid,
        )
        closed.append(run.info.run_id)
    return closed


def plot_loss_curves(history: Iterable[Mapping[str, float]], title: str | None = None) -> Any:
    """A matplotlib ``Figure`` of train and validation loss per epoch (log scale).

    Built on ``matplotlib.figure.Figure`` directly, so no pyplot state or GUI backend is
    involved.
    """
    from matplotlib.figure import Figure

    rows = list(history)
    if not rows:
        raise ConfigError("plot_loss_curves: the history is empty")
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    axes = figure.add_subplot()
    for key, label, style in (("train_loss", "train", "-"), ("val_loss", "validation", "o-")):
        points = [
            (r["epoch"], r[key]) for r in rows if key in r and math.isfinite(r[key]) and r[key] > 0
        ]
        if points:
            epochs, values = zip(*points, strict=True)
            axes.plot(epochs, values, style, label=label, markersize=3)
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("MSE (normalized units)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    return figure


# --------------------------------------------------------------------------------------------
# MLflow


@functools.lru_cache(maxsize=1)
def _git_state(root: str) -> tuple[str, str, bool] | None:
    """``(commit, branch, dirty)`` of the git work tree at ``root``, or ``None``."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return commit, branch, dirty


def source_tags(root: str | Path | None = None) -> dict[str, str]:
    """What ``mlflow.start_run`` records about the source (user, source name and type) plus the
    project's git commit and branch, which MLflow misses under ``kedro run`` (its entry point
    lies outside the repository); ``sdkd.git.dirty`` says whether tracked files had changes."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        tags = {str(k): str(v) for k, v in resolve_tags().items()}
    except Exception:  # noqa: BLE001 - MLflow's context providers are best effort
        tags = {}
    state = _git_state(str(Path(root or Path.cwd()).resolve()))
    if state is not None:
        commit, branch, dirty = state
        tags["mlflow.source.git.commit"] = commit
        tags["mlflow.source.git.branch"] = branch
        tags["sdkd.git.dirty"] = str(dirty).lower()
    return tags


class MLflowTracker:
    """One MLflow run (per trained model); a context manager that ends it.

    ``nested``: ``None`` nests under an active outer run when there is one (kedro-mlflow's), or
    starts a top-level run otherwise; ``True`` requires an outer run; ``False`` never nests.
    ``artifact_location`` is used only when the experiment has to be created. ``run_id``
    reopens an existing run instead of creating one (e.g. to continue a resumed training).
    ``system_metrics``: sample MLflow's system metrics into the run every that many seconds
    until it is closed (``tracking_system``; ``None``: none). ``copied_store``: what to do
    when the experiment's artifacts lie in another project's ``mlruns/`` (``tracking_store``).
    """

    is_null = False

    def __init__(
        self,
        experiment: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        tracking_uri: str | None = None,
        nested: bool | None = None,
        *,
        artifact_location: str | None = None,
        run_id: str | None = None,
        system_metrics: float | None = None,
        copied_store: str = "separate",
    ) -> None:
        import mlflow
        from mlflow import MlflowClient

        parent = mlflow.active_run() if nested is not False else None
        if nested is True and parent is None:
            raise ConfigError("MLflowTracker(nested=True) needs an active MLflow run to nest in")
        if tracking_uri is None:
            tracking_uri = mlflow.get_tracking_uri() if parent else default_tracking_uri()
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        run_tags_all = {**source_tags(), **{str(k): str(v) for k, v in (tags or {}).items()}}
        run_tags_all.update(owner_tag())
        if run_id is not None:
            run = self.client.get_run(run_id)
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, OWNER_TAG, run_tags_all[OWNER_TAG])
        else:
            if parent is not None:
                experiment_id = parent.info.experiment_id
                run_tags_all["mlflow.parentRunId"] = parent.info.run_id
            else:
                experiment_id = self._experiment_id(experiment, artifact_location, copied_store)
            run = self.client.create_run(experiment_id, tags=run_tags_all, run_name=run_name)
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        self.parent_run_id = parent.info.run_id if parent is not None else None
        self._closed = False
        self._monitor = None
        if system_metrics is not None:
            from sdkd_pipeline.tracking_system import start_system_metrics

            self._monitor = start_system_metrics(
                self.run_id, tracking_uri, float(system_metrics), resume=run_id is not None
            )

    def _experiment_id(self, name: str, artifact_location: str | None, copied_store: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            from sdkd_pipeline.tracking_store import separate_copied_experiments

            if separate_copied_experiments(
                self.client,
                self.tracking_uri,
                copied_store,
                only=[found.experiment_id],
                tags=EXPERIMENT_KIND,
            ):
                return self.client.get_experiment_by_name(name).experiment_id
            return found.experiment_id
        return self.client.create_experiment(
            name, artifact_location=artifact_location, tags=EXPERIMENT_KIND
        )

    def log_store_input(
        self,
        dataset: str,
        source: str,
        digest: str,
        windows: Mapping[str, int],
        shape: Mapping[str, int],
    ) -> None:
        """The tensor store the run trained on, as the run's dataset input (MLflow's *Datasets
        used* column): name, digest, source path, and the windows per split and the window
        shape as its profile; context ``training``."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        profile = json.dumps({"windows": dict(windows), "shape": dict(shape)}, sort_keys=True)
        entity = Dataset(
            name=dataset, digest=digest, source_type="local", source=source, profile=profile
        )
        tags = [InputTag(key="mlflow.data.context", value="training")]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset=entity, tags=tags)])

    # -- the Tracker protocol -----------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = list(flatten_params(params).items())
        for start in range(0, len(flat), MAX_PARAMS_PER_BATCH):
            chunk = flat[start : start + MAX_PARAMS_PER_BATCH]
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in chunk])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [
            Metric(str(k), float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for start in range(0, len(entries), MAX_METRICS_PER_BATCH):
            self.client.log_batch(
                self.run_id, metrics=entries[start : start + MAX_METRICS_PER_BATCH]
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not Path(path).exists():
            raise FileNotFoundError(f"artifact {path} does not exist")
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        """``name`` ending in ``.json`` or ``.yaml``/``.yml`` picks the format."""
        if not name.endswith((".json", ".yaml", ".yml")):
            raise ConfigError(f"log_dict: artifact name {name!r} must end in .json or .yaml")
        # round trip so that paths, tuples and numpy scalars become plain values
        plain = json.loads(json.dumps(dict(data), default=str))
        self.client.log_dict(self.run_id, plain, name)

    def log_figure(self, figure: Any, name: str) -> None:
        self.client.log_figure(self.run_id, figure, name)

    def close(self, status: str = "FINISHED") -> None:
        if not self._closed:
            if self._monitor is not None:
                from sdkd_pipeline.tracking_system import stop_system_metrics

                stop_system_metrics(self._monitor)
                self._monitor = None
            self.client.set_terminated(self.run_id, status)
            self._closed = True

    def __enter__(self) -> MLflowTracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close("FINISHED" if exc_type is None else "FAILED")
