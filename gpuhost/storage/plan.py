"""Which disks Docker's data-root may take, and why every other disk is refused.

The docker_storage role asks this module (through `gpuhost-agent storage-plan`) before it
writes anything. Disks are either named by the user or, on AWS, found by their NVMe model
string (`Amazon EC2 NVMe Instance Storage`). A disk is refused when it is the root disk, is
mounted, used as swap, held by another device (md, dm, LVM), has partitions, carries any
filesystem, partition-table, RAID, LVM, swap or crypto signature, or is an EBS volume. The
last three kinds of refusal (signatures, partitions, EBS) can be overridden by naming the
disk in `force`; the first four cannot, because formatting such a disk destroys a running
system or a live array.

A disk that already holds what the role makes (an XFS filesystem with the role's label, or a
member of the role's md array) is the role's own: it is accepted, and a second run changes
nothing.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from gpuhost import userfile
from gpuhost.engine import DOCKER_HOST_OPTION, EngineClient
from gpuhost.facts.docker import DAEMON_JSON, DAEMON_JSON_OPTION, image_sizes
from gpuhost.facts.signatures import Signature, SignatureReport, probe_signatures
from gpuhost.facts.storage import (
    DOCKER_STORAGE_CONFIG,
    DOCKER_STORAGE_SERVICE,
    BlockDevice,
    Mount,
    collect_block_devices,
    list_entries,
    read_mounts,
    read_text,
    whole_disk,
)
from gpuhost.model import ExitCode, UsageError, to_jsonable
from gpuhost.options import Command, Option, json_flag
from gpuhost.storage.move import DEFAULT_DATA_ROOT, DataRootPlan, plan_data_root
from gpuhost.storage.paths import PathLoop, resolve
from gpuhost.storage.space import IMAGE_STORES, SpacePlan, parse_image_size, parse_image_store, plan_space

CONFIG_SCHEMA = "gpuhost.docker-storage/v1"
CONFIG_PATH = DOCKER_STORAGE_CONFIG
SERVICE_UNIT = DOCKER_STORAGE_SERVICE
DEFAULT_MOUNT_PATH = "/mnt/docker"
DEFAULT_LABEL = "gh-docker"
MISSING_DISK_POLICIES = ("wait", "fail", "fallback")
DEFAULT_DEVICE_TIMEOUT = 90
MAX_DEVICE_TIMEOUT = 86400  # the boot unit waits at most a day for its disks
XFS_LABEL_MAX = 12

SignatureProbe = Callable[[str], SignatureReport]


@dataclass
class Refusal:
    code: str  # root-disk, mounted, swap, holders, partition, read-only, empty, ebs, partitions, signature, unreadable
    message: str
    forceable: bool


@dataclass
class DiskInspection:
    """One disk as the plan judged it: the block device as /sys describes it, and what the plan found on
    it and around it."""

    path: str  # as named by the user, or /dev/<name> when discovered
    # a path /sys lists no whole disk for (a partition, a missing disk) keeps only its name, and no class
    device: BlockDevice
    signatures: list[Signature] = field(default_factory=list)
    # mounts of the disk, of its partitions and of what is stacked on them (md, dm, LVM)
    mountpoints: list[str] = field(default_factory=list)
    # every device stacked on the disk or on one of its partitions, not only the direct ones
    holders: list[str] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    forced: bool = False
    ours: bool = False  # holds the role's own filesystem or array membership

    @property
    def name(self) -> str:
        """The kernel name (nvme1n1, loop3)."""
        return self.device.name

    @property
    def accepted(self) -> bool:
        return all(r.forceable and self.forced for r in self.refusals)

    @property
    def blank(self) -> bool:
        return not self.signatures and not self.device.partitions

    def reasons(self) -> str:
        return "; ".join(r.message for r in self.refusals)

    def to_dict(self) -> dict[str, Any]:
        """One entry of the plan's `disks`: the device's identity flattened in beside the verdict."""
        device = self.device
        return {
            "path": self.path,
            "name": device.name,
            "size_bytes": device.size_bytes,
            "model": device.model,
            "serial": device.serial,
            "device_class": device.device_class,
            "ebs_volume_id": device.ebs_volume_id,
            "signatures": to_jsonable(self.signatures),
            "mountpoints": self.mountpoints,
            "holders": self.holders,
            "partitions": device.partitions,
            "refusals": to_jsonable(self.refusals),
            "forced": self.forced,
            "ours": self.ours,
            "accepted": self.accepted,
        }


PATH_MAX = 4096
NAME_MAX = 255
# Directories of the running system: a mount there hides what the system needs. Anything below them is
# refused too, except Docker's own data directories under /var/lib (DOCKER_DATA_DIRECTORY).
SYSTEM_DIRECTORIES = (
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/lost+found", "/opt",
    "/proc", "/root", "/run", "/sbin", "/snap", "/sys", "/usr", "/var",
)
# Directories that hold mount points or scratch space: a dedicated directory below them, never the
# directory itself.
MOUNT_PARENTS = ("/mnt", "/srv", "/media", "/tmp")
DOCKER_DATA_DIRECTORY = re.compile(r"/var/lib/docker(?:[-_.][A-Za-z0-9_.-]+)?(?:/.+)?")
MOUNT_PATH_REMEDY = (
    "Use a dedicated directory such as /mnt/docker, /srv/docker, /data or /var/lib/docker "
    "(see docs/storage.md, mount paths)."
)
DEVICE_REMEDY = "Name a whole disk by its absolute path, e.g. --device /dev/nvme1n1 (lsblk -d lists them)."
FALLBACK_REMEDY = (
    "Give the data-root Docker used before the move, such as /var/lib/docker, or leave it empty for that one "
    "(see docs/storage.md, mount paths)."
)
# systemd's longest unit name
UNIT_NAME_MAX = 255


def _check_path_text(path: str, what: str, remedy: str) -> None:
    if not isinstance(path, str) or not path.isprintable() or path != path.strip():
        raise UsageError(f"{what} {str(path)[:200]!r} has spaces or control characters around or in it", remedy)
    if len(path) > PATH_MAX or any(len(part) > NAME_MAX for part in path.split("/")):
        raise UsageError(f"{what} {path[:60]!r}... is too long for a {what} (Linux: {PATH_MAX} characters, "
                         f"{NAME_MAX} per name)", remedy)
    if not path.startswith("/"):
        raise UsageError(f"{path[:200]!r} is not a {what}: it must be an absolute path", remedy)
    if ".." in path.split("/"):
        raise UsageError(f"{what} {path[:200]!r} goes through '..'", remedy)
    if path.endswith("\\"):
        raise UsageError(f"{what} {path[:200]!r} ends in a backslash, which a systemd unit reads as a continued line",
                         remedy)


def check_device_path(path: str) -> None:
    """An absolute path of plain text; whether it is a block device is kernel_name's question."""
    _check_path_text(path, "device path", DEVICE_REMEDY)


