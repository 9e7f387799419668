"""The distillation study: converged teachers on turbulent data, every method, seeds, CIs.

One command trains everything the claim needs and writes the results with the command and the
commit that made them::

    python benchmarks/study.py --profile cpu     # 2 CPU cores, at most ~90 minutes
    python benchmarks/study.py --profile gpu     # paper-sized teachers on one GPU
    python benchmarks/study.py --profile quick   # tiny sizes, a smoke test

Sizes live in ``benchmarks/study.yml``. The stages:

1. **data**: Navier-Stokes at the profile's viscosity from the built-in solver (solved finer than
   recorded), split by trajectory; the data spectrum's power-law fit and band shares;
2. **teachers**: each trained until validation stops improving (early stopping, the reason
   recorded), one seed;
3. **baselines**: persistence and climatology (``sdkd_pipeline.evaluation.baselines``);
4. **students**: every student x method x seed with the same budget (epochs, batches per epoch,
   early stopping); ``none_matched`` is ``none`` for the whole budget;
5. **report**: test MSE / MAE / SSIM (de-normalized, ``sdkd_pipeline.evaluation.metrics``; SSIM in
   the library's default convention, recorded as ``meta.ssim_convention``) mean and 95 %
   confidence interval over seeds (Student t), gap closed = (none - student) / (none - teacher)
   paired by seed with the teacher of lower *validation* MSE, paired differences against
   ``none`` and ``output_mse``, error per wavenumber band, and figures.
6. **rollouts** (a profile with ``rollout: {factor, max_windows}``, e.g. ``cpu_rollout``): every
   model fed its own forecasts back for ``factor`` x T_out frames on the test split, per lead
   time MSE, SSIM and the band energy ratio, mean and CI over seeds (``study_rollout.py``).

Outputs (``--out``, default ``benchmarks/results``): ``study_<device>.csv`` (one row per
trained model), ``study_<device>.json`` (everything, with the command, commit, settings and wall
times), ``study_<device>.md`` (the tables) and ``study_<device>_*.png``. Work files (data,
checkpoints, finished runs) go to ``--work`` (default ``data/study/<profile>``): a killed study
started again skips what it finished. Runs with the library alone: no Kedro, MLflow, Zarr or
Dask needed, so the same command runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import study_rollout
import torch
import yaml
from study_stats import fmt, mean_ci

from sdkd_pipeline.data.cf import channel_metadata
from sdkd_pipeline.data.sources import navier_stokes as ns
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.distill import DistillConfig
from sdkd_pipeline.distill.setup import DistillCache, prepare_distillation
from sdkd_pipeline.distill.teachers import choose_teachers, freeze
from sdkd_pipeline.evaluation import evaluate_models, test_data_range
from sdkd_pipeline.evaluation.baselines import Climatology, Persistence
from sdkd_pipeline.evaluation.metrics import DEFAULT_SSIM_CONVENTION
from sdkd_pipeline.evaluation.rollout import evaluate_rollouts
from sdkd_pipeline.models import build_model
from sdkd_pipeline.models.complexity import count_parameters
from sdkd_pipeline.spectral import BandSplit, radial_energy_spectrum
from sdkd_pipeline.spectral.analysis import SpectralConfig, analyse_spectra, slope_summary
from sdkd_pipeline.training import TrainConfig, autocast_dtype, seed_everything, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "benchmarks" / "study.yml"
SINGLE = ("output_mse", "sdkd", "sdkd_latent")
# the SSIM convention of every evaluation here; the committed study_cpu.* predate the option and
# used "torchmetrics" (their JSON has no meta.ssim_convention)
SSIM_CONVENTION = DEFAULT_SSIM_CONVENTION
CSV_COLUMNS = [
    "role",
    "model",
    "method",
    "seed",
    "function_matching",
    "val_mse",
    "test_mse",
    "test_mae",
    "test_ssim",
    "ssim_convention",
    "test_band_low",
    "test_band_mid",
    "test_band_high",
    "params",
    "steps",
    "epochs",
    "best_epoch",
    "stopped_early",
    "seconds",
]
ROLLOUT_COLUMNS = ["rollout_behind_persistence_lead", "rollout_final_mse"]


# --------------------------------------------------------------------------------------------
# configuration


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_profile(path: Path, name: str) -> dict:
    profiles = yaml.safe_load(path.read_text())
    if name not in profiles or name == "defaults":
        known = ", ".join(k for k in profiles if k != "defaults")
        raise SystemExit(f"{path}: no profile {name!r} (profiles: {known})")
    cfg = merge(profiles.get("defaults") or {}, profiles[name])
    # a profile that names its own models replaces the default set rather than adding to it
    for part in ("teachers", "students"):
        if "models" in (profiles[name].get(part) or {}):
            cfg[part]["models"] = {
                model: merge((profiles["defaults"][part]["models"] or {}).get(model, {}), value)
                if value
                else {}
                for model, value in profiles[name][part]["models"].items()
            }
    return cfg


def config_key(*parts: Any) -> str:
    """A digest of what defines a run, so a finished run is reused only for the same settings."""
    import hashlib

    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def device_label(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    for tag in ("h200", "h100", "a100", "l40", "a10", "v100", "t4"):
        if tag in name:
            return tag
    return "cuda"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --------------------------------------------------------------------------------------------
# stages


STUDENT_RUN_PREFIX = "student-run-"


def _run_key(row: dict) -> tuple:
    """What identifies a trained model in ``runs.jsonl``: role, model, method, seed."""
    return row["role"], row["model"], row["method"], row["seed"]


class Study:
    def __init__(self, cfg: dict, args: argparse.Namespace) -> None:
        self.cfg, self.args = cfg, args
        requested = cfg.get("device", "auto")
        if requested == "auto":
            requested = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(requested)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"profile {args.profile!r} asks for CUDA and there is none here")
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg["threads"]))
        self.label = args.label or device_label(self.device)
        self.work = Path(args.work or ROOT / "data" / "study" / args.profile)
        self.work.mkdir(parents=True, exist_ok=True)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.runs_path = self.work / "runs.jsonl"
        # a killed study leaves its student's temporary run folder behind: nothing reads it
        for stale in sorted(self.work.glob(f"{STUDENT_RUN_PREFIX}*")):
            shutil.rmtree(stale, ignore_errors=True)
            print(f"removed {stale} (the run folder of an interrupted study)", flush=True)
        self.done = self._finished_runs()
        self.cache = DistillCache()
        self.times: dict[str, float] = {}
        # long autoregressive rollouts of every model (study_rollout.py); None: none
        self.rollout_cfg = cfg.get("rollout") or None

    def _finished_runs(self) -> dict[tuple, dict]:
        done = {}
        if self.runs_path.exists() and not self.args.fresh:
            for line in self.runs_path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    # rows written before the field existed were scored with torchmetrics'
                    row.setdefault("ssim_convention", "torchmetrics")
                    done[_run_key(row)] = row
        elif self.runs_path.exists():
            self.runs_path.unlink()
        return done

    def _record(self, row: dict) -> dict:
        with open(self.runs_path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        self.done[_run_key(row)] = row
        return row

    # -- data ----------------------------------------------------------------------------

    def data(self) -> None:
        started = time.perf_counter()
        data_cfg = self.cfg["data"]
        path = self.work / "tensors.nc"
        # a file source (e.g. the ERA5 sample: data.dataset + data.source, as the project's
        # <dataset>.source) or else the Navier-Stokes solver (data.generate)
        source = data_cfg.get("source")
        gen = {} if source else dict(data_cfg["generate"])
        if not source:
            gen["device"] = str(self.device)
        forcings = tuple(data_cfg.get("forcings") or ())
        key = json.dumps(
            {"generate": gen, "window": data_cfg["window"], "split": data_cfg["split"]}
            | ({"source": source, "forcings": list(forcings)} if source else {}),
            sort_keys=True,
        )
        key_path = self.work / "tensors.key"
        self.data_key = key
        if (
            path.exists()
            and key_path.exists()
            and key_path.read_text() == key
            and not self.args.fresh
        ):
            import xarray as xr

            tensors = xr.open_dataset(path).load()
            print(f"data: reusing {path}", flush=True)
        else:
            if source:
                from sdkd_pipeline.data.sources import load_raw

                raw = load_raw(data_cfg["dataset"], source, progress=False)
            else:
                raw = ns.generate_navier_stokes(
                    ns.NavierStokesConfig.from_params(gen), progress=False
                )
            tensors = build_tensor_dataset(
                raw,
                split=SplitConfig(**data_cfg["split"]),
                window=WindowConfig(**data_cfg["window"]),
                forcings=forcings,
            ).compute()
            tmp = path.with_suffix(".tmp.nc")
            tensors.to_netcdf(tmp)
            os.replace(tmp, path)
            key_path.write_text(key)
            (self.work / "tensors.seconds").unlink(missing_ok=True)
        self.tensors = tensors
        self.sets = {s: WindowDataset(tensors, s) for s in ("train", "val", "test")}
        train_set = self.sets["train"]
        self.shape = train_set.model_shape
        self.data_range = test_data_range(self.sets["test"], 32)
        self.data_info = {
            "windows": {s: len(d) for s, d in self.sets.items()},
            "seconds": self._data_seconds(started),
            "shape": list(train_set.shape),
            "generate": gen,
            **({"dataset": data_cfg["dataset"], "source": source} if source else {}),
            "forcings": list(train_set.forcing_channels),
            "units": channel_units(tensors),
            "window": data_cfg["window"],
            "split": data_cfg["split"],
            "spectrum": self._spectrum(data_cfg.get("fit_range", [3, 12])),
        }
        self.times["data"] = time.perf_counter() - started
        print(
            f"data: {self.data_info['windows']} windows, {self.data_info['spectrum']['verdict']}"
            f" ({self.times['data']:.0f} s)",
            flush=True,
        )

    def _data_seconds(self, started: float) -> float:
        """Seconds that making the data took (recorded once, so a resumed study reports the
        cost of a fresh one)."""
        path = self.work / "tensors.seconds"
        if path.exists():
            return float(path.read_text())
        seconds = time.perf_counter() - started
        path.write_text(str(seconds))
        return seconds

    def _spectrum(self, fit_range) -> dict:
        test = self.sets["test"]
        frames = torch.stack([test[i][1] for i in range(len(test))])  # normalized truth
        k, energy = radial_energy_spectrum(test.denormalize(frames))
        fit = slope_summary(k, energy, fit_range)
        split = BandSplit.log_spaced(*frames.shape[-2:], 3)
        bands = split.band_energy(frames.float()).reshape(-1, 3).sum(0)
        shares = (bands / bands.sum()).tolist()
        return {
            **{
                key: fit[key]
                for key in (
                    "power_law",
                    "verdict",
                    "slope",
                    "slope_stderr",
                    "raw_slope",
                    "r2",
                    "exp_r2",
                    "fit_k_min",
                    "fit_k_max",
                )
            },
            "band_cutoffs": list(split.cutoffs),
            "energy_share": dict(zip(("low", "mid", "high"), shares, strict=True)),
        }

    # -- training ------------------------------------------------------------------------

    def _train(
        self,
        name: str,
        model_cfg: dict,
        training: dict,
        seed: int,
        *,
        loss=None,
        train_data=None,
        out_dir: Path,
    ) -> tuple[torch.nn.Module, dict]:
        seed_everything(seed)
        model = build_model(name, **self.shape, **model_cfg)
        cfg = TrainConfig.from_params({**training, "seed": seed, "device": str(self.device)})
        started = time.perf_counter()
        result = train(
            model,
            train_data or self.sets["train"],
            self.sets["val"],
            cfg,
            out_dir=out_dir,
            loss=loss,
            progress=False,
        )
        samples = sum(h.get("samples", 0) for h in result.history)
        steps = int(round(samples / cfg.batch_size)) if samples else 0
        reason = (
            f"early stop: no validation improvement for {cfg.patience} epochs"
            if result.stopped_early
            else f"budget: {cfg.epochs} epochs"
        )
        return model, {
            "steps": steps,
            "epochs": result.epochs_run,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "stop_reason": reason,
            "val_mse_normalized": result.best_val_loss,
            "train_seconds": time.perf_counter() - started,
            # the last epoch's loss diagnostics: band weights w_band<b>, band
            # distances kd_band<b>, the latent term's share, teacher weights
            "last_epoch": {
                k: v
                for k, v in (result.history[-1] if result.history else {}).items()
                if k.startswith(("train_w_", "train_kd", "train_latent"))
            },
        }

    def _metrics(self, modules: dict[str, torch.nn.Module]) -> dict[str, dict]:
        out = {}
        for split in ("val", "test"):
            data_range = (
                self.data_range if split == "test" else test_data_range(self.sets[split], 32)
            )
            metrics = evaluate_models(
                modules,
                self.sets[split],
                data_range,
                batch_size=self.cfg["evaluate"]["batch_size"],
                device=self.device,
                ssim_convention=SSIM_CONVENTION,
            )
            for key, m in metrics.items():
                out.setdefault(key, {})[split] = m
        return out

    def _rollouts(self, modules: dict[str, torch.nn.Module]) -> dict[str, dict]:
        """``{key: row["rollout"]}`` for ``modules`` (``model/method`` keys) and the baselines
        (``persistence/baseline``, ``climatology/baseline``); ``{}`` without ``rollout`` in the
        profile or when the test trajectories are too short for it (said once)."""
        if not self.rollout_cfg:
            return {}
        result = evaluate_rollouts(
            modules,
            self.tensors,
            factor=int(self.rollout_cfg.get("factor", 5)),
            max_windows=int(self.rollout_cfg.get("max_windows", 64)),
            batch_size=self.cfg["evaluate"]["batch_size"],
            data_range=self.data_range,
            device=self.device,
            ssim_convention=SSIM_CONVENTION,
        )
        if result.skipped:
            if not getattr(self, "_rollout_said", False):
                print(f"rollouts skipped: {result.skipped}", flush=True)
                self._rollout_said = True
            return {}
        return {
            key: study_rollout.compact(curves, result.horizon, result.t_out)
            for key, curves in result.curves.items()
        }

    def _row(self, role, model, method, seed, fm, metrics, info, params, seconds) -> dict:
        test, val = metrics["test"], metrics["val"]
        return {
            "role": role,
            "model": model,
            "method": method,
            "seed": seed,
            "function_matching": fm,
            "val_mse": val.mse,
            "test_mse": test.mse,
            "test_mae": test.mae,
            "test_ssim": test.ssim,
            "ssim_convention": SSIM_CONVENTION,
            "test_band_low": test.band_mse["low"],
            "test_band_mid": test.band_mse["mid"],
            "test_band_high": test.band_mse["high"],
            "params": params,
            "steps": info.get("steps", 0),
            "epochs": info.get("epochs", 0),
            "best_epoch": info.get("best_epoch", 0),
            "stopped_early": info.get("stopped_early", False),
            "seconds": seconds,
            "stop_reason": info.get("stop_reason", ""),
            "test_mse_per_step": list(test.mse_per_step),
            "last_epoch": info.get("last_epoch", {}),
        }

    def teachers(self) -> None:
        started = time.perf_counter()
        tcfg = self.cfg["teachers"]
        self.teacher_models: dict[str, torch.nn.Module] = {}
        seed = int(tcfg["training"].get("seed", 0))
        for name, model_cfg in tcfg["models"].items():
            self._extra_teacher_seeds(name, model_cfg or {}, tcfg, seed)
            path = self.work / "teachers" / f"{name}.pt"
            ckey = config_key(model_cfg or {}, tcfg["training"], self.data_key)
            done = self.done.get(("teacher", name, "supervised", seed))
            if done is not None and done.get("config_key", ckey) == ckey and path.exists():
                seed_everything(seed)
                model = build_model(name, **self.shape, **(model_cfg or {}))
                model.load_state_dict(torch.load(path, weights_only=True))
                self.teacher_models[name] = freeze(model.to(self.device))
                print(f"teacher {name}: reusing {path}", flush=True)
                if self.rollout_cfg and "rollout" not in done:
                    self._record(self._add_rollout(dict(done), name, "supervised", model))
                continue
            t0 = time.perf_counter()
            model, info = self._train(
                name,
                model_cfg or {},
                tcfg["training"],
                seed,
                out_dir=self.work / "runs" / "teachers" / name,
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
            self.teacher_models[name] = freeze(model)
            self._record_teacher(name, seed, model, info, ckey, t0, label=name)
        self.times["teachers"] = time.perf_counter() - started

    def _record_teacher(self, name, seed, model, info, ckey, t0, label) -> dict:
        """A trained teacher's row: its metrics on val and test, recorded and printed."""
        metrics = self._metrics({name: model})[name]
        row = self._row(
            "teacher",
            name,
            "supervised",
            seed,
            False,
            metrics,
            info,
            count_parameters(model),
            time.perf_counter() - t0,
        )
        row["config_key"] = ckey
        if seed == int(self.cfg["teachers"]["training"].get("seed", 0)):
            # the teacher the students distil from (extra seeds only measure the spread)
            self._add_rollout(row, name, "supervised", model)
        self._record(row)
        print(
            f"teacher {label}: val {row['val_mse']:.4g} test {row['test_mse']:.4g} "
            f"({info['stop_reason']}, {info['steps']} steps, {row['seconds']:.0f} s)",
            flush=True,
        )
        return row

    def _add_rollout(self, row: dict, model: str, method: str, module) -> dict:
        """``row`` with its model's rollout curves (unchanged without rollouts)."""
        curves = self._rollouts({f"{model}/{method}": module}).get(f"{model}/{method}")
        if curves is not None:
            row["rollout"] = curves
        return row

    def _extra_teacher_seeds(self, name: str, model_cfg: dict, tcfg: dict, seed: int) -> None:
        """``teachers.extra_seeds``: the teacher trained again from other seeds, to report its
        spread over seeds (e.g. against the climatology); students distill from ``seed``'s."""
        for extra in [int(s) for s in tcfg.get("extra_seeds") or () if int(s) != seed]:
            ckey = config_key(model_cfg, tcfg["training"], self.data_key)
            done = self.done.get(("teacher", name, "supervised", extra))
            if done is not None and done.get("config_key", ckey) == ckey:
                continue
            t0 = time.perf_counter()
            model, info = self._train(
                name,
                model_cfg,
                tcfg["training"],
                extra,
                out_dir=self.work / "runs" / "teachers" / f"{name}_seed{extra}",
            )
            self._record_teacher(name, extra, model, info, ckey, t0, label=f"{name} seed {extra}")

    def spectra(self) -> None:
        """Each teacher's latent spectra, the conv/attention branch check and the share of its
        error per band (the spectral stage's analysis, on the test split)."""
        fit = self.cfg["data"].get("fit_range", [3, 12])
        latent_fit = self.cfg["data"].get("latent_fit_range", [1, 4])
        cfg = SpectralConfig(
            data_fit_range=tuple(fit), latent_fit_range=tuple(latent_fit), device=str(self.device)
        )
        self.spectral: dict[str, Any] = {}
        for name, model in self.teacher_models.items():
            summary, figure = analyse_spectra(
                model, self.sets["test"], cfg, title=f"{name} (study)", device=self.device
            )
            figure.savefig(self.out / f"study_{self.label}_spectra_{name}.png", dpi=100)
            import matplotlib.pyplot as plt

            plt.close(figure)
            keep = {
                "branch_check": summary.get("branch_check"),
                "band_shares": summary.get("band_shares"),
                "latents": {
                    k: {f: v.get(f) for f in ("verdict", "slope", "slope_stderr", "r2")}
                    for k, v in summary.get("spectra", {}).items()
                },
            }
            self.spectral[name] = json.loads(json.dumps(keep, default=str))
            print(f"spectra {name}: {keep['branch_check']['verdict']}", flush=True)

    def baselines(self) -> None:
        modules = {"persistence": Persistence(self.shape["out_frames"], self.shape["channels"])}
        metrics = {}
        for split in ("val", "test"):
            modules["climatology"] = Climatology.fit(self.sets[split])
            data_range = (
                self.data_range if split == "test" else test_data_range(self.sets[split], 32)
            )
            for key, m in evaluate_models(
                modules,
                self.sets[split],
                data_range,
                batch_size=32,
                device="cpu",
                ssim_convention=SSIM_CONVENTION,
            ).items():
                metrics.setdefault(key, {})[split] = m
        rollouts = None
        for name, m in metrics.items():
            done = self.done.get(("baseline", name, "baseline", 0))
            if done is not None and ("rollout" in done or not self.rollout_cfg):
                continue
            row = self._row("baseline", name, "baseline", 0, False, m, {}, 0, 0.0)
            if rollouts is None:
                rollouts = self._rollouts({})
            if f"{name}/baseline" in rollouts:
                row["rollout"] = rollouts[f"{name}/baseline"]
            self._record(row)

    def students(self) -> None:
        started = time.perf_counter()
        scfg, distill = self.cfg["students"], self.cfg["distill"]
        teacher_val = {
            n: self.done[
                ("teacher", n, "supervised", int(self.cfg["teachers"]["training"].get("seed", 0)))
            ]["val_mse"]
            for n in self.teacher_models
        }
        methods = self.args.methods or self.cfg["methods"]
        seeds = self.args.seeds if self.args.seeds is not None else self.cfg["seeds"]
        dtype = autocast_dtype("auto", self.device)
        for student, model_cfg in scfg["models"].items():
            for seed in seeds:
                for method in methods:
                    cfg = DistillConfig.from_params(method, distill)
                    training = {
                        **scfg["training"],
                        **(self.cfg.get("method_training") or {}).get(method, {}),
                    }
                    key = config_key(cfg.to_dict(), training, model_cfg, self.data_key)
                    if self.rollout_cfg:  # a run of a study without rollouts has none to show
                        key = config_key(key, self.rollout_cfg)
                    done = self.done.get(("student", student, method, seed))
                    if done is not None and done.get("config_key") == key:
                        continue
                    same = self._same_run(student, method, seed, cfg, training)
                    if same is not None:
                        self._record(
                            {
                                **same,
                                "method": method,
                                "copy_of": same["method"],
                                "seconds": 0.0,
                                "config_key": key,
                            }
                        )
                        print(
                            f"{student} seed {seed} {method:14s} = {same['method']} (that run "
                            "used the whole budget: the same training)",
                            flush=True,
                        )
                        continue
                    t0 = time.perf_counter()
                    chosen = choose_teachers(cfg, teacher_val)
                    seed_everything(seed)
                    probe = build_model(student, **self.shape, **(model_cfg or {}))
                    prepared = prepare_distillation(
                        cfg,
                        {n: self.teacher_models[n] for n in chosen},
                        probe,
                        self.sets["train"],
                        device=self.device,
                        autocast_dtype=dtype,
                        batch_size=64,
                        cache=self.cache,
                    )
                    with tempfile.TemporaryDirectory(
                        prefix=STUDENT_RUN_PREFIX, dir=self.work
                    ) as out_dir:
                        model, info = self._train(
                            student,
                            model_cfg or {},
                            training,
                            seed,
                            loss=prepared.loss,
                            train_data=prepared.train_set if prepared.loss else None,
                            out_dir=Path(out_dir),
                        )
                    metrics = self._metrics({student: model})[student]
                    row = self._row(
                        "student",
                        student,
                        method,
                        seed,
                        cfg.fm_enabled,
                        metrics,
                        info,
                        count_parameters(model),
                        time.perf_counter() - t0,
                    )
                    row["teachers"] = chosen
                    row["config_key"] = key
                    self._add_rollout(row, student, method, model)
                    if prepared.unlabelled is not None:
                        row["function_matching_inputs"] = len(prepared.unlabelled)
                    self._record(row)
                    print(
                        f"{student} seed {seed} {method:14s} val {row['val_mse']:.4g} test "
                        f"{row['test_mse']:.4g} ({info['steps']} steps, {info['stop_reason']},"
                        f" {row['seconds']:.0f} s)",
                        flush=True,
                    )
        self.times["students"] = time.perf_counter() - started

    def _same_run(
        self, student: str, method: str, seed: int, cfg: DistillConfig, training: dict
    ) -> dict | None:
        """A finished run that this one would repeat bit for bit: ``none`` without early
        stopping is ``none`` itself when that run never stopped early."""
        if cfg.method != "none" or training.get("patience", 1) is not None:
            return None
        base = self.done.get(("student", student, "none", seed))
        same_rest = {k: v for k, v in training.items() if k != "patience"} == {
            k: v for k, v in self.cfg["students"]["training"].items() if k != "patience"
        }
        if base is None or base["stopped_early"] or not same_rest:
            return None
        return base


