"""The study's long rollouts (issue 14, part 1, with seeds): each model of the study (teachers,
baselines and every student x method x seed) fed its own forecasts back for ``rollout.factor``
x ``T_out`` frames on the test split, scored per lead time with
``sdkd_pipeline.evaluation.rollout.evaluate_rollouts`` (the evaluation's definitions: MSE, SSIM,
the energy ratio forecast / truth per band, the lead at which a model falls behind persistence).

A study row keeps its curves as ``row["rollout"]``; ``summarize`` turns the students' curves
into means and 95 % CIs over seeds per method, with paired differences against ``none`` (does
distillation change how a student's spectrum drifts?), ``markdown`` into a table and ``figure``
into curves with their CI bands. Used by ``benchmarks/study.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from study_stats import fmt, mean_ci

from sdkd_pipeline.evaluation.rollout import BANDS  # the evaluation's bands, one definition


def compact(curves: Any, horizon: int, t_out: int) -> dict:
    """A row's ``rollout`` entry from one model's ``RolloutCurves``."""
    return {
        "horizon": int(horizon),
        "t_out": int(t_out),
        "mse": [float(v) for v in curves.mse],
        "ssim": [float(v) for v in curves.ssim],
        "energy_ratio": {b: [float(v) for v in curves.energy_ratio[b]] for b in BANDS},
        "behind_persistence_lead": curves.behind_persistence_lead,
        "finite_leads": int(curves.finite_leads),
    }


def _curve_stats(runs: list[dict]) -> dict:
    """Mean and CI per lead time of MSE, SSIM and each band's energy ratio over ``runs``."""
    horizon = min(len(r["rollout"]["mse"]) for r in runs)
    out: dict[str, Any] = {}
    for name in ("mse", "ssim"):
        per_lead = [mean_ci([r["rollout"][name][i] for r in runs]) for i in range(horizon)]
        out[name] = [list(v[:2]) for v in per_lead]
    for band in BANDS:
        per_lead = [
            mean_ci([r["rollout"]["energy_ratio"][band][i] for r in runs]) for i in range(horizon)
        ]
        out[f"energy_{band}"] = [list(v[:2]) for v in per_lead]
    return out


def summarize(rows: list[dict], methods: list[str]) -> dict:
    """The rollout part of the study's summary (empty when no row has a rollout)."""
    with_rollout = [r for r in rows if r.get("rollout")]
    if not with_rollout:
        return {}
    first = with_rollout[0]["rollout"]
    out: dict[str, Any] = {
        "horizon": first["horizon"],
        "t_out": first["t_out"],
        "reference": {},
        "students": {},
    }
    teachers: dict[str, dict] = {}
    for r in sorted((r for r in with_rollout if r["role"] == "teacher"), key=lambda r: r["seed"]):
        teachers.setdefault(r["model"], r)  # the seed the students distilled from
    for r in [*teachers.values(), *(r for r in with_rollout if r["role"] == "baseline")]:
        ro = r["rollout"]
        out["reference"][f"{r['role']} {r['model']}"] = {
            "mse": ro["mse"],
            "energy_ratio": ro["energy_ratio"],
            "behind_persistence_lead": ro["behind_persistence_lead"],
            "final_mse": ro["mse"][-1],
            "final_energy": {b: ro["energy_ratio"][b][-1] for b in BANDS},
        }
    for student in sorted({r["model"] for r in with_rollout if r["role"] == "student"}):
        mine = [r for r in with_rollout if r["role"] == "student" and r["model"] == student]
        by = {(r["method"], r["seed"]): r for r in mine}
        entry: dict[str, Any] = {}
        for method in [m for m in methods if any(r["method"] == m for r in mine)]:
            runs = sorted((r for r in mine if r["method"] == method), key=lambda r: r["seed"])
            behind = [r["rollout"]["behind_persistence_lead"] for r in runs]
            stats: dict[str, Any] = {
                "seeds": [r["seed"] for r in runs],
                "behind_persistence_lead": behind,
                "final_mse": mean_ci([r["rollout"]["mse"][-1] for r in runs]),
                "final_ssim": mean_ci([r["rollout"]["ssim"][-1] for r in runs]),
                "final_energy": {
                    b: mean_ci([r["rollout"]["energy_ratio"][b][-1] for r in runs]) for b in BANDS
                },
                "curves": _curve_stats(runs),
            }
            pairs = [(by[("none", r["seed"])], r) for r in runs if ("none", r["seed"]) in by]
            if method != "none" and pairs:
                # positive: the method's final-lead value is higher than none's
                stats["vs_none_final_energy"] = {
                    b: mean_ci(
                        [
                            r["rollout"]["energy_ratio"][b][-1]
                            - n["rollout"]["energy_ratio"][b][-1]
                            for n, r in pairs
                        ]
                    )
                    for b in BANDS
                }
                # positive: the method's final-lead MSE is lower (relative to none's)
                stats["vs_none_final_mse_relative"] = mean_ci(
                    [
                        (n["rollout"]["mse"][-1] - r["rollout"]["mse"][-1])
                        / n["rollout"]["mse"][-1]
                        for n, r in pairs
                    ]
                )
            entry[method] = stats
        out["students"][student] = entry
    return out


