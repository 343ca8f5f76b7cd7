"""Block devices, mounts and free space from /sys, /proc and statvfs.

Nitro NVMe devices carry their class in the model string: `Amazon EC2 NVMe Instance Storage`
(ephemeral) or `Amazon Elastic Block Store`, whose serial is the volume id without its dash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gpuhost import userfile
from gpuhost.facts.signatures import quick_signatures

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
    # what the device holds: from mountinfo when mounted, else gpuhost's byte checks (root only)
    fstype: str = ""
    label: str = ""
    signatures: list[str] = field(default_factory=list)
    read_only: bool = False


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


def read_text(path: str) -> str:
    """A sysfs/procfs value, stripped; "" when it cannot be read (or is no regular file, or is huge)."""
    return (userfile.read_host_text(path, userfile.HOST_CONFIG_MAX) or "").strip()


def list_entries(path: str) -> list[str]:
    # sysfs has no dot entries; captured trees keep empty directories with a .keep file
    try:
        return sorted(name for name in os.listdir(path) if not name.startswith("."))
    except OSError:
        return []


def read_mounts(root: str = "/") -> list[Mount]:
    return parse_mountinfo(read_text(os.path.join(root, "proc/self/mountinfo")))


def collect_block_devices(
    root: str = "/", mounts: list[Mount] | None = None, read_signatures: bool = False
) -> list[BlockDevice]:
    sys_block = os.path.join(root, "sys/block")
    mounts = read_mounts(root) if mounts is None else mounts
    devices: list[BlockDevice] = []
    for name in list_entries(sys_block):
        base = os.path.join(sys_block, name)
        size = read_text(os.path.join(base, "size"))
        if name.startswith("loop") and size in ("", "0"):
            continue  # an unused loop slot
        model = read_text(os.path.join(base, "device/model"))
        serial = read_text(os.path.join(base, "device/serial"))
        device = BlockDevice(
            name=name,
            size_bytes=int(size) * 512 if size.isdigit() else 0,
            model=model,
            serial=serial,
            device_class=classify(model, name),
            holders=list_entries(os.path.join(base, "holders")),
            slaves=list_entries(os.path.join(base, "slaves")),
        )
        if device.device_class == "ebs":
            device.ebs_volume_id = ebs_volume_id(serial)
        device.partitions = [p for p in list_entries(base) if p.startswith(name) and p != name]
        rotational = read_text(os.path.join(base, "queue/rotational"))
        device.rotational = rotational == "1" if rotational else None
        names = {name, *device.partitions}
        by_number = {read_text(os.path.join(base, p, "dev")) for p in device.partitions}
        by_number.add(read_text(os.path.join(base, "dev")))
        by_number.discard("")
        own = [m for m in mounts if os.path.basename(m.source) in names or m.major_minor in by_number]
        device.mountpoints = [m.mountpoint for m in own]
        device.fstype = next((m.fstype for m in own if os.path.basename(m.source) == name), "")
        device.read_only = read_text(os.path.join(base, "ro")) == "1"
        if read_signatures and root == "/":
            _add_signatures(device)
        devices.append(device)
    return devices


def _add_signatures(device: BlockDevice) -> None:
    try:
        found = quick_signatures(os.path.join("/dev", device.name))
    except OSError:
        return  # not root, or no medium: the device's content stays unknown
    device.signatures = [s.type for s in found]
    filesystems = [s for s in found if s.usage == "filesystem"]
    if filesystems and not device.fstype:
        device.fstype = filesystems[0].type
    if filesystems:
        device.label = filesystems[0].label


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
            model = read_text(os.path.join(root, "sys/block", location.disk, "device/model"))
            location.device_class = classify(model, location.disk)
            if location.device_class == "ebs":
                serial = read_text(os.path.join(root, "sys/block", location.disk, "device/serial"))
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


# What the docker_storage role installs (gpuhost.storage.plan writes the configuration).
DOCKER_STORAGE_CONFIG = "/etc/gpuhost/docker-storage.json"
DOCKER_STORAGE_SERVICE = "gpuhost-docker-storage.service"
STORAGE_PROBE_RECORD = "/var/lib/gpuhost/storage-probe.json"
SYSTEMD_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")


@dataclass
class DockerStorageSetup:
    """The docker_storage role's boot configuration and units, as found on the host."""

    config_path: str = DOCKER_STORAGE_CONFIG
    configured: bool = False
    error: str = ""
    selection: str = ""
    layout: str = ""
    devices: list[str] = field(default_factory=list)
    mount_path: str = ""
    mount_unit: str = ""
    missing_disk_policy: str = ""
    device_timeout_s: int | None = None
    fallback_data_root: str = ""
    service_installed: bool = False
    service_enabled: bool = False  # required by docker.service
    mount_unit_installed: bool = False
    mount_unit_enabled: bool = False

    @property
    def boot_ready(self) -> bool:
        return (
            self.configured
            and self.service_installed
            and self.service_enabled
            and self.mount_unit_installed
            and self.mount_unit_enabled
        )