# --------------------------------------------------------------------------------------------
# the report


def channel_units(tensors: Any) -> dict[str, str]:
    """Each channel's CF units (``data/cf.py``)."""
    return {c: m.get("units", "unknown") for c, m in channel_metadata(tensors).items()}


def summarize(rows: list[dict], methods: list[str]) -> dict:
    """Means, CIs, gap closed and paired differences (see the module docstring)."""
    every_teacher = [r for r in rows if r["role"] == "teacher"]
    if not every_teacher:
        return {}
    # the teachers the students distill from: each model's lowest seed (teachers.extra_seeds
    # are trained again only to measure the spread over seeds)
    first = {}
    for r in sorted(every_teacher, key=lambda r: r["seed"]):
        first.setdefault(r["model"], r)
    teachers = list(first.values())
    reference = min(teachers, key=lambda r: r["val_mse"])
    baselines = {r["model"]: r for r in rows if r["role"] == "baseline"}
    out: dict[str, Any] = {
        "reference_teacher": reference["model"],
        "students": {},
        "teachers": {r["model"]: r for r in teachers},
        "baselines": baselines,
    }
    seeded = {}
    for name in first:
        runs = [r for r in every_teacher if r["model"] == name]
        if len(runs) > 1:
            seeded[name] = {
                "seeds": sorted(r["seed"] for r in runs),
                **{m: mean_ci([r[m] for r in runs]) for m in ("val_mse", "test_mse", "test_ssim")},
            }
            clim = baselines.get("climatology")
            if clim is not None:  # positive: the teacher's test MSE is lower
                seeded[name]["vs_climatology_relative"] = mean_ci(
                    [(clim["test_mse"] - r["test_mse"]) / clim["test_mse"] for r in runs]
                )
                seeded[name]["beats_climatology"] = sum(
                    r["test_mse"] < clim["test_mse"] for r in runs
                )
    if seeded:
        out["teacher_seeds"] = seeded
    for student in sorted({r["model"] for r in rows if r["role"] == "student"}):
        mine = [r for r in rows if r["role"] == "student" and r["model"] == student]
        by = {(r["method"], r["seed"]): r for r in mine}
        entry: dict[str, Any] = {}
        for method in [m for m in methods if any(r["method"] == m for r in mine)]:
            runs = [r for r in mine if r["method"] == method]
            stats: dict[str, Any] = {"seeds": sorted(r["seed"] for r in runs)}
            for metric in (
                "test_mse",
                "test_mae",
                "test_ssim",
                "val_mse",
                "test_band_low",
                "test_band_mid",
                "test_band_high",
                "steps",
                "seconds",
            ):
                stats[metric] = mean_ci([r[metric] for r in runs])
            for base, key in (
                ("none", "vs_none"),
                ("output_mse", "vs_output_mse"),
                ("none_matched", "vs_none_matched"),
            ):
                pairs = [(by[(base, r["seed"])], r) for r in runs if (base, r["seed"]) in by]
                if not pairs or base == method:
                    continue
                # positive = better than the base (lower error, higher SSIM)
                stats[f"{key}_mse"] = mean_ci([b["test_mse"] - r["test_mse"] for b, r in pairs])
                stats[f"{key}_mse_relative"] = mean_ci(
                    [(b["test_mse"] - r["test_mse"]) / b["test_mse"] for b, r in pairs]
                )
                stats[f"{key}_ssim"] = mean_ci([r["test_ssim"] - b["test_ssim"] for b, r in pairs])
                stats[f"{key}_wins"] = sum(r["test_mse"] < b["test_mse"] for b, r in pairs)
                stats[f"{key}_pairs"] = len(pairs)
            for base, key in (("none", "gap_closed"), ("none_matched", "gap_closed_matched")):
                gaps = []
                for r in runs:
                    b = by.get((base, r["seed"]))
                    if b is None or b["test_mse"] <= reference["test_mse"]:
                        continue
                    gaps.append(
                        (b["test_mse"] - r["test_mse"]) / (b["test_mse"] - reference["test_mse"])
                    )
                stats[key] = mean_ci(gaps)
            entry[method] = stats
        out["students"][student] = entry
    rollouts = study_rollout.summarize(rows, methods)
    if rollouts:
        out["rollout"] = rollouts
    return out


