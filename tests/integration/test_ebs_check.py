"""`gpuhost check` on EC2 hosts: EBS facts from IMDSv2 and the EC2 API (moto), pull-time predictions
from the real dockerd's images; and nothing at all asked off EC2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuhost.ebs.facts import AwsFacts, collect_aws
from gpuhost.engine import EngineClient
from gpuhost.facts.docker import ImageSize, image_sizes
from gpuhost.facts.source import SourceStatus
from gpuhost.facts.storage import BlockDevice, PathLocation
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Severity
from gpuhost.rules import RuleOptions
from gpuhost.rules.ebs import pull_time, volumes
from gpuhost.units import GB
from tests.support.aws import Ec2Server, ImdsStandIn, make_instance
from tests.support.paths import REPO


def test_off_ec2_nothing_is_asked(monkeypatch: pytest.MonkeyPatch, imds_stand_in: ImdsStandIn) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", raising=False)
    before = len(imds_stand_in.requests)
    facts = collect_aws("/")
    assert (facts.status, facts.on_ec2) == (SourceStatus.ABSENT, False)
    assert "not an EC2 instance" in facts.detail
    assert imds_stand_in.requests[before:] == []
    host = HostFacts(aws=facts)
    assert volumes(host, RuleOptions()) == [] and pull_time(host, RuleOptions()) == []


def test_a_captured_tree_is_never_asked(tmp_path: Path, aws_env: dict[str, str], imds_stand_in: ImdsStandIn) -> None:
    (tmp_path / "sys/class/dmi/id").mkdir(parents=True)
    (tmp_path / "sys/class/dmi/id/sys_vendor").write_text("Amazon EC2\n")
    before = len(imds_stand_in.requests)
    assert collect_aws(str(tmp_path)).status is SourceStatus.ABSENT
    assert imds_stand_in.requests[before:] == []


def test_check_on_this_machine_has_no_ebs_findings() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AWS_EC2_METADATA_SERVICE_ENDPOINT"}
    result = subprocess.run(
        [sys.executable, "-m", "gpuhost", "check", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(result.stdout)
    assert report["facts"]["aws"]["status"] == "absent"
    assert not [f for f in report["findings"] if f["area"] == "ebs"]


@pytest.fixture
def ec2_host(aws_env: dict[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn) -> tuple[str, str, str]:
    client = ec2_server.client()
    instance_id, root_id = make_instance(client, size_gib=100)
    client.modify_volume(VolumeId=root_id, Iops=6000, Throughput=500)  # completed at once (no timeline)
    data_id = client.create_volume(AvailabilityZone="us-east-1a", Size=1000, VolumeType="gp3")["VolumeId"]
    client.attach_volume(VolumeId=data_id, InstanceId=instance_id, Device="/dev/sdf")
    imds_stand_in.set_identity(instance_id, "us-east-1", "g6e.xlarge")
    return instance_id, root_id, data_id


def test_check_on_an_ec2_host_reports_its_volumes(
    ec2_host: tuple[str, str, str], aws_env: dict[str, str], ec2_server: Ec2Server
) -> None:
    instance_id, root_id, data_id = ec2_host
    ec2_server.lifecycle.timelines[data_id] = [(0, "optimizing", 35)]
    ec2_server.client().modify_volume(VolumeId=data_id, Iops=9000, Throughput=1000)
    result = subprocess.run(
        [sys.executable, "-m", "gpuhost", "check", "--json"],
        cwd=REPO,
        env={**os.environ, **aws_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(result.stdout)
    aws = report["facts"]["aws"]
    assert (aws["status"], aws["instance_id"], aws["region"], aws["instance_type"]) == (
        "ok",
        instance_id,
        "us-east-1",
        "g6e.xlarge",
    )
    by_id = {v["volume_id"]: v for v in aws["volumes"]}
    root = by_id[root_id]
    assert (root["volume_type"], root["size_gib"], root["iops"], root["throughput_mibs"], root["device"]) == (
        "gp3",
        100,
        6000,
        500,
        "/dev/sda1",
    )
    data = by_id[data_id]
    assert (data["modification_state"], data["modification_progress"], data["modification_target_iops"]) == (
        "optimizing",
        35,
        9000,
    )
    findings = {(f["id"], f["evidence"].get("volume_id")): f for f in report["findings"] if f["area"] == "ebs"}
    assert findings[("ebs.volume", root_id)]["severity"] == "ok"
    assert "6,000 IOPS, 500 MiB/s" in findings[("ebs.volume", root_id)]["message"]
    assert findings[("ebs.volume", data_id)]["severity"] == "warn"
    assert "modification optimizing 35%" in findings[("ebs.volume", data_id)]["message"]
    assert report["facts"]["timings_ms"]["aws"] > 0


def test_pull_time_for_the_images_this_docker_has(ec2_host: tuple[str, str, str]) -> None:
    _, _root_id, data_id = ec2_host
    facts = collect_aws(
        "/",
        [BlockDevice(name="nvme1n1", device_class="ebs", ebs_volume_id=data_id)],
        PathLocation(path="/var/lib/docker", device_class="ebs", ebs_volume_id=data_id, disk="nvme1n1"),
        image_sizes(EngineClient(timeout=10.0)),
    )
    assert facts.status is SourceStatus.OK
    assert facts.data_root_volume is not None and facts.data_root_volume.volume_id == data_id
    assert facts.data_root_volume.local_disk == "nvme1n1"
    assert facts.images, "the test machine's dockerd has the base images"
    assert facts.images == sorted(facts.images, key=lambda i: i.size_bytes, reverse=True)
    [finding] = pull_time(HostFacts(aws=facts), RuleOptions())
    assert finding.id == "ebs.pull-time" and finding.severity is Severity.OK
    assert f"onto {data_id} at 125 MiB/s" in finding.message
    assert finding.evidence["images"][0]["reference"] == facts.images[0].reference


def test_a_slow_pull_warns_with_the_tune_ebs_command() -> None:
    facts = AwsFacts(status=SourceStatus.OK, on_ec2=True, instance_id="i-0123456789abcdef0")
    from gpuhost.ebs.facts import EbsVolumeFacts

    facts.volumes = [EbsVolumeFacts("vol-0123456789abcdef0", "gp3", 500, 3000, 125, data_root=True)]
    facts.images = [ImageSize("comfyui:big", 140 * GB), ImageSize("busybox", 5 * 1024**2)]
    [finding] = pull_time(HostFacts(aws=facts), RuleOptions())
    assert finding.severity is Severity.WARN
    assert "comfyui:big (140.0 GB)" in finding.message and "17.8 min" in finding.message
    assert "gpuhost tune-ebs --target data-root --for-image-size 140GB --within 5m" in finding.remedy
    facts.volumes[0].throughput_mibs = 1000
    [fast] = pull_time(HostFacts(aws=facts), RuleOptions())
    assert fast.severity is Severity.OK


def test_unreachable_metadata_on_ec2_is_a_warning(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{closed}")
    facts = collect_aws("/")
    assert (facts.status, facts.on_ec2) == (SourceStatus.UNREADABLE, True)
    [finding] = volumes(HostFacts(aws=facts), RuleOptions())
    assert (finding.id, finding.severity) == ("ebs.facts", Severity.WARN)
    assert "hop limit" in finding.remedy


def test_api_refusal_is_a_warning(
    ec2_host: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch, ec2_errors: object
) -> None:
    from tests.support.aws import Ec2ErrorServer

    assert isinstance(ec2_errors, Ec2ErrorServer)
    ec2_errors.answer("UnauthorizedOperation", "You are not authorized to perform this operation.", 403)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", ec2_errors.endpoint)
    facts = collect_aws("/")
    assert facts.status is SourceStatus.UNREADABLE
    [finding] = volumes(HostFacts(aws=facts), RuleOptions())
    assert finding.severity is Severity.WARN
    assert "UnauthorizedOperation" in finding.message
    assert "ec2:DescribeVolumes" in finding.remedy
