"""Time per training step of each distillation method relative to ``none``, side by side.

For each student and each method (none, output_mse, sdkd, sdkd_latent, aver_mkd, aekd, camkd,
sdkd_multi, plus aekd with ``gradients: parameters``) times one full optimizer step on the same
student (same initial weights) and the same batch: ``zero_grad``, loss, ``backward``, Adam step
(the loss's own parameters, the ``sdkd_latent`` projector, optimised with the student's). Each
distillation method runs in two modes:

- ``online``: the target is the plain ``y``; the loss runs its teachers (eval, no grad) every
  step;
- ``cached``: the target is ``{"y": y, "teachers": {name: {"prediction", "high", "low"}}}``,
  precomputed once, i.e. what ``WithTeacherTargets`` delivers when the teacher cache is on.

``none`` is the engine's plain MSE of ``model(x)``. The variants of one student are timed in
interleaved rounds (the order rotates each round) so that background load hits all of them; a
variant's time is the median over rounds of the mean over ``--steps`` steps. Also measured:
each teacher's forward pass on the batch (no grad, eval), in the same rounds; the AEKD weighting
step alone (Gram matrix of the residuals + min-norm solve, ``aekd_output_gram`` +
``aekd_weights``; and per band, as ``sdkd_multi`` with ``weighting: aekd`` does); and the
one-off cost of the teacher cache against running the teachers at every step of a default run.
On a machine shared with other work, ``--threads 1`` gives steadier numbers (two threads
contending with other processes can slow small kernels several-fold).

Target: ``sdkd`` within 1.3x of ``none`` plus the teacher's forward pass; with the cache on,
``sdkd`` within 1.3x of ``none`` itself (the cache removes the teacher from the step).

Randomly initialised teachers at the laptop sizes (conf/base) by default, or the trained ones
with ``--teachers-from data/06_models/navier_stokes``. Runs without Kedro, MLflow, Zarr or Dask.

    python benchmarks/bench_distill_step.py [--students unet resnet mlp_mixer]
        [--methods none sdkd aekd ...] [--repeats 5] [--warmup 2] [--steps 1] [--threads 2]
        [--teachers-from data/06_models/navier_stokes] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from sdkd_pipeline.distill import METHODS, DistillConfig, build_loss, choose_cutoff
from sdkd_pipeline.distill.losses import aekd_output_gram, aekd_weights, band_gram
from sdkd_pipeline.distill.teachers import freeze, run_teacher
from sdkd_pipeline.models import build_model
from sdkd_pipeline.training import MSELoss

ROOT = Path(__file__).resolve().parents[1]
# the laptop sizes, read from conf/base so the benchmark times what `kedro run` trains
_TEACHER = yaml.safe_load((ROOT / "conf/base/parameters_teacher.yml").read_text())["teacher"]
_DISTILL = yaml.safe_load((ROOT / "conf/base/parameters_distill.yml").read_text())["distill"]
TEACHERS = {name: _TEACHER[name] for name in ("st_alternet", "simvp")}
STUDENTS = {name: _DISTILL[name] for name in ("unet", "resnet", "mlp_mixer")}
# --quick: tiny models on a small grid, a smoke test that finishes in seconds
QUICK_TEACHERS = {
    "st_alternet": {"hidden": 16, "depth": 1, "heads": 2, "frame_hidden": 8, "spatial_layers": 2},
    "simvp": {"frame_hidden": 8, "hidden": 16, "spatial_layers": 2, "depth": 2},
}
QUICK_STUDENTS = {
    "unet": {"hidden": 8, "base_width": 8, "levels": 2},
    "resnet": {"hidden": 8, "base_width": 8, "depth": 1, "downsample_steps": 2},
    "mlp_mixer": {"hidden": 8, "depth": 1, "patch": 4},
}
AEKD_PARAMS = "aekd_param"  # aekd with gradients w.r.t. the student's parameters


def _median_time(fn: Callable[[], Any], min_calls: int, min_time: float) -> float:
    """Median seconds of ``fn()`` over at least ``min_calls`` calls and ``min_time`` seconds."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _load_teachers(
    folder: Path, names: list[str]
) -> tuple[dict[str, nn.Module], dict[str, float], dict[str, int]]:
    from sdkd_pipeline.pipelines.forecaster import load_forecaster  # only on this path

    teachers, val_losses, shape = {}, {}, {}
    for name in names:
        checkpoint = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
        teachers[name] = load_forecaster(checkpoint)
        val_losses[name] = float(checkpoint.get("best_val_loss", float("nan")))
        if shape and dict(checkpoint["shape"]) != shape:
            raise SystemExit(f"teacher {name} has shape {checkpoint['shape']}, others {shape}")
        shape = dict(checkpoint["shape"])
    return teachers, val_losses, shape


