"""Block devices, mounts and free space from /sys, /proc and statvfs.

Nitro NVMe devices carry their class in the model string: `Amazon EC2 NVMe Instance Storage`
(ephemeral) or `Amazon Elastic Block Store`, whose serial is the volume id without its dash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

INSTANCE_STORE_MODEL = "Amazon EC2 NVMe Instance Storage"
EBS_MODEL = "Amazon Elastic Block Store"


@dataclass
class Mount:
    mountpoint: str
    source: str
    fstype: str
    options: str
    major_minor: str


@dataclass
class BlockDevice:
    name: str
    size_bytes: int = 0
    model: str = ""
    serial: str = ""
    # "instance-store", "ebs", "loop", "md" or "other"
    device_class: str = "other"
    ebs_volume_id: str = ""
    partitions: list[str] = field(default_factory=list)
    holders: list[str] = field(default_factory=list)
    slaves: list[str] = field(default_factory=list)
    mountpoints: list[str] = field(default_factory=list)
    rotational: bool | None = None


@dataclass
class PathLocation:
    """Where a directory lives: its mount, device, filesystem and free space."""

    path: str
    exists: bool = False
    mountpoint: str = ""
    source: str = ""
    fstype: str = ""
    device: str = ""  # kernel name of the block device, e.g. nvme0n1p1, md0, loop3
    disk: str = ""  # the whole disk (or array) beneath it, e.g. nvme0n1
    device_class: str = ""
    ebs_volume_id: str = ""
    on_root_disk: bool = False
    free_bytes: int | None = None
    total_bytes: int | None = None


def classify(model: str, name: str) -> str:
    model = model.strip()
    if model == INSTANCE_STORE_MODEL:
        return "instance-store"
    if model == EBS_MODEL:
        return "ebs"
    if name.startswith("loop"):
        return "loop"
    if name.startswith("md"):
        return "md"
    return "other"


def ebs_volume_id(serial: str) -> str:
    serial = serial.strip()
    if serial.startswith("vol") and not serial.startswith("vol-") and len(serial) > 3:
        return "vol-" + serial[3:]
    return serial if serial.startswith("vol-") else ""


def _unescape(value: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    for octal, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        value = value.replace(octal, char)
    return value


def parse_mountinfo(text: str) -> list[Mount]:
    mounts: list[Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rest = right.split()
        if len(fields) < 6 or len(rest) < 2:
            continue
        mounts.append(
            Mount(
                mountpoint=_unescape(fields[4]),
                source=_unescape(rest[1]),
                fstype=rest[0],
                options=fields[5],
                major_minor=fields[2],
            )
        )
    return mounts


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def read_mounts(root: str = "/") -> list[Mount]:
    return parse_mountinfo(_read(os.path.join(root, "proc/self/mountinfo")))


def collect_block_devices(root: str = "/", mounts: list[Mount] | None = None) -> list[BlockDevice]:
    sys_block = os.path.join(root, "sys/block")
    mounts = read_mounts(root) if mounts is None else mounts
    devices: list[BlockDevice] = []
    for name in _listdir(sys_block):
        base = os.path.join(sys_block, name)
        size = _read(os.path.join(base, "size"))
        if name.startswith("loop") and size in ("", "0"):
            continue  # an unused loop slot
        model = _read(os.path.join(base, "device/model"))
        serial = _read(os.path.join(base, "device/serial"))
        device = BlockDevice(
            name=name,
            size_bytes=int(size) * 512 if size.isdigit() else 0,
            model=model,
            serial=serial,
            device_class=classify(model, name),
            holders=_listdir(os.path.join(base, "holders")),
            slaves=_listdir(os.path.join(base, "slaves")),
        )
        if device.device_class == "ebs":
            device.ebs_volume_id = ebs_volume_id(serial)
        device.partitions = [p for p in _listdir(base) if p.startswith(name) and p != name]
        rotational = _read(os.path.join(base, "queue/rotational"))
        device.rotational = rotational == "1" if rotational else None
        names = {name, *device.partitions}
        device.mountpoints = [m.mountpoint for m in mounts if os.path.basename(m.source) in names]
        devices.append(device)
    return devices


def _device_name_for(major_minor: str, root: str) -> str:
    link = os.path.join(root, "sys/dev/block", major_minor)
    try:
        return os.path.basename(os.path.realpath(link)) if os.path.exists(link) else ""
    except OSError:
        return ""


def whole_disk(name: str, root: str = "/") -> str:
    """The disk a partition belongs to (nvme0n1p1 -> nvme0n1); a disk maps to itself."""
    if os.path.isdir(os.path.join(root, "sys/block", name)):
        return name
    parent = os.path.realpath(os.path.join(root, "sys/class/block", name, ".."))
    base = os.path.basename(parent)
    return base if os.path.isdir(os.path.join(root, "sys/block", base)) else name


def mount_for(path: str, mounts: list[Mount], resolve: bool = True) -> Mount | None:
    best: Mount | None = None
    real = os.path.realpath(path) if resolve else os.path.normpath(path)
    for mount in mounts:
        point = mount.mountpoint
        inside = real == point or real.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best.mountpoint)):
            best = mount
    return best


def _under(root: str, path: str) -> str:
    return path if root == "/" else os.path.join(root, path.lstrip("/"))


def locate(path: str, root: str = "/", mounts: list[Mount] | None = None) -> PathLocation:
    """Where `path` (as the host sees it) lives; with another root, read that captured tree."""
    location = PathLocation(path=path, exists=os.path.exists(_under(root, path)))
    mounts = read_mounts(root) if mounts is None else mounts
    probe = path
    while not os.path.exists(_under(root, probe)) and probe not in ("", "/"):
        probe = os.path.dirname(probe)
    # a captured tree has mountinfo but not the directories: match the path as the host sees it
    mount = mount_for(probe if root == "/" else path, mounts, resolve=root == "/")
    if mount is not None:
        location.mountpoint = mount.mountpoint
        location.source = mount.source
        location.fstype = mount.fstype
        location.device = _device_name_for(mount.major_minor, root)
        if location.device:
            location.disk = whole_disk(location.device, root)
            model = _read(os.path.join(root, "sys/block", location.disk, "device/model"))
            location.device_class = classify(model, location.disk)
            if location.device_class == "ebs":
                serial = _read(os.path.join(root, "sys/block", location.disk, "device/serial"))
                location.ebs_volume_id = ebs_volume_id(serial)
        root_mount = mount_for("/", mounts, resolve=False)
        if root_mount is not None:
            root_device = _device_name_for(root_mount.major_minor, root)
            location.on_root_disk = bool(
                root_device and location.disk and whole_disk(root_device, root) == location.disk
            )
    try:
        stats = os.statvfs(_under(root, probe))
        location.free_bytes = stats.f_bavail * stats.f_frsize
        location.total_bytes = stats.f_blocks * stats.f_frsize
    except OSError:
        pass
    return location
