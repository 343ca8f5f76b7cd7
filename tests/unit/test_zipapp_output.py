"""`gpuhost zipapp -o PATH` writes a regular file or a new name in an existing directory, and nothing else:
no device node, FIFO or directory is written through, no missing parent is created."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gpuhost.ship import zipapp_bytes
from tests.support.paths import REPO


def zipapp(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuhost", "zipapp", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def refused(output: str, cwd: Path = REPO) -> dict[str, object]:
    """Exit 2 with one line on stderr, and one JSON object under --json."""
    plain = zipapp("-o", output, cwd=cwd)
    assert plain.returncode == 2, plain.stdout + plain.stderr
    assert plain.stdout == "" and "Traceback" not in plain.stderr
    assert plain.stderr.startswith("gpuhost: error: ")
    as_json = zipapp("-o", output, "--json", cwd=cwd)
    assert as_json.returncode == 2
    error: dict[str, object] = json.loads(as_json.stdout)
    assert error["exit_code"] == 2
    return error


def test_new_name_in_an_existing_directory(tmp_path: Path) -> None:
    output = tmp_path / "agent.pyz"
    result = zipapp("-o", str(output), "--json")
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    assert output.read_bytes() == zipapp_bytes()
    assert built == {"path": str(output), "sha256": built["sha256"], "size": output.stat().st_size}
    assert stat.S_IMODE(output.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pyz"]  # no temporary file left
    # the same content again: the file is left as it is
    before = output.stat().st_mtime_ns
    assert zipapp("-o", str(output)).returncode == 0
    assert output.stat().st_mtime_ns == before


def test_an_existing_regular_file_is_replaced(tmp_path: Path) -> None:
    output = tmp_path / "agent.pyz"
    output.write_bytes(b"an older agent\n")
    assert zipapp("-o", str(output)).returncode == 0
    assert output.read_bytes() == zipapp_bytes()


def test_a_symlink_to_a_regular_file_updates_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real" / "agent.pyz"
    real.parent.mkdir()
    real.write_bytes(b"old\n")
    link = tmp_path / "agent.pyz"
    link.symlink_to(real)
    assert zipapp("-o", str(link)).returncode == 0
    assert link.is_symlink() and real.read_bytes() == zipapp_bytes()


def test_a_fifo_is_refused_without_reading_it(tmp_path: Path) -> None:
    fifo = tmp_path / "agent.pyz"
    os.mkfifo(fifo)
    error = refused(str(fifo))
    assert "not a regular file" in str(error["error"])
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
def test_a_device_node_is_refused_and_left_alone(device: str) -> None:
    before = os.stat(device)
    error = refused(device)
    assert "not a regular file" in str(error["error"])
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert "not a regular file" in str(refused(str(tmp_path))["error"])
    assert list(tmp_path.iterdir()) == []


def test_missing_parents_are_not_created(tmp_path: Path) -> None:
    error = refused(str(tmp_path / "missing" / "sub" / "agent.pyz"))
    assert "does not exist" in str(error["error"])
    assert list(tmp_path.iterdir()) == []


def test_a_dangling_symlink_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "agent.pyz"
    link.symlink_to(tmp_path / "elsewhere.pyz")
    refused(str(link))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pyz"]


@pytest.mark.parametrize("padded", ["", " ", " {dir}/agent.pyz", "{dir}/agent.pyz ", "{dir}/agent.pyz\n"])
def test_blank_or_padded_names_are_refused(padded: str, tmp_path: Path) -> None:
    refused(padded.format(dir=tmp_path), cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []
