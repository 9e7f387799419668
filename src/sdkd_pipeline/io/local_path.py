"""Resolving a catalog ``filepath`` for datasets that write atomically on a local disk."""

from __future__ import annotations

from pathlib import Path

from kedro.io.core import get_protocol_and_path


def local_path(filepath: str, owner: str) -> Path:
    """The local path of ``filepath``; other protocols are refused, because the atomic
    write-then-rename these datasets rely on is a local-filesystem operation."""
    protocol, path = get_protocol_and_path(filepath)
    if protocol != "file":
        raise ValueError(
            f"{owner}: filepath {filepath!r} uses protocol {protocol!r}; only local paths are "
            "supported"
        )
    return Path(path)