class Variant:
    """One (method, mode) of one student: its own copy of the student, loss and optimizer."""

    def __init__(
        self,
        label: str,
        method: str,
        mode: str,
        template: nn.Module,
        teachers: dict[str, nn.Module],
        single: str,
        shape: dict[str, int],
        x: torch.Tensor,
        y: torch.Tensor,
        cache: dict[str, dict[str, torch.Tensor]],
    ) -> None:
        self.label, self.method, self.mode = label, method, mode
        self.model = copy.deepcopy(template).train()
        self.x = x
        if method == "none":
            self.loss: Any = MSELoss()
            self.target: Any = y
            self.teacher_names: list[str] = []
        else:
            base = "aekd" if method == AEKD_PARAMS else method
            extra = {"aekd": {"gradients": "parameters"}} if method == AEKD_PARAMS else {}
            cfg = DistillConfig.from_params(base, extra)
            used = dict(teachers) if cfg.multi_teacher else {single: teachers[single]}
            h, w = shape["height"], shape["width"]
            self.loss = build_loss(
                cfg,
                used,
                height=h,
                width=w,
                cutoff=choose_cutoff(cfg, h, w) if cfg.uses_cutoff else None,
                student_latent_channels=template.latent_channels,
                teacher_latent_channels=teachers[single].latent_channels,
                student_parameters=list(self.model.parameters()),
            )
            self.teacher_names = sorted(used)
            self.target = (
                y
                if mode == "online"
                else {"y": y, "teachers": {n: cache[n] for n in self.teacher_names}}
            )
        extra_params = list(getattr(self.loss, "parameters", lambda: iter(()))())
        self.optimizer = torch.optim.Adam(list(self.model.parameters()) + extra_params, lr=1e-3)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = self.loss(self.model, self.x, self.target)
        loss.backward()
        self.optimizer.step()


class TeacherForward:
    """A teacher's forward pass on the batch (eval, no grad), timed among the variants."""

    def __init__(self, name: str, model: nn.Module, x: torch.Tensor) -> None:
        self.label, self.model, self.x = f"fwd/{name}", model, x

    def step(self) -> None:
        run_teacher(self.model, self.x, latents=False)


