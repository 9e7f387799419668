"""The best student for a latency budget: measure every trained student, draw the front, pick.

``pick_student`` finds the students trained on a dataset
(``<models_dir>/<dataset>/students/<student>/<method>.pt``, as the distill pipeline writes
them), times each one in every requested form (the eager PyTorch model on the chosen device;
its TorchScript and ONNX exports on the CPU, exported once into ``<exports_dir>`` and reused
while newer than the checkpoint) at one batch size and thread count, and returns every
candidate with its latency and accuracy, the accuracy-latency Pareto front and the most
accurate candidate whose median latency per call is within the budget.

Accuracy is the checkpoint's validation MSE (normalized units, the split settings are chosen
on), never the test split; the test MSE is reported beside it. Latency is the median of
``repeats`` timed calls (``evaluation.latency.timed_calls``) of one batch. A budget no
candidate meets is a ``ConfigError`` naming the fastest candidate and its latency.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdkd_pipeline.errors import ConfigError, DataError

FORMATS = ("eager", "torchscript", "onnx")


@dataclass
class Candidate:
    """One student in one form, timed: ``path`` is what a user deploys (the checkpoint for
    ``eager``, the exported file otherwise)."""

    student: str
    method: str
    format: str
    path: str
    val_mse: float
    test_mse: float
    latency_ms: float
    parameters: int

    @property
    def label(self) -> str:
        return f"{self.student}/{self.method} ({self.format})"


@dataclass
class Pick:
    """``pick_student``'s answer: the chosen candidate, the front (indices into
    ``candidates``) and the conditions of the measurement."""

    dataset: str
    budget_ms: float
    batch: int
    threads: int | None
    device: str
    chosen: Candidate
    candidates: list[Candidate]
    front: list[int]
    skipped: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "budget_ms": self.budget_ms,
            "batch": self.batch,
            "threads": self.threads,
            "device": self.device,
            "chosen": asdict(self.chosen),
            "pareto_front": [self.candidates[i].label for i in self.front],
            "candidates": [asdict(c) for c in self.candidates],
            "skipped": self.skipped,
        }


def choose(candidates: Sequence[Candidate], budget_ms: float) -> Candidate:
    """The candidate of lowest validation MSE among those within ``budget_ms`` (ties: the
    faster); a ``ConfigError`` naming the fastest candidate when none is within it."""
    timed = [c for c in candidates if math.isfinite(c.latency_ms)]
    if not timed:
        raise ConfigError("pick: no candidate could be timed")
    within = [c for c in timed if c.latency_ms <= budget_ms]
    if not within:
        fastest = min(timed, key=lambda c: c.latency_ms)
        raise ConfigError(
            f"--budget-ms {budget_ms:g}: no student runs within it; the fastest is "
            f"{fastest.label} at {fastest.latency_ms:.3g} ms ({fastest.path})"
        )
    return min(within, key=lambda c: (c.val_mse, c.latency_ms))


def _students(models_dir: Path, dataset: str) -> list[Path]:
    root = models_dir / dataset / "students"
    found = sorted(root.glob("*/*.pt")) if root.is_dir() else []
    if not found:
        raise DataError(
            f"{root}: no trained students of {dataset!r} (expected <student>/<method>.pt); "
            "train them first: kedro run --pipelines=distill"
        )
    return found


def _export(checkpoint: Any, source: Path, out_dir: Path, fmt: str) -> Path:
    """The export of ``checkpoint`` in ``fmt``, written once and reused while newer than the
    checkpoint file ``source``."""
    from sdkd_pipeline.deploy.export import export_onnx, export_torchscript

    meta_name = f"{checkpoint.model_name}_{checkpoint['method']}"
    target = out_dir / f"{meta_name}{'.onnx' if fmt == 'onnx' else '.pt'}"
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    from sdkd_pipeline.atomic import atomic_path

    writer = export_onnx if fmt == "onnx" else export_torchscript
    with atomic_path(target, suffix=target.suffix) as tmp:  # a killed pick leaves no part-file
        writer(checkpoint, tmp)
    return target


def _eager_latency(
    checkpoint: Any, batch: int, threads: int | None, device: str, repeats: int
) -> float:
    from sdkd_pipeline.deploy.checkpoint import input_channels
    from sdkd_pipeline.evaluation.latency import measure_latency

    model = checkpoint.build_model().eval()
    s = checkpoint.shape
    sample = (s["in_frames"], input_channels(s), s["height"], s["width"])
    timings = measure_latency(
        model, sample, (batch,), repeats=repeats, warmup=3, threads=threads, device=device
    )
    return float(timings[batch])


def pick_student(
    dataset: str,
    budget_ms: float,
    *,
    batch: int = 1,
    threads: int | None = 1,
    device: str = "cpu",
    formats: Sequence[str] = FORMATS,
    models_dir: str | Path = "data/06_models",
    exports_dir: str | Path | None = None,
    repeats: int = 20,
) -> Pick:
    """Measure every trained student of ``dataset`` and pick the best within ``budget_ms``.

    ``device`` is where the eager models run (``cpu``, ``cuda``); the exports are timed on the
    CPU, so with ``cuda`` only ``eager`` is timed (the exports' CPU latency is not a GPU
    budget's). Forms that cannot be made here (ONNX without onnx/onnxruntime) are skipped and
    named in ``skipped``.
    """
    from sdkd_pipeline.deploy.runtime import exported_latency, onnx_missing
    from sdkd_pipeline.evaluation.plots.tradeoffs import pareto_front
    from sdkd_pipeline.models.checkpoint import Checkpoint
    from sdkd_pipeline.models.complexity import count_parameters
    from sdkd_pipeline.training import resolve_device

    if not budget_ms > 0:
        raise ConfigError(f"--budget-ms must be > 0, got {budget_ms}")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ConfigError(f"--formats: unknown format(s) {unknown}; use {', '.join(FORMATS)}")
    resolved = resolve_device(device, param="--device")
    models_dir = Path(models_dir)
    out_dir = Path(exports_dir) if exports_dir else models_dir / dataset / "exports"
    skipped: dict[str, str] = {}
    wanted = list(formats)
    if resolved.type != "cpu":
        for fmt in [f for f in wanted if f != "eager"]:
            skipped[fmt] = f"exports are timed on the CPU, not on {resolved}"
        wanted = [f for f in wanted if f == "eager"]
    if "onnx" in wanted and (missing := onnx_missing()):
        skipped["onnx"] = missing
        wanted.remove("onnx")
    if not wanted:
        raise ConfigError(f"--formats: none of {list(formats)} can be timed here ({skipped})")

    candidates: list[Candidate] = []
    for source in _students(models_dir, dataset):
        checkpoint = Checkpoint.load(source)
        checkpoint.expect_role("student")
        val = float(checkpoint.to_dict().get("best_val_loss", math.nan))
        test = checkpoint.to_dict().get("test_loss")
        n_params = count_parameters(checkpoint.build_model())
        for fmt in wanted:
            if fmt == "eager":
                path = source
                latency = _eager_latency(checkpoint, batch, threads, str(resolved), repeats)
            else:
                path = _export(checkpoint, source, out_dir, fmt)
                rows = exported_latency(
                    path, batch_sizes=(batch,), repeats=repeats, threads=threads
                )
                latency = float(rows[0]["median_ms"])
            candidates.append(
                Candidate(
                    student=checkpoint.model_name,
                    method=str(checkpoint["method"]),
                    format=fmt,
                    path=str(path),
                    val_mse=val,
                    test_mse=math.nan if test is None else float(test),
                    latency_ms=latency,
                    parameters=n_params,
                )
            )
    front = pareto_front([c.val_mse for c in candidates], [c.latency_ms for c in candidates])
    chosen = choose(candidates, budget_ms)
    return Pick(
        dataset, budget_ms, batch, threads, str(resolved), chosen, candidates, front, skipped
    )


def plot_pick(result: Pick) -> Any:
    """Validation MSE against latency per candidate, log-log: colour = trained model
    (student/method), marker = form (eager, TorchScript, ONNX); the Pareto front as a
    staircase, the budget as a vertical line, the chosen candidate ringed."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.5, 5.0), layout="constrained")
    ax = figure.add_subplot()
    cands = result.candidates
    markers = {"eager": "o", "torchscript": "s", "onnx": "^"}
    models = sorted({(c.student, c.method) for c in cands})
    palette = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
    colours = {m: palette[i % len(palette)] for i, m in enumerate(models)}
    if len(result.front) > 1:
        ax.plot(
            [cands[i].latency_ms for i in result.front],
            [cands[i].val_mse for i in result.front],
            drawstyle="steps-post",
            color="0.6",
            linewidth=2,
            zorder=1,
        )
    for c in cands:
        ax.plot(
            [c.latency_ms],
            [c.val_mse],
            linestyle="none",
            marker=markers[c.format],
            color=colours[(c.student, c.method)],
            markersize=8,
            zorder=3,
        )
    best = result.chosen
    ax.plot(
        [best.latency_ms],
        [best.val_mse],
        marker="o",
        markersize=18,
        markerfacecolor="none",
        markeredgecolor="black",
        linestyle="none",
        zorder=4,
    )
    ax.axvline(result.budget_ms, color="black", linestyle="--", linewidth=1)
    handles = _legend(colours, markers, {c.format for c in cands}, best.label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(
        f"median latency per call [ms] (batch {result.batch}, "
        f"{result.threads or 'all'} thread(s), {result.device})"
    )
    ax.set_ylabel("validation MSE [normalized units]")
    ax.set_title(f"{result.dataset}: the most accurate student within {result.budget_ms:g} ms")
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False
    )
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)
    ax.grid(True, which="both", alpha=0.3)
    return figure