def _refusal(path: str) -> str:
    """Why a normal absolute path is no place for a dedicated directory ("" when it is one)."""
    if path == "/":
        return "is the root filesystem: give an absolute path other than /"
    if path in MOUNT_PARENTS:
        return "holds other directories: use a directory below it"
    if DOCKER_DATA_DIRECTORY.fullmatch(path):
        return ""
    for system in SYSTEM_DIRECTORIES:
        if path == system:
            return "is a system directory"
        if path.startswith(system + "/"):
            return f"is under the system directory {system}"
    return ""


def dedicated_directory(path: str, what: str, remedy: str = MOUNT_PATH_REMEDY) -> str:
    """The directory `path` really names, normalised (`//mnt//docker/` -> `/mnt/docker`) and with every
    symlink followed; UsageError when the path as typed or the place it leads to is `/`, a system
    directory, under one, or a directory that holds other mount points, or cannot be written into a unit."""
    _check_path_text(path, what, remedy)
    normal = "/" + os.path.normpath(path).lstrip("/")
    _check_path_text(normal, what, remedy)  # `/mnt/docker /` normalises to a trailing space
    try:
        resolved = resolve(normal)
    except PathLoop as exc:
        raise UsageError(f"{what} {normal} {exc}", remedy) from exc
    through = ""
    if resolved.links:
        link, target = resolved.links[-1]
        through = f" (it leads to {resolved.path!r} through the symlink {link!r} -> {target!r})"
        _check_path_text(resolved.path, f"{what} {normal}{through}:", remedy)
    for candidate, via in ((normal, ""), (resolved.path, through)):
        why = _refusal(candidate)
        if why:
            where = candidate if not via else f"{normal}{via}: {candidate}"
            raise UsageError(f"{what} {where} {why}", remedy)
    return resolved.path


