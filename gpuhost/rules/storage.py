"""Docker data-root placement, free space and the fast disk's boot-time recreation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuhost.facts.containerd import CONTAINERD_SNAPSHOTTER
from gpuhost.facts.source import SourceStatus
from gpuhost.facts.storage import BlockDevice, PathLocation
from gpuhost.model import Finding, Severity
from gpuhost.units import GB, format_duration
from gpuhost.unpack import default_write_mibs, predict_unpack_seconds

if TYPE_CHECKING:
    from gpuhost.facts.storage import StorageFacts
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions

GIB = 1024**3
REFERENCE_IMAGE_BYTES = 140 * GB  # the seed's 140 GB ComfyUI image, when no image is local

POLICY_WORDS = {
    "wait": "Docker waits (without limit) until the disk is back",
    "fail": "the unit fails after the device timeout and Docker does not start (never on the root disk by mistake)",
    "fallback": "Docker starts on the old data-root on the root disk (bind-mounted), with the images it had before",
}


def _devices(storage: StorageFacts) -> dict[str, BlockDevice]:
    return {d.name: d for d in storage.block_devices}


def ephemeral_disks(location: PathLocation, storage: StorageFacts) -> list[str]:
    """The instance-store disks under a location (directly, or as the members of an md array)."""
    devices = _devices(storage)
    if location.device_class == "instance-store":
        return [location.disk]
    disk = devices.get(location.disk)
    if disk is not None and disk.slaves:
        members = [devices.get(s) for s in disk.slaves]
        if members and all(m is not None and m.device_class == "instance-store" for m in members):
            return list(disk.slaves)
    return []


def unused_instance_store(location: PathLocation, storage: StorageFacts) -> list[BlockDevice]:
    used = {location.disk}
    return [
        d
        for d in storage.block_devices
        if d.device_class == "instance-store"
        and d.name not in used
        and not d.mountpoints
        and not d.holders
        and not any(p for p in d.partitions)
    ]


def _measured_mibs(storage: StorageFacts, location: PathLocation) -> tuple[float, float | None, str]:
    probe = storage.probe
    if probe is not None and probe.write_mib_s > 0 and probe.mountpoint == location.mountpoint:
        return probe.write_mib_s, probe.unpack_mib_s, "measured"
    return default_write_mibs(location.device_class or "other"), None, "default"


def data_root(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    docker = facts.docker
    location = docker.data_root_location
    if docker.status is not SourceStatus.OK or location is None:
        return []
    storage = facts.storage
    evidence: dict[str, Any] = {
        "data_root": docker.data_root,
        "device": location.device,
        "disk": location.disk,
        "class": location.device_class,
        "fstype": location.fstype,
        "mountpoint": location.mountpoint,
        "ebs_volume_id": location.ebs_volume_id,
        "free_bytes": location.free_bytes,
    }
    findings = []
    if location.device_class == "ebs" and location.on_root_disk:
        findings.append(_on_root_ebs(facts, location, evidence))
    if location.free_bytes is not None:
        free_gib = location.free_bytes / GIB
        if free_gib < options.min_free_gib:
            findings.append(
                Finding(
                    "storage.data-root-free",
                    "storage",
                    Severity.FAIL,
                    f"only {free_gib:.1f} GiB free under {docker.data_root} (threshold {options.min_free_gib:g} GiB)",
                    "Free space (docker system prune, docker image prune -a) or move data-root to a larger disk; "
                    "set the threshold with --min-free-gb.",
                    evidence,
                )
            )
        largest = storage.largest_image_bytes
        if largest and location.free_bytes < largest:
            findings.append(
                Finding(
                    "storage.image-space",
                    "storage",
                    Severity.WARN,
                    f"{free_gib:.1f} GiB free under {docker.data_root}, less than the largest image "
                    f"{storage.largest_image} needs ({largest / GIB:.1f} GiB): pulling it again, or a new version "
                    "beside it, will run out of space",
                    "Remove unused images (docker image prune -a) or put data-root on a larger disk "
                    "(roles/docker_storage).",
                    {**evidence, "largest_image": storage.largest_image, "largest_image_bytes": largest},
                )
            )
    if not findings:
        free = f"{location.free_bytes / GIB:.1f} GiB free" if location.free_bytes is not None else "free space unknown"
        findings.append(
            Finding(
                "storage.data-root",
                "storage",
                Severity.OK,
                f"data-root {docker.data_root} on {location.device or location.source} "
                f"({location.fstype}, {location.device_class or 'unknown class'}), {free}",
                "",
                evidence,
            )
        )
    findings.extend(boot_unit(facts, location, evidence))
    return findings


def _on_root_ebs(facts: HostFacts, location: PathLocation, evidence: dict[str, Any]) -> Finding:
    storage = facts.storage
    data_root_path = facts.docker.data_root
    unused = unused_instance_store(location, storage)
    if not unused:
        return Finding(
            "storage.data-root-ebs",
            "storage",
            Severity.WARN,
            f"Docker's data-root {data_root_path} is on the root EBS volume {location.ebs_volume_id}: "
            "image unpack runs at the volume's throughput (gp3 baseline 125 MiB/s, ~18 min for 140 GB)",
            "Move data-root to instance-store NVMe (roles/docker_storage) or raise the volume's throughput "
            "before the pull (gpuhost tune-ebs --preset pull).",
            evidence,
        )
    size = storage.largest_image_bytes or REFERENCE_IMAGE_BYTES
    image = storage.largest_image if storage.largest_image_bytes else "a 140 GB image"
    ebs_mibs, unpack_mibs, basis = _measured_mibs(storage, location)
    nvme_mibs = default_write_mibs("instance-store") * len(unused)
    on_ebs = predict_unpack_seconds(size, ebs_mibs, unpack_mibs)
    on_nvme = predict_unpack_seconds(size, nvme_mibs, unpack_mibs)
    names = ", ".join(f"{d.name} ({d.size_bytes / GB:.0f} GB)" for d in unused)
    return Finding(
        "storage.data-root-ebs",
        "storage",
        Severity.WARN,
        f"Docker's data-root {data_root_path} is on the root EBS volume {location.ebs_volume_id} while "
        f"{len(unused)} instance-store disk(s) sit unused ({names}): unpacking {image} takes about "
        f"{format_duration(on_ebs)} there and about {format_duration(on_nvme)} on instance store "
        f"(saves {format_duration(on_ebs - on_nvme)})",
        "Put data-root on the instance store with roles/docker_storage (it recreates the disk at every boot); "
        "instance store is wiped by a stop/start, so images are pulled again after one.",
        {
            **evidence,
            "unused_instance_store": [d.name for d in unused],
            "image_bytes": size,
            "ebs_write_mib_s": ebs_mibs,
            "ebs_throughput_basis": basis,
            "instance_store_write_mib_s": nvme_mibs,
            "predicted_unpack_s": {"ebs": round(on_ebs, 1), "instance_store": round(on_nvme, 1)},
            "saving_s": round(on_ebs - on_nvme, 1),
        },
    )


def _under(path: str, mountpoint: str) -> bool:
    mountpoint = mountpoint.rstrip("/") or "/"
    return bool(mountpoint) and (path == mountpoint or path.startswith(mountpoint + "/"))


def boot_unit(facts: HostFacts, location: PathLocation, evidence: dict[str, Any]) -> list[Finding]:
    """Instance store comes back empty after a stop/start: something must recreate it before Docker."""
    setup = facts.storage.docker_storage
    data_root_path = facts.docker.data_root
    ephemeral = ephemeral_disks(location, facts.storage)
    managed = setup.configured and bool(setup.mount_path) and _under(data_root_path, setup.mount_path)
    if not ephemeral and not managed:
        return []
    details = {
        **evidence,
        "ephemeral_disks": ephemeral,
        "config": setup.config_path if setup.configured else "",
        "service_enabled": setup.service_enabled,
        "mount_unit": setup.mount_unit,
        "mount_unit_enabled": setup.mount_unit_enabled,
        "missing_disk_policy": setup.missing_disk_policy,
    }
    if setup.error:
        details["config_error"] = setup.error
    if ephemeral and not managed:
        return [
            Finding(
                "storage.boot-unit",
                "storage",
                Severity.FAIL,
                f"data-root {data_root_path} is on instance store ({', '.join(ephemeral)}), which a stop/start "
                "wipes, and no boot unit recreates it: the next start finds no filesystem and Docker either "
                "fails or fills the root disk",
                "Run roles/docker_storage: it installs gpuhost-docker-storage.service, required by docker.service.",
                details,
            )
        ]
    missing = [
        name
        for name, ok in (
            ("gpuhost-docker-storage.service installed", setup.service_installed),
            ("gpuhost-docker-storage.service required by docker.service", setup.service_enabled),
            (f"{setup.mount_unit or 'the mount unit'} installed", setup.mount_unit_installed),
            (f"{setup.mount_unit or 'the mount unit'} required by docker.service", setup.mount_unit_enabled),
        )
        if not ok
    ]
    if missing:
        return [
            Finding(
                "storage.boot-unit",
                "storage",
                Severity.FAIL,
                f"data-root {data_root_path} lives on the disk the docker_storage role manages, but its boot units "
                f"are incomplete (missing: {'; '.join(missing)}): after a stop/start nothing recreates the disk",
                "Run roles/docker_storage again (systemctl enable gpuhost-docker-storage.service "
                f"{setup.mount_unit}).",
                details,
            )
        ]
    findings = []
    if location.on_root_disk:
        findings.append(
            Finding(
                "storage.fallback-active",
                "storage",
                Severity.WARN,
                f"the fast disk was missing at boot: data-root {data_root_path} is the old data-root on the root "
                f"disk ({location.device}), bind-mounted by the fallback policy",
                "Check lsblk for the instance-store disks, then restart gpuhost-docker-storage.service and docker "
                "(or rerun roles/docker_storage).",
                details,
            )
        )
    policy = setup.missing_disk_policy or "fail"
    timeout = f" after {setup.device_timeout_s} s" if setup.device_timeout_s is not None and policy != "wait" else ""
    findings.append(
        Finding(
            "storage.boot-unit",
            "storage",
            Severity.OK,
            f"gpuhost-docker-storage.service recreates the {setup.layout or 'data-root'} disk "
            f"({', '.join(setup.devices) or 'instance store'}) at {setup.mount_path} before Docker starts; "
            f"if it is missing at boot: {policy}{timeout} ({POLICY_WORDS.get(policy, policy)})",
            "",
            {**details, "fallback_active": location.on_root_disk},
        )
    )
    return findings


def containerd_double_copy(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    """The containerd image store keeps every layer twice: the blob as pulled (compressed, or
    not at all for uncompressed layers) in its content store, beside the unpacked snapshot. A
    disk that cannot hold the largest image twice fills on its next pull or update."""
    docker = facts.docker
    if docker.status is not SourceStatus.OK or docker.driver_status.get("driver-type") != CONTAINERD_SNAPSHOTTER:
        return []
    store = facts.containerd.location
    largest = facts.storage.largest_image_bytes
    if store is None or not store.exists or not store.total_bytes or not largest:
        return []
    needed = 2 * largest
    evidence = {
        "driver_type": CONTAINERD_SNAPSHOTTER,
        "containerd_root": facts.containerd.root_dir,
        "device": store.device,
        "filesystem_bytes": store.total_bytes,
        "free_bytes": store.free_bytes,
        "largest_image": facts.storage.largest_image,
        "largest_image_bytes": largest,
        "needed_bytes": needed,
    }
    if store.total_bytes >= needed:
        return [Finding(
            "storage.containerd-double-copy", "storage", Severity.OK,
            f"containerd's store {facts.containerd.root_dir} ({store.total_bytes / GIB:.1f} GiB) holds "
            f"{facts.storage.largest_image} twice ({needed / GIB:.1f} GiB: its layers and their blobs)",
            "", evidence)]
    return [Finding(
        "storage.containerd-double-copy", "storage", Severity.WARN,
        f"Docker keeps images in containerd's store, which keeps each layer's blob as pulled beside the unpacked "
        f"layer: {facts.storage.largest_image} ({largest / GIB:.1f} GiB) needs up to {needed / GIB:.1f} GiB there, "
        f"and {facts.containerd.root_dir} is on a {store.total_bytes / GIB:.1f} GiB filesystem "
        f"({store.device or store.source or '?'})",
        "Give containerd's root a disk of at least twice the largest image (docker_storage counts it when "
        "docker_storage_image_size is set), or pin the classic store, which keeps one copy "
        "(\"features\": {\"containerd-snapshotter\": false} in daemon.json, before the first pull).",
        evidence)]


def containerd_store(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    """Docker 29 installs default to the containerd image store: images then live under containerd's
    root, not data-root, and moving data-root alone leaves the pulls on the root volume."""
    docker = facts.docker
    if docker.status is not SourceStatus.OK or docker.driver_status.get("driver-type") != CONTAINERD_SNAPSHOTTER:
        return []
    data, store = docker.data_root_location, facts.containerd.location
    if data is None or store is None or not data.exists:
        return []
    if (store.device or store.mountpoint) == (data.device or data.mountpoint):
        return []
    evidence = {
        "driver_type": CONTAINERD_SNAPSHOTTER,
        "data_root": docker.data_root,
        "data_root_device": data.device,
        "containerd_root": facts.containerd.root_dir,
        "containerd_root_device": store.device,
        "containerd_on_root_disk": store.on_root_disk,
    }
    return [
        Finding(
            "storage.containerd-store",
            "storage",
            Severity.FAIL if store.on_root_disk and not data.on_root_disk else Severity.WARN,
            f"Docker keeps images in containerd's store ({facts.containerd.root_dir} on {store.device or '?'}), "
            f"not in data-root {docker.data_root} (on {data.device or '?'}): pulls fill "
            + ("the root volume" if store.on_root_disk else f"{store.device or 'that device'}"),
            "Pin the classic store before the first pull (\"features\": {\"containerd-snapshotter\": false} in "
            "daemon.json) or move containerd's root onto the data-root volume "
            "(`root` in /etc/containerd/config.toml), then restart containerd "
            "and docker. Images pulled into the other store stay there until removed.",
            evidence,
        )
    ]
