"""A real HTTP server on 127.0.0.1 for download tests, with switchable fault injection.

It serves the files of one directory on an ephemeral port from a background thread, honours
single-range ``Range: bytes=a-b`` / ``a-`` / ``-n`` requests with 206 (416 when unsatisfiable),
and records every request so tests can assert what the client asked for.

Faults (see :class:`Faults`; change them on ``server.faults`` at any time):

- ``cut_after_bytes`` + ``cut_first_requests``: announce the full Content-Length, send only that
  many body bytes, then close the connection, on the first K requests.
- ``ignore_range``: answer 200 with the whole file even when a Range was asked for.
- ``error_status`` + ``error_first_requests``: answer e.g. 500 on the first K requests.
- ``corrupt_content``: serve the right number of bytes with every byte flipped.
- ``stall_s`` + ``stall_first_requests``: after half the body, sleep (to trigger client timeouts).
- ``omit_content_length``: send no Content-Length (the body ends when the connection closes).
- ``before_body``: a callback run in the server thread just before the body is sent.
- ``redirects``: ``{"/old": "/new"}`` answered with 302.

Usage::

    from tests.http_server import Faults, serve_directory

    with serve_directory(tmp_path / "www", Faults(ignore_range=True)) as server:
        url = server.url_for("file.bin")
        ...
        assert server.requests[1].range_header == "bytes=100-"

or the ``http_server`` fixture (import it into a test module or a conftest), which serves
``tmp_path / "www"``.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@dataclass
class RecordedRequest:
    """What the client sent, and how the server answered."""

    path: str
    range_header: str | None
    status: int = 0
    body_bytes_sent: int = 0


@dataclass
class Faults:
    cut_after_bytes: int | None = None
    cut_first_requests: int = 0
    ignore_range: bool = False
    error_status: int | None = None
    error_first_requests: int = 0
    corrupt_content: bool = False
    stall_s: float = 0.0
    stall_first_requests: int = 0
    omit_content_length: bool = False
    before_body: Callable[[RecordedRequest], None] | None = None
    redirects: dict[str, str] = field(default_factory=dict)


class LocalHTTPServer:
    """A running server: ``url_for(name)``, ``requests`` (recorded), ``faults`` (mutable)."""

    def __init__(self, root: Path, faults: Faults | None = None) -> None:
        self.root = Path(root)
        self.faults = faults or Faults()
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        # A short poll interval makes shutdown (once per test) quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url_for(self, name: str) -> str:
        return f"{self.base_url}/{urllib.parse.quote(name)}"

    def requests_for(self, name: str) -> list[RecordedRequest]:
        path = "/" + name
        return [r for r in self.requests if r.path == path]

    def _record(self, request: RecordedRequest) -> int:
        """Store the request; return its 0-based index (used by the first-K-requests faults)."""
        with self._lock:
            self.requests.append(request)
            return len(self.requests) - 1

    def start(self) -> LocalHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for one satisfiable range; None when unsatisfiable/malformed."""
    match = _RANGE_RE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    if not match.group(1):  # suffix range: the last n bytes
        n = int(match.group(2))
        if n == 0 or size == 0:
            return None
        return max(0, size - n), size - 1
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else size - 1
    if first >= size or last < first:
        return None
    return first, min(last, size - 1)


def _make_handler(server: LocalHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
            pass  # keep test output clean

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            faults = server.faults
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            record = RecordedRequest(path=path, range_header=self.headers.get("Range"))
            index = server._record(record)

            if path in faults.redirects:
                record.status = 302
                self.send_response(302)
                self.send_header("Location", faults.redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if faults.error_status is not None and index < faults.error_first_requests:
                record.status = faults.error_status
                self.send_error(faults.error_status)
                return
            file_path = (server.root / path.lstrip("/")).resolve()
            if server.root.resolve() not in file_path.parents or not file_path.is_file():
                record.status = 404
                self.send_error(404)
                return

            data = file_path.read_bytes()
            if faults.corrupt_content:
                data = bytes(b ^ 0xFF for b in data)
            first, last = 0, len(data) - 1
            status = 200
            if record.range_header and not faults.ignore_range:
                wanted = _parse_range(record.range_header, len(data))
                if wanted is None:
                    record.status = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                first, last = wanted
                status = 206
            body = data[first : last + 1]

            record.status = status
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            if not faults.omit_content_length:
                self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
            self.end_headers()
            if faults.before_body is not None:
                faults.before_body(record)

            if faults.cut_after_bytes is not None and index < faults.cut_first_requests:
                body = body[: faults.cut_after_bytes]
                self.close_connection = True
            if faults.stall_s and index < faults.stall_first_requests:
                half = len(body) // 2
                self.wfile.write(body[:half])
                self.wfile.flush()
                time.sleep(faults.stall_s)
                body = body[half:]
                record.body_bytes_sent += half
            try:
                self.wfile.write(body)
                self.wfile.flush()
                record.body_bytes_sent += len(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. after its timeout)

    return Handler


@contextmanager
def serve_directory(root: Path | str, faults: Faults | None = None) -> Iterator[LocalHTTPServer]:
    """Serve ``root`` on 127.0.0.1 (ephemeral port) for the duration of the ``with`` block."""
    server = LocalHTTPServer(Path(root), faults).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[LocalHTTPServer]:
    """A fault-free server over ``tmp_path / "www"`` (created empty); set ``.faults`` to inject."""
    root = tmp_path / "www"
    root.mkdir(exist_ok=True)
    with serve_directory(root) as server:
        yield server


def publish(server: LocalHTTPServer, name: str, source: Path | bytes) -> str:
    """Put a file (a path to copy, or bytes) into the served directory; return its URL."""
    target = server.root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        target.write_bytes(source)
    else:
        shutil.copyfile(source, target)
    return server.url_for(name)
