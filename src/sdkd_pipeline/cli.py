"""The project's Kedro CLI: ``kedro run`` as Kedro defines it, but a user's mistake (a bad
parameter, a missing or damaged file, a locked project: any ``SDKDError``) is printed as its
one message, which names what to fix, and exits 2, instead of a page of traceback.
Everything else (options, other errors, other commands) is Kedro's own."""

from __future__ import annotations

import functools
import sys
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run

from sdkd_pipeline.errors import SDKDError


def user_error(exc: BaseException | None) -> SDKDError | None:
    """The ``SDKDError`` behind ``exc`` (itself, or a cause or context it was raised from)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, SDKDError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _friendly(callback: Any) -> Any:
    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except Exception as exc:
            error = user_error(exc)
            if error is None:
                raise
            click.secho(f"Error: {error}", fg="red", err=True)
            sys.exit(2)

    return wrapper


@click.group(name="sdkd_pipeline")
def cli() -> None:
    """sdkd-pipeline's project commands."""


run = click.Command(
    name=kedro_run.name,
    callback=_friendly(kedro_run.callback),
    params=list(kedro_run.params),
    help=kedro_run.help,
    short_help=kedro_run.short_help,
    context_settings=kedro_run.context_settings,
)
cli.add_command(run)
