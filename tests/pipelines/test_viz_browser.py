"""`kedro viz run` renders the DAG in a real browser, grouped dataset -> student -> method.

`test_viz.py` checks the JSON that kedro-viz serves; this test checks the page a user sees: it
starts the kedro-viz server in the throw-away project, loads it in headless Chromium (Debian's
`chromium`, which `.ci/run` installs) and reads the rendered DOM: the node labels drawn in the
flowchart and the nested pipeline tree in the sidebar.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SERVER_START_S = 180  # the server imports the whole project; ~10 s idle, ~30 s on a busy 2-core box
BROWSER_S = 90
STUDENTS = ("unet", "resnet", "mlp_mixer")
METHODS = ("none", "sdkd", "aekd")
TEACHERS = ("simvp", "st_alternet")

# flags for a headless, offline, root-run Chromium:
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # Chromium refuses to run as root with its sandbox
    "--disable-gpu",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
    # every host but the local server fails at once, so kedro-viz's Google Fonts link cannot
    # stall the page (it only changes the font) whether the machine is online or not
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    # run the page's timers until the app has fetched /api/main and laid out the graph
    "--virtual-time-budget=20000",
)


def _chromium() -> str | None:
    if os.environ.get("CHROMIUM_BIN"):
        return shutil.which(os.environ["CHROMIUM_BIN"])
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _free_port() -> int:
    # kedro-viz refuses ports above 49151, so the OS's ephemeral range (up to 60999) won't do
    for _ in range(100):
        port = random.randrange(20000, 49000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port in 20000-49000")


def _get(url: str, timeout: float) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return response.status


def _wait_for_server(proc: subprocess.Popen, log: Path, port: int) -> str:
    """The URL the server answers at, once /api/main answers 200; fails with the server's log."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"kedro viz exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        # kedro-viz moves on to the next port if ours was taken meanwhile; it prints the one used
        found = re.search(r"running at\s+(http://127\.0\.0\.1:\d+)/", log.read_text())
        url = found.group(1) if found else f"http://127.0.0.1:{port}"
        try:
            if _get(f"{url}/api/main", timeout=5) == 200:
                return url
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"kedro viz did not answer within {SERVER_START_S} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and the process kedro-viz spawns for it (one process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _render(chromium: str, url: str, profile: Path) -> str:
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=BROWSER_S,
    )
    assert result.returncode == 0 and "<html" in result.stdout, (
        f"{chromium} --dump-dom {url} failed ({result.returncode}):\n{result.stderr[-3000:]}"
    )
    return result.stdout


