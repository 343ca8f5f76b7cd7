"""files/iam/gpuhost-inventory.json grants exactly the calls amazon.aws.aws_ec2 makes for
inventories/aws: recorded while gpuhost reads that inventory against moto's in-process EC2."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.paths import REPO


def allowed_actions(name: str) -> set[str]:
    document = json.loads((REPO / "files" / "iam" / name).read_text())
    actions: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow", statement
        names = statement["Action"]
        actions.update([names] if isinstance(names, str) else names)
    return actions


@pytest.fixture
def recorded_aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from botocore.client import BaseClient

    calls: list[str] = []
    original = BaseClient._make_api_call

    def record(self: Any, operation_name: str, api_params: Any) -> Any:
        calls.append(f"{self.meta.service_model.signing_name}:{operation_name}")
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return calls


def test_inventory_policy_grants_exactly_what_the_aws_ec2_plugin_calls(
    recorded_aws_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto import mock_aws

    from gpuhost.fleet.inventory import load_inventory

    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        ec2.run_instances(
            ImageId="ami-12c6146b",  # one of moto's stock images
            InstanceType="g6e.xlarge",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": "gpuhost", "Value": "true"}, {"Key": "Name", "Value": "gpu-01"}],
                }
            ],
        )
        recorded_aws_calls.clear()
        targets = load_inventory(str(REPO / "inventories" / "aws"))
    assert [target.name for target in targets] == ["gpu-01"]
    needed = set(recorded_aws_calls)
    assert needed, "the inventory plugin made no AWS call"
    granted = allowed_actions("gpuhost-inventory.json")
    assert not needed - granted, f"files/iam/gpuhost-inventory.json misses {sorted(needed - granted)}"
    assert not granted - needed, f"files/iam/gpuhost-inventory.json grants calls never made: {granted - needed}"
