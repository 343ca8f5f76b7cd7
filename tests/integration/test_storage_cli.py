"""`gpuhost storage plan|probe` as a person runs them (typer's runner, real devices and filesystems)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuhost.cli import app
from gpuhost.model import UsageError
from gpuhost.units import parse_size

runner = CliRunner()


@pytest.fixture
def xfs_loop(tmp_path: Path) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices)")
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as fh:
        fh.truncate(320 * 1024 * 1024)
    device = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True,
                            check=True).stdout.strip()
    try:
        subprocess.run(["mkfs.xfs", "-q", "-L", "userdata", device], check=True)
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def test_plan_refuses_a_disk_with_a_filesystem(xfs_loop: str) -> None:
    result = runner.invoke(app, ["storage", "plan", "--device", xfs_loop, "--json"])
    assert result.exit_code == 1, result.output
    payload = json.loads(result.output)
    assert payload["ok"] is False
    assert payload["errors"] == [f"{xfs_loop}: holds xfs labelled 'userdata' (filesystem)"]

    table = runner.invoke(app, ["storage", "plan", "--device", xfs_loop])
    assert table.exit_code == 1
    assert "refused" in table.output and "nothing would be written" in table.output

    # an image the small loop disk holds (the default is the largest local image: the real ComfyUI
    # image the suite builds does not fit)
    forced = runner.invoke(app, ["storage", "plan", "--device", xfs_loop, "--force", xfs_loop, "--image-size", "1MiB",
                                 "--json"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.output)["actions"][0] == f"wipefs --all {xfs_loop}"
    too_small = runner.invoke(app, ["storage", "plan", "--device", xfs_loop, "--force", xfs_loop,
                                    "--image-size", "1TiB", "--json"])
    assert too_small.exit_code == 1, too_small.output
    assert json.loads(too_small.output)["space"]["ok"] is False


def test_plan_bad_input_is_exit_2() -> None:
    result = runner.invoke(app, ["storage", "plan", "--label", "much-too-long-label", "--json"])
    assert result.exit_code == 2
    assert "XFS limit" in json.loads(result.output)["error"]


def test_probe_measures_a_directory(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["storage", "probe", "--path", str(tmp_path), "--size-mib", "16", "--image-size", "140GB",
              "--docker-host", "unix:///nonexistent.sock", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["schema"] == "gpuhost.storage-probe/v1"
    assert report["image_bytes"] == 140 * 10**9
    assert report["write"]["write_mib_s"] > 0 and report["predicted_unpack_s"] > 0
    missing = runner.invoke(app, ["storage", "probe", "--path", str(tmp_path / "nope"), "--json"])
    assert missing.exit_code == 2


@pytest.mark.parametrize(
    ("text", "size"), [("140GB", 140 * 10**9), ("60GiB", 60 * 2**30), ("512MiB", 512 * 2**20), ("1e9", 10**9)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "12 parsecs", "-3GB", "1xB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)