def check_mount_path(path: str) -> str:
    """The directory the mount path really names (normalised, symlinks followed), or UsageError when it
    is a system directory, under one, a directory that holds other mount points, or a path whose mount
    unit name systemd cannot take."""
    where = dedicated_directory(path, "mount path")
    if len(mount_unit_name(where)) > UNIT_NAME_MAX:
        raise UsageError(
            f"mount path {where[:60]!r}... is too long for systemd: its mount unit's name would have "
            f"{len(mount_unit_name(where))} characters (at most {UNIT_NAME_MAX})", MOUNT_PATH_REMEDY)
    return where


def check_fallback_data_root(path: str, mount_path: str) -> str:
    """The directory the fallback data-root really names, checked as a mount path is, and apart from the
    mount path (the fallback policy bind-mounts it there)."""
    where = dedicated_directory(path, "fallback data-root", FALLBACK_REMEDY)
    for inner, outer in ((where, mount_path), (mount_path, where)):
        if inner == outer or inner.startswith(outer.rstrip("/") + "/"):
            raise UsageError(
                f"fallback data-root {where} and the mount path {mount_path} overlap: the fallback is bind-mounted "
                "on the mount path when the fast disk is missing", FALLBACK_REMEDY)
    return where


@dataclass
class StorageRequest:
    devices: list[str] = field(default_factory=list)  # empty: every instance-store disk
    force: list[str] = field(default_factory=list)
    mount_path: str = DEFAULT_MOUNT_PATH
    label: str = DEFAULT_LABEL
    array_name: str = DEFAULT_LABEL
    missing_disk_policy: str = "fail"
    device_timeout_s: int = DEFAULT_DEVICE_TIMEOUT
    fallback_data_root: str = "/var/lib/docker"
    # the image the disk must hold (0: the largest local image) and in which store ("auto": Docker's own)
    image_bytes: int = 0
    image_store: str = "auto"

    @classmethod
    def parse(
        cls,
        *,
        devices: Optional[list[str]] = None,
        force: Optional[list[str]] = None,
        mount_path: str = DEFAULT_MOUNT_PATH,
        label: str = DEFAULT_LABEL,
        array_name: str = "",
        missing_disk_policy: str = "fail",
        device_timeout: int = DEFAULT_DEVICE_TIMEOUT,
        fallback_data_root: str = "",
        image_size: str = "",
        image_store: str = "auto",
    ) -> StorageRequest:
        """The request as typed (CLI, agent or the role): the array is named after the label unless named.
        An empty fallback_data_root is decided by plan_docker_storage from Docker's current data-root."""
        request = cls(
            devices=list(devices or []),
            force=list(force or []),
            mount_path=mount_path,
            label=label,
            array_name=array_name or label,
            missing_disk_policy=missing_disk_policy,
            device_timeout_s=device_timeout,
            fallback_data_root=fallback_data_root,
            image_bytes=parse_image_size(image_size),
            image_store=parse_image_store(image_store),
        )
        request.validate()
        if request.fallback_data_root:
            request.fallback_data_root = check_fallback_data_root(request.fallback_data_root, request.mount_path)
        return request

    def validate(self) -> None:
        self.mount_path = check_mount_path(self.mount_path)
        for device in [*self.devices, *self.force]:
            check_device_path(device)
        plain = self.label.replace("-", "").replace("_", "")
        if not self.label or len(self.label) > XFS_LABEL_MAX or not (plain.isascii() and plain.isalnum()):
            raise UsageError(
                f"filesystem label {self.label!r} must be 1-{XFS_LABEL_MAX} letters, digits, '-' or '_' (XFS limit)"
            )
        if not self.array_name or not self.array_name.replace("-", "").replace("_", "").isalnum():
            raise UsageError(f"array name {self.array_name!r} must be letters, digits, '-' or '_'")
        if self.missing_disk_policy not in MISSING_DISK_POLICIES:
            raise UsageError(
                f"missing-disk policy {self.missing_disk_policy!r} is not one of {', '.join(MISSING_DISK_POLICIES)}"
            )
        if self.device_timeout_s < 0:
            raise UsageError("device timeout must be zero or more seconds")
        unknown = [f for f in self.force if f not in self.devices]
        if unknown and self.devices:
            raise UsageError(
                f"force names {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} not among the "
                "devices to use",
                "Force applies per device: list the same path under devices and under force.",
            )
        if len(set(self.devices)) != len(self.devices):
            raise UsageError("a device is listed twice")


