"""The configured students obey the method's budget against the configured teachers:
latent width 20-30 % of the teachers', at most 1/5 of the smaller teacher's parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sdkd_pipeline.models import build_model
from sdkd_pipeline.models.complexity import count_parameters

CONF = Path(__file__).resolve().parents[2] / "conf"
NS = {"in_frames": 10, "out_frames": 10, "channels": 1, "height": 64, "width": 64}


def _params(env: str) -> tuple[dict, dict]:
    teacher = yaml.safe_load((CONF / "base" / "parameters_teacher.yml").read_text())["teacher"]
    distill = yaml.safe_load((CONF / "base" / "parameters_distill.yml").read_text())["distill"]
    if env != "base":
        teacher.update(
            yaml.safe_load((CONF / env / "parameters_teacher.yml").read_text())["teacher"]
        )
        distill.update(
            yaml.safe_load((CONF / env / "parameters_distill.yml").read_text())["distill"]
        )
    return teacher, distill


@pytest.mark.parametrize("env", ["base", "paper"])
def test_configured_students_fit_the_budget(env):
    teacher_params, distill = _params(env)
    teachers = [
        build_model(name, **NS, **teacher_params[name]) for name in teacher_params["models"]
    ]
    smallest = min(count_parameters(t) for t in teachers)
    for student_name in distill["students"]:
        student = build_model(student_name, **NS, **distill[student_name])
        assert count_parameters(student) <= smallest / 5, (env, student_name)
        for teacher in teachers:
            ratio = student.latent_channels / teacher.latent_channels
            assert 0.2 <= ratio <= 0.3, (env, student_name, ratio)
