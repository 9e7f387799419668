"""How much of the teacher-student gap each distillation method closes, over seeds.

On the default Navier-Stokes tensor store and the teachers the teacher pipeline trained
(``kedro run --pipeline=data`` then ``--pipeline=teacher`` with the default config), trains a
student with every method for each seed, with the distill pipeline's training settings
(``conf/base/parameters_distill.yml``), and reports test MSE (normalized units) and

    gap closed = (MSE_none - MSE_method) / (MSE_none - MSE_teacher)

where ``none`` is the same student trained on the data alone with the same seed and
``teacher`` the teacher a single-teacher method distills (the lower validation MSE). The same
share is printed on the validation split: pick the best method there, never on test.

Target (issue 4): the best method closes at least 60 % of the test gap and ``sdkd`` is never
worse than ``none``.

    python benchmarks/bench_distill_accuracy.py                   # unet, all methods, 3 seeds
    python benchmarks/bench_distill_accuracy.py --students unet resnet mlp_mixer --seeds 0
    python benchmarks/bench_distill_accuracy.py --quick           # a smoke run of seconds

Runs without Kedro or MLflow (the library only; Zarr is needed to read the store).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.distill import DistillConfig, loss_from_cache
from sdkd_pipeline.distill.teachers import (
    WithTeacherTargets,
    check_teacher_matches,
    choose_teachers,
    freeze,
    precompute_teacher_outputs,
)
from sdkd_pipeline.models import build_model
from sdkd_pipeline.pipelines.forecaster import load_forecaster
from sdkd_pipeline.training import TrainConfig, evaluate_mse, train

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["none", "output_mse", "sdkd", "sdkd_adaptive", "sdkd_latent", "aver_mkd", "aekd",
           "camkd", "sdkd_multi"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path,
                        default=ROOT / "data/05_model_input/navier_stokes.zarr")
    parser.add_argument("--teachers", type=Path, default=ROOT / "data/06_models/navier_stokes")
    parser.add_argument("--params", type=Path, default=ROOT / "conf/base/parameters_distill.yml")
    parser.add_argument("--students", nargs="+", default=["unet"])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override distill settings, e.g. lambda=2 cutoff.k=6 "
                             "training.epochs=10 (YAML values)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="2 batches x 1 epoch, 1 seed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    distill = yaml.safe_load(args.params.read_text())["distill"]
    for item in args.set:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = distill
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    training = dict(distill["training"])
    if args.quick:
        training.update(epochs=1, max_batches_per_epoch=2)
        args.seeds = args.seeds[:1]

    splits = {s: WindowDataset(args.store, s) for s in ("train", "val", "test")}
    train_set = splits["train"]
    _, _, channels, height, width = train_set.shape
    shape = {"in_frames": train_set.t_in, "out_frames": train_set.t_out, "channels": channels,
             "height": height, "width": width}
    checkpoints = {p.stem: torch.load(p, weights_only=True, map_location="cpu")
                   for p in sorted(args.teachers.glob("*.pt"))}
    teachers = {}
    for name, ckpt in checkpoints.items():
        check_teacher_matches(name, ckpt, shape, train_set.mean, train_set.std)
        teachers[name] = freeze(load_forecaster(ckpt))
    val_losses = {n: float(c["best_val_loss"]) for n, c in checkpoints.items()}
    teacher_mse = {n: {s: evaluate_mse(m, splits[s], batch_size=32, device="cpu")
                       for s in ("val", "test")} for n, m in teachers.items()}
    print(f"store {args.store} (train/val/test windows {len(train_set)}/{len(splits['val'])}/"
          f"{len(splits['test'])}); teachers: " + ", ".join(
              f"{n} val {v['val']:.4f} test {v['test']:.4f}" for n, v in teacher_mse.items()))

    t0 = time.perf_counter()
    latents = any(DistillConfig.from_params(m, distill).needs_latents for m in args.methods)
    cache = precompute_teacher_outputs(teachers, train_set, latents=latents, batch_size=32,
                                       device=torch.device("cpu"))
    cached_train = WithTeacherTargets(train_set, cache)
    print(f"teacher outputs cached in {time.perf_counter() - t0:.1f} s")

    results: list[dict] = []
    for student in args.students:
        for seed in args.seeds:
            for method in args.methods:
                cfg = DistillConfig.from_params(method, distill)
                chosen = choose_teachers(cfg, val_losses)
                t_start = time.perf_counter()
                mse = _fit(student, method, cfg, chosen, teachers, cache, cached_train, splits,
                           shape, distill, training, seed)
                results.append({"student": student, "seed": seed, "method": method,
                                "teachers": chosen, **mse,
                                "seconds": time.perf_counter() - t_start})
                print(f"{student:9s} seed {seed} {method:14s} val {mse['val']:.4f} "
                      f"test {mse['test']:.4f} ({results[-1]['seconds']:.0f} s)", flush=True)

    best_teacher = min(val_losses, key=val_losses.get)
    _report(results, teacher_mse, best_teacher, args.students)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "teachers": teacher_mse,
                                         "distill": distill}, indent=1, default=str))


def _fit(student, method, cfg, chosen, teachers, cache, cached_train, splits, shape, distill,
         training, seed) -> dict[str, float]:
    torch.manual_seed(seed)
    model = build_model(student, **shape, **(distill.get(student) or {}))
    train_cfg = TrainConfig.from_dict({**training, "seed": seed, "device": "cpu"})
    loss = None
    train_data = splits["train"]
    if cfg.needs_teachers:
        loss, train_data, _ = loss_from_cache(
            cfg, {n: teachers[n] for n in chosen}, cache, splits["train"], model,
            height=shape["height"], width=shape["width"])
    with tempfile.TemporaryDirectory() as out:
        train(model, train_data, splits["val"], train_cfg, out_dir=out, loss=loss,
              progress=False)
    return {s: evaluate_mse(model, splits[s], batch_size=32, device="cpu")
            for s in ("val", "test")}


def _report(results, teacher_mse, best_teacher, students) -> None:
    print("\ngap closed = (MSE_none - MSE_method) / (MSE_none - MSE_teacher), same seed; "
          f"teacher for the gap: {best_teacher} (lowest validation MSE)")
    header = (f"{'student':9s} {'method':14s} {'test MSE':>17s} {'test gap closed':>17s} "
              f"{'val gap closed':>17s} {'worse than none':>16s}")
    print(header)
    print("-" * len(header))
    for student in students:
        rows = [r for r in results if r["student"] == student]
        base = {r["seed"]: r for r in rows if r["method"] == "none"}
        methods = list(dict.fromkeys(r["method"] for r in rows))
        best = (None, -float("inf"))
        for method in methods:
            mine = [r for r in rows if r["method"] == method and r["seed"] in base]
            test = [r["test"] for r in mine]
            # the share is only meaningful while the teacher is better than the baseline: a
            # student that already beats its teacher has no gap to close (NaN, and a warning)
            closed = {split: [_share(base[r["seed"]][split], r[split],
                                     teacher_mse[best_teacher][split])
                              for r in mine] for split in ("val", "test")}
            worse = sum(r["test"] > base[r["seed"]]["test"] for r in mine)
            print(f"{student:9s} {method:14s} {_mean_sd(test, 4):>17s} "
                  f"{_mean_sd([100 * c for c in closed['test']], 1, '%'):>17s} "
                  f"{_mean_sd([100 * c for c in closed['val']], 1, '%'):>17s} "
                  f"{worse:>9d} of {len(mine)}")
            val_mse = statistics.mean(r["val"] for r in mine)
            if method != "none" and -val_mse > best[1]:
                best = (method, -val_mse)
        if best[0] is not None:
            print(f"{student}: best method on validation (lowest val MSE): {best[0]}")
        beaten = sorted({r["seed"] for r in base.values()
                         if r["test"] <= teacher_mse[best_teacher]["test"]})
        if beaten:
            print(f"{student}: WARNING: without distillation the student already beats the "
                  f"teacher on test (seeds {beaten}); there is no gap to close, and "
                  "distillation pulls it toward a worse model")


def _share(baseline: float, method: float, teacher: float) -> float:
    gap = baseline - teacher
    return (baseline - method) / gap if gap > 0 else float("nan")


def _mean_sd(values, digits, unit=""):
    values = [v for v in values if v == v]  # NaN: no gap on that seed
    if not values:
        return "-"
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f}{unit} ± {sd:.{digits}f}"


if __name__ == "__main__":
    main()
