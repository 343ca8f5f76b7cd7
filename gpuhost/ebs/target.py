"""Which volume to tune: the one named, the instance's root volume, or the one under Docker's data-root.

The root volume comes from describe_instances (RootDeviceName and the block-device mappings);
on Nitro instances the NVMe serial of the disk mounted at / (the volume id without its dash)
settles it when the device names differ. The data-root volume comes from the NVMe serial of the
disk under Docker's data-root; on Xen instances (no serial) from the device name instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpuhost.ebs import aws
from gpuhost.engine import EngineBadAnswer, EngineClient, EngineError, EnginePermissionDenied, EngineUnavailable
from gpuhost.facts.storage import PathLocation, locate
from gpuhost.model import ExitCode, SourceError, UsageError

TARGETS = ("root", "data-root")


@dataclass
class Selection:
    """How the volume was found, for the report."""

    by: str  # "volume-id", "root" or "data-root"
    volume_id: str
    instance_id: str = ""
    device: str = ""
    path: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "by": self.by,
            "volume_id": self.volume_id,
            "instance_id": self.instance_id,
            "device": self.device,
            "path": self.path,
        }


@dataclass
class LocalDisk:
    """What this host's sysfs says about the disk under a path."""

    path: str
    location: PathLocation

    @property
    def volume_id(self) -> str:
        return self.location.ebs_volume_id

    @property
    def device_class(self) -> str:
        return self.location.device_class


def docker_data_root(docker_host: str | None = None) -> str:
    """Docker's data-root from the Engine API."""

    try:
        info = EngineClient(docker_host, timeout=5.0).get("/info")
    except EngineBadAnswer as exc:
        raise SourceError("Docker", str(exc), "Point DOCKER_HOST at the Docker daemon's socket.") from exc
    except (EngineUnavailable, EnginePermissionDenied, EngineError, OSError, ValueError) as exc:
        raise UsageError(
            f"cannot ask Docker for its data-root: {exc}",
            "Start Docker, or give the directory with --data-root /var/lib/docker, or the volume with --volume-id.",
        ) from exc
    return str(info.get("DockerRootDir") or "")


def local_disk(path: str, root: str = "/") -> LocalDisk:
    return LocalDisk(path, locate(path, root))


def normalise_device(name: str) -> str:
    """`/dev/xvdf`, `/dev/sdf`, `xvdf1` -> `sdf`: how Xen and EC2 name the same attachment."""
    base = name.rsplit("/", 1)[-1]
    if base.startswith("xvd"):
        base = "sd" + base[3:]
    match = re.fullmatch(r"(sd[a-z]+)\d*", base)
    return match.group(1) if match else base


def _by_device(devices: aws.InstanceBlockDevices, device: str) -> str:
    wanted = normalise_device(device)
    for name, volume_id in devices.volumes.items():
        if normalise_device(name) == wanted:
            return volume_id
    return ""


def root_volume(devices: aws.InstanceBlockDevices, local: LocalDisk | None) -> Selection:
    if local is not None and local.volume_id and local.volume_id in devices.volumes.values():
        device = next(name for name, vid in devices.volumes.items() if vid == local.volume_id)
        return Selection("root", local.volume_id, devices.instance_id, device, "/")
    volume_id = devices.volumes.get(devices.root_device_name) or _by_device(devices, devices.root_device_name)
    if not volume_id:
        raise aws.AwsError(
            f"instance {devices.instance_id} has no EBS volume at its root device {devices.root_device_name or '?'}",
            "Give the volume with --volume-id (aws ec2 describe-instances lists the block-device mappings).",
            ExitCode.USAGE,
        )
    device = next(name for name, vid in devices.volumes.items() if vid == volume_id)
    return Selection("root", volume_id, devices.instance_id, device, "/")


def data_root_selection(local: LocalDisk) -> Selection | None:
    """The data-root's volume when sysfs names it; None when only the instance's mappings can tell."""
    if local.device_class == "instance-store":
        raise UsageError(
            f"Docker's data-root {local.path} is on instance-store NVMe ({local.location.disk}): no EBS volume to tune",
            "Instance store is already the fast path; tune the root volume with --target root if you need to.",
        )
    if local.volume_id:
        return Selection("data-root", local.volume_id, "", local.location.disk, local.path)
    if not local.location.disk:
        raise UsageError(
            f"cannot tell which disk holds {local.path}",
            "Give the volume with --volume-id.",
        )
    return None


def data_root_by_device(devices: aws.InstanceBlockDevices, local: LocalDisk) -> Selection:
    volume_id = _by_device(devices, local.location.disk)
    if not volume_id:
        raise UsageError(
            f"Docker's data-root {local.path} is on {local.location.disk}, which is not an EBS volume of "
            f"{devices.instance_id}",
            "Give the volume with --volume-id.",
        )
    return Selection("data-root", volume_id, devices.instance_id, local.location.disk, local.path)