def _lower(ci: tuple) -> float:
    mean, half = ci[0], ci[1]
    return mean - half if math.isfinite(half) else math.nan


def claims(summary: dict, rows: list[dict]) -> list[dict]:
    """The claims the study tests, each with what was measured and a verdict."""
    out: list[dict] = []
    teachers = summary.get("teachers", {})
    persistence = summary.get("baselines", {}).get("persistence")
    climatology = summary.get("baselines", {}).get("climatology")
    for name, t in summary.get("teacher_seeds", {}).items():
        if climatology is None or "vs_climatology_relative" not in t:
            continue
        n = len(t["seeds"])
        out.append(
            {
                "claim": f"teacher {name} beats the climatology on the test split ({n} seeds)",
                "measured": f"test MSE {fmt(*t['test_mse'][:2])} vs climatology "
                f"{climatology['test_mse']:.4f}: "
                f"{fmt(*t['vs_climatology_relative'][:2], 1, 100, ' %')} lower "
                f"({t['beats_climatology']}/{n} seeds better)",
                "verdict": "holds"
                if t["beats_climatology"] == n and _lower(t["vs_climatology_relative"]) > 0
                else "does not hold",
            }
        )
    for student, entry in summary.get("students", {}).items():
        none = entry.get("none")
        if none is None:
            continue
        for name, t in teachers.items():
            ratio = none["test_mse"][0] / t["test_mse"]
            beats_persistence = persistence is None or t["test_mse"] < persistence["test_mse"]
            out.append(
                {
                    "claim": f"teacher {name} is >= 1.5x better than the converged `none` {student}"
                    " and better than persistence",
                    "measured": f"test MSE {t['test_mse']:.4f} vs none {fmt(*none['test_mse'][:2])}"
                    f" ({ratio:.2f}x); persistence "
                    f"{persistence['test_mse']:.4f}"
                    if persistence
                    else "",
                    "verdict": "holds" if ratio >= 1.5 and beats_persistence else "does not hold",
                }
            )
        candidates = {m: s for m, s in entry.items() if not m.startswith("none")}
        if not candidates:
            continue
        best = min(candidates, key=lambda m: candidates[m]["val_mse"][0])
        b = candidates[best]
        out.append(
            {
                "claim": f"distillation closes >= 60 % of the gap ({student}; paper: ~54 % on "
                "WeatherBench), best method chosen on validation",
                "measured": f"{best}: {fmt(*b['gap_closed'][:2], 1, 100, ' %')} of the gap, paired "
                f"gain over none {fmt(*b['vs_none_mse_relative'][:2], 1, 100, ' %')} "
                f"of its MSE ({b['vs_none_wins']}/{b['vs_none_pairs']} seeds better)",
                "verdict": "holds"
                if b["gap_closed"][0] >= 0.6
                else (
                    f"not reached ({100 * b['gap_closed'][0]:.0f} % of the 60 %)"
                    if math.isfinite(b["gap_closed"][0])
                    else "undefined"
                ),
            }
        )
        for method, base, what in (
            ("sdkd", "output_mse", "the frequency-aligned default beats plain output KD"),
            ("sdkd", "none", "sdkd beats no distillation"),
            ("sdkd_fm", "sdkd", "function matching improves sdkd"),
            ("output_mse_fm", "output_mse", "function matching improves output KD"),
        ):
            if method not in entry or base not in entry:
                continue
            pairs = [
                (r0, r1)
                for r0 in rows
                for r1 in rows
                if r0["role"] == r1["role"] == "student"
                and r0["model"] == r1["model"] == student
                and r0["method"] == base
                and r1["method"] == method
                and r0["seed"] == r1["seed"]
            ]
            gains = [(a["test_mse"] - b["test_mse"]) / a["test_mse"] for a, b in pairs]
            ci = mean_ci(gains)
            out.append(
                {
                    "claim": f"{what} ({student}: paired test-MSE gain, 95 % CI)",
                    "measured": f"{fmt(*ci[:2], 1, 100, ' %')} "
                    f"({sum(g > 0 for g in gains)}/{len(gains)} seeds better)",
                    "verdict": "holds (CI above zero)"
                    if _lower(ci) > 0
                    else ("not shown (CI includes zero)" if ci[0] > 0 else "does not hold"),
                }
            )
    return out


