"""File locks for one project: one ``kedro run`` at a time, and the MLflow schema made once.

``ProjectLock`` is an exclusive ``flock`` on ``<project>/data/.run.lock``. Two ``kedro run`` in
one project would share run folders (one "resumes" the other's ``last.pt``) and write the same
outputs; the second one is refused at once with the holder's pid, host, start time and command
(written into the file). The operating system releases a ``flock`` when its process ends, even
on SIGKILL, so a lock never outlives its holder on this machine; a lock file left behind
without a holder is simply taken. Within one process the lock is re-entrant (a notebook or a
test running several sessions).

``serialized(path)`` holds an exclusive lock on ``path`` (blocking) around a block: used so
that only one process at a time creates the embedded SQLite tracking store's schema (MLflow's
migrations are not safe to run twice at once: ``table _alembic_tmp_experiments already
exists``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sdkd_pipeline.errors import SDKDError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = Path("data") / ".run.lock"


class ProjectLockedError(SDKDError, RuntimeError):
    """Another process holds the project's run lock."""


def _holder_text() -> str:
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(
                Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)
            ),
        }
    )


def _describe(path: Path) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:
        return "another process"
    return (
        f"process {holder.get('pid')} on {holder.get('host')} (started "
        f"{holder.get('started')}: `{holder.get('command')}`)"
    )


class ProjectLock:
    """The project's run lock (see the module docstring); ``acquire`` / ``release``."""

    _held: dict[Path, IO[str]] = {}  # per process: path -> open handle holding the flock

    def __init__(self, root: Path | str = ".") -> None:
        self.path = (Path(root) / LOCK_FILE).resolve()

    @property
    def held(self) -> bool:
        return self.path in self._held

    def acquire(self) -> None:
        if fcntl is None or self.held:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ProjectLockedError(
                f"{self.path}: {_describe(self.path)} is running in this project; wait for it "
                "to finish (or stop it), then rerun. Two runs at once would share run folders "
                "and outputs. The lock ends with its process, so no stale lock can remain"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(_holder_text())
        handle.flush()
        self._held[self.path] = handle

    def release(self) -> None:
        handle = self._held.pop(self.path, None)
        if handle is None:
            return
        try:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()


@contextmanager
def serialized(path: Path | str) -> Iterator[None]:
    """Hold an exclusive (blocking) lock on ``path`` for the block; a no-op without flock."""
    if fcntl is None:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
