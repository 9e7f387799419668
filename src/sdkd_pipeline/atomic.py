"""The one way files and folders are written here: a hidden temporary sibling, renamed into place.

A reader (or a rerun after a kill) sees either the old file or the complete new one, never a
part: ``atomic_path(path)`` yields a temporary sibling (``.<name>.tmp-<pid>-<hex>``) to write,
then renames it over ``path`` (a folder such as a Zarr store is swapped in with
``replace_dir``, the old one put back if the swap fails); on any error the temporary is removed
and ``path`` is untouched. A full disk or another ``OSError`` becomes a ``DataError`` naming
``path`` and the reason. Temporaries left by a killed process match ``TMP_MARK`` and are
removed by whoever writes there next (the engine, the store writer).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sdkd_pipeline.errors import DataError

TMP_MARK = ".tmp-"


def temporary_sibling(path: Path, suffix: str = "") -> Path:
    """A fresh hidden name next to ``path`` (``suffix`` keeps e.g. ``.zarr`` or ``.onnx``)."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_dir(new: Path, target: Path) -> None:
    """Move folder ``new`` to ``target``; an existing ``target`` is swapped out first, then
    deleted (put back if the swap fails)."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)  # put the previous one back
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path`` (a file
    by ``os.replace``, a folder by ``replace_dir``), on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path, suffix)
    try:
        yield tmp
        if tmp.is_dir():
            replace_dir(tmp, path)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        reason = exc.strerror or str(exc)
        raise DataError(f"{path}: could not be written ({reason}); nothing was replaced") from exc
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(text: str, path: str | Path) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_bytes(text.encode(), path)