def ssim_conventions(rows: list[dict]) -> str | dict[str, list[str]]:
    """The rows' SSIM convention, or ``{convention: [role/model/method, ...]}`` when finished
    runs reused from the work folder were scored with another convention than the new ones."""
    by: dict[str, list[str]] = {}
    for r in rows:
        label = f"{r['role']}/{r['model']}/{r['method']}"
        names = by.setdefault(r.get("ssim_convention", "torchmetrics"), [])
        if label not in names:
            names.append(label)
    return next(iter(by)) if len(by) == 1 else by


def _units(meta: dict) -> str:
    """The fields' units as the results name them (results before ``units`` was recorded:
    Navier-Stokes vorticity)."""
    units = meta.get("data", {}).get("units")
    if not units:
        return "vorticity units"
    return "; ".join(f"{c}: MSE in [{u}]², MAE in [{u}]" for c, u in units.items())


def _ssim_note(meta: dict) -> str:
    """The SSIM convention, for a study that recorded it (the committed results predate it and
    render as they were written); a study whose rows mix conventions says which is which."""
    if "ssim_convention" not in meta:
        return ""
    conv = meta["ssim_convention"]
    if isinstance(conv, str):
        return f" SSIM in the {conv} convention (README, Metrics)."
    parts = "; ".join(f"{c}: {', '.join(labels)}" for c, labels in conv.items())
    return (
        " **SSIM conventions differ between rows** (finished runs reused from the work folder "
        f"were scored with another one): {parts}. Compare SSIM only within one convention; "
        "MSE, MAE and the band errors do not depend on it."
    )