def _fmt(ci: tuple | list, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    return fmt(float(ci[0]), float(ci[1]), digits, scale, unit)


def _ratio(ci: tuple | list) -> str:
    """An energy ratio and its CI in 3 significant digits (a blown-up rollout's are huge)."""
    mean, half = float(ci[0]), float(ci[1])
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.3g}" + (f" ± {half:.2g}" if math.isfinite(half) else "")


def _leads(values: list) -> str:
    return ", ".join("never" if v is None else str(v) for v in values)


def markdown(summary: dict) -> list[str]:
    """The rollout section of the study's Markdown (no lines without rollouts)."""
    if not summary:
        return []
    horizon, t_out = summary["horizon"], summary["t_out"]
    lines = [
        "",
        "## Rollouts",
        "",
        f"Autoregressive rollouts over {horizon} frames ({horizon // t_out} x the training "
        f"horizon T_out = {t_out}) on the test split: each forecast fed back as the next input. "
        "Energy ratio = forecast / truth energy in a band at the last lead "
        "(1: the truth's spectrum; below 1: energy lost, over-smoothing). "
        "'Behind persistence' = the first lead at which the model's MSE exceeds persistence's, "
        "per seed ('never': not within the horizon). Differences against `none` are paired by "
        "seed; positive MSE gain = lower error than `none`.",
        "",
        "| model | method | behind persistence (per seed) | MSE at lead "
        f"{horizon} | energy ratio low / mid / high at lead {horizon} | "
        "MSE gain vs none | energy ratio vs none, low / mid / high |",
        "|---|---|---|---:|---|---:|---|",
    ]
    for name, ref in summary["reference"].items():
        role, model = name.split(" ", 1)
        lead = ref["behind_persistence_lead"]
        behind = "-" if model == "persistence" else ("never" if lead is None else str(lead))
        energy = " / ".join(f"{ref['final_energy'][b]:.3g}" for b in BANDS)
        lines.append(f"| {model} | {role} | {behind} | {ref['final_mse']:.4g} | {energy} | | |")
    for student, entry in summary["students"].items():
        for method, s in entry.items():
            energy = " / ".join(_ratio(s["final_energy"][b]) for b in BANDS)
            vs = s.get("vs_none_final_energy")
            vs_energy = " / ".join(_ratio(vs[b]) for b in BANDS) if vs else ""
            gain = s.get("vs_none_final_mse_relative")
            lines.append(
                f"| {student} | {method} | {_leads(s['behind_persistence_lead'])} | "
                f"{_fmt(s['final_mse'], 4)} | {energy} | "
                f"{_fmt(gain, 2, 100, ' %') if gain else ''} | {vs_energy} |"
            )
    return lines


def figure(summary: dict, prefix: Path) -> list[str]:
    """``<prefix>_rollout_<student>.png``: MSE and each band's energy ratio against lead
    time, the mean over seeds per method with its 95 % CI band, the teachers and baselines as
    lines, the training horizon dotted."""
    if not summary:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    horizon, t_out = summary["horizon"], summary["t_out"]
    leads = np.arange(1, horizon + 1)
    panels = [("mse", "MSE (de-normalized)")] + [
        (f"energy_{b}", f"energy ratio forecast / truth, {b} band") for b in BANDS
    ]
    # teachers dashed, baselines dotted / dash-dotted, each its own shade
    shades = iter(["black", "#7b4a12", "#444", "#999", "#555", "#bbb"])
    ref_styles = {
        name: (
            ("--" if name.startswith("teacher") else (":" if "persistence" in name else "-.")),
            next(shades, "#333"),
        )
        for name in summary["reference"]
    }
    for student, entry in summary["students"].items():
        fig, axes = plt.subplots(1, 4, figsize=(17, 4.4))
        for ax, (name, label) in zip(axes, panels, strict=True):
            for ref_name, ref in summary["reference"].items():
                values = (
                    ref["mse"]
                    if name == "mse"
                    else ref["energy_ratio"][name.removeprefix("energy_")]
                )
                linestyle, color = ref_styles[ref_name]
                ax.plot(
                    leads[: len(values)],
                    values,
                    color=color,
                    linestyle=linestyle,
                    linewidth=1.2,
                    label=ref_name,
                )
            for method, s in entry.items():
                curve = np.asarray(s["curves"][name], dtype=float)
                mean, half = curve[:, 0], np.nan_to_num(curve[:, 1])
                n = len(mean)
                (line,) = ax.plot(leads[:n], mean, label=f"{student} {method}")
                # on the log axis, only where the interval's lower end is positive
                ax.fill_between(
                    leads[:n],
                    mean - half,
                    mean + half,
                    where=mean - half > 0,
                    color=line.get_color(),
                    alpha=0.2,
                )
            ax.axvline(t_out + 0.5, color="black", linewidth=0.8, linestyle=":")
            if name.startswith("energy_"):
                ax.axhline(1.0, color="black", linewidth=0.6)
            ax.set_yscale("log")
            ax.set_xlabel("lead time (frames)")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=7, loc="best")
        fig.suptitle(
            f"{student}: rollout over {horizon} frames, mean and 95 % CI over seeds "
            f"(training horizon {t_out}, dotted)"
        )
        fig.tight_layout()
        path = prefix.with_name(f"{prefix.name}_rollout_{student}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    return written