STORAGE_PLAN = Command(
    cli="storage plan",
    agent="storage-plan",
    summary="which disks Docker's data-root may take, why others are refused, and the data-root move (reads only)",
    options=(
        Option("--device", "A disk to use (repeat). None: every instance-store NVMe disk.", short="-d", repeat=True,
               dest="devices"),
        Option("--force", "A named disk whose content may be destroyed (repeat).", repeat=True),
        Option("--mount-path", "Where the role mounts the disk.", kind="place", default=DEFAULT_MOUNT_PATH),
        Option("--label", "XFS label the role writes (12 characters at most).", default=DEFAULT_LABEL),
        Option("--array-name", "The md RAID0 array's name when several disks are used (default: the label).",
               default=""),
        Option("--missing-disk-policy", "What the boot unit does without its disks.", default="fail",
               choices=MISSING_DISK_POLICIES),
        Option("--device-timeout", "Seconds the boot unit waits for the disks.", kind="int",
               default=DEFAULT_DEVICE_TIMEOUT, minimum=0, maximum=MAX_DEVICE_TIMEOUT),
        Option("--fallback-data-root", "Data-root for the fallback policy (default: Docker's data-root before the "
               "move).", kind="place", default=""),
        Option("--no-move", "Switch data-root without copying the old one.", kind="flag", default=False),
        Option("--image-size", "The image the disk must hold (e.g. 140GB, 60GiB); default: the largest local image, "
               "if any.", default="", metavar="SIZE"),
        Option("--image-store", "auto (the store Docker uses), classic (one copy) or containerd (each layer's blob "
               "beside it: twice).", default="auto", choices=IMAGE_STORES),
        DAEMON_JSON_OPTION,
        DOCKER_HOST_OPTION,
        Option("--config", "An earlier run's boot configuration (read only).", kind="path", default=CONFIG_PATH),
        json_flag("the plan (what the role reads)"),
    ),
    parsers=(StorageRequest.parse,),
)


@dataclass
class StoragePlan:
    request: StorageRequest
    selection: str  # "devices" (named by the user) or "instance-store" (found by model)
    disks: list[DiskInspection] = field(default_factory=list)
    layout: str = "none"  # none, single, raid0
    state: str = "absent"  # absent (to create), present (the role's own, nothing to do), none (no disk)
    mount_source: str = ""
    mount_unit: str = ""
    actions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # the data-root move this storage implies (None when Docker's data-root was not looked at)
    data_root: Optional[DataRootPlan] = None
    # whether the disk holds the image, in the store Docker uses (None before it was looked at)
    space: Optional[SpacePlan] = None

    @property
    def ok(self) -> bool:
        return not self.errors and (self.space is None or self.space.ok)

    @property
    def exit_code(self) -> ExitCode:
        blocked = self.data_root is not None and bool(self.data_root.blocked)
        return ExitCode.OK if self.ok and not blocked else ExitCode.FAILING

    def to_dict(self) -> dict[str, Any]:
        """The JSON both `gpuhost storage plan --json` and the agent's storage-plan print: what the role reads."""
        return {
            "ok": self.ok,
            "selection": self.selection,
            "layout": self.layout,
            "state": self.state,
            "mount_path": self.request.mount_path,
            "mount_source": self.mount_source,
            "mount_unit": self.mount_unit,
            "disks": [disk.to_dict() for disk in self.disks],
            "refused": [{"path": d.path, "reasons": [r.message for r in d.refusals]} for d in self.refused],
            "errors": self.errors,
            "actions": self.actions,
            "config": self.config(),
            "data_root": to_jsonable(self.data_root) if self.data_root is not None else None,
            "space": to_jsonable(self.space) if self.space is not None else None,
        }

    @property
    def refused(self) -> list[DiskInspection]:
        return [d for d in self.disks if not d.accepted]

    def config(self) -> dict[str, object]:
        """What the boot unit reads (CONFIG_PATH): the same decisions, without any force."""
        request = self.request
        return {
            "schema": CONFIG_SCHEMA,
            "selection": self.selection,
            "devices": list(request.devices),
            "expected_disks": len(self.disks),
            "layout": self.layout,
            "label": request.label,
            "array_name": request.array_name,
            "mount_path": request.mount_path,
            "mount_source": self.mount_source,
            "mount_unit": self.mount_unit,
            "missing_disk_policy": request.missing_disk_policy,
            "device_timeout_s": request.device_timeout_s,
            "fallback_data_root": request.fallback_data_root,
        }