def bench_student(
    student: str,
    template: nn.Module,
    methods: list[str],
    teachers: dict[str, nn.Module],
    single: str,
    shape: dict[str, int],
    x: torch.Tensor,
    y: torch.Tensor,
    cache: dict[str, dict[str, torch.Tensor]],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Median seconds per step of each variant label (``none``, ``sdkd/online``, ...) and of
    each teacher's forward pass (``fwd/<teacher>``), all timed in the same rounds."""
    variants: list[Variant | TeacherForward] = [
        TeacherForward(n, m, x) for n, m in sorted(teachers.items())
    ]
    for method in methods:
        modes = ["-"] if method == "none" else ["cached", "online"]
        for mode in modes:
            label = method if method == "none" else f"{method}/{mode}"
            variants.append(
                Variant(label, method, mode, template, teachers, single, shape, x, y, cache)
            )
    for variant in variants:
        for _ in range(args.warmup):
            variant.step()
    samples: dict[str, list[float]] = {v.label: [] for v in variants}
    for round_index in range(args.repeats):
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                variant.step()
            samples[variant.label].append((time.perf_counter() - t0) / args.steps)
        print(f"  {student}: round {round_index + 1}/{args.repeats} done", flush=True)
    return {label: statistics.median(s) for label, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[*METHODS, AEKD_PARAMS],
        choices=[*METHODS, AEKD_PARAMS],
        help=f"{AEKD_PARAMS}: aekd with gradients w.r.t. the parameters",
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--teachers-from",
        type=Path,
        default=None,
        help="folder with trained <teacher>.pt checkpoints (default: random "
        "teachers at the laptop sizes)",
    )
    parser.add_argument(
        "--teacher",
        default="best",
        help="teacher of single-teacher methods (best: lowest validation MSE "
        "of the loaded checkpoints; simvp for random teachers)",
    )
    parser.add_argument(
        "--train-windows",
        type=int,
        default=396,
        help="training windows the cache covers (396 on the default NS data)",
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batches-per-epoch", type=int, default=25)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny models on a 16x16 grid, 1 round: a smoke run of seconds",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        if args.teachers_from is not None:
            raise SystemExit("--quick uses tiny random teachers; drop --teachers-from")
        args.repeats, args.warmup, args.steps = 1, 1, 1
        args.batch_size = min(args.batch_size, 2)

    torch.manual_seed(0)
    if args.teachers_from is not None:
        teachers, val_losses, shape = _load_teachers(args.teachers_from, list(TEACHERS))
        origin = f"trained ({args.teachers_from})"
    else:
        shape = {"in_frames": 10, "out_frames": 10, "channels": 1, "height": 64, "width": 64}
        configs = TEACHERS
        if args.quick:
            shape.update(in_frames=2, out_frames=2, height=16, width=16)
            configs = QUICK_TEACHERS
        teachers = {n: build_model(n, **shape, **c) for n, c in configs.items()}
        val_losses = {}
        origin = "random init"
    for model in teachers.values():
        freeze(model)
    if args.teacher == "best":
        single = min(val_losses, key=lambda n: (val_losses[n], n)) if val_losses else "simvp"
    elif args.teacher in teachers:
        single = args.teacher
    else:
        raise SystemExit(f"--teacher {args.teacher!r}: not among {sorted(teachers)}")
    student_configs = QUICK_STUDENTS if args.quick else STUDENTS
    batch = args.batch_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(
        batch,
        shape["in_frames"],
        shape["channels"],
        shape["height"],
        shape["width"],
        generator=generator,
    )
    y = torch.randn(
        batch,
        shape["out_frames"],
        shape["channels"],
        shape["height"],
        shape["width"],
        generator=generator,
    )
    print(
        f"grid {shape['height']}x{shape['width']}, {shape['in_frames']} -> "
        f"{shape['out_frames']} frames, {shape['channels']} channel(s), batch {batch}; "
        f"teachers {origin}: {', '.join(sorted(teachers))} (single-teacher methods: "
        f"{single}); torch {torch.__version__}, CPU threads {torch.get_num_threads()}; "
        f"{args.repeats} rounds x {args.steps} steps after {args.warmup} warm-up steps"
    )

    # the teachers' outputs on the batch, computed once: the cached targets
    cache = {n: run_teacher(m, x, latents=True) for n, m in teachers.items()}

    # the AEKD weighting step alone (student-independent: residuals of the batch's shape)
    preds = torch.stack([cache[n]["prediction"] for n in sorted(teachers)])
    residuals = torch.randn_like(preds[0])[None] - preds
    cfg = DistillConfig.from_params("sdkd_multi", {})
    split = build_loss(
        cfg,
        teachers,
        height=shape["height"],
        width=shape["width"],
        cutoff=choose_cutoff(cfg, shape["height"], shape["width"]),
    ).split
    min_time = 0.05 if args.quick else 1.0
    aekd_us = 1e6 * _median_time(
        lambda: aekd_weights(aekd_output_gram(residuals), 0.6), 20, min_time
    )
    gram_us = 1e6 * _median_time(lambda: aekd_output_gram(residuals), 20, min_time)
    band_us = 1e6 * _median_time(
        lambda: [aekd_weights(band_gram(residuals, split, b), 0.6) for b in (0, 1)], 20, min_time
    )

    results: dict[str, dict[str, float]] = {}
    params: dict[str, int] = {}
    for student in args.students:
        torch.manual_seed(0)
        template = build_model(student, **shape, **student_configs[student])
        params[student] = sum(p.numel() for p in template.parameters())
        print(f"timing {student} ({params[student]:,} params) ...", flush=True)
        results[student] = bench_student(
            student, template, args.methods, teachers, single, shape, x, y, cache, args
        )

    # a teacher's forward: timed in every student's rounds; the median of those medians
    teacher_fwd = {
        n: statistics.median(results[s][f"fwd/{n}"] for s in args.students) for n in teachers
    }
    print(
        "\nTeacher forward pass per batch of "
        f"{batch} (no grad, eval; median over the students' rounds)"
    )
    for name in sorted(teachers):
        n_params = sum(p.numel() for p in teachers[name].parameters())
        per_student = ", ".join(f"{s} {results[s][f'fwd/{name}'] * 1e3:.1f}" for s in args.students)
        print(
            f"  {name:<12} {n_params:>9,} params {teacher_fwd[name] * 1e3:>9.1f} ms "
            f"(in the rounds of: {per_student} ms)"
        )

    # ---- the table ----------------------------------------------------------------------
    def teachers_of(method: str) -> list[str]:
        if method == "none":
            return []
        return (
            sorted(teachers)
            if method in ("aver_mkd", "aekd", "camkd", "sdkd_multi", AEKD_PARAMS)
            else [single]
        )

    print(
        "\nms per training step (median), ratio to none on the same student and batch; "
        "'vs none+T': online step / (none step + forward of the method's teachers)"
    )
    for student in args.students:
        r = results[student]
        none = r.get("none")
        print(f"\n{student} ({params[student]:,} params)")
        print(
            f"  {'method':<12} {'cached ms':>10} {'x none':>8} {'online ms':>10} {'x none':>8}"
            f" {'vs none+T':>10} {'online-cached':>14}"
        )
        for method in args.methods:
            if method == "none":
                print(f"  {'none':<12} {r['none'] * 1e3:>10.1f} {1.0:>7.2f}x {'':>10} {'':>8}")
                continue
            cached, online = r[f"{method}/cached"], r[f"{method}/online"]
            t_fwd = sum(r[f"fwd/{n}"] for n in teachers_of(method))
            if none:
                x_cached, x_online = f"{cached / none:>7.2f}x", f"{online / none:>7.2f}x"
                vs = f"{online / (none + t_fwd):>9.2f}x"
            else:
                x_cached = x_online = f"{'-':>8}"
                vs = f"{'-':>10}"
            print(
                f"  {method:<12} {cached * 1e3:>10.1f} {x_cached} {online * 1e3:>10.1f} "
                f"{x_online} {vs} {(online - cached) * 1e3:>11.1f} ms"
            )

    print(f"\nTarget: sdkd within 1.3x of none plus the teacher's ({single}) forward pass")
    header = f"  {'':<40}" + "".join(f" {s:>11}" for s in args.students)
    print(header)
    if "none" in args.methods and "sdkd" in args.methods:
        rows = {
            "sdkd cached / none": lambda r: r["sdkd/cached"] / r["none"],
            f"sdkd online / (none + {single} forward)": lambda r: (
                r["sdkd/online"] / (r["none"] + r[f"fwd/{single}"])
            ),
            "sdkd online / none": lambda r: r["sdkd/online"] / r["none"],
        }
        for name, fn in rows.items():
            print(f"  {name:<40}" + "".join(f" {fn(results[s]):>10.2f}x" for s in args.students))
        worst = max(
            max(
                results[s]["sdkd/cached"] / results[s]["none"],
                results[s]["sdkd/online"] / (results[s]["none"] + results[s][f"fwd/{single}"]),
            )
            for s in args.students
        )
        print(
            f"  worst ratio {worst:.2f}x: {'meets' if worst <= 1.3 else 'MISSES'} the 1.3x target"
        )
    else:
        print("  (needs none and sdkd in --methods)")

    print(
        f"\nAEKD weighting step alone ({len(teachers)} teachers, residuals "
        f"{tuple(residuals.shape)}):"
    )
    print(
        f"  output Gram + min-norm solve (aekd): {aekd_us:8.1f} us  (Gram alone {gram_us:.1f} us)"
    )
    print(f"  per-band Gram + solve, 2 bands (sdkd_multi weighting: aekd): {band_us:8.1f} us")
    if "aekd" in args.methods:
        print(f"  {'':<40}" + "".join(f" {s:>11}" for s in args.students))
        print(
            f"  {'weighting / aekd cached step':<40}"
            + "".join(
                f" {aekd_us * 1e-6 / results[s]['aekd/cached']:>10.1%}" for s in args.students
            )
        )
    if AEKD_PARAMS in args.methods:
        print(
            f"  {'aekd (gradients: parameters) cached ms':<40}"
            + "".join(f" {results[s][f'{AEKD_PARAMS}/cached'] * 1e3:>11.1f}" for s in args.students)
        )
        if "aekd" in args.methods:
            print(
                f"  {'  x aekd (gradients: output) cached':<40}"
                + "".join(
                    f" {results[s][f'{AEKD_PARAMS}/cached'] / results[s]['aekd/cached']:>10.2f}x"
                    for s in args.students
                )
            )
        if "none" in args.methods:
            print(
                f"  {'  x none':<40}"
                + "".join(
                    f" {results[s][f'{AEKD_PARAMS}/cached'] / results[s]['none']:>10.2f}x"
                    for s in args.students
                )
            )

    steps = args.epochs * args.batches_per_epoch
    print(
        f"\nOne-off cost of the teacher cache ({args.train_windows} training windows) vs "
        f"running the teachers every step of a default run ({args.epochs} epochs x "
        f"{args.batches_per_epoch} batches = {steps} steps of {batch}):"
    )
    print(
        f"  {'teacher(s)':<26} {'fwd/window ms':>14} {'cache once s':>13} "
        f"{'online s':>10} {'online/cache':>13} {'cache MiB':>10}"
    )
    groups = [[n] for n in sorted(teachers)] + [sorted(teachers)]
    for group in groups:
        per_batch = sum(teacher_fwd[n] for n in group)
        once = per_batch / batch * args.train_windows
        online = per_batch * steps
        mib = (
            sum(t.numel() * 4 for n in group for k, t in cache[n].items() if k == "prediction")
            / batch
            * args.train_windows
            / 2**20
        )
        label = " + ".join(group) + (" (multi)" if len(group) > 1 else "")
        print(
            f"  {label:<26} {per_batch / batch * 1e3:>14.2f} {once:>13.1f} {online:>10.1f} "
            f"{online / once:>12.1f}x {mib:>10.1f}"
        )
    print(
        "  (per-window cost from the batch forward; cache MiB counts predictions only, "
        "sdkd_latent also stores the 'high'/'low' latents)"
    )


if __name__ == "__main__":
    main()
