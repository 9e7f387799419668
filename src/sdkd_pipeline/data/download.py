"""Resumable, verified downloads and safe archive extraction.

Only the standard library (``urllib``) and ``tqdm`` are used, so this runs on a bare GPU box.

Guarantees:

- ``download_file`` writes to ``<dest>.part`` and renames it over ``dest`` only after the size and
  SHA-256 check passed, so ``dest`` is either absent, an older file, or the complete verified
  file; never a partial one. A transfer cut short is resumed with an HTTP Range request on the
  next attempt; a server that ignores Range is handled by starting over.
- ``extract_archive`` refuses members that would land outside the target directory (absolute
  paths, ``..``, links escaping, device files) and extracts into a temporary sibling directory
  that is moved into place only when everything was written.

URLs and checksums live in the configuration; :class:`RemoteFile` is the typed record for one
entry and :func:`fetch_all` downloads a list of them.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from sdkd_pipeline.errors import ConfigError, DownloadError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
MAX_BACKOFF_S = 60.0
PART_SUFFIX = ".part"
USER_AGENT = "sdkd-pipeline-downloader/1.0 (+urllib)"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SUPPORTED_SCHEMES = ("http", "https", "ftp", "file")
# Client errors that are worth retrying: request timeout and rate limiting. 416 is handled on its
# own (a finished or stale .part file); every other 4xx means the request itself is wrong.
_RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})


# --------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------


def sha256_of(path: Path | str, *, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Hex SHA-256 of a file, read in chunks so large files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Remote file records (from config)
# --------------------------------------------------------------------------------------------


def _check_sha256(sha256: str | None, what: str) -> str | None:
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256.strip().lower()):
        raise ConfigError(f"{what}: expected a 64-digit hex SHA-256 digest, got {sha256!r}")
    return sha256.strip().lower()


def _check_size(size: int | None, what: str) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError(f"{what}: expected a non-negative integer byte count, got {size!r}")
    return size


def _check_url(url: str, what: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{what}: expected a URL string, got {url!r}")
    scheme = urllib.parse.urlsplit(url.strip()).scheme.lower()
    if scheme not in _SUPPORTED_SCHEMES:
        raise ConfigError(
            f"{what}: unsupported URL {url!r} (scheme must be one of {', '.join(_SUPPORTED_SCHEMES)})"
        )
    return url.strip()


def _check_filename(filename: str, what: str) -> str:
    if (
        not isinstance(filename, str)
        or filename in ("", ".", "..")
        or "/" in filename
        or "\\" in filename
        or "\x00" in filename
    ):
        raise ConfigError(
            f"{what}: expected a plain file name without directories, got {filename!r}"
        )
    return filename


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: where it is, what it is called locally, and how to verify it."""

    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", _check_url(self.url, "RemoteFile.url"))
        _check_filename(self.filename, "RemoteFile.filename")
        object.__setattr__(self, "sha256", _check_sha256(self.sha256, "RemoteFile.sha256"))
        _check_size(self.size, "RemoteFile.size")

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], param_path: str) -> RemoteFile:
        """Build from a config mapping ``{url, filename?, sha256?, size?}``.

        ``param_path`` is the dotted location of the entry in the parameters file (e.g.
        ``weatherbench.download.files[0]``); every error names it. ``filename`` defaults to the
        last path segment of the URL.
        """
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"{param_path}: expected a mapping with keys url, filename, sha256, size; "
                f"got {type(entry).__name__}"
            )
        allowed = {"url", "filename", "sha256", "size"}
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise ConfigError(
                f"{param_path}: unknown key(s) {unknown}; allowed are {sorted(allowed)}"
            )
        if "url" not in entry:
            raise ConfigError(f"{param_path}.url: missing (the URL to download)")
        url = _check_url(entry["url"], f"{param_path}.url")
        filename = entry.get("filename")
        if filename is None:
            filename = urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(url).path))
            if not filename:
                raise ConfigError(
                    f"{param_path}.filename: missing, and the URL {url!r} ends without a file name"
                )
        return cls(
            url=url,
            filename=_check_filename(filename, f"{param_path}.filename"),
            sha256=_check_sha256(entry.get("sha256"), f"{param_path}.sha256"),
            size=_check_size(entry.get("size"), f"{param_path}.size"),
        )


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


