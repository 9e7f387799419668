"""Error types raised on bad input.

Every message names the file or the parameter at fault and says what is wrong, so a user can
fix it without reading a traceback.
"""

from __future__ import annotations


class SDKDError(Exception):
    """Base class of the project's own errors."""


class ConfigError(SDKDError, ValueError):
    """A parameter has a value the code cannot use (names the parameter)."""


class DataError(SDKDError, ValueError):
    """Input data is malformed: wrong variable or shape, NaN/Inf, gaps (names the file)."""


class MissingRawDataError(SDKDError, FileNotFoundError):
    """An enabled dataset has no raw files; the message says where they go or how to get them."""


class DownloadError(SDKDError, OSError):
    """A download failed for good: checksum or size mismatch, too many retries, unsafe archive."""


class MissingInputError(SDKDError, FileNotFoundError):
    """A pipeline needs the output of an earlier stage that has not run; names the command."""
