"""The README's count of distinct bad inputs is the suite's: `pytest -m bad_input` collects it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve().relative_to(REPO).as_posix()
SECTION = "**Damaged files, concurrent runs.**"
CLAIM = re.compile(r"\*\*(\d+) distinct bad inputs\*\*")


def _bad_input_ids() -> list[str]:
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-m",
            "bad_input",
            "-p",
            "no:cacheprovider",
            f"--ignore={SELF}",
            "tests",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    return [i for i in ids if not i.startswith(SELF)]  # this test is no bad input of its own


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    assert SECTION in text, f"README.md has no {SECTION!r} paragraph"
    start = text.index(SECTION)
    end = text.find("\n\n", start)
    return text[start : end if end != -1 else len(text)]


def test_the_readme_states_the_number_of_bad_inputs_the_suite_checks():
    ids = _bad_input_ids()
    assert ids, "no test is marked bad_input"
    assert len(ids) == len(set(ids))
    claims = CLAIM.findall(_readme_section())
    assert len(claims) == 1, f"the {SECTION!r} paragraph should state '**N distinct bad inputs**'"
    assert int(claims[0]) == len(ids), (
        f"README.md says {claims[0]} distinct bad inputs, `pytest -m bad_input` collects "
        f"{len(ids)}: update the README"
    )
    # and nowhere else a different number
    assert set(CLAIM.findall((REPO / "README.md").read_text())) == {claims[0]}
