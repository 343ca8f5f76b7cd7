"""Finding the volume to tune on a Nitro host: root and data-root volumes by NVMe serial, against moto.

The host is a sysfs/mountinfo tree in the layout a Nitro instance has (EBS disks whose model is
`Amazon Elastic Block Store` and whose serial is the volume id without its dash, an instance-store
disk); the volumes behind the serials are real volumes on the moto server.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpuhost.ebs.aws import AwsOptions
from gpuhost.ebs.plan import Settings
from gpuhost.ebs.target import normalise_device
from gpuhost.ebs.tune import TuneOptions, run
from gpuhost.model import UsageError
from tests.support.aws import Ec2Server, ImdsStandIn, make_instance

EBS_MODEL = "Amazon Elastic Block Store"
STORE_MODEL = "Amazon EC2 NVMe Instance Storage"


def nitro_tree(root: Path, disks: dict[str, tuple[str, str]], mounts: dict[str, str]) -> Path:
    """disks: name -> (model, serial); mounts: mountpoint -> device name (disk or disk + "p1")."""
    lines = []
    numbers = {}
    for index, (name, (model, serial)) in enumerate(sorted(disks.items())):
        base = root / "sys/block" / name
        (base / "device").mkdir(parents=True)
        (base / "device/model").write_text(model + "\n")
        (base / "device/serial").write_text(serial + "\n")
        (base / "size").write_text(str(200 * 1024**3 // 512))
        (base / f"{name}p1").mkdir()
        numbers[name] = f"259:{index * 2}"
        numbers[f"{name}p1"] = f"259:{index * 2 + 1}"
    (root / "sys/dev/block").mkdir(parents=True)
    (root / "sys/class/block").mkdir(parents=True)
    for device, number in numbers.items():
        disk = device[:-2] if device.endswith("p1") else device
        target = f"../../block/{disk}" + (f"/{device}" if device != disk else "")
        os.symlink(target, root / "sys/dev/block" / number)
        os.symlink(target, root / "sys/class/block" / device)
    for n, (point, device) in enumerate(mounts.items()):
        lines.append(f"{30 + n} 1 {numbers[device]} / {point} rw,noatime - xfs /dev/{device} rw")
        (root / point.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/mountinfo").write_text("\n".join(lines) + "\n")
    return root


def serial(volume_id: str) -> str:
    return volume_id.replace("-", "")


@pytest.fixture
def two_volumes(aws_env: dict[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn) -> tuple[str, str, str]:
    """An instance with a root volume and a data volume at /dev/sdf; IMDS answers as it."""
    client = ec2_server.client()
    instance_id, root_id = make_instance(client, size_gib=100, device="/dev/xvda")
    data_id = client.create_volume(AvailabilityZone="us-east-1a", Size=500, VolumeType="gp3")["VolumeId"]
    client.attach_volume(VolumeId=data_id, InstanceId=instance_id, Device="/dev/sdf")
    imds_stand_in.set_identity(instance_id, "us-east-1")
    return instance_id, root_id, data_id


def options(root: Path, **kwargs: object) -> TuneOptions:
    return TuneOptions(settings=Settings(preset="pull"), dry_run=True, root=str(root), **kwargs)  # type: ignore[arg-type]


def test_data_root_volume_by_its_nvme_serial(tmp_path: Path, two_volumes: tuple[str, str, str]) -> None:
    instance_id, root_id, data_id = two_volumes
    tree = nitro_tree(
        tmp_path,
        {"nvme0n1": (EBS_MODEL, serial(root_id)), "nvme1n1": (EBS_MODEL, serial(data_id))},
        {"/": "nvme0n1p1", "/var/lib/docker": "nvme1n1"},
    )
    result = run(options(tree, target="data-root", data_root="/var/lib/docker"))
    assert result.selection is not None
    assert (result.selection.by, result.selection.volume_id, result.selection.device) == (
        "data-root",
        data_id,
        "nvme1n1",
    )
    assert result.selection.instance_id == instance_id
    assert result.plan is not None and result.plan.current.size_gib == 500


def test_root_volume_prefers_the_serial_of_the_disk_at_root(
    tmp_path: Path, two_volumes: tuple[str, str, str], ec2_server: Ec2Server
) -> None:
    _, root_id, data_id = two_volumes
    # the instance booted from what EC2 calls /dev/sdf: the disk mounted at / says so
    tree = nitro_tree(tmp_path, {"nvme0n1": (EBS_MODEL, serial(data_id))}, {"/": "nvme0n1p1"})
    with ec2_server.recording() as actions:
        result = run(options(tree))
    assert result.selection is not None
    assert (result.selection.by, result.selection.volume_id, result.selection.device) == ("root", data_id, "/dev/sdf")
    assert actions[0] == "DescribeInstances"
    # without a serial (a Xen instance) the root device name decides
    xen = nitro_tree(tmp_path / "xen", {"xvda": ("", "")}, {"/": "xvdap1"})
    assert run(options(xen)).selection.volume_id == root_id  # type: ignore[union-attr]


def test_data_root_on_instance_store_is_refused(tmp_path: Path, two_volumes: tuple[str, str, str]) -> None:
    _, root_id, _ = two_volumes
    tree = nitro_tree(
        tmp_path,
        {"nvme0n1": (EBS_MODEL, serial(root_id)), "nvme1n1": (STORE_MODEL, "AWS1234567890ABCDEF")},
        {"/": "nvme0n1p1", "/mnt/docker": "nvme1n1"},
    )
    with pytest.raises(UsageError) as caught:
        run(options(tree, target="data-root", data_root="/mnt/docker"))
    assert "instance-store NVMe (nvme1n1): no EBS volume to tune" in str(caught.value)


def test_data_root_by_device_name_without_a_serial(
    tmp_path: Path, two_volumes: tuple[str, str, str], ec2_server: Ec2Server
) -> None:
    _, _root_id, data_id = two_volumes
    tree = nitro_tree(tmp_path, {"xvda": ("", ""), "xvdf": ("", "")}, {"/": "xvdap1", "/var/lib/docker": "xvdf"})
    result = run(options(tree, target="data-root", data_root="/var/lib/docker"))
    assert result.selection is not None
    assert (result.selection.volume_id, result.selection.device) == (data_id, "xvdf")


def test_device_names_as_xen_and_ec2_spell_them() -> None:
    assert normalise_device("/dev/xvdf") == normalise_device("/dev/sdf") == "sdf"
    assert normalise_device("/dev/sda1") == normalise_device("xvda") == "sda"
    assert normalise_device("nvme0n1") == "nvme0n1"


def test_data_root_from_docker_when_not_given(aws_env: dict[str, str], two_volumes: tuple[str, str, str]) -> None:
    # this test machine's Docker keeps its data-root on a virtio disk: not EBS, and said so
    with pytest.raises(UsageError) as caught:
        run(TuneOptions(settings=Settings(preset="pull"), target="data-root", aws=AwsOptions(region="us-east-1")))
    assert "Give the volume with --volume-id" in caught.value.remedy
