"""Downloads against a real local HTTP server with injected faults, and safe extraction."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from sdkd_pipeline.data.download import (
    RemoteFile,
    download_file,
    extract_archive,
    fetch_all,
    sha256_of,
)
from sdkd_pipeline.data.download import fetch as dl_fetch
from sdkd_pipeline.errors import ConfigError, DownloadError
from tests.http_server import Faults, LocalHTTPServer, publish, serve_directory

PAYLOAD_BYTES = 300_000


@pytest.fixture
def payload() -> bytes:
    # Not compressible and not periodic, so a misplaced resume offset changes the checksum.
    return os.urandom(PAYLOAD_BYTES)


@pytest.fixture
def server(tmp_path: Path) -> LocalHTTPServer:
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root) as running:
        yield running


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record backoff delays instead of sleeping them."""
    delays: list[float] = []
    monkeypatch.setattr(dl_fetch.time, "sleep", delays.append)
    return delays


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def get(url: str, dest: Path, **kwargs) -> Path:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("backoff", 0.0)
    kwargs.setdefault("timeout", 5.0)
    return download_file(url, dest, **kwargs)


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


# ---------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------


def test_full_download_is_byte_identical_and_verified(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    dest = tmp_path / "out" / "field.bin"

    result = get(url, dest, sha256=sha(payload), size=len(payload))

    assert result == dest
    assert dest.read_bytes() == payload
    assert not part_of(dest).exists()
    assert [r.range_header for r in server.requests] == [None]


def test_transfer_cut_short_is_resumed_with_range(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    server.faults = Faults(cut_after_bytes=100_000, cut_first_requests=1)
    dest = tmp_path / "field.bin"

    get(url, dest, sha256=sha(payload))

    assert dest.read_bytes() == payload
    first, second = server.requests
    assert first.range_header is None and first.body_bytes_sent == 100_000
    assert second.range_header == "bytes=100000-"
    assert second.status == 206


def test_partial_file_from_an_earlier_run_is_resumed(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    dest = tmp_path / "field.bin"
    part_of(dest).write_bytes(payload[:123_456])

    get(url, dest, sha256=sha(payload), size=len(payload))

    assert dest.read_bytes() == payload
    assert [r.range_header for r in server.requests] == ["bytes=123456-"]


def test_server_ignoring_range_restarts_from_scratch(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    server.faults = Faults(cut_after_bytes=50_000, cut_first_requests=1, ignore_range=True)
    dest = tmp_path / "field.bin"

    get(url, dest, sha256=sha(payload), size=len(payload))

    assert dest.read_bytes() == payload
    assert server.requests[1].range_header == "bytes=50000-"
    assert server.requests[1].status == 200  # the whole file again, not appended to the part


def test_server_error_once_is_retried(server, payload, tmp_path, no_sleep):
    url = publish(server, "field.bin", payload)
    server.faults = Faults(error_status=500, error_first_requests=1)
    dest = tmp_path / "field.bin"

    get(url, dest, sha256=sha(payload), backoff=0.25)

    assert dest.read_bytes() == payload
    assert [r.status for r in server.requests] == [500, 200]
    assert no_sleep == [0.25]


def test_timeout_mid_body_is_retried_and_resumed(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    server.faults = Faults(stall_s=1.0, stall_first_requests=1)
    dest = tmp_path / "field.bin"

    get(url, dest, sha256=sha(payload), timeout=0.2)

    assert dest.read_bytes() == payload
    assert len(server.requests) == 2
    assert server.requests[1].range_header is not None  # the half that arrived was kept


def test_redirect_is_followed(server, payload, tmp_path):
    publish(server, "field.bin", payload)
    server.faults = Faults(redirects={"/old/field.bin": "/field.bin"})
    dest = tmp_path / "field.bin"

    get(server.url_for("old/field.bin"), dest, sha256=sha(payload))

    assert dest.read_bytes() == payload


@pytest.mark.bad_input
def test_checksum_mismatch_raises_and_leaves_nothing(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    server.faults = Faults(corrupt_content=True)
    dest = tmp_path / "field.bin"
    corrupted = bytes(b ^ 0xFF for b in payload)

    with pytest.raises(DownloadError) as raised:
        get(url, dest, sha256=sha(payload))

    message = str(raised.value)
    assert url in message and str(dest) in message
    assert sha(payload) in message and sha(corrupted) in message
    assert not dest.exists() and not part_of(dest).exists()
    assert len(server.requests) == 1  # a wrong checksum is not a transient fault


def test_stale_partial_with_wrong_bytes_fails_checksum_and_is_deleted(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    dest = tmp_path / "field.bin"
    part_of(dest).write_bytes(b"\0" * 1000)  # not the start of this file

    with pytest.raises(DownloadError, match="checksum mismatch"):
        get(url, dest, sha256=sha(payload))

    assert not part_of(dest).exists() and not dest.exists()
    get(url, dest, sha256=sha(payload))  # and the next call starts clean
    assert dest.read_bytes() == payload


@pytest.mark.bad_input
def test_size_mismatch_raises_and_leaves_nothing(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    dest = tmp_path / "field.bin"

    with pytest.raises(DownloadError) as raised:
        get(url, dest, size=len(payload) + 7)

    message = str(raised.value)
    assert url in message and str(dest) in message
    assert str(len(payload) + 7) in message and str(len(payload)) in message
    assert not dest.exists() and not part_of(dest).exists()


def test_size_mismatch_found_after_transfer(server, payload, tmp_path):
    # Without a Content-Length the size is only known once the body ended: the final check
    # must catch it.
    url = publish(server, "field.bin", payload)
    server.faults = Faults(omit_content_length=True)
    dest = tmp_path / "field.bin"

    with pytest.raises(
        DownloadError, match=f"expected {len(payload) - 1} bytes, got {len(payload)}"
    ):
        get(url, dest, size=len(payload) - 1)

    assert not dest.exists() and not part_of(dest).exists()


def test_body_without_content_length_downloads(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    server.faults = Faults(omit_content_length=True)
    get(url, tmp_path / "field.bin", sha256=sha(payload), size=len(payload))
    assert (tmp_path / "field.bin").read_bytes() == payload


@pytest.mark.bad_input
def test_file_urls_work_and_a_missing_file_fails_at_once(tmp_path, payload, no_sleep):
    source = tmp_path / "mirror" / "field.bin"
    source.parent.mkdir()
    source.write_bytes(payload)
    get(source.as_uri(), tmp_path / "field.bin", sha256=sha(payload))
    assert (tmp_path / "field.bin").read_bytes() == payload

    with pytest.raises(DownloadError, match="absent.bin"):
        get((tmp_path / "absent.bin").as_uri(), tmp_path / "other.bin", retries=3)
    assert no_sleep == []
    assert not (tmp_path / "other.bin").exists() and not part_of(tmp_path / "other.bin").exists()


def test_dest_that_is_a_directory_is_refused(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    (tmp_path / "field.bin").mkdir()
    with pytest.raises(DownloadError, match="is a directory"):
        get(url, tmp_path / "field.bin")
    assert server.requests == []


@pytest.mark.bad_input
def test_not_found_fails_fast_without_retries(server, tmp_path, no_sleep):
    dest = tmp_path / "missing.bin"
    url = server.url_for("missing.bin")

    with pytest.raises(DownloadError) as raised:
        get(url, dest, retries=5)

    assert "404" in str(raised.value) and url in str(raised.value)
    assert len(server.requests) == 1
    assert no_sleep == []
    assert not dest.exists() and not part_of(dest).exists()


def test_retries_exhausted_with_exponential_backoff(server, payload, tmp_path, no_sleep):
    url = publish(server, "field.bin", payload)
    server.faults = Faults(error_status=503, error_first_requests=100)
    dest = tmp_path / "field.bin"

    with pytest.raises(DownloadError, match="failed after 2 retries") as raised:
        get(url, dest, retries=2, backoff=0.5)

    assert url in str(raised.value)
    assert len(server.requests) == 3
    assert no_sleep == [0.5, 1.0]
    assert not dest.exists()


def test_rate_limit_is_retried(server, payload, tmp_path, no_sleep):
    url = publish(server, "field.bin", payload)
    server.faults = Faults(error_status=429, error_first_requests=2)
    get(url, tmp_path / "field.bin", retries=2)
    assert [r.status for r in server.requests] == [429, 429, 200]


def test_attempts_that_make_progress_do_not_use_up_retries(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    server.faults = Faults(cut_after_bytes=40_000, cut_first_requests=1000)
    dest = tmp_path / "field.bin"

    get(url, dest, sha256=sha(payload), retries=0)

    assert dest.read_bytes() == payload
    assert len(server.requests) == -(-PAYLOAD_BYTES // 40_000)


def test_no_progress_exhausts_retries_and_keeps_the_part(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    # Every answer restarts from byte 0 and is cut at the same place: no headway after the first.
    server.faults = Faults(cut_after_bytes=40_000, cut_first_requests=1000, ignore_range=True)
    dest = tmp_path / "field.bin"

    with pytest.raises(DownloadError, match="next call resumes"):
        get(url, dest, sha256=sha(payload), retries=1)

    # The first attempt made headway (0 -> 40000 bytes); then two without headway: 1 + 1 retry.
    assert len(server.requests) == 3
    assert part_of(dest).read_bytes() == payload[:40_000]
    assert not dest.exists()


def test_complete_part_answered_416_is_verified_and_used(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    dest = tmp_path / "field.bin"
    part_of(dest).write_bytes(payload)

    get(url, dest, sha256=sha(payload))

    assert dest.read_bytes() == payload
    assert [(r.range_header, r.status) for r in server.requests] == [
        (f"bytes={len(payload)}-", 416)
    ]


def test_oversized_part_is_discarded_and_download_restarts(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    dest = tmp_path / "field.bin"
    part_of(dest).write_bytes(payload + b"junk")

    get(url, dest, sha256=sha(payload))

    assert dest.read_bytes() == payload
    assert [r.status for r in server.requests] == [416, 200]


def test_skip_when_already_present(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    dest = tmp_path / "field.bin"
    get(url, dest, sha256=sha(payload))
    assert len(server.requests) == 1

    get(url, dest, sha256=sha(payload))  # checksum matches
    get(url, dest, size=len(payload))  # no checksum, size matches
    get(url, dest)  # nothing to check: presence is enough
    assert len(server.requests) == 1


def test_present_but_wrong_file_is_replaced(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    dest = tmp_path / "field.bin"
    dest.write_bytes(b"old contents")

    get(url, dest, sha256=sha(payload))

    assert dest.read_bytes() == payload
    assert len(server.requests) == 1


def test_dest_never_exists_partially(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    dest = tmp_path / "field.bin"
    seen_while_transferring: list[tuple[bool, int]] = []

    def observe(_request):
        part = part_of(dest)
        seen_while_transferring.append((dest.exists(), part.stat().st_size if part.exists() else 0))

    server.faults = Faults(cut_after_bytes=120_000, cut_first_requests=1, before_body=observe)
    get(url, dest, sha256=sha(payload))

    assert seen_while_transferring == [(False, 0), (False, 120_000)]
    assert dest.read_bytes() == payload and not part_of(dest).exists()


def test_failed_download_keeps_the_previous_dest_untouched(server, payload, tmp_path):
    url = publish(server, "field.bin", payload)
    server.faults = Faults(corrupt_content=True)
    dest = tmp_path / "field.bin"
    dest.write_bytes(b"previous version")

    with pytest.raises(DownloadError):
        get(url, dest, sha256=sha(payload))

    assert dest.read_bytes() == b"previous version"


def test_progress_bar_writes_to_a_terminal_only(server, payload, tmp_path, capsys, monkeypatch):
    import sys

    url = publish(server, "field.bin", payload)
    get(url, tmp_path / "a.bin", progress=False)
    assert capsys.readouterr().err == ""
    # not a terminal (a log file, CI): no bar, so logs get no carriage-return lines
    get(url, tmp_path / "b.bin", progress=True)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    get(url, tmp_path / "c.bin", progress=True)
    assert "c.bin" in capsys.readouterr().err


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"sha256": "abc"}, "sha256"),
        ({"size": -1}, "size"),
        ({"retries": -1}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"backoff": -1.0}, "backoff"),
    ],
)
def test_bad_arguments_are_config_errors(tmp_path, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        download_file("http://127.0.0.1:9/x", tmp_path / "x", progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.bad_input
def test_unsupported_url_scheme_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="gopher://x"):
        download_file("gopher://x/y", tmp_path / "y", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_sha256_of_streams_the_file(tmp_path, payload):
    path = tmp_path / "x.bin"
    path.write_bytes(payload)
    assert sha256_of(path, chunk_bytes=4096) == sha(payload)


# ---------------------------------------------------------------------------------------------
# RemoteFile and fetch_all
# ---------------------------------------------------------------------------------------------


def test_fetch_all_downloads_each_remote_file(server, payload, tmp_path):
    second = payload[::-1]
    remotes = [
        RemoteFile(publish(server, "a.bin", payload), "a.bin", sha256=sha(payload)),
        RemoteFile(publish(server, "b.bin", second), "renamed.bin", size=len(second)),
    ]

    paths = fetch_all(remotes, tmp_path / "raw", progress=False, backoff=0.0)

    assert paths == [tmp_path / "raw" / "a.bin", tmp_path / "raw" / "renamed.bin"]
    assert paths[0].read_bytes() == payload and paths[1].read_bytes() == second


@pytest.mark.bad_input
def test_fetch_all_rejects_two_entries_with_one_filename(tmp_path):
    remotes = [RemoteFile("http://h/a", "x.nc"), RemoteFile("http://h/b", "x.nc")]
    with pytest.raises(ConfigError, match="x.nc"):
        fetch_all(remotes, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_remote_file_from_config_defaults_filename_to_url_basename():
    remote = RemoteFile.from_config(
        {"url": "https://example.org/wb/2m%20temperature.nc", "sha256": "A" * 64, "size": 10},
        "weatherbench.download.files[0]",
    )
    assert remote == RemoteFile(
        "https://example.org/wb/2m%20temperature.nc", "2m temperature.nc", "a" * 64, 10
    )


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"filename": "x.nc"}, r"files\[1\]\.url: missing"),
        (
            {"url": "https://h/x.nc", "md5": "00"},
            r"^weatherbench\.download\.files\[1\]\.md5: unknown parameter \(allowed: filename, "
            r"sha256, size, url\)$",
        ),
        ({"url": "https://h/x.nc", "sha256": "nothex"}, r"files\[1\]\.sha256"),
        ({"url": "https://h/x.nc", "size": "10"}, r"files\[1\]\.size"),
        ({"url": "https://h/x.nc", "filename": "../x.nc"}, r"files\[1\]\.filename"),
        ({"url": "https://h/dir/"}, r"files\[1\]\.filename: missing"),
        ({"url": "ssh://h/x.nc"}, r"files\[1\]\.url: unsupported"),
        ("https://h/x.nc", r"files\[1\]: expected a mapping"),
    ],
)
def test_remote_file_from_config_names_the_parameter(entry, fragment):
    with pytest.raises(ConfigError, match=fragment):
        RemoteFile.from_config(entry, "weatherbench.download.files[1]")


# ---------------------------------------------------------------------------------------------
# Archive extraction
# ---------------------------------------------------------------------------------------------

TREE = {
    "dataset/README.txt": b"readme\n",
    "dataset/train/part-0.bin": os.urandom(5000),
    "dataset/test/part-0.bin": os.urandom(3000),
}


def snapshot(base: Path) -> set[str]:
    return {str(p.relative_to(base)) for p in base.rglob("*")}


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def add_tar_member(tf: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if attrs.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    tf.addfile(info, io.BytesIO(data) if info.size else None)


def make_tar(path: Path, build, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        build(tf)
    return path


def test_extract_zip(tmp_path):
    archive = make_zip(tmp_path / "data.zip", TREE)
    target = tmp_path / "raw" / "extracted"

    paths = extract_archive(archive, target, progress=False)

    assert {str(p.relative_to(target)) for p in paths} == set(TREE)
    for name, data in TREE.items():
        assert (target / name).read_bytes() == data
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["extracted"]  # no staging left


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_extract_tar_with_links_and_modes(tmp_path, mode):
    def build(tf):
        add_tar_member(tf, "./", type=tarfile.DIRTYPE, mode=0o755)
        for name, data in TREE.items():
            add_tar_member(tf, f"./{name}", data, mode=0o644)
        add_tar_member(tf, "dataset/run.sh", b"#!/bin/sh\n", mode=0o4755)
        add_tar_member(tf, "dataset/latest", type=tarfile.SYMTYPE, linkname="train")
        add_tar_member(
            tf, "dataset/copy.bin", type=tarfile.LNKTYPE, linkname="./dataset/train/part-0.bin"
        )

    archive = make_tar(tmp_path / "data.tar.x", build, mode)
    target = tmp_path / "extracted"

    paths = extract_archive(archive, target, progress=False)

    assert target / "dataset" / "latest" in paths
    for name, data in TREE.items():
        assert (target / name).read_bytes() == data
    assert (target / "dataset" / "latest" / "part-0.bin").read_bytes() == TREE[
        "dataset/train/part-0.bin"
    ]
    assert (target / "dataset" / "copy.bin").read_bytes() == TREE["dataset/train/part-0.bin"]
    run_mode = stat.S_IMODE((target / "dataset" / "run.sh").stat().st_mode)
    assert run_mode & 0o100 and not run_mode & stat.S_ISUID  # executable kept, setuid dropped


def test_extract_into_existing_directory_next_to_the_archive(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    archive = make_zip(raw / "data.zip", TREE)

    extract_archive(archive, raw, progress=False)

    assert (raw / "dataset" / "README.txt").read_bytes() == b"readme\n"
    assert archive.exists()
    before = snapshot(tmp_path)
    with pytest.raises(DownloadError, match="already contains"):
        extract_archive(archive, raw, progress=False)  # a second time clashes: nothing changes
    assert snapshot(tmp_path) == before


def _evil_tars():
    def member(name, **attrs):
        return lambda tf: (
            add_tar_member(tf, "good.txt", b"fine"),
            add_tar_member(tf, name, b"x", **attrs),
        )

    def symlink_then_write_through(tf):
        add_tar_member(tf, "good.txt", b"fine")
        add_tar_member(tf, "escape", type=tarfile.SYMTYPE, linkname=".")
        add_tar_member(tf, "escape/evil", b"x")

    def link_chain(tf):
        add_tar_member(tf, "good.txt", b"fine")
        add_tar_member(tf, "here", type=tarfile.SYMTYPE, linkname=".")
        add_tar_member(tf, "up", type=tarfile.SYMTYPE, linkname="here/..")

    def duplicate(tf):
        add_tar_member(tf, "good.txt", b"fine")
        add_tar_member(tf, "good.txt", b"replaced")

    return {
        "dotdot": (member("../evil"), "../evil"),
        "nested dotdot": (member("sub/../../evil"), "sub/../../evil"),
        "absolute": (member("/tmp/sdkd-evil-abs"), "/tmp/sdkd-evil-abs"),
        "symlink outside": (member("out", type=tarfile.SYMTYPE, linkname="../../outside"), "'out'"),
        "symlink absolute": (member("etc", type=tarfile.SYMTYPE, linkname="/etc"), "'etc'"),
        "hardlink outside": (
            member("pw", type=tarfile.LNKTYPE, linkname="../../etc/passwd"),
            "'pw'",
        ),
        "char device": (member("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3), "'null'"),
        "fifo": (member("pipe", type=tarfile.FIFOTYPE), "'pipe'"),
        "write through symlink": (symlink_then_write_through, "escape/evil"),
        "symlink chain": (link_chain, "'up'"),
        "duplicate": (duplicate, "good.txt"),
    }


@pytest.mark.bad_input
@pytest.mark.parametrize("case", list(_evil_tars()))
def test_unsafe_tar_is_rejected_and_nothing_is_written(tmp_path, case):
    build, member_fragment = _evil_tars()[case]
    base = tmp_path / "base"
    base.mkdir()
    archive = make_tar(tmp_path / "evil.tar.gz", build)
    target = base / "sub1" / "target"
    before = snapshot(tmp_path)

    with pytest.raises(DownloadError) as raised:
        extract_archive(archive, target, progress=False)

    assert member_fragment in str(raised.value) and str(archive) in str(raised.value)
    assert not target.exists()
    assert snapshot(tmp_path) - {"base/sub1"} == before  # at most the empty parent was created
    assert not list((base / "sub1").iterdir())
    assert not Path("/tmp/sdkd-evil-abs").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("name", "fragment"),
    [("../evil.txt", "'..'"), ("/abs/evil.txt", "absolute"), ("a\\..\\evil.txt", "backslash")],
)
def test_unsafe_zip_is_rejected_and_nothing_is_written(tmp_path, name, fragment):
    archive = make_zip(tmp_path / "evil.zip", {"good.txt": b"fine", name: b"x"})
    target = tmp_path / "target"
    before = snapshot(tmp_path)

    with pytest.raises(DownloadError, match=fragment) as raised:
        extract_archive(archive, target, progress=False)

    assert repr(name) in str(raised.value)
    assert snapshot(tmp_path) == before


@pytest.mark.bad_input
def test_zip_symlink_escaping_is_rejected(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.txt", b"fine")
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../../etc")
    before = snapshot(tmp_path)

    with pytest.raises(DownloadError, match="'link'"):
        extract_archive(archive, tmp_path / "target", progress=False)

    assert snapshot(tmp_path) == before


@pytest.mark.bad_input
def test_corrupt_archive_leaves_nothing(tmp_path):
    good = make_tar(
        tmp_path / "good.tar.gz", lambda tf: add_tar_member(tf, "a.bin", os.urandom(50_000))
    )
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    before = snapshot(tmp_path)

    with pytest.raises(DownloadError, match="truncated.tar.gz"):
        extract_archive(truncated, tmp_path / "target", progress=False)

    assert snapshot(tmp_path) == before


def test_not_an_archive_or_missing_archive(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"just text, long enough not to be anything else" * 20)
    with pytest.raises(DownloadError, match="neither a zip nor a tar"):
        extract_archive(plain, tmp_path / "target", progress=False)
    with pytest.raises(DownloadError, match="does not exist"):
        extract_archive(tmp_path / "absent.zip", tmp_path / "target", progress=False)
    with pytest.raises(DownloadError, match="not a directory"):
        extract_archive(make_zip(tmp_path / "a.zip", TREE), plain, progress=False)
    assert not (tmp_path / "target").exists()


# -- extraction limits (zip bombs) ----------------------------------------------------------


@pytest.mark.bad_input
def test_a_real_zip_bomb_is_refused_and_nothing_is_kept(tmp_path):
    # 64 MiB of zeros deflate to ~64 KiB: ~1000x, far past the default 100x
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("zeros.bin", "w") as member:
            block = bytes(2**20)
            for _ in range(64):
                member.write(block)
    assert archive.stat().st_size < 2**20
    target = tmp_path / "target"
    before = snapshot(tmp_path)
    with pytest.raises(
        DownloadError,
        match=r"bomb\.zip: expands to more than \d+ bytes "
        r"\(at 'zeros\.bin'; limit max_ratio = 100 x",
    ):
        extract_archive(archive, target, progress=False)
    assert snapshot(tmp_path) == before  # no target, no staging folder
    # the absolute cap, and with the limits raised the same archive extracts
    with pytest.raises(DownloadError, match=r"limit max_bytes = 1048576\)"):
        extract_archive(archive, target, progress=False, max_ratio=None, max_bytes=2**20)
    assert snapshot(tmp_path) == before
    paths = extract_archive(archive, target, progress=False, max_ratio=2000)
    assert [p.name for p in paths] == ["zeros.bin"] and paths[0].stat().st_size == 64 * 2**20


@pytest.mark.bad_input
def test_too_many_members_are_refused(tmp_path):
    archive = make_zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(5)})
    before = snapshot(tmp_path)
    with pytest.raises(DownloadError, match=r"many\.zip: holds more than 3 members"):
        extract_archive(archive, tmp_path / "t", progress=False, max_members=3)
    assert snapshot(tmp_path) == before
    assert len(extract_archive(archive, tmp_path / "t", progress=False, max_members=5)) == 5
