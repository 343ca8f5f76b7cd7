"""Storage facts and findings on the g6e trees: unused instance store, the boot unit, free space; and on
the seed host: data-root on the root EBS volume, containerd's image store on the root volume.

Facts come from the captured-shape trees in tests/fixtures/hosts (collect_block_devices, locate,
collect_docker_storage read them through their root argument); each variant adds what a real host
would show (a mount, the role's configuration and unit links) to a copy of the tree.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from gpuhost.facts.docker import DockerFacts
from gpuhost.facts.source import SourceStatus
from gpuhost.facts.storage import (
    PathLocation,
    RecordedProbe,
    StorageFacts,
    collect_block_devices,
    collect_docker_storage,
    locate,
    read_recorded_probe,
)
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Finding, Severity
from gpuhost.rules import RuleOptions, evaluate
from gpuhost.rules.storage import data_root
from gpuhost.units import GB
from gpuhost.unpack import predict_unpack_seconds
from tests.support.paths import FIXTURES
from tests.support.recorded_facts import findings_with, found, one, only, seed_facts

XLARGE = FIXTURES / "hosts" / "g6e-xlarge"
TWELVE = FIXTURES / "hosts" / "g6e-12xlarge"
GIB = 1024**3
NVME_MOUNT = "90 29 259:5 / /mnt/docker rw,noatime shared:40 - xfs /dev/nvme1n1 rw,attr2,inode64,noquota\n"


def copy_tree(source: Path, tmp_path: Path) -> Path:
    root = tmp_path / source.name
    shutil.copytree(source, root, symlinks=True)
    return root


def add_mount(root: Path, line: str) -> None:
    with open(root / "proc/self/mountinfo", "a") as fh:
        fh.write(line)


def install_role_files(
    root: Path, mount_unit: str = "mnt-docker.mount", link_mount: bool = True, **config: object
) -> None:
    """What the docker_storage role leaves on a host: configuration, units, RequiredBy links."""
    etc = root / "etc/gpuhost"
    etc.mkdir(parents=True, exist_ok=True)
    settings = {
        "schema": "gpuhost.docker-storage/v1", "selection": "instance-store", "devices": [], "expected_disks": 1,
        "layout": "single", "label": "gh-docker", "array_name": "gh-docker", "mount_path": "/mnt/docker",
        "mount_source": "/dev/disk/by-label/gh-docker", "mount_unit": mount_unit, "missing_disk_policy": "fail",
        "device_timeout_s": 90, "fallback_data_root": "/var/lib/docker",
    }
    settings.update(config)
    (etc / "docker-storage.json").write_text(json.dumps(settings))
    units = root / "etc/systemd/system"
    requires = units / "docker.service.requires"
    requires.mkdir(parents=True, exist_ok=True)
    for unit in ("gpuhost-docker-storage.service", mount_unit):
        (units / unit).write_text("[Unit]\n")
    os.symlink("../gpuhost-docker-storage.service", requires / "gpuhost-docker-storage.service")
    if link_mount:
        os.symlink(f"../{mount_unit}", requires / mount_unit)


def host_facts(
    root: Path, data_root_path: str, free_gib: float = 500.0, largest: tuple[str, int] | None = None
) -> HostFacts:
    location = locate(data_root_path, str(root))
    location.free_bytes = int(free_gib * GIB)  # statvfs would read this machine's disk
    facts = HostFacts(hostname="ip-172-31-5-20")
    facts.docker = DockerFacts(status=SourceStatus.OK, data_root=data_root_path, data_root_location=location)
    facts.storage = StorageFacts(
        block_devices=collect_block_devices(str(root)),
        docker_storage=collect_docker_storage(str(root)),
        probe=read_recorded_probe(str(root)),
    )
    if largest is not None:
        facts.storage.largest_image, facts.storage.largest_image_bytes = largest
    return facts


def by_id(findings: list[Finding]) -> dict[str, Finding]:
    return {f.id: f for f in findings}


def test_block_devices_of_a_g6e_xlarge() -> None:
    devices = {d.name: d for d in collect_block_devices(str(XLARGE))}
    assert set(devices) == {"nvme0n1", "nvme1n1"}
    root, store = devices["nvme0n1"], devices["nvme1n1"]
    assert (root.device_class, root.ebs_volume_id, root.size_bytes) == ("ebs", "vol-0a1b2c3d4e5f60718", 100 * GIB)
    assert root.partitions == ["nvme0n1p1", "nvme0n1p14", "nvme0n1p15", "nvme0n1p16"]
    assert sorted(root.mountpoints) == ["/", "/boot", "/boot/efi"]
    assert (store.device_class, store.serial, store.mountpoints, store.holders) == (
        "instance-store", "AWS22D85D10F8CBA2B2C", [], []
    )
    location = locate("/var/lib/docker", str(XLARGE))
    assert (location.device, location.disk, location.device_class, location.on_root_disk) == (
        "nvme0n1p1", "nvme0n1", "ebs", True
    )
    assert location.ebs_volume_id == "vol-0a1b2c3d4e5f60718"


def test_data_root_on_ebs_with_unused_instance_store_warns_with_the_saving() -> None:
    facts = host_facts(XLARGE, "/var/lib/docker", largest=("comfyui:0.3.64-full", 140 * GB))
    finding = by_id(data_root(facts, RuleOptions()))["storage.data-root-ebs"]
    assert finding.severity is Severity.WARN
    on_ebs = predict_unpack_seconds(140 * GB, 125.0)
    on_nvme = predict_unpack_seconds(140 * GB, 1000.0)
    assert finding.evidence["predicted_unpack_s"] == {"ebs": round(on_ebs, 1), "instance_store": round(on_nvme, 1)}
    assert finding.evidence["saving_s"] == round(on_ebs - on_nvme, 1)
    assert finding.evidence["unused_instance_store"] == ["nvme1n1"]
    assert "nvme1n1 (250 GB)" in finding.message
    assert "comfyui:0.3.64-full takes about 17.8 min there and about 2.2 min on instance store" in finding.message
    assert "roles/docker_storage" in finding.remedy


def test_a_recorded_measurement_replaces_the_default(tmp_path: Path) -> None:
    root = copy_tree(XLARGE, tmp_path)
    record = root / "var/lib/gpuhost/storage-probe.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"path": "/var/lib/docker", "mountpoint": "/", "device": "nvme0n1p1",
                                  "write": {"write_mib_s": 250.0}, "unpack": None, "measured_at": 1.0}))
    assert read_recorded_probe(str(root)) == RecordedProbe("/var/lib/docker", "/", "nvme0n1p1", 250.0, None, 1.0)
    finding = by_id(data_root(host_facts(root, "/var/lib/docker"), RuleOptions()))["storage.data-root-ebs"]
    assert finding.evidence["ebs_throughput_basis"] == "measured"
    assert finding.evidence["ebs_write_mib_s"] == 250.0
    assert finding.evidence["image_bytes"] == 140 * GB  # no local image: the reference size


def test_data_root_on_ebs_without_instance_store_keeps_the_plain_warning(tmp_path: Path) -> None:
    root = copy_tree(XLARGE, tmp_path)
    add_mount(root, "91 29 259:5 / /scratch rw,relatime - ext4 /dev/nvme1n1 rw\n")  # the only disk is in use
    finding = by_id(data_root(host_facts(root, "/var/lib/docker"), RuleOptions()))["storage.data-root-ebs"]
    assert "unused_instance_store" not in finding.evidence
    assert "tune-ebs" in finding.remedy


def test_instance_store_data_root_without_boot_unit_fails(tmp_path: Path) -> None:
    root = copy_tree(XLARGE, tmp_path)
    add_mount(root, NVME_MOUNT)
    finding = by_id(data_root(host_facts(root, "/mnt/docker"), RuleOptions()))["storage.boot-unit"]
    assert finding.severity is Severity.FAIL
    assert "stop/start wipes" in finding.message
    assert finding.evidence["ephemeral_disks"] == ["nvme1n1"]


def test_instance_store_data_root_with_its_boot_unit_reports_the_policy(tmp_path: Path) -> None:
    root = copy_tree(XLARGE, tmp_path)
    add_mount(root, NVME_MOUNT)
    install_role_files(root)
    findings = by_id(data_root(host_facts(root, "/mnt/docker"), RuleOptions()))
    boot = findings["storage.boot-unit"]
    assert boot.severity is Severity.OK
    assert "if it is missing at boot: fail after 90 s" in boot.message
    assert findings["storage.data-root"].severity is Severity.OK
    assert "storage.fallback-active" not in findings

    for policy, words in (("wait", "waits (without limit)"), ("fallback", "starts on the old data-root")):
        other = copy_tree(XLARGE, tmp_path / policy)
        add_mount(other, NVME_MOUNT)
        install_role_files(other, missing_disk_policy=policy)
        message = by_id(data_root(host_facts(other, "/mnt/docker"), RuleOptions()))["storage.boot-unit"].message
        assert f"if it is missing at boot: {policy}" in message and words in message


def test_a_missing_requiredby_link_fails(tmp_path: Path) -> None:
    root = copy_tree(XLARGE, tmp_path)
    add_mount(root, NVME_MOUNT)
    install_role_files(root, link_mount=False)
    finding = by_id(data_root(host_facts(root, "/mnt/docker"), RuleOptions()))["storage.boot-unit"]
    assert finding.severity is Severity.FAIL
    assert "mnt-docker.mount required by docker.service" in finding.message


def test_an_active_fallback_warns(tmp_path: Path) -> None:
    root = copy_tree(XLARGE, tmp_path)
    # the disk was missing at boot: the old data-root bind-mounted from the root disk
    add_mount(root, "92 29 259:1 /var/lib/docker /mnt/docker rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n")
    install_role_files(root, missing_disk_policy="fallback")
    findings = by_id(data_root(host_facts(root, "/mnt/docker"), RuleOptions()))
    assert findings["storage.fallback-active"].severity is Severity.WARN
    assert findings["storage.boot-unit"].severity is Severity.OK
    assert findings["storage.boot-unit"].evidence["fallback_active"] is True


def test_an_md_array_over_instance_store_counts_as_ephemeral(tmp_path: Path) -> None:
    root = copy_tree(TWELVE, tmp_path)
    md = root / "sys/block/md127"
    (md / "slaves").mkdir(parents=True)
    (md / "holders").mkdir()
    (md / "size").write_text("14843750000\n")
    for member in ("nvme0n1", "nvme2n1"):
        os.symlink(f"../../{member}", md / "slaves" / member)
        (root / f"sys/block/{member}/holders/md127").mkdir()
    os.symlink("../../block/md127", root / "sys/class/block/md127")
    os.symlink("../../block/md127", root / "sys/dev/block/9:127")
    add_mount(root, "90 29 9:127 / /mnt/docker rw,noatime shared:40 - xfs /dev/md127 rw,attr2,inode64,noquota\n")
    finding = by_id(data_root(host_facts(root, "/mnt/docker"), RuleOptions()))["storage.boot-unit"]
    assert finding.severity is Severity.FAIL
    assert finding.evidence["ephemeral_disks"] == ["nvme0n1", "nvme2n1"]


def test_less_free_space_than_the_largest_image_warns() -> None:
    facts = host_facts(XLARGE, "/var/lib/docker", free_gib=60, largest=("comfyui:full", 140 * GB))
    finding = by_id(data_root(facts, RuleOptions(min_free_gib=20)))["storage.image-space"]
    assert finding.severity is Severity.WARN
    assert "less than the largest image comfyui:full needs (130.4 GiB)" in finding.message
    roomy = host_facts(XLARGE, "/var/lib/docker", free_gib=200, largest=("comfyui:full", 140 * GB))
    assert "storage.image-space" not in by_id(data_root(roomy, RuleOptions()))


def test_role_files_are_collected(tmp_path: Path) -> None:
    root = copy_tree(XLARGE, tmp_path)
    assert collect_docker_storage(str(root)).configured is False
    install_role_files(root, mount_unit="data-fast\\x2ddisk.mount", mount_path="/data/fast-disk")
    setup = collect_docker_storage(str(root))
    assert setup.boot_ready
    assert (setup.mount_path, setup.mount_unit, setup.missing_disk_policy) == (
        "/data/fast-disk", "data-fast\\x2ddisk.mount", "fail"
    )
    (root / "etc/gpuhost/docker-storage.json").write_text("{broken")
    broken = collect_docker_storage(str(root))
    assert not broken.configured and "docker-storage.json" in broken.error


def test_data_root_on_root_ebs_and_low_free_space() -> None:
    facts = seed_facts()
    findings = evaluate(facts, RuleOptions(min_free_gib=200))
    assert one(findings, "storage.data-root-ebs").severity is Severity.WARN
    assert "vol-0a1b2c3d4e5f60718" in one(findings, "storage.data-root-ebs").message
    free = one(findings, "storage.data-root-free")
    assert free.severity is Severity.FAIL
    assert "180.0 GiB free" in free.message
    assert findings_with(evaluate(facts, RuleOptions(min_free_gib=100)), "storage.data-root-free") == []


def test_containerd_store_on_the_root_volume(h100: HostFacts) -> None:
    h100.docker.driver_status = {"driver-type": "io.containerd.snapshotter.v1"}
    h100.docker.data_root = "/mnt/docker"
    h100.docker.data_root_location = PathLocation("/mnt/docker", exists=True, device="md0", on_root_disk=False)
    h100.containerd.location = PathLocation("/var/lib/containerd", exists=True, device="nvme0n1p1", on_root_disk=True)
    finding = only(h100, "storage.containerd-store")
    assert finding.severity is Severity.FAIL and "the root volume" in finding.message
    h100.docker.driver_status = {}  # the classic overlay2 store keeps images under data-root
    assert found(h100, "storage.containerd-store") == []


def test_containerd_store_on_a_disk_that_cannot_hold_the_image_twice(h100: HostFacts) -> None:
    gib = 1024**3
    h100.docker.driver_status = {"driver-type": "io.containerd.snapshotter.v1"}
    h100.storage.largest_image, h100.storage.largest_image_bytes = "comfyui:0.3.64-full", 140 * gib
    h100.containerd.location = PathLocation("/mnt/docker/containerd", exists=True, device="md0",
                                            total_bytes=250 * gib, free_bytes=100 * gib)
    finding = only(h100, "storage.containerd-double-copy")
    assert finding.severity is Severity.WARN
    assert "needs up to 280.0 GiB" in finding.message and "250.0 GiB filesystem" in finding.message
    assert "containerd-snapshotter" in finding.remedy and finding.evidence["needed_bytes"] == 280 * gib
    h100.containerd.location.total_bytes = 300 * gib
    assert only(h100, "storage.containerd-double-copy").severity is Severity.OK
    # the classic store keeps one copy; no local image or no containerd root: nothing to judge
    h100.containerd.location.total_bytes = 250 * gib
    h100.docker.driver_status = {}
    assert found(h100, "storage.containerd-double-copy") == []
    h100.docker.driver_status = {"driver-type": "io.containerd.snapshotter.v1"}
    h100.storage.largest_image_bytes = None
    assert found(h100, "storage.containerd-double-copy") == []
    h100.storage.largest_image_bytes = 140 * gib
    h100.containerd.location.exists = False
    assert found(h100, "storage.containerd-double-copy") == []