@dataclass
class RecordedProbe:
    """A write-throughput measurement the role recorded (gpuhost-agent storage-probe --record)."""

    path: str = ""
    mountpoint: str = ""
    device: str = ""
    write_mib_s: float = 0.0
    unpack_mib_s: float | None = None
    measured_at: float = 0.0
    # Docker's rate per layer compression (none, gzip, zstd), the median of the probe's rounds
    unpack_rates_mib_s: dict[str, float] = field(default_factory=dict)
    # how busy the host's CPUs were while the probe unpacked (percent of all of them)
    cpu_busy_pct: float | None = None
    # what one more tar entry cost beyond its bytes, per layer compression (the probe's small files)
    per_entry_us: dict[str, float] = field(default_factory=dict)
    # the share of the host's CPUs the daemons themselves used while the probe unpacked
    daemon_cpu_pct: float | None = None
    # the image store the probe unpacked into ("classic", "containerd"; "" before it said) and
    # the program that decompressed its gzip layers ("go", "unpigz", "igzip"; "" when not said)
    image_store: str = ""
    gzip_decompressor: str = ""


def _busy_share(value: object) -> float | None:
    import math

    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 100:
        return float(value)
    return None


def _finite_non_negative(value: object) -> float | None:
    import math

    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _entry_costs(value: object) -> dict[str, float]:
    """{compression: microseconds} as recorded; a single number (the uncompressed cost) is
    {"none": it}; what is not a finite cost of none, gzip or zstd is left out."""
    if not isinstance(value, dict):
        value = {"none": value}
    costs = {}
    for compression, cost in value.items():
        checked = _finite_non_negative(cost)
        if compression in ("none", "gzip", "zstd") and checked is not None:
            costs[compression] = checked
    return costs


def _short_word(value: object) -> str:
    """A recorded name (a store, a program): short, printable, one word; "" otherwise."""
    text = value if isinstance(value, str) else ""
    return text if len(text) <= 64 and text.replace("-", "").replace("_", "").replace(".", "").isalnum() else ""


def _unit_installed(root: str, unit: str) -> bool:
    return any(os.path.exists(os.path.join(root, d, unit)) for d in SYSTEMD_DIRS)


def _required_by_docker(root: str, unit: str) -> bool:
    return any(
        os.path.lexists(os.path.join(root, d, "docker.service.requires", unit)) for d in SYSTEMD_DIRS
    )


def collect_docker_storage(root: str = "/") -> DockerStorageSetup:
    setup = DockerStorageSetup()
    path = os.path.join(root, DOCKER_STORAGE_CONFIG.lstrip("/"))
    setup.service_installed = _unit_installed(root, DOCKER_STORAGE_SERVICE)
    setup.service_enabled = _required_by_docker(root, DOCKER_STORAGE_SERVICE)
    try:
        config = userfile.load_json(path, "", userfile.STORAGE_CONFIG_MAX)
    except userfile.UserFileError as exc:
        if not exc.missing:
            setup.error = str(exc).replace(path, DOCKER_STORAGE_CONFIG, 1)
        return setup
    if not isinstance(config, dict):
        setup.error = f"{DOCKER_STORAGE_CONFIG}: not a JSON object"
        return setup
    setup.configured = True
    setup.selection = str(config.get("selection", ""))
    setup.layout = str(config.get("layout", ""))
    setup.devices = [str(d) for d in config.get("devices") or []]
    setup.mount_path = str(config.get("mount_path", ""))
    setup.mount_unit = str(config.get("mount_unit", ""))
    setup.missing_disk_policy = str(config.get("missing_disk_policy", ""))
    timeout = config.get("device_timeout_s")
    setup.device_timeout_s = int(timeout) if isinstance(timeout, int) else None
    setup.fallback_data_root = str(config.get("fallback_data_root", ""))
    if setup.mount_unit:
        setup.mount_unit_installed = _unit_installed(root, setup.mount_unit)
        setup.mount_unit_enabled = _required_by_docker(root, setup.mount_unit)
    return setup


def read_recorded_probe(root: str = "/", record: str = STORAGE_PROBE_RECORD) -> RecordedProbe | None:
    """The probe recorded at `record` (under `root`), or None when there is none or it is unreadable."""
    try:
        data = userfile.load_json(os.path.join(root, record.lstrip("/")), "", userfile.RECORD_MAX)
        write = data.get("write") or {}
        unpack = data.get("unpack") or {}
        decompressor = data.get("decompressor") or {}
        return RecordedProbe(
            path=str(data.get("path", "")),
            mountpoint=str(data.get("mountpoint", "")),
            device=str(data.get("device", "")),
            write_mib_s=float(write.get("write_mib_s") or 0.0),
            unpack_mib_s=float(unpack["unpack_mib_s"]) if unpack.get("unpack_mib_s") else None,
            measured_at=float(data.get("measured_at") or 0.0),
            unpack_rates_mib_s={
                str(k): float(v)
                for k, v in (unpack.get("rates_mib_s") or {}).items()
                if 0 < float(v or 0) < float("inf")
            },
            cpu_busy_pct=_busy_share(unpack.get("cpu_busy_pct")),
            per_entry_us=_entry_costs(unpack.get("per_entry_us")),
            daemon_cpu_pct=_busy_share(unpack.get("daemon_cpu_pct")),
            image_store=_short_word(data.get("image_store")),
            gzip_decompressor=_short_word(decompressor.get("gzip")) if isinstance(decompressor, dict) else "",
        )
    except (userfile.UserFileError, ValueError, TypeError, AttributeError, KeyError):
        return None


@dataclass
class StorageFacts:
    block_devices: list[BlockDevice] = field(default_factory=list)
    docker_storage: DockerStorageSetup = field(default_factory=DockerStorageSetup)
    probe: RecordedProbe | None = None
    # the largest local image (Engine API), what a re-pull or an update needs free
    largest_image: str = ""
    largest_image_bytes: int | None = None