def systemd_escape_path(path: str) -> str:
    """`systemd-escape --path`: /mnt/docker -> mnt-docker, /data/fast-disk -> data-fast\\x2ddisk."""
    trimmed = os.path.normpath(path).strip("/")
    if not trimmed:
        return "-"
    out = []
    for index, char in enumerate(trimmed):
        if char == "/":
            out.append("-")
        elif char.isascii() and (char.isalnum() or char in ":_" or (char == "." and index > 0)):
            out.append(char)
        else:
            out.append("".join(f"\\x{b:02x}" for b in char.encode()))
    return "".join(out)


def mount_unit_name(mount_path: str) -> str:
    return systemd_escape_path(mount_path) + ".mount"


def kernel_name(path: str, root: str = "/") -> str:
    """The kernel name of the block device at `path` (symlinks such as /dev/disk/by-id followed).

    On the live system the device number decides (a renamed node in a container still maps to
    its disk); under another root (a captured tree) the last path component is the name.
    """
    check_device_path(path)
    if root == "/":
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise UsageError(f"{path}: no such device", DEVICE_REMEDY) from exc
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}: not a block device", DEVICE_REMEDY) from exc
        if not stat.S_ISBLK(st.st_mode):
            raise UsageError(f"{path} is not a block device ({_file_kind(st.st_mode)})", DEVICE_REMEDY)
        link = f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        return os.path.basename(os.path.realpath(link))
    name = os.path.basename(path)
    if not os.path.exists(os.path.join(root, "sys/class/block", name)) and not os.path.isdir(
        os.path.join(root, "sys/block", name)
    ):
        raise UsageError(f"{path}: no such device", DEVICE_REMEDY)
    return name


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((kind for test, kind in kinds if test(mode)), "not a device")


def is_partition(name: str, root: str = "/") -> bool:
    return os.path.exists(os.path.join(root, "sys/class/block", name, "partition"))


def leaf_disks(name: str, root: str = "/") -> set[str]:
    """The whole disks beneath a device: a partition's disk, an md/dm device's members' disks."""

    disk = whole_disk(name, root)
    slaves = list_entries(os.path.join(root, "sys/block", disk, "slaves"))
    if not slaves:
        return {disk}
    found: set[str] = set()
    for slave in slaves:
        found |= leaf_disks(slave, root)
    return found


def _mount_device_name(mount: Mount, root: str) -> str:
    link = os.path.join(root, "sys/dev/block", mount.major_minor)
    return os.path.basename(os.path.realpath(link)) if os.path.exists(link) else ""


def root_disks(mounts: list[Mount], root: str = "/") -> set[str]:
    """The disks that hold the running system's / (through partitions, md and dm)."""
    for mount in mounts:
        if mount.mountpoint == "/":
            name = _mount_device_name(mount, root)
            if name:
                return leaf_disks(name, root)
    return set()


def swap_devices(root: str = "/") -> set[str]:
    names: set[str] = set()
    for line in read_text(os.path.join(root, "proc/swaps")).splitlines()[1:]:
        fields = line.split()
        if fields and fields[0].startswith("/dev/"):
            names.add(os.path.basename(os.path.realpath(fields[0]) if root == "/" else fields[0]))
    return names


def _mountpoints_of(names: set[str], mounts: list[Mount], root: str) -> list[str]:
    points = []
    for mount in mounts:
        name = _mount_device_name(mount, root) or os.path.basename(mount.source)
        if name in names:
            points.append(mount.mountpoint)
    return points


def _holder_tree(name: str, root: str) -> set[str]:
    holders = set(list_entries(os.path.join(root, "sys/class/block", name, "holders")))
    found = set(holders)
    for holder in holders:
        found |= _holder_tree(holder, root)
    return found


def our_filesystem(signature: Signature, label: str) -> bool:
    return signature.type == "xfs" and signature.label == label


