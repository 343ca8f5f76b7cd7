"""The IAM policies in files/iam grant exactly the AWS calls gpuhost makes.

tune-ebs (and check's EBS facts): every EC2 operation the gpuhost package calls, read from its
source (aws.call(client, "Operation") and any boto3 client method named after an EC2 operation).
The aws_ec2 inventory: the calls amazon.aws's plugin makes for inventories/aws, recorded while it
reads that inventory against moto's in-process EC2.
"""

from __future__ import annotations

import ast
import functools
import json
from typing import Any

from tests.support.paths import REPO

POLICIES = REPO / "files" / "iam"
PACKAGE = REPO / "gpuhost"


def policy(name: str) -> dict[str, Any]:
    document = json.loads((POLICIES / name).read_text())
    assert document["Version"] == "2012-10-17"
    return dict(document)


def allowed_actions(document: dict[str, Any]) -> set[str]:
    actions: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow", statement
        names = statement["Action"]
        actions.update([names] if isinstance(names, str) else names)
    return actions


@functools.cache
def ec2_operations() -> dict[str, str]:
    """boto3 method name -> EC2 API operation name, from botocore's service model (no network)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("ec2")
    from botocore import xform_name

    return {xform_name(name): name for name in model.operation_names}


def operations_called_by_gpuhost() -> dict[str, set[str]]:
    """EC2 operation -> the source files that call it."""
    methods = ec2_operations()
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            operation = ""
            # aws.call(client, "DescribeVolumes", ...): the one way gpuhost calls EC2
            if name == "call" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                operation = str(node.args[1].value)
            # a boto3 client method called directly (client.describe_volumes(...))
            elif isinstance(func, ast.Attribute) and name in methods:
                operation = methods[name]
            if operation:
                found.setdefault(operation, set()).add(str(path.relative_to(REPO)))
    return found


def test_tune_ebs_policy_grants_exactly_the_calls_gpuhost_makes() -> None:
    called = operations_called_by_gpuhost()
    unknown = sorted(op for op in called if op not in set(ec2_operations().values()))
    assert not unknown, f"not EC2 operations: {unknown}"
    needed = {f"ec2:{op}" for op in called}
    granted = allowed_actions(policy("gpuhost-tune-ebs.json"))
    missing = {action: sorted(called[action[4:]]) for action in needed - granted}
    assert not missing, f"files/iam/gpuhost-tune-ebs.json misses {missing}"
    assert not granted - needed, f"files/iam/gpuhost-tune-ebs.json grants calls gpuhost never makes: {granted - needed}"


def test_modify_is_limited_to_volumes_tagged_for_gpuhost() -> None:
    statements = policy("gpuhost-tune-ebs.json")["Statement"]
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if any(not action.startswith("ec2:Describe") for action in actions):
            assert actions == ["ec2:ModifyVolume"], statement
            assert statement["Resource"] == "arn:aws:ec2:*:*:volume/*"
            assert statement["Condition"] == {"StringEquals": {"aws:ResourceTag/gpuhost": "true"}}
        else:
            assert statement["Resource"] == "*"  # Describe* calls take no resource-level permissions


def test_access_denied_remedy_names_the_same_actions() -> None:
    from gpuhost.ebs.aws import IAM_ACTIONS

    named = {action.strip() for action in IAM_ACTIONS.split(",")}
    assert named == allowed_actions(policy("gpuhost-tune-ebs.json"))


# What amazon.aws.aws_ec2 calls beyond ec2:DescribeInstances, by the inventory option that makes it
# call it (plugins/inventory/aws_ec2.py); the calls themselves are recorded against moto in
# tests/integration/test_iam_inventory_calls.py.
_EXTRA_INVENTORY_CALLS = {
    "regions": "ec2:DescribeRegions (every region is listed when none is given)",
    "use_ssm_inventory": "ssm:GetInventory",
    "include_extra_api_calls": "ec2:DescribeInstanceStatus",
    "route53_hostnames": "route53:ListHostedZones, route53:ListResourceRecordSets",
    "iam_role_arn": "sts:AssumeRole",
}


def test_aws_inventory_uses_no_option_that_needs_more_permissions() -> None:
    import yaml

    config = yaml.safe_load((REPO / "inventories" / "aws" / "aws_ec2.yml").read_text())
    assert config["plugin"] == "amazon.aws.aws_ec2"
    assert config.get("regions"), _EXTRA_INVENTORY_CALLS["regions"]
    for option in ("use_ssm_inventory", "include_extra_api_calls", "iam_role_arn"):
        assert not config.get(option), f"{option} needs {_EXTRA_INVENTORY_CALLS[option]} in gpuhost-inventory.json"
    assert not any("route53" in str(name) for name in config.get("hostnames", [])), _EXTRA_INVENTORY_CALLS[
        "route53_hostnames"
    ]
    assert allowed_actions(policy("gpuhost-inventory.json")) == {"ec2:DescribeInstances"}


def test_prometheus_discovery_policy_only_reads() -> None:
    # exactly what Prometheus' EC2 discovery calls: tests/integration/test_prometheus_discovery.py records it
    document = policy("gpuhost-prometheus-ec2-sd.json")
    assert allowed_actions(document) == {"ec2:DescribeInstances", "ec2:DescribeAvailabilityZones"}
    assert all(statement["Resource"] == "*" and "Condition" not in statement for statement in document["Statement"])


def test_every_policy_in_files_iam_is_tested() -> None:
    assert sorted(p.name for p in POLICIES.glob("*.json")) == [
        "gpuhost-inventory.json", "gpuhost-prometheus-ec2-sd.json", "gpuhost-tune-ebs.json",
    ]
