"""Kedro hooks: which datasets are enabled, preflight checks, the Dask cluster for
preprocessing, MLflow runs left by a killed run, and the run's timings."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from sdkd_pipeline.pipelines import selection

logger = logging.getLogger(__name__)


class ProjectLockHook:
    """One ``kedro run`` at a time per project (``io/locks.py``): taken before anything else
    runs (and before the pipeline's MLflow run is started), released when the run ends. A
    second run is refused with the holder's pid, host, start time and command."""

    def __init__(self) -> None:
        self._lock = None

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        from sdkd_pipeline.io.locks import ProjectLock

        self._lock = ProjectLock(run_params.get("project_path") or Path.cwd())
        self._lock.acquire()

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class MLflowSchemaHook:
    """Creates the embedded SQLite tracking store's schema under a file lock, before
    kedro-mlflow opens the store: two first runs at once would otherwise both run MLflow's
    migrations and one would crash (``table _alembic_tmp_experiments already exists``).
    Then checks the ``tracking`` parameters and handles a store copied from another project
    (``tracking_store.separate_copied_experiments``, per ``tracking.copied_store``) before
    kedro-mlflow opens its experiment."""

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        from sdkd_pipeline.tracking import EXPERIMENT_KIND, TrackingConfig, default_tracking_uri

        cfg = TrackingConfig.from_params(context.config_loader["parameters"].get("tracking"))
        uri = default_tracking_uri()
        if not uri.startswith("sqlite:///"):
            return
        try:
            import mlflow
        except ImportError:
            return
        from sdkd_pipeline.io.locks import serialized
        from sdkd_pipeline.tracking_store import separate_copied_experiments

        db = Path(uri.removeprefix("sqlite:///"))  # relative: to the working directory, as MLflow
        with serialized(db.with_name(f".{db.name}.lock")):
            client = mlflow.MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
            separate_copied_experiments(client, uri, cfg.copied_store, tags=EXPERIMENT_KIND)


class EnabledDatasetsHook:
    """Hands the resolved parameters (``--params`` included) to the pipeline registry.

    Kedro builds pipelines before any node sees parameters, yet which datasets are on is a
    parameter (``data.datasets``). The context exists before the registry is first read, so the
    parameters are recorded here and the registry is told to rebuild.
    """

    @hook_impl(tryfirst=True)  # before plugins (telemetry, mlflow) that may read the pipelines
    def after_context_created(self, context) -> None:
        # context.params would validate against the pipelines, i.e. build them with the previous
        # selection; the config loader already holds the --params overrides
        selection.set_parameters(context.config_loader["parameters"])

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """A run that left a stage out for every enabled dataset ends with one line saying
        so and why (the registry's warnings scroll away above the run's log)."""
        wanted = set()
        for name in run_params.get("pipeline_names") or ["__default__"]:
            wanted |= _SECTIONS_OF_PIPELINE.get(name, set())
        skipped = {s: m for s, m in selection.EMPTY_STAGES.items() if s in wanted}
        if skipped:
            stages = " and ".join(_STAGE_NAMES[s] for s in sorted(skipped, key=_ORDER.index))
            logger.warning(
                "run finished without the %s stages: no enabled dataset has them. %s",
                stages,
                "; ".join(skipped[s] for s in sorted(skipped, key=_ORDER.index)),
            )


# which selection sections a registered pipeline runs, and the stages each section decides
_ORDER = ["teacher", "distill"]
_STAGE_NAMES = {"teacher": "teacher and spectral", "distill": "distill and evaluate"}
_SECTIONS_OF_PIPELINE = {
    "__default__": {"teacher", "distill"},
    "teacher": {"teacher"},
    "spectral": {"teacher"},
    "distill": {"distill"},
    "evaluate": {"distill"},
}


def _fail_active_mlflow_run() -> None:
    """End the pipeline's MLflow run as FAILED (if one was started): a run stopped by a
    preflight check must not be left to end FINISHED at exit."""
    import sys

    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run(status="FAILED")


class RawFilesPreflightHook:
    """Before a run, checks that every enabled dataset read from files has its files, so a
    missing TaxiBJ file is reported at once rather than after minutes of NS generation, and
    that the window and split parameters are valid and (for generated data) fit. It
    runs before kedro-mlflow starts the pipeline's run (``tryfirst``), so a run refused here
    creates no MLflow run."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        from sdkd_pipeline.data.sources import check_raw_files, check_windows_fit

        def param(name: str) -> Any:
            return catalog.load(f"params:{name}") if catalog.exists(f"params:{name}") else {}

        try:
            for dataset in sorted({n.namespace for n in pipeline.nodes if "data" in n.tags}):
                if dataset and catalog.exists(f"params:{dataset}.source"):
                    source = catalog.load(f"params:{dataset}.source")
                    check_windows_fit(
                        dataset, source, param(f"{dataset}.window"), param(f"{dataset}.split")
                    )
                    check_raw_files(dataset, source)
        except Exception:
            _fail_active_mlflow_run()
            raise


class UpstreamOutputsHook:
    """Before a run, checks that the outputs of earlier stages this pipeline reads exist, and
    names the command that makes them: ``kedro run --pipelines=distill`` without teachers says
    to run the teacher pipeline first, instead of failing deep inside a node. Like the raw-file
    check, it runs before the pipeline's MLflow run is started."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        try:
            self._check(pipeline, catalog)
        except Exception:
            _fail_active_mlflow_run()
            raise

    @staticmethod
    def _check(pipeline, catalog) -> None:
        from sdkd_pipeline.errors import MissingInputError

        missing = []
        for name in sorted(pipeline.inputs()):
            stage = upstream_stage(name)
            if stage is None or catalog.exists(name):
                continue
            dataset = catalog.get(name)
            where = getattr(dataset, "path", None) or name
            missing.append((stage, f"{name} ({where})"))
        if missing:
            stages = sorted({stage for stage, _ in missing}, key=STAGE_ORDER.index)
            commands = " then ".join(f"`kedro run --pipelines={s}`" for s in stages)
            listing = "; ".join(item for _, item in missing)
            raise MissingInputError(
                f"this run reads outputs of earlier stages that do not exist yet: {listing}. "
                f"Run {commands} first (or `kedro run` for everything)"
            )


STAGE_ORDER = ("data", "teacher", "distill")


def upstream_stage(name: str) -> str | None:
    """The pipeline that writes catalog entry ``name`` (``None``: not a stage output)."""
    from sdkd_pipeline.models.registry import MODEL_ROLES

    parts = name.split(".")
    if len(parts) == 2 and parts[1] == "tensors":
        return "data"
    if len(parts) == 3 and parts[2] == "checkpoint" and MODEL_ROLES.get(parts[1]) == "teacher":
        return "teacher"
    if len(parts) == 4 and parts[3] == "checkpoint" and MODEL_ROLES.get(parts[1]) == "student":
        return "distill"
    return None


class MLflowRunsHook:
    """Marks the pipeline's MLflow run (kedro-mlflow's) as this process's, and closes the runs a
    killed ``kedro run`` left ``RUNNING``: a SIGKILLed process cannot end its runs, so the next
    run marks them ``KILLED`` (``tracking.close_orphaned_runs``) instead of leaving them running
    for ever. The killed training itself resumes from its ``last.pt`` in a new run."""

    @hook_impl(trylast=True)  # after kedro-mlflow has started the pipeline's run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        try:
            import mlflow
        except ImportError:  # tracking is optional for the library; nothing to close then
            return
        from sdkd_pipeline.tracking import (
            DEFAULT_EXPERIMENT,
            close_orphaned_runs,
            mark_experiment_kind,
            owner_tag,
        )

        client = mlflow.MlflowClient()
        experiments = set()
        active = mlflow.active_run()
        if active is not None:
            for key, value in owner_tag().items():
                client.set_tag(active.info.run_id, key, value)
            experiments.add(active.info.experiment_id)
        tracking = catalog.load("params:tracking") if catalog.exists("params:tracking") else {}
        name = (tracking or {}).get("experiment", DEFAULT_EXPERIMENT)
        found = client.get_experiment_by_name(name)
        if found is not None:
            experiments.add(found.experiment_id)
        close_orphaned_runs(client, experiments)
        for experiment_id in experiments:  # opens in model-training mode in MLflow 3's UI
            mark_experiment_kind(client, experiment_id)
        from sdkd_pipeline.pipelines.forecaster import REUSED_RUNS

        REUSED_RUNS.clear()
        self._session = (active.info.run_id, int(time.time() * 1000)) if active else None
        self._experiments = sorted(experiments)

    @hook_impl(trylast=True)  # after kedro-mlflow has ended the pipeline's run
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """A run in which every trained model was already trained (``kedro run
        --pipelines=distill`` after a full run) leaves no MLflow run behind: kedro-mlflow's run
        of the pipeline is deleted when no other run was started and some node reused a
        finished run, so reruns do not pile up empty runs in the UI."""
        from sdkd_pipeline.pipelines.forecaster import REUSED_RUNS

        session = getattr(self, "_session", None)
        if session is None or not REUSED_RUNS:
            return
        import mlflow

        run_id, started_ms = session
        client = mlflow.MlflowClient()
        since = client.search_runs(
            self._experiments, filter_string=f"attributes.start_time >= {started_ms}"
        )
        if any(r.info.run_id != run_id for r in since):
            return
        # kedro-mlflow leaves the run of a selected pipeline open (on its stack, maybe twice)
        while (active := mlflow.active_run()) is not None and active.info.run_id == run_id:
            mlflow.end_run()
        client.delete_run(run_id)
        logger.info(
            "every model of this run was already trained (%d reused); its MLflow run %s is "
            "deleted, the models' own runs are kept",
            len(REUSED_RUNS),
            run_id,
        )


class DaskClusterHook:
    """Starts a Dask client for pipelines that contain nodes tagged ``dask``.

    ``dask.scheduler`` in parameters: ``local`` (a LocalCluster on this machine, the default),
    ``synchronous`` (no cluster, for debugging), or a scheduler address such as
    ``tcp://10.0.0.5:8786`` for an existing cluster.
    """

    def __init__(self) -> None:
        self._client = None
        self._cluster = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if not any("dask" in node.tags for node in pipeline.nodes):
            return
        try:
            cfg = catalog.load("params:dask") or {}
        except Exception:  # no dask parameters in this env: use the defaults
            cfg = {}
        self._client, self._cluster = start_dask_client(cfg)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._close()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None


DASK_KEYS = frozenset(
    {
        "scheduler",
        "n_workers",
        "threads_per_worker",
        "processes",
        "memory_limit",
        "dashboard_address",
        "connect_timeout",
        "sources_on_cluster",  # see data/cluster.py
    }
)


def start_dask_client(cfg: dict[str, Any]):
    """Return ``(client, cluster)`` for ``cfg`` (either may be None); see DaskClusterHook."""
    import dask

    from sdkd_pipeline.errors import ConfigError

    unknown = sorted(set(cfg) - DASK_KEYS)
    if unknown:
        raise ConfigError(
            f"parameter dask.{unknown[0]}: unknown parameter (allowed: {', '.join(sorted(DASK_KEYS))})"
        )
    from sdkd_pipeline.data.cluster import set_sources_on_cluster

    set_sources_on_cluster(cfg.get("sources_on_cluster", "auto"))
    scheduler = str(cfg.get("scheduler", "local"))
    if scheduler in ("synchronous", "threads", "processes"):
        dask.config.set(scheduler=scheduler)
        logger.info("Dask: %s scheduler, no cluster", scheduler)
        return None, None
    from distributed import Client, LocalCluster

    # distributed installs its own INFO-level loggers at import; keep the run log readable
    for name in ("distributed", "distributed.scheduler", "distributed.worker", "distributed.core"):
        logging.getLogger(name).setLevel(logging.WARNING)

    if scheduler == "local":
        cluster = LocalCluster(
            n_workers=int(cfg.get("n_workers", 1)),
            threads_per_worker=cfg.get("threads_per_worker"),
            processes=bool(cfg.get("processes", False)),
            memory_limit=cfg.get("memory_limit", "auto"),
            dashboard_address=cfg.get("dashboard_address", None),
            silence_logs=logging.WARNING,
        )
        client = Client(cluster)
        logger.info("Dask: LocalCluster %s", client)
        return client, cluster
    if "://" in scheduler:
        client = Client(scheduler, timeout=cfg.get("connect_timeout", "30s"))
        logger.info("Dask: connected to scheduler %s", scheduler)
        return client, None
    raise ConfigError(
        f"parameter dask.scheduler: unknown value {scheduler!r}; use 'local', 'synchronous', "
        "'threads' or a scheduler address such as 'tcp://host:8786'"
    )


STAGES = ("download", "data", "teacher", "spectral", "distill", "evaluate")
RUN_TIMES = Path("data") / "08_reporting" / "run_times.json"


MAX_RUN_TIMES = 50  # records kept in run_times.json, the newest last


def previous_run_times(path: Path) -> list[dict[str, Any]]:
    """The records of ``run_times.json`` (``{"runs": [...]}``, oldest first); a file of the
    earlier one-record format is one record, an unreadable one none (with a warning)."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("%s cannot be read; its earlier run times are dropped", path)
        return []
    if isinstance(data, dict) and isinstance(data.get("runs"), list):
        return [r for r in data["runs"] if isinstance(r, dict)]
    return [data] if isinstance(data, dict) and "seconds" in data else []


class RunTimesHook:
    """Times every node and adds a record to ``data/08_reporting/run_times.json`` after a
    successful run (one per ``kedro run``, the newest last, up to ``MAX_RUN_TIMES``): the wall
    time, the seconds per stage (the node's stage tag) and per node, slowest first.
    ``benchmarks/bench_kedro_run.py`` reads the newest; the log gets a one-line summary."""

    def __init__(self) -> None:
        self._start = 0.0
        self._node_start: dict[str, float] = {}
        self._nodes: list[dict[str, Any]] = []

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._start = time.perf_counter()
        self._node_start.clear()
        self._nodes = []

    @hook_impl
    def before_node_run(self, node) -> None:
        self._node_start[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node) -> None:
        start = self._node_start.pop(node.name, None)
        if start is None:
            return
        stage = next((t for t in STAGES if t in node.tags), "other")
        self._nodes.append(
            {"node": node.name, "stage": stage, "seconds": round(time.perf_counter() - start, 3)}
        )

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        total = time.perf_counter() - self._start
        stages: dict[str, float] = {}
        for entry in self._nodes:
            stages[entry["stage"]] = stages.get(entry["stage"], 0.0) + entry["seconds"]
        report = {
            "session_id": run_params.get("session_id"),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pipeline": run_params.get("pipeline_names")
            or run_params.get("pipeline_name")
            or ["__default__"],
            "env": run_params.get("env"),
            "seconds": round(total, 3),
            "stages": {k: round(v, 3) for k, v in stages.items()},
            "nodes": sorted(self._nodes, key=lambda e: -e["seconds"]),
        }
        from sdkd_pipeline.atomic import write_text

        path = Path(run_params.get("project_path") or ".") / RUN_TIMES
        runs = [*previous_run_times(path), report][-MAX_RUN_TIMES:]
        write_text(json.dumps({"runs": runs}, indent=1, default=str), path)
        logger.info(
            "run took %.0f s (%s); node times in %s",
            total,
            ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()),
            path,
        )