def our_array_member(signature: Signature, array_name: str) -> bool:
    # mdadm stores "homehost:name"; blkid reports it as LABEL
    return signature.type == "linux_raid_member" and signature.label.split(":")[-1] == array_name


def inspect_disk(
    path: str,
    device: BlockDevice | None,
    name: str,
    report: SignatureReport,
    request: StorageRequest,
    mounts: list[Mount],
    root_names: set[str],
    swaps: set[str],
    root: str = "/",
    several: bool = False,
) -> DiskInspection:
    """Every check on one disk. Pure given its inputs: the sysfs reads go through `root`."""
    disk = DiskInspection(
        path=path,
        device=device if device is not None else BlockDevice(name=name, device_class=""),
        signatures=list(report.signatures),
        forced=path in request.force,
    )
    partitions = disk.device.partitions
    holders = _holder_tree(name, root)
    for partition in partitions:  # an LVM PV or md member on a partition holds the disk too
        holders |= _holder_tree(partition, root)
    disk.holders = sorted(holders)
    disk.mountpoints = _mountpoints_of({name, *partitions, *disk.holders}, mounts, root)
    ours_fs = bool(disk.signatures) and all(our_filesystem(s, request.label) for s in disk.signatures)
    ours_md = bool(disk.signatures) and all(our_array_member(s, request.array_name) for s in disk.signatures)
    # one disk carries the filesystem itself; several are members of the array that carries it
    disk.ours = ours_md if several else ours_fs
    own_mount = os.path.normpath(request.mount_path)

    def refuse(code: str, message: str, forceable: bool) -> None:
        disk.refusals.append(Refusal(code, f"{path}: {message}", forceable))

    if is_partition(name, root):
        refuse("partition", f"is a partition ({name}); name the whole disk", False)
        return disk
    if device is None:
        if os.path.isdir(os.path.join(root, "sys/block", name)):
            refuse("empty", "has size 0 (an unused loop device, or no medium)", False)
        else:
            refuse("unknown", f"{name} is not a whole disk under /sys/block", False)
        return disk
    if name in root_names:
        refuse("root-disk", "holds the root filesystem", False)
    foreign_mounts = [m for m in disk.mountpoints if not (disk.ours and os.path.normpath(m) == own_mount)]
    if foreign_mounts:
        refuse("mounted", f"is mounted at {', '.join(sorted(foreign_mounts))}", False)
    if name in swaps or any(p in swaps for p in partitions):
        refuse("swap", "is in use as swap", False)
    foreign_holders = [h for h in disk.holders if not (ours_md and h.startswith("md"))]
    if foreign_holders:
        refuse("holders", f"is held by {', '.join(foreign_holders)} (an md array, LVM or device-mapper device)", False)
    if read_text(os.path.join(root, "sys/block", name, "ro")) == "1":
        refuse("read-only", "is read-only", False)
    if device.size_bytes == 0:
        refuse("empty", "has size 0 (no medium, or an unused loop device)", False)
    for error in report.errors:
        refuse("unreadable", f"signatures could not be read ({error})", False)
    if device.device_class == "ebs":
        refuse("ebs", f"is an EBS volume ({device.ebs_volume_id or device.serial}), not instance store", True)
    if partitions:
        refuse("partitions", f"has partitions ({', '.join(partitions)})", True)
    if disk.signatures and not disk.ours:
        kinds = ", ".join(
            f"{s.type}" + (f" labelled {s.label!r}" if s.label else "") + f" ({s.usage})" for s in disk.signatures
        )
        refuse("signature", f"holds {kinds}", True)
    return disk


