"""Resumable, verified downloads over ``urllib``: ``download_file`` and ``fetch_all``.

``download_file`` writes to ``<dest>.part`` and renames it over ``dest`` only after the size and
SHA-256 check passed, so ``dest`` is either absent, an older file, or the complete verified
file; never a partial one. A transfer cut short is resumed with an HTTP Range request on the
next attempt; a server that ignores Range is handled by starting over. Failures another attempt
may fix are retried with exponential backoff (``time.sleep`` is looked up here).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sdkd_pipeline.data.download.remote import (
    RemoteFile,
    _check_sha256,
    _check_size,
    _check_url,
)
from sdkd_pipeline.errors import ConfigError, DownloadError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
MAX_BACKOFF_S = 60.0
PART_SUFFIX = ".part"
USER_AGENT = "sdkd-pipeline-downloader/1.0 (+urllib)"
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

        _append_body(response, part, offset=offset, total=total, body_length=body_length, bar=bar)


def _append_body(
    response: Any,
    part: _PartState,
    *,
    offset: int,
    total: int | None,
    body_length: int | None,
    bar: tqdm,
) -> None:
    """Append the response body to the .part file (keeping its running SHA-256 in step) until
    it ends; ``_RetryableError`` when the connection drops or the body arrives short."""
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
        raise _RetryableError(f"transfer cut short: {received} of {body_length} body bytes arrived")


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
        disable=None if progress else True,  # None: off when not a terminal
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

    return _verify_and_replace(url, dest, part, sha256=sha256, size=size)


def _verify_and_replace(
    url: str, dest: Path, part: _PartState, *, sha256: str | None, size: int | None
) -> Path:
    """Check the finished .part against ``size`` and ``sha256`` (deleting it on a mismatch)
    and rename it over ``dest``."""
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
