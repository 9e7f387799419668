"""A time-boxed reproduction on one GPU: turbulent NS data, paper-sized teachers, distillation.

The laptop default trains short teachers on nearly laminar flow (nu = 1e-3), where the paper's
claims can barely be tested. This script runs the same library code (no Kedro, MLflow, Zarr or
Dask: a bare GPU machine has none of them) at a scale a GPU reaches in minutes:

1. data: FNO-style vorticity at nu = 1e-5 (solved at 128^2, recorded at 64^2, dt 1e-4), the
   trajectory count cut to fit the stage's time budget after a timing probe;
2. teachers: ST-AlterNet and SimVP at the paper env's sizes (~11 M parameters), bf16 autocast,
   epochs chosen from a timing probe to fit the budget;
3. spectral: the data's and each teacher's latent spectra, slopes and the conv/attention check;
4. distillation: students at the paper env's sizes (0.3-0.7 M) with ``none``, ``sdkd`` and a
   multi-teacher method, several seeds, the share of the gap closed on test and validation;
5. evaluation: de-normalized test metrics (metrics.py, the README's definitions) and CUDA
   latency at batch 1 and 32, speedup of each student against each teacher.

Every stage writes ``results.json`` (and the spectra figure) into ``--out`` as soon as it ends,
so a run cut short still reports what it finished. A stage that fails is recorded with its
error and the script goes on where it can.

    python benchmarks/gpu_reproduction.py --out /tmp/repro              # GPU, ~8 minutes
    python benchmarks/gpu_reproduction.py --quick --device cpu --out /tmp/repro   # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import torch
import yaml

from sdkd_pipeline.data.sources import navier_stokes as ns
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.distill import DistillConfig, loss_from_cache
from sdkd_pipeline.distill.teachers import (
    choose_teachers,
    freeze,
    precompute_teacher_outputs,
)
from sdkd_pipeline.evaluation import evaluate_models, measure_latency, test_data_range
from sdkd_pipeline.metrics import gap_closed
from sdkd_pipeline.models import build_model
from sdkd_pipeline.spectral_analysis import SpectralConfig, analyse_spectra
from sdkd_pipeline.training import TrainConfig, evaluate_mse, train

ROOT = Path(__file__).resolve().parents[1]


def _parameters(env: str, stage: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / env / f"parameters_{stage}.yml").read_text())[stage]


# the paper env's model sizes, read from its config so the two cannot drift apart
_PAPER_TEACHER, _PAPER_DISTILL = _parameters("paper", "teacher"), _parameters("paper", "distill")
TEACHERS = {name: _PAPER_TEACHER[name] for name in ("st_alternet", "simvp")}
STUDENTS = {name: _PAPER_DISTILL[name] for name in ("unet", "resnet", "mlp_mixer")}
QUICK_TEACHERS = {
    "st_alternet": {"hidden": 16, "depth": 1, "heads": 2, "frame_hidden": 4},
    "simvp": {"frame_hidden": 4, "hidden": 16, "depth": 2, "mlp_ratio": 2.0},
}
QUICK_STUDENTS = {
    "unet": {"hidden": 8, "base_width": 8, "levels": 2},
    "resnet": {"hidden": 8, "base_width": 8, "depth": 2, "downsample_steps": 2},
    "mlp_mixer": {"hidden": 8, "depth": 2, "patch": 4},
}
# the laptop's distillation settings (alpha 1) with the paper env's cutoff, and alpha 0.25 as a
# variant that weighs the high band more
_BASE_DISTILL = _parameters("base", "distill")
DISTILL = {
    **_BASE_DISTILL,
    "cutoff": {**_BASE_DISTILL["cutoff"], **_PAPER_DISTILL["cutoff"]},
    "variants": {**_BASE_DISTILL.get("variants", {}),
                 "sdkd_a025": {"method": "sdkd", "alpha": 0.25}},
}


# DataLoader workers of every training run (set from --num-workers): on the H200 the small
# students were bound by the main process assembling batches (an epoch took ~2-4 s)
WORKERS = [0]


class Deadline:
    def __init__(self, seconds: float):
        self.start = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--budget-s", type=float, default=520.0, help="whole script")
    p.add_argument("--trajectories", type=int, default=384, help="upper bound")
    p.add_argument("--viscosity", type=float, default=1e-5)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--dt", type=float, default=1e-4)
    p.add_argument("--t-final", type=float, default=30.0)
    p.add_argument("--students", nargs="+", default=["unet", "mlp_mixer"])
    p.add_argument("--methods", nargs="+", default=["none", "sdkd", "sdkd_a025", "aekd"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke test")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader workers (default: 4 on CUDA, 0 on the CPU)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    WORKERS[0] = args.num_workers if args.num_workers is not None else (
        4 if device.type == "cuda" else 0)
    clock = Deadline(args.budget_s)
    teachers_cfg = QUICK_TEACHERS if args.quick else TEACHERS
    students_cfg = QUICK_STUDENTS if args.quick else STUDENTS
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()},
        "stages": {},
    }

    def save() -> None:
        tmp = args.out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=1, default=str))
        os.replace(tmp, args.out / "results.json")

    def stage(name: str, share: float):
        """Run a stage with ``share`` of the time left; record its time and any error."""
        def wrap(fn):
            budget = clock.left() * share
            start = time.perf_counter()
            print(f"\n== {name} (budget {budget:.0f} s, {clock.left():.0f} s left)", flush=True)
            try:
                out = fn(budget)
                results["stages"][name] = {"seconds": time.perf_counter() - start, **(out or {})}
            except Exception as error:  # record and go on: partial results still count
                traceback.print_exc()
                results["stages"][name] = {"seconds": time.perf_counter() - start,
                                           "error": f"{type(error).__name__}: {error}"}
            save()
            return results["stages"][name]
        return wrap

    state: dict = {}

    # ---- 1. data --------------------------------------------------------------------------
    @stage("data", 0.2)
    def _data(budget: float) -> dict:
        started = time.perf_counter()
        # the first setting whose probed cost fits the budget: turbulent (nu 1e-5, 128^2 solve)
        # with fewer trajectories before a less turbulent flow
        candidates = [
            ns.NavierStokesConfig(n_trajectories=n, resolution=args.resolution,
                                  record_resolution=64, viscosity=args.viscosity, dt=args.dt,
                                  t_final=args.t_final, device=str(device), batch_size=n,
                                  on_blowup="drop")
            for n in (args.trajectories, args.trajectories // 2, args.trajectories // 4)
        ] + [
            ns.NavierStokesConfig(n_trajectories=n, resolution=64, record_resolution=64,
                                  viscosity=nu, dt=None, t_final=args.t_final,
                                  device=str(device), batch_size=n)
            for nu, n in ((1e-4, 2 * args.trajectories), (1e-4, args.trajectories),
                          (1e-3, args.trajectories))
        ]
        if args.quick:
            candidates = [ns.NavierStokesConfig(
                n_trajectories=8, resolution=32, record_resolution=32, viscosity=1e-3, dt=None,
                t_final=14.0, device=str(device))]
        probes = []
        for cfg in candidates:
            cfg = cfg.validate()
            steps = cfg.n_records * cfg.steps_per_record
            per_step = _probe_solver(cfg, device)
            probes.append({"viscosity": cfg.viscosity, "resolution": cfg.resolution,
                           "trajectories": cfg.n_trajectories, "steps": steps,
                           "ms_per_step": per_step * 1e3, "estimate_s": per_step * steps})
            print(f"probe {probes[-1]}", flush=True)
            if per_step * steps <= 0.8 * (budget - (time.perf_counter() - started)) \
                    or args.quick:
                break
        else:
            raise RuntimeError(f"no NS setting fits the data budget of {budget:.0f} s: {probes}")
        n = cfg.n_trajectories
        start = time.perf_counter()
        raw = ns.generate_navier_stokes(cfg, progress=False)
        gen_s = time.perf_counter() - start
        t_in = t_out = 3 if args.quick else 10
        tensors = build_tensor_dataset(
            raw, split=SplitConfig(train=0.75, val=0.125, test=0.125),
            window=WindowConfig(t_in, t_out),
        )
        state["sets"] = {s: WindowDataset(tensors, s) for s in ("train", "val", "test")}
        train_set = state["sets"]["train"]
        _, _, channels, height, width = train_set.shape
        state["shape"] = {"in_frames": t_in, "out_frames": t_out, "channels": channels,
                          "height": height, "width": width}
        state["viscosity"] = cfg.viscosity
        out = {"probes": probes, "trajectories": n, "viscosity": cfg.viscosity,
               "resolution": cfg.resolution,
               "dt": cfg.resolved_dt, "t_final": cfg.t_final, "steps": steps,
               "ms_per_step_probe": per_step * 1e3, "generate_s": gen_s,
               "windows": {s: len(d) for s, d in state["sets"].items()},
               "vorticity_abs_max": float(abs(raw["fields"]).max())}
        print(json.dumps(out), flush=True)
        return out

    if "sets" not in state:
        save()
        raise SystemExit("no data: nothing else can run")

    sets, shape = state["sets"], state["shape"]
    batch = 8 if args.quick else 32

    # ---- 2. teachers ----------------------------------------------------------------------
    teachers: dict[str, torch.nn.Module] = {}
    teacher_val: dict[str, float] = {}
    teacher_mse: dict[str, dict[str, float]] = {}
    for index, name in enumerate(teachers_cfg):
        # of the time left: ~22 % to the first teacher, ~28 % of the rest to the second
        @stage(f"teacher_{name}", 0.22 if index == 0 else 0.28)
        def _teacher(budget: float, name=name) -> dict:
            torch.manual_seed(0)
            model = build_model(name, **shape, **teachers_cfg[name])
            fit = _fit_epochs(model, sets, batch, budget, device, lr=1e-3)
            teachers[name] = freeze(fit.pop("model"))
            teacher_val[name] = fit["best_val_loss"]
            teacher_mse[name] = {s: evaluate_mse(teachers[name], sets[s], 64, device)
                                 for s in ("val", "test")}
            out = {"params": sum(q.numel() for q in model.parameters()), **fit,
                   "mse": teacher_mse[name]}
            print(json.dumps(out, default=str), flush=True)
            return out

    if not teachers:
        save()
        raise SystemExit("no teacher trained")

    # ---- 3. spectral ----------------------------------------------------------------------
    @stage("spectral", 0.06)
    def _spectral(budget: float) -> dict:
        cfg = SpectralConfig(split="test", max_windows=64, batch_size=16,
                             data_fit_range=(3.0, 12.0) if args.quick else (3.0, 20.0),
                             latent_fit_range=(2.0, 6.0))
        out = {}
        for name, model in teachers.items():
            summary, figure = analyse_spectra(model, sets["test"], cfg, device=device,
                                              title=f"NS nu={state['viscosity']:g}: {name}")
            figure.savefig(args.out / f"spectra_{name}.png", dpi=100)
            out[name] = {
                key: {f: value[f] for f in ("slope", "slope_stderr", "r2", "fit_k_min", "fit_k_max",
                                            "high_band_fraction", "centroid") if f in value}
                for key, value in summary["spectra"].items()}
            out[name]["branch_check"] = summary["branch_check"]
        print(json.dumps(out, default=str), flush=True)
        return out

    # ---- 4. distillation ------------------------------------------------------------------
    students: dict[str, torch.nn.Module] = {}
    runs: list[dict] = []

    @stage("distill", 0.85)
    def _distill(budget: float) -> dict:
        start = time.perf_counter()
        cache = precompute_teacher_outputs(
            teachers, sets["train"], latents=False, batch_size=64, device=device,
            autocast_dtype=torch.bfloat16 if device.type == "cuda" else None)
        cache_s = time.perf_counter() - start
        plan = [(student, seed, method) for seed in args.seeds for student in args.students
                for method in args.methods]
        # every method and seed of a student trains for the same number of epochs: probe one
        # epoch of the plain student, allow 25 % for the teacher terms, and split the budget
        per_run = (budget - (time.perf_counter() - start)) / len(plan) * 0.85
        epochs = {}
        for student in args.students:
            torch.manual_seed(0)
            model = build_model(student, **shape, **students_cfg[student])
            probe = _fit_epochs(model, sets, batch, 0.0, device, lr=1e-3, epochs=2)
            epochs[student] = max(1, min(60, int(per_run / (1.25 * probe["epoch_s"]))))
            per_run -= probe["seconds"] / len(plan) * len(args.students)
        print(f"epochs per student run: {epochs}", flush=True)
        for student, seed, method in plan:
            if time.perf_counter() - start > budget:
                print(f"out of time before {student} seed {seed} {method}", flush=True)
                break
            cfg = DistillConfig.from_params(method, DISTILL)
            chosen = choose_teachers(cfg, teacher_val)
            torch.manual_seed(seed)
            model = build_model(student, **shape, **students_cfg[student])
            loss, data = None, sets["train"]
            if cfg.needs_teachers:
                loss, data, _ = loss_from_cache(
                    cfg, {n: teachers[n] for n in chosen}, cache, sets["train"], model,
                    height=shape["height"], width=shape["width"])
            fit = _fit_epochs(model, {**sets, "train": data}, batch, 0.0, device, lr=1e-3,
                              seed=seed, loss=loss, epochs=epochs[student])
            model = fit.pop("model")
            mse = {s: evaluate_mse(model, sets[s], 64, device) for s in ("val", "test")}
            if seed == args.seeds[0]:
                students[f"{student}/{method}"] = freeze(model)
            runs.append({"student": student, "seed": seed, "method": method,
                         "teachers": chosen, "mse": mse, **fit})
            print(f"{student:9s} seed {seed} {method:10s} val {mse['val']:.5f} "
                  f"test {mse['test']:.5f} epochs {fit['epochs']} val curve "
                  f"{[round(v, 4) for v in fit['val_curve']]} "
                  f"({fit['seconds']:.0f} s)", flush=True)
            results["distill_runs"] = runs  # kept even if the stage fails later
            save()
        best = min(teacher_val, key=teacher_val.get)
        return {"cache_s": cache_s, "epochs": epochs, "runs": runs, "best_teacher": best,
                "summary": _gap_summary(runs, teacher_mse[best])}

    # ---- 5. evaluation --------------------------------------------------------------------
    @stage("evaluate", 1.0)
    def _evaluate(budget: float) -> dict:
        models = {**teachers, **students}
        data_range = test_data_range(sets["test"])
        metrics = evaluate_models(models, sets["test"], data_range, batch_size=64,
                                  device=device)
        sample = (shape["in_frames"], shape["channels"], shape["height"], shape["width"])
        latency = {name: measure_latency(model, sample, (1, 32), repeats=20, warmup=5,
                                         device=device)
                   for name, model in models.items()}
        rows = {}
        for name, m in metrics.items():
            rows[name] = {"mse": m.mse, "mae": m.mae, "psnr": m.psnr, "ssim": m.ssim,
                          "band_mse": m.band_mse,
                          "latency_ms": {str(b): v for b, v in latency[name].items()},
                          "params": sum(q.numel() for q in models[name].parameters())}
        for name in students:
            rows[name]["speedup"] = {
                t: {str(b): latency[t][b] / latency[name][b] for b in (1, 32)}
                for t in teachers}
        print(json.dumps(rows, indent=1, default=str), flush=True)
        return {"rows": rows}

    results["total_s"] = clock.elapsed()
    save()
    print(f"\ndone in {clock.elapsed():.0f} s; results in {args.out / 'results.json'}")


def _probe_solver(cfg: ns.NavierStokesConfig, device: torch.device) -> float:
    """Seconds per step for all of ``cfg``'s trajectories at once (after a warm-up)."""
    solver = ns.VorticitySolver(cfg.resolution, viscosity=cfg.viscosity, dt=cfg.resolved_dt,
                                device=device, dtype=torch.float32)
    w0 = ns.sample_initial_vorticity(cfg.resolution, range(cfg.n_trajectories), seed=cfg.seed)
    state = solver.advance(solver.to_state(w0), 3)
    _sync(device)
    start = time.perf_counter()
    solver.advance(state, 50)
    _sync(device)
    return (time.perf_counter() - start) / 50


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fit_epochs(model, sets, batch, budget, device, *, lr, seed=0, loss=None,
                max_epochs=60, epochs=None) -> dict:
    """Train ``model`` for ``epochs``, or for as many full epochs as ``budget`` seconds allow
    (from a 1-epoch probe at the same settings), cosine schedule with warm-up; returns the
    fit's figures."""
    steps_per_epoch = max(1, len(sets["train"]) // batch)

    def run(epochs: int) -> tuple[torch.nn.Module, object, float]:
        torch.manual_seed(seed)
        cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, schedule="cosine",
                          warmup_steps=min(100, steps_per_epoch * epochs // 10),
                          grad_clip=1.0, patience=None, seed=seed, device=str(device),
                          precision="auto", val_batch_size=64, num_workers=WORKERS[0])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            result = train(model, sets["train"], sets["val"], cfg, out_dir=out, loss=loss,
                           progress=False)
        return model, result, time.perf_counter() - start

    if epochs is not None:
        model, result, seconds = run(epochs)
        return _fit_figures(model, result, seconds, device)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # 2 epochs: the first pays for start-up (CUDA context, cuDNN autotuning), the second is
    # what every further epoch costs
    _, probe, probe_s = run(2)
    per_epoch = max(probe.history[-1]["time_s"], 1e-3)
    epochs = max(2, min(max_epochs, int((budget - probe_s) / per_epoch)))
    if epochs > 2:
        model.load_state_dict(initial)  # start again, with the schedule of the whole run
        model, result, seconds = run(epochs)
    else:
        result, seconds = probe, 0.0
    return _fit_figures(model, result, seconds + probe_s, device)


def _fit_figures(model, result, seconds, device) -> dict:
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else float("nan"))
    return {"model": model, "epochs": result.epochs_run, "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss, "seconds": seconds,
            "samples_per_s": result.samples_per_second, "peak_gib": peak,
            "val_curve": [h.get("val_loss") for h in result.history],
            "epoch_s": result.history[-1]["time_s"]}


