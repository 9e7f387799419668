"""MLflow helpers: a model run in a temporary SQLite store, nesting, params, loss plot."""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.tracking import (
    CLOSED_TAG,
    MAX_PARAM_VALUE_LENGTH,
    OWNER_TAG,
    MLflowTracker,
    NullTracker,
    Tracker,
    close_orphaned_runs,
    default_tracking_uri,
    flatten_params,
    owner_is_gone,
    owner_tag,
    plot_loss_curves,
    run_tags,
)
from sdkd_pipeline.training import TrainConfig, train
from tests.engine_worker import SyntheticWindows, TinyForecaster

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def _shared_store(tmp_path_factory):
    # creating a SQLite store runs MLflow's migrations (seconds): one store for the module
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


@pytest.fixture
def store(_shared_store, tmp_path, monkeypatch):
    """A SQLite tracking store and artifact root in a temporary folder (never the project's)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return _shared_store


def test_flatten_params_dotted_keys_and_truncation():
    flat = flatten_params(
        {
            "model": {"name": "unet", "width": 16, "sizes": [1, 2]},
            "note": "x" * 10_000,
            "none": None,
        }
    )
    assert flat["model.name"] == "unet" and flat["model.width"] == "16"
    assert flat["model.sizes"] == "[1, 2]" and flat["none"] == "null"
    assert len(flat["note"]) == MAX_PARAM_VALUE_LENGTH and flat["note"].endswith("...")


def test_run_tags_and_default_uri(monkeypatch):
    assert run_tags("ns", "teacher", "simvp") == {
        "dataset": "ns",
        "role": "teacher",
        "model": "simvp",
        "method": "supervised",
    }
    assert run_tags("ns", "student", "unet", "sdkd")["method"] == "sdkd"
    with pytest.raises(ConfigError, match="role"):
        run_tags("ns", "professor", "unet")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri() == "http://127.0.0.1:5000"


def _protocol_methods() -> list[str]:
    return sorted(n for n, v in vars(Tracker).items() if callable(v) and not n.startswith("_"))


@pytest.mark.parametrize("cls", [NullTracker, MLflowTracker])
def test_trackers_implement_the_protocol_signatures(cls):
    # isinstance on a runtime-checkable Protocol only checks that the names exist; the engine
    # calls these with keywords, so every parameter of the Protocol's method must be accepted
    # under the same name, with the same default, and nothing more may be required
    methods = _protocol_methods()
    assert {
        "log_params",
        "log_metrics",
        "set_tags",
        "log_artifact",
        "log_dict",
        "log_figure",
        "close",
    } <= set(methods)
    for name in methods:
        want = inspect.signature(getattr(Tracker, name)).parameters
        got = inspect.signature(getattr(cls, name)).parameters
        for p in want.values():
            assert p.name in got, f"{cls.__name__}.{name} lacks parameter {p.name!r}"
            assert got[p.name].default == p.default, f"{cls.__name__}.{name}({p.name})"
        extra = [
            p
            for n, p in got.items()
            if n not in want
            and p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        assert not extra, f"{cls.__name__}.{name} requires {extra} beyond the Protocol"


def test_null_tracker_takes_every_call_the_engine_makes(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x")
    with NullTracker() as tracker:
        tracker.log_params({"lr": 1e-3})
        tracker.log_metrics({"a": 1.0}, step=1)
        tracker.set_tags({"role": "teacher"})
        tracker.log_artifact(path, artifact_path="files")
        tracker.log_dict({"a": 1}, "a.json")
        tracker.log_figure(None, "a.png")


def test_plot_loss_curves_makes_a_png(tmp_path):
    history = [
        {"epoch": 1, "train_loss": 1.0, "val_loss": 0.9},
        {"epoch": 2, "train_loss": 0.5, "val_loss": float("nan")},
        {"epoch": 3, "train_loss": 0.2, "val_loss": 0.3},
    ]
    figure = plot_loss_curves(history, title="t")
    lines = figure.axes[0].get_lines()
    assert [len(line.get_xdata()) for line in lines] == [3, 2]
    figure.savefig(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError):
        plot_loss_curves([])


def test_trained_model_run_holds_params_tags_metrics_and_artifacts(store, tmp_path):
    uri, artifacts = store
    torch.manual_seed(0)
    model = TinyForecaster()
    cfg = TrainConfig(epochs=3, batch_size=4, lr=3e-3, patience=None)
    tags = run_tags("navier_stokes", "teacher", "tiny")
    with MLflowTracker(
        "engine-test", run_name="ns/tiny", tags=tags, tracking_uri=uri, artifact_location=artifacts
    ) as tracker:
        tracker.log_params({"model": {"name": "tiny", "width": 8}, "dataset": "navier_stokes"})
        tracker.log_dict(
            {"model": {"name": "tiny"}, "train": cfg.to_dict()}, "resolved_config.yaml"
        )
        result = train(
            model,
            SyntheticWindows(12, 1),
            SyntheticWindows(4, 2),
            cfg,
            out_dir=tmp_path / "ckpt",
            tracker=tracker,
            test_set=SyntheticWindows(4, 3),
            progress=False,
        )
        run_id = tracker.run_id

    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "ns/tiny"
    assert {k: run.data.tags[k] for k in tags} == tags
    params = run.data.params
    assert params["model.name"] == "tiny" and params["train.lr"] == "0.003"
    assert params["train.epochs"] == "3" and params["train.schedule"] == "null"
    val_history = client.get_metric_history(run_id, "val_loss")
    assert sorted(m.step for m in val_history) == [1, 2, 3]
    assert {m.value for m in val_history} == {row["val_loss"] for row in result.history}
    assert len(client.get_metric_history(run_id, "train_loss")) == 3
    assert len(client.get_metric_history(run_id, "lr")) == 3
    assert run.data.metrics["test_loss"] == pytest.approx(result.test_loss)
    assert run.data.metrics["best_val_loss"] == pytest.approx(result.best_val_loss)

    names = {a.path for a in client.list_artifacts(run_id)}
    assert {
        "resolved_config.yaml",
        "train_config.json",
        "loss_curves.png",
        "history.json",
        "checkpoints",
    } <= names
    local = Path(client.download_artifacts(run_id, "checkpoints/best.pt", str(tmp_path)))
    best = torch.load(local, weights_only=True)
    assert best["epoch"] == result.best_epoch
    # nothing landed in the working directory's default store
    assert not (tmp_path / "mlruns").exists()


def test_model_run_nests_under_an_active_outer_run(store, tmp_path):
    uri, artifacts = store
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("outer", artifact_location=artifacts)
        with mlflow.start_run(experiment_id=experiment) as outer:
            with MLflowTracker("ignored-when-nested", run_name="inner") as tracker:
                tracker.log_metrics({"val_loss": 0.5}, step=1)
                tracker.set_tags({"extra": "yes"})
            assert tracker.parent_run_id == outer.info.run_id
            assert tracker.experiment_id == experiment
            assert mlflow.active_run().info.run_id == outer.info.run_id  # outer still active
        child = mlflow.MlflowClient(uri).get_run(tracker.run_id)
        assert child.data.tags["mlflow.parentRunId"] == outer.info.run_id
        assert child.data.tags["extra"] == "yes" and child.data.metrics["val_loss"] == 0.5
        with pytest.raises(ConfigError, match="nested=True"):
            MLflowTracker("x", nested=True, tracking_uri=uri)
    finally:
        mlflow.set_tracking_uri(None)


def test_failed_block_marks_the_run_failed(store):
    uri, artifacts = store
    with pytest.raises(RuntimeError):
        with MLflowTracker("fail", tracking_uri=uri, artifact_location=artifacts) as tracker:
            raise RuntimeError("boom")
    assert mlflow.MlflowClient(uri).get_run(tracker.run_id).info.status == "FAILED"
    with pytest.raises(ConfigError, match=r"\.json or \.yaml"):
        tracker.log_dict({"a": 1}, "config.txt")


def _ended_process_owner_tag() -> str:
    """The owner tag of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    value = owner_tag(proc.pid)[OWNER_TAG]
    proc.communicate(b"")
    return value


