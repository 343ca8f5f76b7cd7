"""The failures users report on GPU Docker hosts, each a finding on facts that show it and none on facts
that do not: the recorded seed host and H100 readings, changed the smallest way, and the constructed
p5 tree under tests/fixtures/hosts/p5-nvswitch-drift."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from gpuhost.facts.boot import collect_boot
from gpuhost.facts.cdi import parse_spec
from gpuhost.facts.docker import gpu_paths_of
from gpuhost.facts.kmsg import collect_kmsg
from gpuhost.facts.packages import collect_packages
from gpuhost.facts.platform import PciFunction, collect_platform
from gpuhost.facts.storage import PathLocation
from gpuhost.facts.units import UnitStatus, collect_units
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Finding, Severity
from gpuhost.rules import RuleOptions, evaluate
from tests.support.paths import FIXTURES
from tests.unit.test_rules_recorded import H100_SPEC, h100_gpu_facts, safe_container, seed_facts

DRIFT = FIXTURES / "hosts" / "p5-nvswitch-drift"


def ids(facts: HostFacts, finding_id: str) -> list[Finding]:
    return [f for f in evaluate(facts, RuleOptions()) if f.id == finding_id]


def one(facts: HostFacts, finding_id: str) -> Finding:
    found = ids(facts, finding_id)
    assert len(found) == 1, [f.to_dict() for f in evaluate(facts, RuleOptions())]
    return found[0]


@pytest.fixture
def h100(shared_dir: Path) -> HostFacts:
    """The seed host with the recorded H100 readings and a fresh spec: healthy on every new rule."""
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    facts.cdi.specs = [parse_spec("/var/run/cdi/nvidia.yaml", H100_SPEC.read_text())]
    return facts


@pytest.fixture
def drifted(h100: HostFacts) -> HostFacts:
    """The same host with the p5 tree's kernel log, units, packages, boot files and PCI functions."""
    h100.kmsg = collect_kmsg(str(DRIFT))
    h100.units = collect_units(str(DRIFT))
    h100.packages = collect_packages(str(DRIFT))
    h100.boot = collect_boot(str(DRIFT), "6.8.0-1029-aws")
    h100.platform = collect_platform(str(DRIFT), str(DRIFT / "dev"))
    assert h100.gpu.proc_driver is not None
    h100.gpu.proc_driver.version = h100.gpu.driver_version = "580.126.09"
    return h100


NEW_IDS = (
    "docker.cgroup-reload", "gpu.fabric-manager", "storage.containerd-store", "gpu.upgrade-risk", "gpu.next-kernel",
    "gpu.persistence", "toolkit.no-cgroups", "toolkit.ldconfig", "cdi.spec-incomplete", "cdi.hook-missing",
    "cdi.refresh-failed", "gpu.gsp", "gpu.xid", "gpu.retired-pages-pending", "gpu.mig",
)


def test_the_recorded_h100_host_shows_none_of_them_once_off_the_legacy_hook(h100: HostFacts) -> None:
    # the seed's --gpus container on the systemd cgroup driver is the one exposure it has
    found = {f.id: f for f in evaluate(h100, RuleOptions()) if f.id in NEW_IDS}
    assert list(found) == ["docker.cgroup-reload"]
    assert found["docker.cgroup-reload"].severity is Severity.WARN  # the /dev/char links are not known
    h100.docker.containers = [gpu_paths_of(safe_container(), h100.docker.runtimes)]
    found_ids = {f.id for f in evaluate(h100, RuleOptions())}
    assert found_ids.isdisjoint(NEW_IDS), found_ids & set(NEW_IDS)


