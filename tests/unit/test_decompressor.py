"""Which program decompresses gzip layers: the choice each daemon's source makes, read from a
process's environment in a /proc tree laid out like the kernel's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpuhost.facts.containerd import image_store
from gpuhost.facts.decompressor import (
    choose_gzip,
    collect_decompressor,
    find_daemon,
    go_parse_bool,
    gzip_stream_processor,
    look_path,
    process_environment,
)

CONTAINERD_INFO = {"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
CLASSIC_INFO = {"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "xfs"], ["Supports d_type", "true"]]}


def tools(root: Path, *names: str, directory: str = "usr/bin") -> str:
    """`names` as executables under root/directory; returns a PATH naming it."""
    (root / directory).mkdir(parents=True, exist_ok=True)
    for name in names:
        program = root / directory / name
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
    return f"/usr/local/bin:/{directory}"


def test_the_store_comes_from_the_driver_type() -> None:
    assert image_store(CONTAINERD_INFO) == "containerd"
    assert image_store(CLASSIC_INFO) == "classic"
    assert image_store({}) == "classic"
    assert image_store({"DriverStatus": "driver-type io.containerd.snapshotter.v1"}) == "classic"


@pytest.mark.parametrize(("text", "value"), [("1", True), ("true", True), ("T", True), ("0", False),
                                             ("False", False), ("yes", None), (" 1", None), ("", None)])
def test_go_parse_bool(text: str, value: bool | None) -> None:
    assert go_parse_bool(text) is value


def test_look_path_takes_the_first_executable_regular_file(tmp_path: Path) -> None:
    path = tools(tmp_path, "unpigz")
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    (tmp_path / "usr/local/bin/unpigz").write_text("not executable")
    assert look_path("unpigz", path, str(tmp_path)) == "/usr/bin/unpigz"
    (tmp_path / "usr/local/bin/igzip").mkdir()  # a directory is no program
    assert look_path("igzip", path, str(tmp_path)) == ""
    assert look_path("unpigz", "relative/bin:", str(tmp_path)) == ""


def test_dockerd_uses_unpigz_unless_disabled_and_never_igzip(tmp_path: Path) -> None:
    path = tools(tmp_path, "unpigz", "igzip")
    root = str(tmp_path)
    assert choose_gzip("classic", "", {}, path, root)[:2] == ("unpigz", "/usr/bin/unpigz")
    assert choose_gzip("classic", "", {"MOBY_DISABLE_PIGZ": "1"}, path, root)[0] == "go"
    # a value Go cannot parse is warned about and ignored
    assert choose_gzip("classic", "", {"MOBY_DISABLE_PIGZ": "yes"}, path, root)[0] == "unpigz"
    only_igzip = tools(tmp_path / "other", "igzip")
    program, _, looks_for, why = choose_gzip("classic", "", {}, only_igzip, str(tmp_path / "other"))
    assert program == "go" and looks_for == ["unpigz"] and "never looks for igzip" in why


def test_containerd_1_7_looks_for_unpigz_only(tmp_path: Path) -> None:
    path = tools(tmp_path, "unpigz", "igzip")
    root = str(tmp_path)
    assert choose_gzip("containerd", "1.7.24~ds1", {}, path, root)[0] == "unpigz"
    program, _, looks_for, why = choose_gzip("containerd", "1.7.24~ds1", {"CONTAINERD_DISABLE_PIGZ": "true"},
                                             path, root)
    assert (program, looks_for) == ("go", ["unpigz"])
    assert "CONTAINERD_DISABLE_PIGZ=true" in why


def test_containerd_2_prefers_igzip_then_unpigz(tmp_path: Path) -> None:
    path = tools(tmp_path, "unpigz", "igzip")
    root = str(tmp_path)
    assert choose_gzip("containerd", "v2.1.9", {}, path, root)[:3] == ("igzip", "/usr/bin/igzip", ["igzip", "unpigz"])
    assert choose_gzip("containerd", "2.0.0", {"CONTAINERD_DISABLE_IGZIP": "1"}, path, root)[0] == "unpigz"
    both_off = {"CONTAINERD_DISABLE_IGZIP": "1", "CONTAINERD_DISABLE_PIGZ": "1"}
    assert choose_gzip("containerd", "2.0.0", both_off, path, root)[0] == "go"
    # an unknown version is taken as 2.x: what it may look for
    assert choose_gzip("containerd", "", {}, path, root)[0] == "igzip"


def test_a_stream_processor_for_gzip_layers_comes_first(tmp_path: Path) -> None:
    config = """
