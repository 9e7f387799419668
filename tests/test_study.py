"""benchmarks/study.py on its quick profile: the files it writes, their columns, and resume."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIRED = [
    "role",
    "model",
    "method",
    "seed",
    "function_matching",
    "val_mse",
    "test_mse",
    "test_mae",
    "test_ssim",
    "steps",
    "seconds",
]


def _run(out: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "study.py"),
            "--profile",
            "quick",
            "--out",
            str(out),
            "--work",
            str(work),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


@pytest.mark.slow
def test_quick_study_writes_one_row_per_model_and_resumes_without_retraining(tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    first = _run(out, work)
    assert first.returncode == 0, first.stderr[-3000:]
    with open(out / "study_cpu.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert set(REQUIRED) <= set(rows[0])
    roles = [(r["role"], r["model"], r["method"], r["seed"]) for r in rows]
    assert len(roles) == len(set(roles))  # one row per trained model
    methods = ["none", "none_matched", "output_mse", "sdkd", "sdkd_fm"]
    assert sorted(r[2] for r in roles if r[0] == "student") == sorted(methods * 2)
    assert {r[1] for r in roles if r[0] == "teacher"} == {"st_alternet", "simvp"}
    assert {r[1] for r in roles if r[0] == "baseline"} == {"persistence", "climatology"}
    fm = {r["method"]: r["function_matching"] for r in rows if r["role"] == "student"}
    assert fm["sdkd_fm"] == "true" and fm["sdkd"] == "false"
    for r in rows:
        assert math.isfinite(float(r["test_mse"])) and float(r["test_mse"]) > 0
        if r["role"] != "baseline":
            assert int(r["steps"]) == 6  # 2 epochs of 3 batches: every method the same budget

    report = json.loads((out / "study_cpu.json").read_text())
    assert report["meta"]["command"].startswith("python")
    assert report["meta"]["commit"]
    unet = report["summary"]["students"]["unet"]
    assert unet["none"]["gap_closed"][0] == pytest.approx(0.0, abs=1e-12) or math.isnan(
        unet["none"]["gap_closed"][0]
    )
    assert unet["sdkd"]["vs_output_mse_pairs"] == 2
    assert (out / "study_cpu.md").read_text().startswith("# Distillation study")
    assert (out / "study_cpu_unet.png").stat().st_size > 10_000
    # rollouts over 2 x T_out (the quick profile's `rollout`): every model has its curves
    assert {"rollout_behind_persistence_lead", "rollout_final_mse"} <= set(rows[0])
    for r in report["rows"]:
        assert len(r["rollout"]["mse"]) == 6 and set(r["rollout"]["energy_ratio"]) == {
            "low",
            "mid",
            "high",
        }
    ro = report["summary"]["rollout"]
    assert ro["horizon"] == 6 and set(ro["students"]["unet"]) == set(methods)
    assert "## Rollouts" in (out / "study_cpu.md").read_text()
    assert (out / "study_cpu_rollout_unet.png").stat().st_size > 10_000

    leftover = work / "student-run-killed"  # what a killed study leaves behind
    leftover.mkdir()
    (leftover / "last.pt").write_bytes(b"partial")
    second = _run(out, work)  # everything is finished: nothing is trained again
    assert second.returncode == 0, second.stderr[-3000:]
    assert "seed 0 none " not in second.stdout and "reusing" in second.stdout
    assert not leftover.exists() and "interrupted study" in second.stdout
    with open(out / "study_cpu.csv") as handle:
        assert list(csv.DictReader(handle)) == rows


@pytest.mark.bad_input
def test_an_unknown_profile_is_refused_with_the_known_ones(tmp_path):
    result = _run(tmp_path / "o", tmp_path / "w", "--profile", "laptop")
    assert result.returncode != 0
    assert "no profile 'laptop'" in result.stderr and "cpu" in result.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()


def test_the_readme_shows_the_cpu_study_exactly_as_its_results_file_says():
    """The README's results block is regenerated from benchmarks/results/study_cpu.json
    (``study.py --render ... --readme README.md``), never edited by hand."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import study
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    report = json.loads((REPO / "benchmarks/results/study_cpu.json").read_text())
    summary = study.summarize(report["rows"], report["meta"]["methods"])
    block = study.readme_block(study.markdown(summary, report["rows"], report["meta"]), "cpu")
    assert block in (REPO / "README.md").read_text()
    # and the committed Markdown next to the results is the same rendering
    assert (REPO / "benchmarks/results/study_cpu.md").read_text() == study.markdown(
        summary, report["rows"], report["meta"]
    )