def test_nvswitch_host_without_a_matching_running_fabric_manager(drifted: HostFacts) -> None:
    finding = one(drifted, "gpu.fabric-manager")
    assert finding.severity is Severity.FAIL
    assert "nvidia-fabricmanager.service is failed (exit-code)" in finding.message
    assert "802" in finding.message
    assert finding.evidence["nvswitches"] == ["0000:07:00.0"]
    # the package matches the driver (580.126.09) here; at another version it is named
    drifted.packages.fabricmanager_version = "580.95.05-1"
    assert "does not match driver 580.126.09" in one(drifted, "gpu.fabric-manager").message
    fixed = copy.deepcopy(drifted)
    fixed.packages.fabricmanager_version = "580.126.09-1"
    fixed.units.units["nvidia-fabricmanager.service"] = UnitStatus(
        "nvidia-fabricmanager.service", "loaded", "active", "running", "success", "enabled"
    )
    assert ids(fixed, "gpu.fabric-manager") == []
    fixed.platform.nvswitches = []
    fixed.units.units.pop("nvidia-fabricmanager.service")
    assert ids(fixed, "gpu.fabric-manager") == []
    # Hopper's own view: registration with the fabric not finished
    fixed.gpu.gpus[0].fabric_state = "in-progress"
    assert "fabric in-progress" in one(fixed, "gpu.fabric-manager").message


def test_upgrade_risk_from_unattended_upgrades_reboot_required_and_the_library(drifted: HostFacts) -> None:
    finding = one(drifted, "gpu.upgrade-risk")
    assert finding.severity is Severity.FAIL  # libnvidia-ml 580.159.04 on disk, module 580.126.09 loaded
    assert "Driver/library version mismatch" in finding.message
    assert "reboot-required.pkgs names libnvidia-compute-580, nvidia-driver-580-open" in finding.message
    assert finding.evidence["exposed"] == ["libnvidia-compute-580", "nvidia-dkms-580-open", "nvidia-fabricmanager-580"]
    drifted.packages.nvml_library_versions = ["580.126.09"]
    drifted.packages.reboot_required_pkgs = []
    assert one(drifted, "gpu.upgrade-risk").severity is Severity.WARN
    drifted.packages.unattended_blacklist.extend(["nvidia-", "libnvidia-"])
    assert ids(drifted, "gpu.upgrade-risk") == []


def test_next_kernel_without_an_nvidia_module(drifted: HostFacts, tmp_path: Path) -> None:
    finding = one(drifted, "gpu.next-kernel")
    assert finding.severity is Severity.FAIL
    assert "6.8.0-1031-aws" in finding.message and "couldn't communicate with the NVIDIA driver" in finding.message
    drifted.boot.next_nvidia_modules = ["updates/dkms/nvidia.ko"]
    assert ids(drifted, "gpu.next-kernel") == []
    drifted.boot.next_unsigned_modules = ["updates/dkms/nvidia.ko"]
    drifted.boot.secure_boot = True
    assert "unsigned" in one(drifted, "gpu.next-kernel").message
    drifted.boot.next = drifted.boot.running
    assert ids(drifted, "gpu.next-kernel") == []


def test_persistence_off_names_the_daemon_state(drifted: HostFacts, h100: HostFacts) -> None:
    drifted.gpu.gpus[0].persistence_mode = False
    finding = one(drifted, "gpu.persistence")
    assert "nvidia-persistenced.service is inactive" in finding.message
    assert "driver rpc error: timed out" in finding.message


def test_xids_since_boot(drifted: HostFacts) -> None:
    findings = ids(drifted, "gpu.xid")
    assert [(f.evidence["xid"], f.severity) for f in findings] == [(79, Severity.FAIL), (119, Severity.FAIL)]
    assert "fallen off the bus" in findings[0].message  # Xid 13, an application's fault, is no finding
    drifted.kmsg.xids = [x for x in drifted.kmsg.xids if x.code == 13]
    assert ids(drifted, "gpu.xid") == []


def test_pending_retirement_and_remapping(h100: HostFacts) -> None:
    h100.gpu.gpus[0].remapped_rows_pending = True
    assert "row remapping is pending" in one(h100, "gpu.retired-pages-pending").message
    h100.gpu.gpus[0].remapped_rows_pending = False
    h100.gpu.gpus[0].retired_pages_pending = True
    assert "page retirement is pending" in one(h100, "gpu.retired-pages-pending").message


