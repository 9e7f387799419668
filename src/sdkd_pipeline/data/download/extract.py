"""Safe archive extraction: ``extract_archive`` for zip and tar(.gz/.bz2/.xz) files.

``extract_archive`` refuses members that would land outside the target directory (absolute
paths, ``..``, links escaping, device files) and extracts into a temporary sibling directory
that is moved into place only when everything was written. It also caps what an archive may
expand to (a zip bomb): the bytes actually written (not the sizes the archive declares), at most
``max_ratio`` times the archive's size and ``max_bytes`` in all, and at most ``max_members``
entries; past a limit it stops, deletes what it wrote and names the archive and the limit.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm.auto import tqdm

from sdkd_pipeline.data.download.fetch import CHUNK_BYTES
from sdkd_pipeline.errors import DownloadError

# what an archive may expand to; the WB1 archives (NetCDF, deflate) expand ~1.1-3x
DEFAULT_MAX_RATIO = 100.0
DEFAULT_MAX_BYTES = 512 * 2**30
DEFAULT_MAX_MEMBERS = 100_000


class _Budget:
    """Counts members and written bytes against the extraction limits."""

    def __init__(
        self, archive: Path, max_bytes: int | None, max_ratio: float | None, max_members: int | None
    ) -> None:
        self.archive = archive
        limits = []
        if max_bytes is not None:
            limits.append((int(max_bytes), f"max_bytes = {int(max_bytes)}"))
        if max_ratio is not None:
            size = archive.stat().st_size
            limits.append(
                (
                    int(max_ratio * max(size, 1)),
                    f"max_ratio = {max_ratio:g} x the archive's {size} bytes",
                )
            )
        self.max_bytes, self.why = min(limits) if limits else (None, "")
        self.max_members = max_members
        self.bytes = 0
        self.members = 0

    def member(self, name: str) -> None:
        self.members += 1
        if self.max_members is not None and self.members > self.max_members:
            raise DownloadError(
                f"{self.archive}: holds more than {self.max_members} members (at {name!r}); "
                "refusing to extract it (max_members; raise it if the archive is genuine)"
            )

    def wrote(self, name: str, n: int) -> None:
        self.bytes += n
        if self.max_bytes is not None and self.bytes > self.max_bytes:
            raise DownloadError(
                f"{self.archive}: expands to more than {self.max_bytes} bytes (at {name!r}; "
                f"limit {self.why}); refusing to extract it, nothing was kept (raise the limit "
                "if the archive is genuine)"
            )


@dataclass(frozen=True)
class _Member:
    """One archive entry, format-independent."""

    name: str  # as stored in the archive, for error messages
    kind: str  # "file", "dir", "symlink" or "hardlink"
    link_target: str = ""
    mode: int = 0o644
    mtime: float | None = None
    open_stream: Callable[[], IO[bytes]] | None = None


def _reject(archive: Path, member: str, why: str) -> DownloadError:
    return DownloadError(
        f"unsafe archive {archive}: member {member!r} {why}; nothing was extracted"
    )


def _safe_parts(archive: Path, member: str, name: str) -> tuple[str, ...]:
    """Split a member path into components, refusing anything that could leave the target."""
    if "\x00" in name:
        raise _reject(archive, member, "has a NUL byte in its name")
    if "\\" in name:
        raise _reject(archive, member, "uses a backslash in its path")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _reject(archive, member, "has an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _reject(archive, member, "has a '..' path component")
    return parts


def _resolve_link(
    archive: Path, member: str, link_dir: tuple[str, ...], target: str
) -> tuple[str, ...]:
    """Lexically resolve a link target relative to ``link_dir``; refuse if it leaves the root."""
    if "\x00" in target or "\\" in target:
        raise _reject(archive, member, f"links to {target!r}, which has an unsafe character")
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise _reject(archive, member, f"links to the absolute path {target!r}")
    resolved = list(link_dir)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise _reject(archive, member, f"links to {target!r}, outside the target directory")
            resolved.pop()
        else:
            resolved.append(part)
    return tuple(resolved)


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zf.infolist():
        unix_mode = info.external_attr >> 16 if info.create_system == 3 else 0
        file_type = stat.S_IFMT(unix_mode)
        mtime = time.mktime((*info.date_time, 0, 0, -1))
        if info.is_dir():
            yield _Member(info.filename, "dir")
        elif file_type == stat.S_IFLNK:
            target = zf.read(info).decode("utf-8", errors="surrogateescape")
            yield _Member(info.filename, "symlink", link_target=target)
        elif file_type in (0, stat.S_IFREG):
            yield _Member(
                info.filename,
                "file",
                mode=stat.S_IMODE(unix_mode) or 0o644,
                mtime=mtime,
                open_stream=lambda info=info: zf.open(info),
            )
        else:
            raise _reject(archive, info.filename, "is a device, fifo or socket")


def _tar_members(archive: Path, tf: tarfile.TarFile) -> Iterator[_Member]:
    for info in tf:
        if info.isreg():
            yield _Member(
                info.name,
                "file",
                mode=info.mode,
                mtime=float(info.mtime),
                open_stream=lambda info=info: tf.extractfile(info),
            )
        elif info.isdir():
            yield _Member(info.name, "dir")
        elif info.issym():
            yield _Member(info.name, "symlink", link_target=info.linkname)
        elif info.islnk():
            yield _Member(info.name, "hardlink", link_target=info.linkname)
        elif info.ischr() or info.isblk() or info.isfifo():
            raise _reject(archive, info.name, "is a device file or fifo")
        else:
            raise _reject(archive, info.name, f"has an unsupported tar type {info.type!r}")


def _write_members(
    archive: Path, members: Iterator[_Member], root: Path, bar: tqdm, budget: _Budget
) -> list[tuple[str, ...]]:
    """Write members under ``root``; return their component paths in archive order."""
    written: list[tuple[str, ...]] = []
    kinds: dict[tuple[str, ...], str] = {}  # explicit members and implied parent directories
    symlinks: list[tuple[str, tuple[str, ...]]] = []
    listed: set[tuple[str, ...]] = set()
    for member in members:
        parts = _safe_parts(archive, member.name, member.name)
        if not parts:
            continue  # the archive's own root ("./")
        budget.member(member.name)
        for depth in range(1, len(parts)):
            prefix_kind = kinds.get(parts[:depth])
            if prefix_kind is None:
                kinds[parts[:depth]] = "dir"
            elif prefix_kind != "dir":
                raise _reject(
                    archive,
                    member.name,
                    f"passes through {'/'.join(parts[:depth])!r}, "
                    f"which is a {prefix_kind}, not a directory",
                )
        previous = kinds.get(parts)
        if previous is not None and not (previous == "dir" and member.kind == "dir"):
            raise _reject(archive, member.name, "appears twice or clashes with another member")
        kinds[parts] = member.kind
        if parts in listed:
            continue  # a directory listed again
        listed.add(parts)
        path = root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        if member.kind == "dir":
            path.mkdir(exist_ok=True)
        elif member.kind == "file":
            # O_EXCL | O_NOFOLLOW: never write through anything that already sits at this path.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(path, flags, 0o755 if member.mode & 0o100 else 0o644)
            with os.fdopen(fd, "wb") as sink, member.open_stream() as source:
                while block := source.read(CHUNK_BYTES):
                    budget.wrote(member.name, len(block))
                    sink.write(block)
            if member.mtime is not None:
                os.utime(path, (member.mtime, member.mtime))
        elif member.kind == "symlink":
            _resolve_link(archive, member.name, parts[:-1], member.link_target)
            os.symlink(member.link_target, path)
            symlinks.append((member.name, parts))
        elif member.kind == "hardlink":
            # Tar hard links name another member by its archive path (relative to the root).
            target = _resolve_link(archive, member.name, (), member.link_target)
            if kinds.get(target) not in ("file", "hardlink"):
                raise _reject(
                    archive,
                    member.name,
                    f"hard-links to {member.link_target!r}, which is not a file extracted before it",
                )
            try:
                os.link(root.joinpath(*target), path, follow_symlinks=False)
            except OSError:
                budget.wrote(member.name, root.joinpath(*target).stat().st_size)
                shutil.copyfile(root.joinpath(*target), path, follow_symlinks=False)
        written.append(parts)
        bar.update(1)
    # Lexical checks cannot see a link that resolves through another link (a -> ".", b -> "a/..");
    # the real resolution on disk can, and nothing has left the temporary directory yet.
    real_root = os.path.realpath(root)
    for name, parts in symlinks:
        real = os.path.realpath(root.joinpath(*parts))
        if real != real_root and not real.startswith(real_root + os.sep):
            raise _reject(archive, name, "is a symlink that resolves outside the target directory")
    return written


def extract_archive(
    archive: Path | str,
    target_dir: Path | str,
    *,
    progress: bool = True,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_ratio: float | None = DEFAULT_MAX_RATIO,
    max_members: int | None = DEFAULT_MAX_MEMBERS,
) -> list[Path]:
    """Extract a zip or tar(.gz/.bz2/.xz) archive safely into ``target_dir``.

    Members are written into a temporary sibling of ``target_dir`` and moved into place only
    after all of them were written, so a failure leaves nothing behind. Absolute paths, ``..``
    components, links resolving outside the target, device files and duplicate members raise
    :class:`DownloadError` naming the member. ``target_dir`` may exist; its existing entries
    must not clash with the archive's top-level entries. The expanded size is capped at
    ``max_bytes`` and ``max_ratio`` times the archive's size, the entries at ``max_members``
    (``None``: no such limit). Returns the extracted paths (files, directories, links) in
    archive order.
    """
    archive = Path(archive)
    target_dir = Path(target_dir)
    if not archive.is_file():
        raise DownloadError(f"archive {archive} does not exist or is not a file")
    if target_dir.exists() and not target_dir.is_dir():
        raise DownloadError(f"cannot extract {archive} into {target_dir}: it is not a directory")
    budget = _Budget(archive, max_bytes, max_ratio, max_members)
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target_dir.name}.extracting-", dir=target_dir.parent)
    )
    try:
        with tqdm(
            desc=f"extract {archive.name}",
            unit="member",
            disable=None if progress else True,
            leave=False,
        ) as bar:
            try:
                # Tar first: its header checksum is a strict test, while a zip end-of-directory
                # record could in principle sit inside a tar's last member.
                if tarfile.is_tarfile(archive):
                    with tarfile.open(archive, "r:*") as tf:
                        written = _write_members(
                            archive, _tar_members(archive, tf), staging, bar, budget
                        )
                elif zipfile.is_zipfile(archive):
                    with zipfile.ZipFile(archive) as zf:
                        bar.reset(total=len(zf.infolist()))
                        written = _write_members(
                            archive, _zip_members(archive, zf), staging, bar, budget
                        )
                else:
                    raise DownloadError(f"{archive} is neither a zip nor a tar archive")
            except DownloadError:
                raise
            except (
                zipfile.BadZipFile,
                tarfile.TarError,
                EOFError,
                RuntimeError,
                ValueError,
                OSError,
            ) as error:
                raise DownloadError(f"cannot extract {archive}: {error}") from error
        _move_into_place(archive, staging, target_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [target_dir.joinpath(*parts) for parts in written]


def _move_into_place(archive: Path, staging: Path, target_dir: Path) -> None:
    if target_dir.exists() and not any(target_dir.iterdir()):
        target_dir.rmdir()
    if not target_dir.exists():
        os.rename(staging, target_dir)  # one atomic step
        return
    entries = sorted(staging.iterdir())
    clashes = [e.name for e in entries if os.path.lexists(target_dir / e.name)]
    if clashes:
        raise DownloadError(
            f"cannot extract {archive} into {target_dir}: it already contains {clashes}; "
            f"remove them or extract elsewhere"
        )
    for entry in entries:
        os.rename(entry, target_dir / entry.name)
    staging.rmdir()
