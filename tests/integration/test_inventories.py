"""The inventories parse, and the aws_ec2 one groups tagged instances (against a real moto server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO

INVENTORY = Path(sys.executable).with_name("ansible-inventory")


def inventory(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [str(INVENTORY), "-i", str(path), "--list"],
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_local_and_example_inventories_have_gpu_hosts() -> None:
    local = inventory(REPO / "inventories" / "local")
    assert local["gpu_hosts"]["hosts"] == ["localhost"]
    example = inventory(REPO / "inventories" / "example")
    assert example["gpu_hosts"]["hosts"] == ["gpu-1.example.com", "gpu-2.example.com"]
    assert example["_meta"]["hostvars"]["gpu-1.example.com"]["nvidia_driver_branch"] == "580"


@pytest.fixture
def moto_ec2() -> Iterator[str]:
    from tests.support.aws import clean_moto_server

    with clean_moto_server() as endpoint:
        yield endpoint


def test_aws_inventory_puts_tagged_running_instances_in_gpu_hosts(moto_ec2: str) -> None:
    import boto3

    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    ec2 = boto3.client(
        "ec2",
        endpoint_url=moto_ec2,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    image = ec2.describe_images()["Images"][0]["ImageId"]

    def launch(instance_type: str, tags: dict[str, str]) -> str:
        spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        reservation = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType=instance_type, TagSpecifications=spec
        )
        return str(reservation["Instances"][0]["InstanceId"])

    gpu = launch("g6e.xlarge", {"gpuhost": "true"})
    other = launch("t3.micro", {"gpuhost": "false"})
    result = inventory(
        REPO / "inventories" / "aws" / "aws_ec2.yml", {"AWS_ENDPOINT_URL": moto_ec2, **credentials}
    )
    assert result["gpu_hosts"]["hosts"] == [gpu]
    assert other not in json.dumps(result)
    assert result["type_g6e_xlarge"]["hosts"] == [gpu]
    hostvars = result["_meta"]["hostvars"][gpu]
    assert hostvars["ansible_host"] == hostvars["private_ip_address"]
    assert hostvars["ansible_user"] == "ubuntu"  # inventories/aws/group_vars/gpu_hosts.yml