def test_mig_mode_with_whole_gpu_containers(h100: HostFacts) -> None:
    h100.docker.containers = [gpu_paths_of(safe_container(), h100.docker.runtimes)]
    h100.gpu.gpus[0].mig_pending = True
    finding = one(h100, "gpu.mig")
    assert finding.severity is Severity.FAIL and "comfyui" in finding.message and "pending" in finding.message
    mig_container = safe_container()
    mig_container["Config"]["Env"] = ["NVIDIA_VISIBLE_DEVICES=MIG-5b4b2f3e-8c1a-5d0e-9a57-0f2d3c4b5a6e"]
    h100.docker.containers = [gpu_paths_of(mig_container, h100.docker.runtimes)]
    assert ids(h100, "gpu.mig") == []
    h100.docker.containers = []
    assert one(h100, "gpu.mig").severity is Severity.WARN


def test_gsp_on_g5_from_dmi_and_params(h100: HostFacts) -> None:
    h100.platform.product_name = "g5.2xlarge"
    assert h100.gpu.proc_driver is not None
    assert ids(h100, "gpu.gsp")[0].evidence["evidence"].startswith("the open kernel module")
    h100.gpu.proc_driver.open_kernel_module = False
    h100.gpu.params = {"EnableGpuFirmware": "18"}
    assert one(h100, "gpu.gsp").severity is Severity.WARN
    h100.gpu.params = {"EnableGpuFirmware": "0"}
    assert ids(h100, "gpu.gsp") == []
    h100.gpu.params = {"EnableGpuFirmware": "18"}
    h100.platform.product_name = "p5.48xlarge"
    assert ids(h100, "gpu.gsp") == []


def test_cgroup_reload_exposes_gpus_containers_without_char_links(h100: HostFacts) -> None:
    assert h100.docker.cgroup_driver == "systemd"
    assert h100.docker.containers[0].uses_legacy_hook  # the seed's --gpus container
    h100.docker.containers[0].state = "running"
    h100.platform.nvidia_nodes = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    h100.platform.char_links_missing = ["/dev/nvidia-uvm"]
    finding = one(h100, "docker.cgroup-reload")
    assert finding.severity is Severity.FAIL
    assert "comfyui (--gpus)" in finding.message and "Failed to initialize NVML: Unknown Error" in finding.message
    h100.platform.char_links_missing = []
    assert ids(h100, "docker.cgroup-reload") == []
    h100.platform.char_links_missing = ["/dev/nvidia-uvm"]
    h100.docker.cgroup_driver = "cgroupfs"
    assert ids(h100, "docker.cgroup-reload") == []


def test_gpus_through_cdi_from_docker_29_2_is_not_legacy(h100: HostFacts) -> None:
    """moby #50228 (first in Docker Engine 29.2.0): --gpus becomes nvidia.com/gpu=... when nvidia-cdi-hook
    is installed and CDI is enabled."""
    h100.docker.containers[0].state = "running"
    h100.docker.cdi_enabled = True
    h100.toolkit.binaries["nvidia-cdi-hook"] = "/usr/bin/nvidia-cdi-hook"
    h100.docker.server_version = "29.1.5"
    assert one(h100, "bpf.gpus-container").severity is Severity.FAIL
    h100.docker.server_version = "29.2.0"
    assert ids(h100, "bpf.gpus-container") == []
    assert one(h100, "bpf.exposure").severity is Severity.OK
    del h100.toolkit.binaries["nvidia-cdi-hook"]
    assert one(h100, "bpf.gpus-container").severity is Severity.FAIL


def test_containerd_store_on_the_root_volume(h100: HostFacts) -> None:
    h100.docker.driver_status = {"driver-type": "io.containerd.snapshotter.v1"}
    h100.docker.data_root = "/mnt/docker"
    h100.docker.data_root_location = PathLocation("/mnt/docker", exists=True, device="md0", on_root_disk=False)
    h100.containerd.location = PathLocation("/var/lib/containerd", exists=True, device="nvme0n1p1", on_root_disk=True)
    finding = one(h100, "storage.containerd-store")
    assert finding.severity is Severity.FAIL and "the root volume" in finding.message
    h100.docker.driver_status = {}  # the classic overlay2 store keeps images under data-root
    assert ids(h100, "storage.containerd-store") == []