version = 2
[stream_processors]
  [stream_processors."io.containerd.gzip.igzip"]
    accepts = ["application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.oci.image.layer.v1.tar+gzip"]
    returns = "application/vnd.oci.image.layer.v1.tar"
    path = "/usr/bin/igzip"
    args = ["-d", "-c"]
"""
    assert gzip_stream_processor(config) == "/usr/bin/igzip"
    assert gzip_stream_processor("version = 2\n") == ""
    assert gzip_stream_processor("not [ toml") == ""
    program, path, _, why = choose_gzip("containerd", "1.7.24", {}, "/usr/bin", str(tmp_path), "/usr/bin/igzip")
    assert (program, path) == ("igzip", "/usr/bin/igzip") and "stream processor" in why


def fake_process(proc: Path, pid: int, comm: str, environ: dict[str, str], socket: str = "",
                 inode: int = 0) -> None:
    directory = proc / str(pid)
    (directory / "fd").mkdir(parents=True)
    (directory / "net").mkdir()
    (directory / "comm").write_text(comm + "\n")
    (directory / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in environ.items()) + b"\0")
    lines = ["Num       RefCount Protocol Flags    Type St Inode Path"]
    if socket:
        lines.append(f"0000000000000000: 00000002 00000000 00010000 0001 01 {inode} {socket}")
        os.symlink(f"socket:[{inode}]", directory / "fd" / "3")
    (directory / "net" / "unix").write_text("\n".join(lines) + "\n")


def test_the_daemon_behind_a_socket_among_several(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake_process(proc, 100, "dockerd", {"PATH": "/usr/bin"}, "/var/run/docker.sock", 1111)
    fake_process(proc, 200, "dockerd", {"PATH": "/usr/bin", "MOBY_DISABLE_PIGZ": "1"}, "/run/gh/docker.sock", 2222)
    fake_process(proc, 300, "containerd", {"PATH": "/usr/bin"}, "/run/containerd/containerd.sock", 3333)
    assert find_daemon("dockerd", "/run/gh/docker.sock", str(proc)) == 200
    # /var/run is /run
    assert find_daemon("dockerd", "/run/docker.sock", str(proc)) == 100
    assert find_daemon("dockerd", "/run/nothing.sock", str(proc)) is None  # two candidates, none listening there
    assert find_daemon("containerd", "", str(proc)) == 300  # the only one
    assert process_environment(200, str(proc)) == {"PATH": "/usr/bin", "MOBY_DISABLE_PIGZ": "1"}
    assert process_environment(999, str(proc)) is None


def test_collected_from_the_process_that_decompresses(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake_process(proc, 200, "dockerd", {"PATH": "/usr/bin", "MOBY_DISABLE_PIGZ": "1"}, "/run/gh/docker.sock", 2222)
    fake_process(proc, 300, "containerd", {"PATH": "/usr/bin", "CONTAINERD_DISABLE_IGZIP": "1"},
                 "/run/containerd/containerd.sock", 3333)
    for pid in (200, 300):
        tools(proc / str(pid) / "root", "unpigz", "igzip")
    classic = collect_decompressor(CLASSIC_INFO, {}, "unix:///run/gh/docker.sock", str(tmp_path), str(proc))
    assert (classic.process, classic.pid, classic.gzip) == ("dockerd", 200, "go")
    assert "pid 200" in classic.basis
    version = {"Components": [{"Name": "containerd", "Version": "2.1.9"}]}
    store = collect_decompressor(CONTAINERD_INFO, version, "unix:///run/gh/docker.sock", str(tmp_path), str(proc))
    assert (store.store, store.process, store.pid, store.version, store.gzip) == (
        "containerd", "containerd", 300, "2.1.9", "unpigz")
    assert store.to_dict()["looks_for"] == ["igzip", "unpigz"]


def test_an_unreadable_process_is_judged_by_systemds_default_path(tmp_path: Path) -> None:
    tools(tmp_path, "unpigz")
    found = collect_decompressor(CLASSIC_INFO, {}, "tcp://10.0.0.1:2376", str(tmp_path), str(tmp_path / "proc"))
    assert found.pid is None and found.gzip == "unpigz"
    assert "default PATH" in found.basis
