"""The typed record of one configured download (``RemoteFile``) and the checks of its fields.

URLs and checksums live in the configuration; ``RemoteFile.from_config`` turns one entry
``{url, filename?, sha256?, size?}`` into a record, every error naming the entry's parameter
path. The ``_check_*`` validators are shared with ``fetch.download_file``'s arguments.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdkd_pipeline.config_utils import unknown_parameter
from sdkd_pipeline.errors import ConfigError

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SUPPORTED_SCHEMES = ("http", "https", "ftp", "file")


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
            raise unknown_parameter(param_path, unknown[0], allowed)
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
