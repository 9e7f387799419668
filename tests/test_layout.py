"""The package layout: old import paths users hold keep working; modules stay readable."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sdkd_pipeline"


def test_old_import_paths_still_work():
    from sdkd_pipeline.models import build_model
    from sdkd_pipeline.spectral import BandSplit
    from sdkd_pipeline.training import train

    assert callable(train) and callable(build_model)
    assert BandSplit.__module__ == "sdkd_pipeline.spectral.bands"


def test_every_package_has_a_docstring_and_no_module_is_over_600_lines():
    for init in SRC.rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, f"modules over 600 lines: {long}"


def test_a_function_over_80_lines_says_why_in_its_docstring():
    # "one function because ..." / "long because ..." (any sentence with "because" or "why")
    unexplained = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                doc = (ast.get_docstring(node) or "").lower()
                # the code's lines: from the first statement after the docstring
                first = node.body[1] if doc and len(node.body) > 1 else node.body[0]
                length = node.end_lineno - first.lineno + 1
                if length > 80 and not any(w in doc for w in ("because", "why", "long:")):
                    unexplained.append(
                        f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)"
                    )
    assert not unexplained, "\n".join(unexplained)