def markdown(summary: dict, rows: list[dict], meta: dict) -> str:
    lines = [
        f"# Distillation study ({meta['label']}, profile {meta['profile']})",
        "",
        f"Command: `{meta['command']}`  ",
        f"Commit: `{meta['commit']}`; {meta['device']}; torch {meta['torch']}; "
        f"compute {meta['compute_seconds'] / 60:.1f} min (data and every trained model, "
        f"as a fresh run would take); this invocation {meta['wall_seconds'] / 60:.1f} min.",
        "",
        "Data: "
        + " / ".join(str(n) for n in meta["data"]["windows"].values())
        + " windows (train / val / test); test spectrum: "
        f"{meta['data']['spectrum']['verdict']} over k = "
        f"{meta['data']['spectrum']['fit_k_min']:g}..{meta['data']['spectrum']['fit_k_max']:g}"
        f"; energy share low/mid/high "
        + " / ".join(f"{v:.4f}" for v in meta["data"]["spectrum"]["energy_share"].values())
        + ".",
        "",
        f"Test metrics de-normalized ({_units(meta)}); mean ± 95 % CI over seeds (Student t)."
        + _ssim_note(meta)
        + " Gap closed = (none - student) / (none - teacher), paired by seed, teacher = "
        f"{summary.get('reference_teacher')} (lower validation MSE). Paired differences: "
        "positive = better than the reference method.",
        "",
    ]
    lines += [
        "| role | model | method | val MSE | test MSE | test MAE | test SSIM | steps | stop |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    seeded = summary.get("teacher_seeds", {})
    listed = [r for r in rows if r["role"] in ("teacher", "baseline")]
    order = {}
    for r in listed:  # each model where it first appears, its seeds in order
        order.setdefault((r["role"], r["model"]), len(order))
    for r in sorted(listed, key=lambda r: (order[r["role"], r["model"]], r["seed"])):
        # a teacher trained from several seeds (teachers.extra_seeds): which row is which
        method = f"{r['method']} (seed {r['seed']})" if r["model"] in seeded else r["method"]
        lines.append(
            f"| {r['role']} | {r['model']} | {method} | {r['val_mse']:.4f} | "
            f"{r['test_mse']:.4f} | {r['test_mae']:.4f} | {r['test_ssim']:.4f} | "
            f"{r['steps']} | {r.get('stop_reason', '')} |"
        )
    found = claims(summary, rows)
    if found:
        lines += ["", "## Claims", "", "| claim | measured | verdict |", "|---|---|---|"]
        lines += [f"| {c['claim']} | {c['measured']} | {c['verdict']} |" for c in found]
    for student, entry in summary.get("students", {}).items():
        lines += [
            "",
            f"## {student}",
            "",
            "| method | n | test MSE | test MAE | test SSIM | gap closed | gap closed vs "
            "none_matched | MSE gain vs none | MSE gain vs output_mse | wins vs none | "
            "band MSE low / mid / high | steps |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for method, s in entry.items():
            bands = " / ".join(fmt(*s[f"test_band_{b}"][:2]) for b in ("low", "mid", "high"))
            lines.append(
                f"| {method} | {s['test_mse'][2]} | {fmt(*s['test_mse'][:2])} | "
                f"{fmt(*s['test_mae'][:2])} | {fmt(*s['test_ssim'][:2])} | "
                f"{fmt(*s['gap_closed'][:2], 1, 100, ' %')} | "
                f"{fmt(*s['gap_closed_matched'][:2], 1, 100, ' %')} | "
                f"{fmt(*s.get('vs_none_mse_relative', (math.nan, math.nan))[:2], 1, 100, ' %')}"
                f" | {fmt(*s.get('vs_output_mse_mse_relative', (math.nan, math.nan))[:2], 1, 100, ' %')}"
                f" | {s.get('vs_none_wins', '-')}/{s.get('vs_none_pairs', '-')} | {bands} | "
                f"{s['steps'][0]:.0f} |"
            )
    lines += study_rollout.markdown(summary.get("rollout", {}))
    return "\n".join(lines) + "\n"


README_BEGIN = (
    "<!-- study results: {label} (generated by benchmarks/study.py --readme; do not edit) -->"
)
README_END = "<!-- end of study results: {label} -->"


def readme_block(md: str, label: str) -> str:
    """The study's Markdown as a README block: the title dropped, headings one level down."""
    lines = md.rstrip("\n").split("\n")[1:]
    body = [("#" + line) if line.startswith("## ") else line for line in lines]
    return "\n".join([README_BEGIN.format(label=label), *body, README_END.format(label=label)])


def update_readme(readme: Path, md: str, label: str) -> None:
    """Replace the README's block for ``label`` (between its markers) with ``md``."""
    text = readme.read_text()
    begin, end = README_BEGIN.format(label=label), README_END.format(label=label)
    if begin not in text or end not in text:
        raise SystemExit(
            f"{readme}: no block for study {label!r}; put the two lines\n"
            f"{begin}\n{end}\nwhere the results go"
        )
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(head + readme_block(md, label) + tail)


def figures(summary: dict, rows: list[dict], prefix: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for student, entry in summary.get("students", {}).items():
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
        names = list(entry)
        means = [entry[m]["test_mse"][0] for m in names]
        halves = [entry[m]["test_mse"][1] for m in names]
        ax = axes[0]
        ax.bar(
            range(len(names)),
            means,
            yerr=[h if math.isfinite(h) else 0 for h in halves],
            color=["#999" if m.startswith("none") else "#3b75af" for m in names],
            capsize=3,
        )
        top = 1.45 * max(
            m + (h if math.isfinite(h) else 0) for m, h in zip(means, halves, strict=True)
        )
        styles = iter([("--", "#c44"), ("-.", "#d98b2b"), (":", "#7a4")])
        off_scale = []
        # the teachers the students distilled from (a teacher's extra seeds are in the table)
        lines = [*summary.get("teachers", {}).values()]
        lines += [r for r in rows if r["role"] == "baseline"]
        for r in lines:
            label = f"{r['role']} {r['model']}: {r['test_mse']:.4f}"
            if r["test_mse"] > top:  # persistence and climatology are ~10x worse here
                off_scale.append(label)
                continue
            ls, color = next(styles, (":", "#333"))
            ax.axhline(r["test_mse"], ls=ls, lw=1.2, color=color, label=label)
        if off_scale:
            ax.plot([], [], " ", label="off the scale: " + "; ".join(off_scale))
        ax.set_ylim(0, top)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
        ax.set_ylabel("test MSE (de-normalized)")
        ax.set_title(f"{student}: test MSE, mean and 95 % CI over seeds")
        ax.legend(fontsize=8, loc="upper center")
        ax = axes[1]
        width = 0.8 / 3
        for i, band in enumerate(("low", "mid", "high")):
            ax.bar(
                np.arange(len(names)) + (i - 1) * width,
                [entry[m][f"test_band_{band}"][0] for m in names],
                width,
                label=band,
            )
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
        ax.set_ylabel("test MSE per wavenumber band")
        ax.set_title("error by band (mean over seeds)")
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 2.0)
        ax.legend(fontsize=8, loc="upper center", ncol=3)
        fig.tight_layout()
        path = prefix.with_name(f"{prefix.name}_{student}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    written += study_rollout.figure(summary.get("rollout", {}), prefix)
    return written


def csv_values(row: dict) -> dict:
    """A row's CSV cells: ``CSV_COLUMNS``, and with a rollout the lead at which the model
    falls behind persistence (empty: never, or persistence itself) and its last lead's MSE."""
    values = {c: row[c] for c in CSV_COLUMNS}
    rollout = row.get("rollout")
    if rollout:
        lead = rollout["behind_persistence_lead"]
        values["rollout_behind_persistence_lead"] = "" if lead is None else lead
        values["rollout_final_mse"] = rollout["mse"][-1]
    return values


def write_csv(path: Path, rows: list[dict]) -> None:
    """One line per trained model (rollout columns when some row has a rollout)."""
    cells = [csv_values(r) for r in rows]
    columns = list(CSV_COLUMNS)
    columns += [c for c in ROLLOUT_COLUMNS if any(c in v for v in cells)]
    with open(path, "w") as handle:
        handle.write(",".join(columns) + "\n")
        for v in cells:
            handle.write(
                ",".join(
                    str(v.get(c, "")).lower() if isinstance(v.get(c), bool) else str(v.get(c, ""))
                    for c in columns
                )
                + "\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--label", default=None, help="device label in the file names")
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--fresh", action="store_true", help="ignore finished work")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="STUDY_JSON",
        help="rewrite the Markdown and figures from a finished study's JSON (no training)",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        metavar="README",
        help="with --render: also replace the study's results block in README",
    )
    args = parser.parse_args()
    if args.render is not None:
        report = json.loads(args.render.read_text())
        prefix = args.render.with_suffix("")
        report["summary"] = summarize(report["rows"], report["meta"]["methods"])
        figures(report["summary"], report["rows"], prefix)
        md = markdown(report["summary"], report["rows"], report["meta"])
        prefix.with_suffix(".md").write_text(md)
        if args.readme is not None:
            update_readme(args.readme, md, report["meta"]["label"])
        print(md)
        return
    cfg = load_profile(args.config, args.profile)
    started = time.perf_counter()
    study = Study(cfg, args)
    study.data()
    study.teachers()
    study.spectra()
    study.baselines()
    study.students()
    methods = args.methods or cfg["methods"]
    seeds = args.seeds if args.seeds is not None else cfg["seeds"]
    rows = [
        r
        for r in study.done.values()
        if r["role"] == "baseline"
        or (r["role"] == "teacher" and r["model"] in study.teacher_models)
        or (
            r["method"] in methods
            and r["seed"] in seeds
            and r["model"] in cfg["students"]["models"]
        )
    ]
    summary = summarize(rows, methods)
    meta = {
        "label": study.label,
        "profile": args.profile,
        "methods": methods,
        "command": " ".join(["python", *sys.argv]),
        "commit": git_commit(),
        "device": (
            torch.cuda.get_device_name(study.device)
            if study.device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads)"
        ),
        "torch": torch.__version__,
        "ssim_convention": ssim_conventions(rows),
        "wall_seconds": time.perf_counter() - started,
        "stage_seconds": study.times,
        "data": study.data_info,
        "config": cfg,
        "spectral": study.spectral,
        # what a fresh run costs, also when this invocation resumed finished work
        "compute_seconds": study.data_info["seconds"] + sum(r["seconds"] for r in rows),
    }
    prefix = args.out / f"study_{study.label}"
    write_csv(prefix.with_suffix(".csv"), rows)
    meta["figures"] = figures(summary, rows, prefix)
    prefix.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1, default=str)
    )
    prefix.with_suffix(".md").write_text(markdown(summary, rows, meta))
    print(prefix.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