def test_owner_is_gone_only_for_an_ended_process_of_this_host():
    mine = owner_tag()[OWNER_TAG]
    host, pid, started = mine.split()
    assert host == socket.gethostname() and float(started) > 0
    assert not owner_is_gone(mine)
    assert owner_is_gone(_ended_process_owner_tag())
    # the same pid with another start time: the pid was reused, the owner is gone
    assert owner_is_gone(f"{host} {pid} {float(started) - 3600:.2f}")
    # another host's process, or a tag this code did not write, cannot be judged: left alone
    assert not owner_is_gone(f"another-{host} 1 1.0")
    assert not owner_is_gone("not a tag")


def test_runs_left_running_by_a_killed_process_are_marked_killed(store):
    client = mlflow.MlflowClient(tracking_uri=store[0])
    experiment = client.create_experiment("orphans", artifact_location=store[1])
    dead = _ended_process_owner_tag()
    orphan = client.create_run(experiment, tags={OWNER_TAG: dead}).info.run_id
    ended = client.create_run(experiment, tags={OWNER_TAG: dead}).info.run_id
    client.set_terminated(ended, "FINISHED")
    alive = client.create_run(experiment, tags=owner_tag()).info.run_id
    untagged = client.create_run(experiment).info.run_id

    assert close_orphaned_runs(client, [experiment]) == [orphan]
    run = client.get_run(orphan)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert "killed" in run.data.tags[CLOSED_TAG]
    statuses = {r: client.get_run(r).info.status for r in (ended, alive, untagged)}
    assert statuses == {ended: "FINISHED", alive: "RUNNING", untagged: "RUNNING"}
    assert close_orphaned_runs(client, [experiment]) == []
    assert close_orphaned_runs(client, []) == []


