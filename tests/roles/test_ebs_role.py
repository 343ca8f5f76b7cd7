"""The ebs_tuning role, run by ansible-playbook against this machine (controller mode: the host is
localhost, its IMDSv2 the stand-in) with the EC2 calls going to the moto server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.ansible import local_play, run_playbook
from tests.support.aws import Ec2Server, ImdsStandIn, make_instance

PLAYBOOK = local_play("Tune the EBS volume", "ebs_tuning")


def playbook(
    tmp_path: Path, variables: dict[str, Any], env: dict[str, str], *extra: str
) -> tuple[int, str, dict[str, int]]:
    run = run_playbook(tmp_path, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(variables), *extra, env=env)
    return run.returncode, run.output, run.recap()


@pytest.fixture
def host(aws_env: dict[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn) -> tuple[str, str]:
    instance_id, volume_id = make_instance(ec2_server.client(), size_gib=100)
    imds_stand_in.set_identity(instance_id, "us-east-1")
    return instance_id, volume_id


def role_vars(ec2_server: Ec2Server, imds_stand_in: ImdsStandIn, **more: Any) -> dict[str, Any]:
    return {"ebs_tuning_endpoint_url": ec2_server.endpoint, "ebs_tuning_imds_endpoint": imds_stand_in.endpoint, **more}


def test_converge_then_nothing_changes(
    tmp_path: Path, host: tuple[str, str], aws_env: dict[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn
) -> None:
    _instance_id, volume_id = host
    variables = role_vars(ec2_server, imds_stand_in, ebs_tuning_preset="pull")
    rc, output, counts = playbook(tmp_path, variables, aws_env)
    assert rc == 0, output
    assert counts["changed"] == 1, output
    assert (
        f"modified: requested IOPS 3,000 -> 9,000, throughput 125 -> 1,000 MiB/s on {volume_id}" in output
    )
    described = ec2_server.client().describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert (described["Iops"], described["Throughput"]) == (9000, 1000)
    with ec2_server.recording() as actions:
        rc, output, counts = playbook(tmp_path, variables, aws_env)
    assert rc == 0, output
    assert counts["changed"] == 0, output
    assert "ModifyVolume" not in actions
    assert f"none: {volume_id} is already at gp3 9,000 IOPS 1,000 MiB/s" in output


def test_check_mode_changes_nothing(
    tmp_path: Path, host: tuple[str, str], aws_env: dict[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn
) -> None:
    _, volume_id = host
    with ec2_server.recording() as actions:
        rc, output, counts = playbook(
            tmp_path, role_vars(ec2_server, imds_stand_in, ebs_tuning_preset="max"), aws_env, "--check"
        )
    assert rc == 0, output
    assert counts["changed"] == 1  # what would change
    assert "planned: would change" in output
    assert "ModifyVolume" not in actions
    described = ec2_server.client().describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert described["Iops"] == 3000


def test_an_image_already_pulled_skips_the_raise(
    tmp_path: Path, host: tuple[str, str], aws_env: dict[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn
) -> None:
    present = "local/debian-systemd:bookworm"  # built by scripts/setup-test-host
    with ec2_server.recording() as actions:
        rc, output, counts = playbook(tmp_path, role_vars(ec2_server, imds_stand_in, ebs_tuning_image=present), aws_env)
    assert rc == 0, output
    assert counts["changed"] == 0
    assert "is already on the host: raising the volume would buy nothing" in output
    assert actions == []


def test_a_bad_value_fails_with_the_remedy(
    tmp_path: Path, host: tuple[str, str], aws_env: dict[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn
) -> None:
    variables = role_vars(ec2_server, imds_stand_in, ebs_tuning_preset="", ebs_tuning_iops=100000)
    with ec2_server.recording() as actions:
        rc, output, counts = playbook(tmp_path, variables, aws_env)
    assert rc != 0
    assert counts["failed"] == 1
    assert "outside gp3's range 3,000-80,000 IOPS" in output
    assert actions == []


def test_argument_specs_refuse_an_unknown_preset(tmp_path: Path, aws_env: dict[str, str]) -> None:
    rc, output, _ = playbook(tmp_path, {"ebs_tuning_preset": "turbo"}, aws_env)
    assert rc != 0
    assert "ebs_tuning_preset" in output and "turbo" in output


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({"ebs_tuning_region": "us-east-1\n[Service]"}, "no control characters"),
        ({"ebs_tuning_image": "comfyui:1\tx"}, "no control characters"),
        ({"ebs_tuning_revert_check_interval": "15min\nExecStartPost=/bin/true"}, "systemd time span"),
        ({"ebs_tuning_revert_check_interval": "15min%h"}, "systemd time span"),
        ({"ebs_tuning_environment_file": "/etc/gpuhost/../ebs.env"}, "without spaces, `%` or `..`"),
        ({"ebs_tuning_environment": {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value\nB=injected"}},
         "ebs_tuning_environment maps"),
        ({"ebs_tuning_environment": {"1BAD": "x"}}, "ebs_tuning_environment maps"),
        ({"ebs_tuning_environment": {"A-B": "x"}}, "ebs_tuning_environment maps"),
        ({"ebs_tuning_environment": {"A": ["list"]}}, "ebs_tuning_environment maps"),
    ],
    ids=lambda v: ascii(v)[:60],
)
def test_values_that_would_reach_a_unit_are_refused_before_any_call(
    tmp_path: Path, aws_env: dict[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn,
    variables: dict[str, Any], words: str,
) -> None:
    with ec2_server.recording() as actions:
        rc, output, counts = playbook(tmp_path, role_vars(ec2_server, imds_stand_in, ebs_tuning_revert=True,
                                                          ebs_tuning_volume_id="vol-0123456789abcdef0", **variables),
                                      aws_env)
    assert rc == 2, output
    assert words in " ".join(output.split())
    assert counts["changed"] == 0 and actions == []
    assert "s3cr3t-value" not in output  # an environment value is never shown
