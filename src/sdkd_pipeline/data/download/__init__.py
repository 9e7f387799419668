"""Resumable, verified downloads and safe archive extraction.

Only the standard library (``urllib``) and ``tqdm`` are used, so this runs on a bare GPU box.
The package re-exports the public names of its modules: ``remote`` (:class:`RemoteFile`, the
typed record of one configured file, and the checks of its URL, name, size and digest),
``fetch`` (:func:`download_file`: resumed, retried, size/SHA-256 verified, renamed into place
only when complete; :func:`fetch_all` for a list of records; :func:`sha256_of`) and
``extract`` (:func:`extract_archive`, which refuses members escaping the target and moves the
result into place only when every member was written).
"""

from sdkd_pipeline.data.download.extract import extract_archive
from sdkd_pipeline.data.download.fetch import (
    CHUNK_BYTES,
    MAX_BACKOFF_S,
    PART_SUFFIX,
    USER_AGENT,
    download_file,
    fetch_all,
    sha256_of,
)
from sdkd_pipeline.data.download.remote import RemoteFile

__all__ = [
    "CHUNK_BYTES",
    "MAX_BACKOFF_S",
    "PART_SUFFIX",
    "USER_AGENT",
    "RemoteFile",
    "download_file",
    "extract_archive",
    "fetch_all",
    "sha256_of",
]