def test_update_readme_replaces_only_the_block_and_refuses_a_readme_without_one(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import study
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    readme = tmp_path / "README.md"
    begin, end = study.README_BEGIN.format(label="x"), study.README_END.format(label="x")
    readme.write_text(f"intro\n{begin}\nold\n{end}\noutro\n")
    study.update_readme(readme, "# title\n## part\nnew\n", "x")
    assert readme.read_text() == f"intro\n{begin}\n### part\nnew\n{end}\noutro\n"
    readme.write_text("no block here\n")
    with pytest.raises(SystemExit, match="no block for study 'x'"):
        study.update_readme(readme, "# t\n", "x")
    assert readme.read_text() == "no block here\n"


def test_a_study_reusing_runs_of_another_ssim_convention_says_which_rows_are_which():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import study
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    old = {"role": "student", "model": "unet", "method": "sdkd"}  # written before the field
    new = {"role": "student", "model": "unet", "method": "sdkd_local", "ssim_convention": "skimage"}
    assert study.ssim_conventions([new]) == "skimage"
    assert "SSIM in the skimage convention" in study._ssim_note({"ssim_convention": "skimage"})
    mixed = study.ssim_conventions([old, new, dict(old)])
    assert mixed == {"torchmetrics": ["student/unet/sdkd"], "skimage": ["student/unet/sdkd_local"]}
    note = study._ssim_note({"ssim_convention": mixed})
    assert (
        "SSIM conventions differ between rows" in note
        and "skimage: student/unet/sdkd_local" in note
    )
    # the committed side studies reuse the CPU study's runs and say so
    for label in ("cpu_local", "cpu_fno"):
        text = (REPO / f"benchmarks/results/study_{label}.md").read_text()
        assert "SSIM conventions differ between rows" in text, label


def test_teachers_of_extra_seeds_are_summarized_against_the_climatology():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import study
    finally:
        sys.path.remove(str(REPO / "benchmarks"))

    def row(role, model, method, seed, val, test):
        return dict(
            role=role, model=model, method=method, seed=seed, val_mse=val, test_mse=test,
            test_mae=0.0, test_ssim=0.5, steps=1, seconds=1.0, test_band_low=0.0,
            test_band_mid=0.0, test_band_high=0.0,
        )  # fmt: skip

    rows = [
        row("teacher", "st_alternet", "supervised", 1, 0.20, 0.50),  # listed first, seed 1
        row("teacher", "st_alternet", "supervised", 0, 0.30, 0.60),
        row("teacher", "st_alternet", "supervised", 2, 0.25, 0.55),
        row("teacher", "simvp", "supervised", 0, 0.40, 0.70),
        row("baseline", "climatology", "baseline", 0, 0.31, 0.75),
        row("baseline", "persistence", "baseline", 0, 0.9, 1.7),
        row("student", "unet", "none", 0, 0.5, 0.9),
    ]
    summary = study.summarize(rows, ["none"])
    # students distill from each model's lowest seed, whatever order the rows are in
    assert summary["teachers"]["st_alternet"]["seed"] == 0
    assert summary["reference_teacher"] == "st_alternet"
    seeds = summary["teacher_seeds"]
    assert list(seeds) == ["st_alternet"]  # simvp has one seed: nothing to summarize
    assert seeds["st_alternet"]["seeds"] == [0, 1, 2]
    assert seeds["st_alternet"]["test_mse"][0] == pytest.approx(0.55)
    relative = [(0.75 - t) / 0.75 for t in (0.5, 0.6, 0.55)]
    assert seeds["st_alternet"]["vs_climatology_relative"][0] == pytest.approx(sum(relative) / 3)
    assert seeds["st_alternet"]["beats_climatology"] == 3
    found = [c for c in study.claims(summary, rows) if "climatology" in c["claim"]]
    assert len(found) == 1 and found[0]["verdict"] == "holds"
    assert "3/3 seeds better" in found[0]["measured"]
    rows[2]["test_mse"] = 0.80  # one seed worse than the climatology: the claim fails
    summary = study.summarize(rows, ["none"])
    found = [c for c in study.claims(summary, rows) if "climatology" in c["claim"]]
    assert found[0]["verdict"] == "does not hold" and "2/3 seeds" in found[0]["measured"]


def _rollout_row(method: str, seed: int, mse: list, high: list, behind) -> dict:
    return {
        "role": "student",
        "model": "unet",
        "method": method,
        "seed": seed,
        "rollout": {
            "horizon": len(mse),
            "t_out": 1,
            "mse": mse,
            "ssim": [0.5] * len(mse),
            "energy_ratio": {"low": [1.0] * len(mse), "mid": [1.0] * len(mse), "high": high},
            "behind_persistence_lead": behind,
            "finite_leads": len(mse),
        },
    }


def test_rollout_summary_pairs_seeds_and_averages_per_lead():
    """study_rollout.summarize on hand-made curves: means per lead, the last lead's CI, the
    per-seed lead behind persistence and the paired differences against `none`."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import study_rollout
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    rows = [
        _rollout_row("none", 0, [1.0, 2.0], [0.5, 0.4], 2),
        _rollout_row("none", 1, [1.0, 4.0], [0.5, 0.2], None),
        _rollout_row("sdkd", 0, [1.0, 1.0], [0.5, 0.6], None),
        _rollout_row("sdkd", 1, [1.0, 2.0], [0.5, 0.4], 2),
    ]
    out = study_rollout.summarize(rows, ["none", "sdkd"])
    none, sdkd = out["students"]["unet"]["none"], out["students"]["unet"]["sdkd"]
    assert none["behind_persistence_lead"] == [2, None]
    assert none["final_mse"][0] == pytest.approx(3.0)
    # two values: half-width = t(0.975, 1) * stdev / sqrt(2) = 12.706 * 1.414 / 1.414
    assert none["final_mse"][1] == pytest.approx(12.7062, rel=1e-4)
    assert [m for m, _ in none["curves"]["mse"]] == pytest.approx([1.0, 3.0])
    assert sdkd["final_energy"]["high"][0] == pytest.approx(0.5)
    # paired by seed: high-band ratio +0.2 for both seeds; MSE gains 50 % in both
    assert sdkd["vs_none_final_energy"]["high"][0] == pytest.approx(0.2)
    assert sdkd["vs_none_final_energy"]["high"][1] == pytest.approx(0.0, abs=1e-9)
    assert sdkd["vs_none_final_mse_relative"][0] == pytest.approx(0.5)
    assert "vs_none_final_energy" not in none
    lines = "\n".join(study_rollout.markdown(out))
    assert "| unet | none | 2, never |" in lines and "| unet | sdkd | never, 2 |" in lines
    assert (
        study_rollout.summarize(
            [{k: v for k, v in r.items() if k != "rollout"} for r in rows], ["none"]
        )
        == {}
    )