def test_containerd_store_on_a_disk_that_cannot_hold_the_image_twice(h100: HostFacts) -> None:
    gib = 1024**3
    h100.docker.driver_status = {"driver-type": "io.containerd.snapshotter.v1"}
    h100.storage.largest_image, h100.storage.largest_image_bytes = "comfyui:0.3.64-full", 140 * gib
    h100.containerd.location = PathLocation("/mnt/docker/containerd", exists=True, device="md0",
                                            total_bytes=250 * gib, free_bytes=100 * gib)
    finding = one(h100, "storage.containerd-double-copy")
    assert finding.severity is Severity.WARN
    assert "needs up to 280.0 GiB" in finding.message and "250.0 GiB filesystem" in finding.message
    assert "containerd-snapshotter" in finding.remedy and finding.evidence["needed_bytes"] == 280 * gib
    h100.containerd.location.total_bytes = 300 * gib
    assert one(h100, "storage.containerd-double-copy").severity is Severity.OK
    # the classic store keeps one copy; no local image or no containerd root: nothing to judge
    h100.containerd.location.total_bytes = 250 * gib
    h100.docker.driver_status = {}
    assert ids(h100, "storage.containerd-double-copy") == []
    h100.docker.driver_status = {"driver-type": "io.containerd.snapshotter.v1"}
    h100.storage.largest_image_bytes = None
    assert ids(h100, "storage.containerd-double-copy") == []
    h100.storage.largest_image_bytes = 140 * gib
    h100.containerd.location.exists = False
    assert ids(h100, "storage.containerd-double-copy") == []


def test_toolkit_no_cgroups_and_ldconfig(h100: HostFacts) -> None:
    h100.toolkit.no_cgroups = True
    assert one(h100, "toolkit.no-cgroups").severity is Severity.FAIL
    h100.docker.rootless = True
    assert ids(h100, "toolkit.no-cgroups") == []
    h100.toolkit.ldconfig, h100.toolkit.ldconfig_exists = "@/sbin/ldconfig.real", False
    finding = one(h100, "toolkit.ldconfig")
    assert "ldcache error: open failed: /sbin/ldconfig.real" in finding.message
    assert "@/sbin/ldconfig`" in finding.remedy  # Amazon Linux: no ldconfig.real
    h100.toolkit.ldconfig, h100.toolkit.ldconfig_exists = "/sbin/ldconfig", True
    assert one(h100, "toolkit.ldconfig").severity is Severity.WARN
    h100.toolkit.ldconfig = "@/sbin/ldconfig"
    assert ids(h100, "toolkit.ldconfig") == []


def test_cdi_spec_incomplete_and_missing_hook(h100: HostFacts) -> None:
    text = H100_SPEC.read_text()
    spec = h100.cdi.specs[0]
    assert "/dev/nvidia-uvm" in (spec.device_nodes or []) and spec.hook_paths
    h100.cdi.specs = [parse_spec(spec.path, text.replace("path: /dev/nvidia-uvm\n", "path: /dev/nvidia-uvm-gone\n"))]
    assert "no /dev/nvidia-uvm" in one(h100, "cdi.spec-incomplete").message
    h100.cdi.specs = [spec]
    h100.gpu.gpus.append(copy.deepcopy(h100.gpu.gpus[0]))
    assert "1 GPU device(s) for the 2 NVML sees" in one(h100, "cdi.spec-incomplete").message
    h100.gpu.gpus.pop()
    spec.missing_hooks = spec.hook_paths[:1]
    assert "fork/exec" in one(h100, "cdi.hook-missing").message


def test_cdi_refresh_failed_and_path_inactive(drifted: HostFacts) -> None:
    finding = one(drifted, "cdi.refresh-failed")
    assert "start-limit-hit" in finding.message and "nvidia-cdi-refresh.path is enabled but inactive" in finding.message
    assert "reset-failed" in finding.remedy
    drifted.units.units["nvidia-cdi-refresh.service"].active_state = "inactive"
    drifted.units.units["nvidia-cdi-refresh.service"].result = "success"
    drifted.units.units["nvidia-cdi-refresh.path"].active_state = "active"
    assert ids(drifted, "cdi.refresh-failed") == []


def test_nvswitch_pci_class_alone_is_what_marks_a_host() -> None:
    facts = seed_facts()
    facts.platform.nvidia_gpus = [PciFunction("0000:53:00.0", "0x10de", "0x2330", "0x030200")]
    assert ids(facts, "gpu.fabric-manager") == []
