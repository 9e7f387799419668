"""`python -m sdkd_pipeline.deploy pick`: the best student for a latency budget."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sdkd_pipeline.deploy.__main__ import main
from sdkd_pipeline.deploy.pick import Candidate, choose, pick_student
from sdkd_pipeline.errors import ConfigError, DataError
from sdkd_pipeline.models import build_model

SHAPE = {"in_frames": 3, "out_frames": 2, "channels": 1, "height": 16, "width": 16}
CONFIGS = {"unet": {"hidden": 8, "base_width": 8}, "resnet": {"hidden": 8, "base_width": 8}}


def _candidate(name, val, ms):
    return Candidate(name, "none", "eager", f"{name}.pt", val, math.nan, ms, 1)


def test_choose_takes_the_most_accurate_within_the_budget_and_the_front_is_right():
    from sdkd_pipeline.evaluation.plots.tradeoffs import pareto_front

    cands = [
        _candidate("a", 0.10, 1.0),  # fastest, least accurate: on the front
        _candidate("b", 0.05, 2.0),  # on the front
        _candidate("c", 0.06, 3.0),  # dominated by b
        _candidate("d", 0.02, 8.0),  # most accurate, slow: on the front
        _candidate("e", 0.05, 1.5),  # dominates b? no: e is faster and as good -> b dominated
    ]
    assert choose(cands, 2.5).student == "e"  # b and e tie on accuracy: the faster
    assert choose(cands, 10.0).student == "d"
    assert choose(cands, 1.2).student == "a"
    assert pareto_front([c.val_mse for c in cands], [c.latency_ms for c in cands]) == [0, 4, 3]


@pytest.mark.bad_input
def test_a_budget_no_student_meets_names_the_fastest():
    cands = [_candidate("a", 0.1, 4.0), _candidate("b", 0.2, 3.0)]
    with pytest.raises(ConfigError, match=r"--budget-ms 1: no student .* fastest is b/none"):
        choose(cands, 1.0)


def _students(root, val_losses):
    for (student, method), val in val_losses.items():
        torch.manual_seed(0)
        model = build_model(student, **SHAPE, **CONFIGS[student])
        folder = root / "x" / "students" / student
        folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": student,
            "method": method,
            "dataset": "x",
            "role": "student",
            "model_config": CONFIGS[student],
            "shape": SHAPE,
            "channels": ["u"],
            "mean": torch.tensor([1.0]),
            "std": torch.tensor([2.0]),
            "state_dict": model.state_dict(),
            "best_val_loss": val,
            "test_loss": val * 1.1,
            "best_epoch": 1,
        }
        torch.save(payload, folder / f"{method}.pt")


def test_pick_times_every_student_and_form_and_writes_the_front(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    models = tmp_path / "models"
    _students(models, {("unet", "none"): 0.3, ("unet", "sdkd"): 0.2, ("resnet", "none"): 0.25})
    args = ["pick", "--dataset", "x", "--budget-ms", "1000", "--repeats", "3"]
    args += ["--models-dir", str(models), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["chosen"]["student"] == "unet" and result["chosen"]["method"] == "sdkd"
    report = json.loads((tmp_path / "out" / "pick_x_b1.json").read_text())
    assert len(report["candidates"]) == 9  # 3 students x eager, TorchScript, ONNX
    assert {c["format"] for c in report["candidates"]} == {"eager", "torchscript", "onnx"}
    assert (tmp_path / "out" / "pick_x_b1.png").stat().st_size > 10_000
    exported = sorted(p.name for p in (models / "x" / "exports").iterdir())
    assert exported == [
        f"{m}.{e}" for m in ("resnet_none", "unet_none", "unet_sdkd") for e in ("onnx", "pt")
    ]
    # the chosen form is the fastest of the best student's (all three have its accuracy)
    best = [c for c in report["candidates"] if c["method"] == "sdkd"]
    assert result["chosen"]["latency_ms"] == min(c["latency_ms"] for c in best)

    # a second pick reuses the exports
    stamps = {p: p.stat().st_mtime_ns for p in (models / "x" / "exports").iterdir()}
    pick_student("x", 1000, models_dir=models, repeats=2, formats=["onnx"])
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.bad_input
def test_pick_errors_are_one_message(tmp_path, capsys):
    models = tmp_path / "models"
    with pytest.raises(
        DataError, match=r"no trained students of 'x' .*kedro run --pipelines=distill"
    ):
        pick_student("x", 5, models_dir=models)
    _students(models, {("unet", "none"): 0.3})
    with pytest.raises(ConfigError, match=r"^--budget-ms must be > 0, got 0"):
        pick_student("x", 0, models_dir=models)
    with pytest.raises(ConfigError, match=r"^--formats: unknown format\(s\) \['tflite'\]"):
        pick_student("x", 5, models_dir=models, formats=["tflite"])
    args = ["pick", "--dataset", "x", "--budget-ms", "0.000001", "--formats", "eager"]
    assert main([*args, "--models-dir", str(models), "--repeats", "2", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no student runs within it; the fastest is unet/none (eager)" in err
    assert "Traceback" not in err and not list(tmp_path.glob("pick_*"))
