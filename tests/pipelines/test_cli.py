"""`kedro run` answers a user's mistake with its message and exit 2, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sdkd_pipeline.cli import user_error
from sdkd_pipeline.errors import ConfigError


def _kedro(project, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            "distill.methods=",
            "parameter distill.methods is empty: name at least one, e.g. --params "
            '"distill.methods=none+sdkd"',
        ),
        ("navier_stokes.source.kind=genrate", "navier_stokes.source.kind"),
    ],
)
def test_a_bad_parameter_is_one_message_and_exit_2(project, params, message):
    proc = _kedro(project, "run", "--env=smoke", "--pipelines=data", "--params", params)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert message in out and "Traceback" not in out and "╭─" not in out
    assert not list((project / "data").rglob("*.zarr"))  # refused before any data were made


def test_the_user_error_is_found_behind_a_wrapping_exception():
    try:
        try:
            raise ConfigError("a.b must be >= 1")
        except ConfigError as inner:
            raise RuntimeError("node failed") from inner
    except RuntimeError as outer:
        assert str(user_error(outer)) == "a.b must be >= 1"
    assert user_error(ValueError("not ours")) is None