def plan_storage(
    request: StorageRequest,
    root: str = "/",
    probe: SignatureProbe = probe_signatures,
    mounts: list[Mount] | None = None,
) -> StoragePlan:
    """Inspect every disk the request selects. Reads only; nothing is written."""
    request.validate()
    mounts = read_mounts(root) if mounts is None else mounts
    devices = {d.name: d for d in collect_block_devices(root, mounts)}
    plan = StoragePlan(request=request, selection="devices" if request.devices else "instance-store")
    plan.mount_unit = mount_unit_name(request.mount_path)
    root_names = root_disks(mounts, root)
    swaps = swap_devices(root)

    if request.devices:
        # a named path that is not a block device is bad input (exit 2), not a refused disk
        targets = [(path, kernel_name(path, root)) for path in request.devices]
        names = [name for _, name in targets]
        for name in {n for n in names if names.count(n) > 1}:
            plan.errors.append(f"{name} is named twice (through different paths)")
    else:
        targets = [(f"/dev/{d.name}", d.name) for d in devices.values() if d.device_class == "instance-store"]
        found = {path for path, _ in targets}
        for path in request.force:
            if path not in found:
                plan.errors.append(f"force names {path}, which is not an instance-store disk of this host")

    for path, name in targets:
        report = probe(path if root == "/" else name)
        plan.disks.append(
            inspect_disk(
                path, devices.get(name), name, report, request, mounts, root_names, swaps, root, len(targets) > 1
            )
        )

    for disk in plan.refused:
        plan.errors.append(disk.reasons())
    if not plan.disks:
        plan.state = "none"
        return plan
    plan.layout = "single" if len(plan.disks) == 1 else "raid0"
    if plan.layout == "raid0":
        plan.mount_source = f"/dev/md/{request.array_name}"
    elif plan.selection == "devices":
        plan.mount_source = plan.disks[0].path
    else:
        # NVMe names change across stop/start; the filesystem label the role writes does not
        plan.mount_source = f"/dev/disk/by-label/{request.label}"
    if plan.errors:
        return plan
    plan.state = "present" if all(d.ours for d in plan.disks) else "absent"
    plan.actions = planned_actions(plan)
    return plan


def planned_actions(plan: StoragePlan) -> list[str]:
    request = plan.request
    actions: list[str] = []
    if plan.state == "present":
        return actions
    for disk in plan.disks:
        if disk.forced and not disk.blank and not disk.ours:
            actions.append(f"wipefs --all {disk.path}")
    paths = [d.path for d in plan.disks]
    target = paths[0]
    if plan.layout == "raid0":
        target = f"/dev/md/{request.array_name}"
        actions.append(
            f"mdadm --create {target} --level=0 --raid-devices={len(paths)} --name={request.array_name} "
            + " ".join(paths)
        )
    actions.append(f"mkfs.xfs -L {request.label} {target}")
    actions.append(f"mount {target} at {request.mount_path} (noatime) via {plan.mount_unit}")
    return actions


def configured_fallback(config_path: str) -> str:
    """The fallback data-root an earlier run recorded in the boot configuration ("" when none)."""
    try:
        config = userfile.load_json(config_path, "--config", userfile.STORAGE_CONFIG_MAX)
    except userfile.UserFileError as exc:
        if exc.missing or exc.reason == "invalid":
            return ""
        raise  # a FIFO, a device, a directory or a huge file: named, exit 2
    return str(config.get("fallback_data_root") or "") if isinstance(config, dict) else ""


def plan_docker_storage(
    request: StorageRequest,
    daemon_json: str = DAEMON_JSON,
    client: Optional[EngineClient] = None,
    move: bool = True,
    config_path: str = CONFIG_PATH,
) -> StoragePlan:
    """The disks and the data-root move together: the plan the docker_storage role carries out."""
    data_root = plan_data_root(request.mount_path, daemon_json, client, move=move)
    if not request.fallback_data_root:
        # the data-root Docker used before the move; once moved, the boot configuration remembers it
        request.fallback_data_root = (
            data_root.current if data_root.switch else configured_fallback(config_path) or DEFAULT_DATA_ROOT
        )
    plan = plan_storage(request)
    plan.data_root = data_root
    plan.space = _plan_space(plan, request, data_root, client)
    return plan


def _plan_space(plan: StoragePlan, request: StorageRequest, data_root: DataRootPlan,
                client: Optional[EngineClient]) -> SpacePlan:
    """The disk against the image it is for: --image-size, else the largest local image."""
    store, store_source = (request.image_store, "--image-store") if request.image_store != "auto" else (
        data_root.image_store, data_root.image_store_source)
    image_bytes, image_source = request.image_bytes, "the image (--image-size)"
    if image_bytes <= 0 and client is not None and data_root.docker_running:
        images = image_sizes(client)
        if images and images[0].size_bytes > 0:
            image_bytes, image_source = images[0].size_bytes, f"the largest local image {images[0].reference}"
    disk_bytes = sum(d.device.size_bytes for d in plan.disks) if plan.disks and not plan.refused else 0
    return plan_space(disk_bytes, image_bytes, image_source, store, store_source)