class _RetryableError(Exception):
    """An attempt failed for a reason that another attempt may not hit (network, 5xx, cut)."""


@dataclass
class _PartState:
    """The .part file and a running SHA-256 of its bytes, so verification needs no extra pass."""

    path: Path
    digest: Any = None
    hashed_bytes: int = -1

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.digest, self.hashed_bytes = None, -1

    def sync_digest(self) -> None:
        """Make ``digest`` cover exactly the bytes on disk (rehash after an interrupted run)."""
        on_disk = self.size()
        if self.digest is not None and self.hashed_bytes == on_disk:
            return
        self.digest = hashlib.sha256()
        if on_disk:
            with open(self.path, "rb") as stream:
                while block := stream.read(CHUNK_BYTES):
                    self.digest.update(block)
        self.hashed_bytes = on_disk


def _existing_file_matches(dest: Path, sha256: str | None, size: int | None) -> bool:
    if not dest.is_file():
        return False
    if size is not None and dest.stat().st_size != size:
        return False
    if sha256 is not None:
        return sha256_of(dest) == sha256
    # Without a checksum, the size (if given) is all we can check; with neither, presence counts.
    return True


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total length) from ``bytes 100-199/1000`` or ``bytes */1000``."""
    if not value:
        return None, None
    match = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value)
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return first, total


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _attempt(
    url: str,
    part: _PartState,
    *,
    expected_size: int | None,
    timeout: float,
    bar: tqdm,
) -> None:
    """One HTTP request that appends to (or restarts) the .part file until the body ends.

    Returns normally only when the whole body arrived; raises ``_RetryableError`` for failures
    another attempt may fix and ``DownloadError`` for those it cannot.
    """
    offset = part.size()
    if expected_size is not None and offset > expected_size:
        logger.warning(
            "%s is larger than the expected %d bytes; starting over", part.path, expected_size
        )
        part.discard()
        offset = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            _, total = _parse_content_range(error.headers.get("Content-Range"))
            total = total if total is not None else expected_size
            if total is not None and offset == total:
                return  # the .part already holds the whole file; verification decides.
            part.discard()  # stale or foreign .part: the next attempt starts from byte 0
            raise _RetryableError(f"HTTP 416 for a resume at byte {offset}; restarting") from error
        if error.code >= 500 or error.code in _RETRYABLE_CLIENT_STATUSES or error.code == 416:
            raise _RetryableError(f"HTTP {error.code} {error.reason}") from error
        raise DownloadError(
            f"download of {url} failed with HTTP {error.code} {error.reason}; a client error is "
            f"not retried: check the URL (and any access rights) in the configuration"
        ) from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, FileNotFoundError):  # a file:// URL to nothing
            raise DownloadError(f"download of {url} failed: {error.reason}") from error
        raise _RetryableError(f"cannot connect: {error}") from error
    except (http.client.HTTPException, OSError) as error:
        raise _RetryableError(f"cannot connect: {error}") from error

    with response:
        status = getattr(response, "status", None) or 200
        content_length = _int_header(response.headers.get("Content-Length"))
        if status == 206:
            first, total = _parse_content_range(response.headers.get("Content-Range"))
            if first != offset:
                part.discard()
                raise _RetryableError(
                    f"server answered a Range request for byte {offset} with bytes from {first}"
                )
            body_length = content_length
            if total is None and content_length is not None:
                total = offset + content_length
        else:
            if offset:
                logger.info("%s ignored the Range request; downloading from the start", url)
                part.discard()
                offset = 0
            body_length = content_length
            total = content_length

        if expected_size is not None and total is not None and total != expected_size:
            part.discard()
            raise DownloadError(
                f"size mismatch for {url} -> {part.path.with_suffix('')}: the server reports "
                f"{total} bytes, the configuration expects {expected_size}"
            )
        if total is None:
            total = expected_size

        part.sync_digest()
        bar.reset(total=total)
        bar.update(offset)
        received = 0
        try:
            with open(part.path, "ab") as sink:
                # read1 returns what has arrived instead of waiting for a full chunk, so bytes
                # received before a timeout or a cut are written and a retry resumes after them.
                read_some = getattr(response, "read1", response.read)
                while True:
                    try:
                        block = read_some(CHUNK_BYTES)
                    except (http.client.HTTPException, OSError) as error:
                        raise _RetryableError(
                            f"connection lost after {offset + received} bytes: {error!r}"
                        ) from error
                    if not block:
                        break
                    try:
                        sink.write(block)
                    except OSError as error:
                        # A full disk is not fixed by retrying; say where we tried to write.
                        raise DownloadError(f"cannot write {part.path}: {error}") from error
                    part.digest.update(block)
                    part.hashed_bytes += len(block)
                    received += len(block)
                    bar.update(len(block))
                sink.flush()
                os.fsync(sink.fileno())
        finally:
            # Buffered bytes reached the file when it closed; keep the digest honest if not.
            if part.hashed_bytes != part.size():
                part.digest, part.hashed_bytes = None, -1
        if body_length is not None and received < body_length:
            raise _RetryableError(
                f"transfer cut short: {received} of {body_length} body bytes arrived"
            )


def download_file(
    url: str,
    dest: Path | str,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming, retrying and verifying; return ``dest``.

    - Skips the download when ``dest`` already matches ``sha256`` (or, with no checksum, ``size``;
      with neither, when ``dest`` exists).
    - Writes to ``<dest>.part``; a ``.part`` left by an earlier call or attempt is resumed with a
      Range request; a server that answers 200 instead of 206 makes the download start over.
    - Connection errors, timeouts, 5xx, 408, 429 and transfers cut short are retried after
      ``backoff * 2**(n-1)`` seconds (capped at 60 s). ``retries`` counts consecutive failed
      attempts that brought no new bytes: an attempt that extended the ``.part`` file does not
      use up a retry, so a long download over a flaky link still finishes.
    - Other 4xx statuses fail at once with :class:`DownloadError`.
    - On a size or checksum mismatch the ``.part`` is deleted and :class:`DownloadError` names
      the URL, the file, and the expected and actual values. ``dest`` is only ever replaced
      (atomically, ``os.replace``) by a verified file.
    - When retries run out the ``.part`` is kept so the next call resumes it.
    """
    url = _check_url(url, "download_file(url)")
    sha256 = _check_sha256(sha256, f"download_file(sha256) for {url}")
    size = _check_size(size, f"download_file(size) for {url}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"download_file(retries): expected an integer >= 0, got {retries!r}")
    if not timeout or timeout <= 0:
        raise ConfigError(f"download_file(timeout): expected seconds > 0, got {timeout!r}")
    if backoff < 0:
        raise ConfigError(f"download_file(backoff): expected seconds >= 0, got {backoff!r}")

    dest = Path(dest)
    if dest.is_dir():
        raise DownloadError(f"cannot download {url} to {dest}: that path is a directory")
    if _existing_file_matches(dest, sha256, size):
        logger.info("%s already present and verified; skipping download of %s", dest, url)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _PartState(dest.with_name(dest.name + PART_SUFFIX))

    failures = 0
    longest_part = part.size()
    with tqdm(
        desc=dest.name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
        leave=False,
    ) as bar:
        while True:
            try:
                _attempt(url, part, expected_size=size, timeout=timeout, bar=bar)
                break
            except _RetryableError as error:
                now = part.size()
                if now > longest_part:
                    # Headway: the next resume continues from here, so this is not a strike.
                    longest_part, failures = now, 0
                    delay = backoff
                else:
                    failures += 1
                    if failures > retries:
                        raise DownloadError(
                            f"download of {url} to {dest} failed after {retries} "
                            f"retr{'y' if retries == 1 else 'ies'} without progress: {error}. "
                            f"{part.size()} bytes are kept in {part.path} and the next call "
                            f"resumes from there"
                        ) from error
                    delay = backoff * 2 ** (failures - 1)
                delay = min(delay, MAX_BACKOFF_S)
                logger.warning("download of %s: %s; retrying in %.2f s", url, error, delay)
                if delay:
                    time.sleep(delay)

    actual_size = part.size()
    if size is not None and actual_size != size:
        part.discard()
        raise DownloadError(
            f"size mismatch for {url} -> {dest}: expected {size} bytes, got {actual_size}; "
            f"the partial file was deleted"
        )
    if sha256 is not None:
        part.sync_digest()
        actual_sha = part.digest.hexdigest()
        if actual_sha != sha256:
            part.discard()
            raise DownloadError(
                f"checksum mismatch for {url} -> {dest}: expected sha256 {sha256}, got "
                f"{actual_sha}; the downloaded file was deleted"
            )
    os.replace(part.path, dest)
    return dest


def fetch_all(
    files: Iterable[RemoteFile],
    dest_dir: Path | str,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    backoff: float = 1.0,
) -> list[Path]:
    """Download every :class:`RemoteFile` into ``dest_dir`` (in order); return their paths."""
    files = list(files)
    seen: dict[str, str] = {}
    for remote in files:
        if not isinstance(remote, RemoteFile):
            raise ConfigError(f"fetch_all(files): expected RemoteFile records, got {remote!r}")
        if remote.filename in seen:
            raise ConfigError(
                f"fetch_all(files): two entries write {remote.filename!r} "
                f"({seen[remote.filename]} and {remote.url})"
            )
        seen[remote.filename] = remote.url
    dest_dir = Path(dest_dir)
    return [
        download_file(
            remote.url,
            dest_dir / remote.filename,
            sha256=remote.sha256,
            size=remote.size,
            retries=retries,
            timeout=timeout,
            progress=progress,
            backoff=backoff,
        )
        for remote in files
    ]


# --------------------------------------------------------------------------------------------
# Archive extraction
# --------------------------------------------------------------------------------------------


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
    archive: Path, members: Iterator[_Member], root: Path, bar: tqdm
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
                shutil.copyfileobj(source, sink, CHUNK_BYTES)
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
    archive: Path | str, target_dir: Path | str, *, progress: bool = True
) -> list[Path]:
    """Extract a zip or tar(.gz/.bz2/.xz) archive safely into ``target_dir``.

    Members are written into a temporary sibling of ``target_dir`` and moved into place only
    after all of them were written, so a failure leaves nothing behind. Absolute paths, ``..``
    components, links resolving outside the target, device files and duplicate members raise
    :class:`DownloadError` naming the member. ``target_dir`` may exist; its existing entries
    must not clash with the archive's top-level entries. Returns the extracted paths (files,
    directories, links) in archive order.
    """
    archive = Path(archive)
    target_dir = Path(target_dir)
    if not archive.is_file():
        raise DownloadError(f"archive {archive} does not exist or is not a file")
    if target_dir.exists() and not target_dir.is_dir():
        raise DownloadError(f"cannot extract {archive} into {target_dir}: it is not a directory")
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target_dir.name}.extracting-", dir=target_dir.parent)
    )
    try:
        with tqdm(
            desc=f"extract {archive.name}", unit="member", disable=not progress, leave=False
        ) as bar:
            try:
                # Tar first: its header checksum is a strict test, while a zip end-of-directory
                # record could in principle sit inside a tar's last member.
                if tarfile.is_tarfile(archive):
                    with tarfile.open(archive, "r:*") as tf:
                        written = _write_members(archive, _tar_members(archive, tf), staging, bar)
                elif zipfile.is_zipfile(archive):
                    with zipfile.ZipFile(archive) as zf:
                        bar.reset(total=len(zf.infolist()))
                        written = _write_members(archive, _zip_members(archive, zf), staging, bar)
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