def test_tracker_runs_carry_the_owner_tag(store):
    with MLflowTracker(
        experiment="owned", tracking_uri=store[0], artifact_location=store[1]
    ) as tracker:
        run = tracker.client.get_run(tracker.run_id)
        assert run.data.tags[OWNER_TAG] == owner_tag()[OWNER_TAG]


def test_a_run_records_the_projects_git_commit_and_whether_it_was_dirty(store, tmp_path):
    import subprocess

    uri, artifacts = store
    repo = tmp_path  # the store fixture made it the working directory

    def git(*args):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (repo / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "x")
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with MLflowTracker(
        "git", run_name="r", tracking_uri=uri, artifact_location=artifacts, nested=False
    ) as tracker:
        pass
    tags = mlflow.MlflowClient(uri).get_run(tracker.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mlflow.source.git.branch"] == "main" and tags["sdkd.git.dirty"] == "false"
    assert tags["mlflow.source.type"] == "LOCAL" and "mlflow.user" in tags


def test_a_training_run_logs_system_metrics_and_closes_at_once(store, tmp_path):
    uri, artifacts = store
    with MLflowTracker(
        "system", tracking_uri=uri, artifact_location=artifacts, system_metrics=0.2
    ) as tracker:
        train(
            TinyForecaster(),
            SyntheticWindows(12, 1),
            SyntheticWindows(4, 2),
            TrainConfig(epochs=2, batch_size=4, patience=None),
            out_dir=tmp_path / "ckpt",
            tracker=tracker,
            progress=False,
        )
        time.sleep(0.5)  # at least two samples of 0.2 s
        start = time.perf_counter()
    closing = time.perf_counter() - start  # __exit__: stops the monitor, ends the run
    client = mlflow.MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert closing < 1.0, f"closing the run took {closing:.2f} s"
    for name in ("cpu_utilization_percentage", "system_memory_usage_megabytes"):
        assert f"system/{name}" in run.data.metrics, sorted(run.data.metrics)
    history = client.get_metric_history(tracker.run_id, "system/system_memory_usage_megabytes")
    assert len(history) >= 2 and all(m.value > 0 for m in history)
    assert sorted(m.step for m in history) == list(range(len(history)))
    assert "val_loss" in run.data.metrics  # the engine's own metrics are still there


def test_a_run_shorter_than_the_interval_gets_one_sample_and_none_without_the_option(store):
    uri, artifacts = store
    with MLflowTracker(
        "system", tracking_uri=uri, artifact_location=artifacts, system_metrics=60.0
    ) as tracker:
        start = time.perf_counter()
    assert time.perf_counter() - start < 1.0  # not the 60 s sampling interval
    history = mlflow.MlflowClient(uri).get_metric_history(
        tracker.run_id, "system/cpu_utilization_percentage"
    )
    assert len(history) == 1
    with MLflowTracker("system", tracking_uri=uri, artifact_location=artifacts) as plain:
        pass
    metrics = mlflow.MlflowClient(uri).get_run(plain.run_id).data.metrics
    assert not [k for k in metrics if k.startswith("system/")]


def test_tracking_parameters_give_the_training_runs_system_metrics():
    from sdkd_pipeline.tracking import TrackingConfig

    assert TrackingConfig.from_params({}).tracker_options() == {
        "experiment": "sdkd_pipeline",
        "system_metrics": 10.0,
        "copied_store": "separate",
    }
    off = TrackingConfig.from_params({"system_metrics": {"enabled": False}})
    assert off.tracker_options()["system_metrics"] is None
    fast = TrackingConfig.from_params({"system_metrics": {"interval": 1}})
    assert fast.tracker_options()["system_metrics"] == 1.0


@pytest.mark.bad_input
def test_a_bad_system_metrics_interval_is_named():
    from sdkd_pipeline.tracking import TrackingConfig

    with pytest.raises(ConfigError, match=r"tracking\.system_metrics\.interval must be > 0"):
        TrackingConfig.from_params({"system_metrics": {"interval": 0}})
