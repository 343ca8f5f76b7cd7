"""`gpuhost-agent tune-ebs` and the agent's EBS facts, from the zipapp as a managed host runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuhost.ship import build_zipapp
from tests.support.aws import Ec2Server, ImdsStandIn, make_instance, make_volume

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path, _ = build_zipapp(tmp_path_factory.mktemp("agent") / "gpuhost-agent.pyz")
    yield path


def run_agent(python: str, agent: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, str(agent), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",
    )


def pull_preset(agent: Path, env: dict[str, str], volume_id: str) -> subprocess.CompletedProcess[str]:
    # the venv's interpreter stands for a host with python3-boto3 installed
    return run_agent(
        sys.executable, agent, env, "tune-ebs", "--volume-id", volume_id, "--region", "us-east-1", "--preset", "pull"
    )


def test_agent_tunes_with_the_hosts_boto3(agent: Path, aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100)
    result = pull_preset(agent, aws_env, volume_id)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["schema"], report["action"], report["changed"]) == ("gpuhost.tune-ebs/v1", "modified", True)
    again = json.loads(pull_preset(agent, aws_env, volume_id).stdout)
    assert (again["action"], again["changed"]) == ("none", False)


def test_agent_usage_errors_are_json(agent: Path, aws_env: dict[str, str]) -> None:
    result = run_agent(sys.executable, agent, aws_env, "tune-ebs", "--iops", "100")
    assert result.returncode == 2
    assert "outside gp3's range" in json.loads(result.stdout)["error"]


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no system python3")
def test_without_boto3_the_agent_says_so(agent: Path, aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import boto3"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip("the system python3 has boto3")
    result = run_agent(
        SYSTEM_PYTHON,
        agent,
        aws_env,
        "tune-ebs",
        "--volume-id",
        "vol-0123456789abcdef0",
        "--region",
        "us-east-1",
        "--preset",
        "pull",
    )
    assert result.returncode == 3
    error = json.loads(result.stdout)
    assert error["error"] == "boto3 is not installed for this Python"
    assert "python3-boto3" in error["remedy"]
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no system python3")
def test_agent_check_on_ec2_without_boto3(
    agent: Path, aws_env: dict[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn
) -> None:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import boto3"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip("the system python3 has boto3")
    instance_id, _ = make_instance(ec2_server.client())
    imds_stand_in.set_identity(instance_id, "us-east-1")
    report = json.loads(run_agent(SYSTEM_PYTHON, agent, aws_env, "check").stdout)
    aws = report["facts"]["aws"]
    assert (aws["on_ec2"], aws["instance_id"], aws["boto3_available"]) == (True, instance_id, False)
    [finding] = [f for f in report["findings"] if f["area"] == "ebs"]
    assert finding["id"] == "ebs.facts"
    assert finding["severity"] == "ok"
    assert "boto3 is not installed" in finding["message"]


def _python39() -> str | None:
    path = shutil.which("python3.9")
    if path is None:
        return None
    probe = subprocess.run([path, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"], capture_output=True)
    return path if probe.returncode == 0 else None


PYTHON39 = _python39()


@pytest.mark.skipif(PYTHON39 is None, reason="no python3.9 here (Amazon Linux 2023's version)")
def test_agent_tune_ebs_on_python39(agent: Path, aws_env: dict[str, str]) -> None:
    assert PYTHON39 is not None
    bad = run_agent(PYTHON39, agent, aws_env, "tune-ebs", "--iops", "1")
    assert bad.returncode == 2, bad.stderr
    assert "outside gp3's range" in json.loads(bad.stdout)["error"]
    no_boto3 = run_agent(
        PYTHON39, agent, aws_env, "tune-ebs", "--volume-id", "vol-0123456789abcdef0", "--region", "us-east-1",
        "--preset", "pull",
    )  # fmt: skip
    assert no_boto3.returncode in (2, 3), no_boto3.stderr  # 3 without boto3; 2: no such volume
    assert "Traceback" not in no_boto3.stderr