class _Page(HTMLParser):
    """The flowchart's node labels and the sidebar's pipeline tree, from a rendered DOM."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}

    def __init__(self, html: str):
        super().__init__()
        self.labels: list[str] = []  # <text class="pipeline-node__text"> in the flowchart SVG
        self.tree: list[dict] = []  # <li role="treeitem">: {"label", "parent"} (parent a dict)
        self._stack: list[tuple[str, dict | None]] = []
        self._capture: tuple[str, int, list[str]] | None = None
        self.feed(html)
        self.close()

    def _item(self) -> dict | None:
        return next((item for _, item in reversed(self._stack) if item is not None), None)

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        item = None
        if tag == "li" and attrs.get("role") == "treeitem":
            item = {"label": None, "parent": self._item()}
            self.tree.append(item)
        self._stack.append((tag, item))
        if tag == "text" and "pipeline-node__text" in classes:
            self._capture = ("flowchart", len(self._stack), [])
        elif tag == "span" and "row-text__label" in classes:
            self._capture = ("tree", len(self._stack), [])

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if self._capture and len(self._stack) == self._capture[1]:
            kind, _, parts = self._capture
            self._capture = None
            text = "".join(parts).strip()
            if kind == "flowchart":
                self.labels.append(text)
            elif (item := self._item()) is not None and item["label"] is None:
                item["label"] = text
        while self._stack and self._stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        if self._capture:
            self._capture[2].append(data)

    def paths(self) -> set[tuple[str, ...]]:
        """Each tree row as its path from the top: ("navier_stokes", "navier_stokes.unet", ...)."""
        out = set()
        for item in self.tree:
            path = []
            while item is not None:
                path.append(item["label"])
                item = item["parent"]
            out.add(tuple(reversed(path)))
        return out


def test_kedro_viz_renders_the_dag_in_chromium(project, tmp_path):
    chromium = _chromium()
    if chromium is None:
        wanted = os.environ.get("CHROMIUM_BIN") or ", ".join(BROWSERS)
        pytest.skip(f"no Chromium ({wanted}) on PATH; .ci/run installs Debian's `chromium`")
    port = _free_port()
    # kedro-viz asks PyPI for its latest version (up to 30 s offline); a dead proxy answers at once
    dead_proxy = "http://127.0.0.1:9"
    proxies = {name: dead_proxy for name in ("http_proxy", "https_proxy")}
    proxies = {**proxies, **{k.upper(): v for k, v in proxies.items()}}
    env = {
        **os.environ,
        **proxies,
        "no_proxy": "127.0.0.1,localhost",
        "NO_PROXY": "127.0.0.1,localhost",
        "KEDRO_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
    }
    log = tmp_path / "viz.log"
    command = [sys.executable, "-m", "kedro", "viz", "run"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-browser"]
    with log.open("w") as out:
        server = subprocess.Popen(
            command,
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so _stop reaches the spawned server
        )
    try:
        url = _wait_for_server(server, log, port)
        collapsed = _Page(_render(chromium, f"{url}/", tmp_path / "profile-collapsed"))
        expanded = _Page(
            _render(chromium, f"{url}/?expandAllPipelines=true", tmp_path / "profile-expanded")
        )
    finally:
        _stop(server)

    # collapsed (the default view): one node per dataset in the flowchart, and beside them the
    # reporting outputs (the run report reads every summary, so none hangs off a group)
    assert {"navier_stokes", "rayleigh_benard"} <= set(collapsed.labels), collapsed.labels
    assert "navier_stokes.run_report" in collapsed.labels, collapsed.labels
    assert not [label for label in collapsed.labels if label.endswith("summary")], collapsed.labels

    # expanded: the nodes themselves, and dataset -> student -> method in the pipeline tree
    labels = set(expanded.labels)
    nodes = {"acquire_navier_stokes_raw_fields", "build_rayleigh_benard_tensor_store"}
    nodes |= {"train_teacher_simvp", "distill_unet_with_sdkd", "train_unet_without_teacher"}
    nodes |= {"navier_stokes.tensors", "rayleigh_benard.tensors"}
    assert nodes <= labels, sorted(nodes - labels)
    assert "navier_stokes" not in labels  # the group node gave way to its contents
    paths = expanded.paths()
    for dataset in ("navier_stokes", "rayleigh_benard"):
        for step in ("acquire_{}_raw_fields", "build_{}_tensor_store", "summarize_{}_tensor_store"):
            assert (dataset, step.format(dataset)) in paths, (dataset, step)
    # the laptop default trains teachers on NS only (teacher.datasets)
    for teacher in TEACHERS:
        group = ("navier_stokes", f"navier_stokes.{teacher}")
        assert (*group, f"train_teacher_{teacher}") in paths, teacher
        assert (*group, f"analyse_{teacher}_latent_spectra") in paths, teacher
    for student in STUDENTS:
        for method in METHODS:
            group = (
                "navier_stokes",
                f"navier_stokes.{student}",
                f"navier_stokes.{student}.{method}",
            )
            label = (
                f"train_{student}_without_teacher"
                if method == "none"
                else f"distill_{student}_with_{method}"
            )
            assert (*group, label) in paths, group
            assert f"navier_stokes.{student}.{method}.checkpoint" in labels