def _legend(colours: dict, markers: dict, formats: set, chosen: str) -> list:
    """Legend entries: one colour per trained model, one marker per form, then the front, the
    budget and the chosen candidate."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=c, marker="o", linestyle="none", label=f"{m[0]}/{m[1]}")
        for m, c in colours.items()
    ]
    handles += [
        Line2D([], [], color="0.3", marker=markers[f], linestyle="none", label=f)
        for f in markers
        if f in formats
    ]
    ring = {"marker": "o", "markersize": 12, "markerfacecolor": "none", "markeredgecolor": "k"}
    return [
        *handles,
        Line2D([], [], color="0.6", linewidth=2, label="Pareto front"),
        Line2D([], [], color="black", linestyle="--", linewidth=1, label="budget"),
        Line2D([], [], linestyle="none", label=f"chosen: {chosen}", **ring),
    ]


def write_pick(result: Pick, out_dir: str | Path) -> dict[str, str]:
    """``pick_<dataset>.json`` and ``pick_<dataset>.png`` in ``out_dir`` (written atomically);
    returns their paths."""
    from sdkd_pipeline.atomic import atomic_path, write_text

    out = Path(out_dir)
    stem = f"pick_{result.dataset}_b{result.batch}"
    json_path, png_path = out / f"{stem}.json", out / f"{stem}.png"
    write_text(json.dumps(result.to_dict(), indent=1), json_path)
    figure = plot_pick(result)
    with atomic_path(png_path) as tmp:
        figure.savefig(tmp, dpi=150, format="png")
    return {"json": str(json_path), "figure": str(png_path)}