def _gap_summary(runs: list[dict], teacher: dict[str, float]) -> dict:
    """Mean test MSE and share of the gap closed (test and val) per student and method."""
    out: dict = {}
    base = {(r["student"], r["seed"]): r["mse"] for r in runs if r["method"] == "none"}
    for student in dict.fromkeys(r["student"] for r in runs):
        for method in dict.fromkeys(r["method"] for r in runs if r["student"] == student):
            mine = [r for r in runs if r["student"] == student and r["method"] == method
                    and (student, r["seed"]) in base]
            if not mine:
                continue
            entry = {"test_mse": [r["mse"]["test"] for r in mine],
                     "seeds": [r["seed"] for r in mine]}
            for split in ("val", "test"):
                # a baseline already better than the teacher has no gap to close: NaN
                shares = [gap_closed(r["mse"][split], base[(student, r["seed"])][split],
                                     teacher[split])
                          if base[(student, r["seed"])][split] > teacher[split] else math.nan
                          for r in mine]
                entry[f"{split}_gap_closed"] = shares
                finite = [s for s in shares if s is not None and math.isfinite(s)]
                entry[f"{split}_gap_closed_mean"] = statistics.mean(finite) if finite else None
            out[f"{student}/{method}"] = entry
    return out


if __name__ == "__main__":
    main()
