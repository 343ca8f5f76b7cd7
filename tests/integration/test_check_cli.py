"""`gpuhost check` and the agent, run as a person runs them, on this machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuhost.ship import build_zipapp
from tests.support.paths import REPO, nvidia_gpu_present

SYSTEM_PYTHON = "/usr/bin/python3"


def gpuhost(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuhost", *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def findings_of(report: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((f["id"], f["severity"]) for f in report["findings"])


@pytest.fixture(scope="module")
def agent() -> Iterator[Path]:
    # world-readable, so the test can run it as an unprivileged user too
    directory = Path(tempfile.mkdtemp(prefix="gpuhost-agent-"))
    os.chmod(directory, 0o755)
    path, _digest = build_zipapp(directory / "gpuhost-agent.pyz")
    yield path
    shutil.rmtree(directory)


@pytest.mark.skipif(nvidia_gpu_present(), reason="this machine has an NVIDIA GPU")
def test_check_json_names_the_missing_gpu() -> None:
    result = gpuhost("check", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1, result.stderr
    assert report["schema"] == "gpuhost.check/v1"
    assert report["exit_code"] == 1
    assert report["verdict"] == "fail"
    gpu = next(f for f in report["findings"] if f["id"] == "gpu.driver")
    assert gpu["severity"] == "fail"
    assert gpu["message"].startswith("no GPU: no NVIDIA driver")
    assert "gpu.driver" in report["failing"]
    assert set(report["summary"]) == {"ok", "warn", "fail"}
    assert sum(report["summary"].values()) == len(report["findings"])
    for key in ("kernel", "gpu", "devices", "docker", "toolkit", "cdi", "storage"):
        assert key in report["facts"]
    assert report["facts"]["docker"]["status"] == "ok"


def test_check_table_is_grouped_by_area_with_a_verdict_line() -> None:
    result = gpuhost("check")
    assert result.returncode in (0, 1), result.stderr
    assert "BPF device-filter inputs" in result.stdout
    assert "net.core.bpf_jit_harden" in result.stdout
    for area in ("gpu", "bpf", "docker"):
        assert f"│ {area} " in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].split(":")[1].split()[0] in ("OK", "WARN", "FAIL")


def test_bad_run_as_is_a_usage_error_with_a_hint() -> None:
    result = gpuhost("check", "--run-as", "comfy:video")
    assert result.returncode == 2
    assert "UID[:GID" in result.stderr
    assert "hint:" in result.stderr
    as_json = gpuhost("check", "--json", "--run-as", "x")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["exit_code"] == 2


def test_unknown_option_is_exit_2() -> None:
    assert gpuhost("check", "--no-such-option").returncode == 2


def test_help_documents_exit_codes() -> None:
    result = gpuhost("check", "--help")
    assert result.returncode == 0
    assert "Exit codes: 0 no failing finding" in " ".join(result.stdout.split())


def test_zipapp_is_reproducible(agent: Path, tmp_path: Path) -> None:
    again, digest = build_zipapp(tmp_path / "again.pyz")
    assert again.read_bytes() == agent.read_bytes()
    assert len(digest) == 64


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no system python3")
def test_agent_on_the_system_python_gives_the_cli_verdicts(agent: Path) -> None:
    cli = json.loads(gpuhost("check", "--json").stdout)
    result = subprocess.run(
        [SYSTEM_PYTHON, "-I", str(agent), "check"], capture_output=True, text=True, timeout=120, check=False
    )
    remote = json.loads(result.stdout)
    assert result.returncode == cli["exit_code"]
    assert findings_of(remote) == findings_of(cli)
    assert remote["schema"] == cli["schema"]


@pytest.mark.skipif(shutil.which("runuser") is None, reason="runuser missing")
def test_unreadable_docker_socket_is_exit_3(agent: Path) -> None:
    socket_mode = os.stat("/var/run/docker.sock").st_mode & 0o777
    if socket_mode & 0o006:
        pytest.skip("the Docker socket is world-accessible here")
    result = subprocess.run(
        ["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-I", str(agent), "check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",
    )
    report = json.loads(result.stdout)
    assert result.returncode == 3, result.stderr
    assert report["unreadable_sources"] == ["docker"]
    engine = next(f for f in report["findings"] if f["id"] == "docker.engine")
    assert "permission denied" in engine["message"]
    assert "docker group" in engine["remedy"]


def test_agent_usage_error_is_exit_2(agent: Path) -> None:
    result = subprocess.run([sys.executable, str(agent), "nonsense"], capture_output=True, text=True, check=False)
    assert result.returncode == 2
