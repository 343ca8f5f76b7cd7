"""The GPU and its driver: the recorded H100 healthy and with failures, a host without a driver under the
nvidia runtime, and the driver's lifecycle on the p5 tree (fabric manager, upgrades, the next kernel,
Xids, MIG, GSP)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from gpuhost.facts.docker import DockerFacts, gpu_paths_of
from gpuhost.facts.gpu import GpuFacts, collect_gpu
from gpuhost.facts.platform import PciFunction
from gpuhost.facts.source import SourceStatus
from gpuhost.facts.systemd import UnitStatus
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Severity
from gpuhost.rules import RuleOptions, evaluate
from tests.support.paths import nvidia_gpu_present
from tests.support.recorded_facts import found, h100_gpu_facts, one, only, safe_container, seed_facts


def test_h100_readings_are_healthy(shared_dir: Path) -> None:
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    assert facts.gpu.proc_driver is not None
    assert facts.gpu.proc_driver.version == "580.159.04"
    assert facts.gpu.proc_driver.open_kernel_module is True
    findings = evaluate(facts)
    driver = one(findings, "gpu.driver")
    assert driver.severity is Severity.OK
    assert driver.message == "driver 580.159.04 (CUDA 13.0), 1 GPU(s): NVIDIA H100 80GB HBM3"
    assert [f for f in findings if f.area == "gpu" and f.severity is not Severity.OK] == []


def test_h100_with_a_failed_remap_and_persistence_off(shared_dir: Path) -> None:
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    facts.gpu.gpus[0].remapped_rows_failure = True
    facts.gpu.gpus[0].persistence_mode = False
    findings = evaluate(facts)
    assert one(findings, "gpu.remapped-rows").severity is Severity.FAIL
    assert one(findings, "gpu.persistence").severity is Severity.WARN


def test_driver_library_mismatch_fails(shared_dir: Path) -> None:
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    assert facts.gpu.proc_driver is not None
    facts.gpu.proc_driver.version = "580.126.09"
    finding = one(evaluate(facts), "gpu.driver")
    assert finding.severity is Severity.FAIL
    assert "mismatch" in finding.message


def facts_without_driver(runtimes: dict[str, str], nvml_error: str = "ERROR_LIBRARY_NOT_FOUND") -> HostFacts:
    facts = HostFacts(hostname="instance")
    facts.gpu = GpuFacts(
        status=SourceStatus.ABSENT,
        error="no NVIDIA driver: libnvidia-ml.so.1 not found and no kernel module loaded",
        nvml_error=nvml_error,
    )
    facts.docker = DockerFacts(server_version="26.1.5", runtimes=runtimes, default_runtime="runc")
    return facts


def driver_finding(facts: HostFacts) -> dict[str, object]:
    matches = [f for f in evaluate(facts, RuleOptions()) if f.id == "gpu.driver"]
    assert len(matches) == 1
    assert matches[0].severity is Severity.FAIL
    return matches[0].to_dict()


def test_nvidia_runtime_without_a_driver_explains_the_nvml_failure() -> None:
    finding = driver_finding(facts_without_driver({"nvidia": "/usr/bin/nvidia-container-runtime", "runc": "runc"}))
    message = str(finding["message"])
    assert message.startswith("no GPU: no NVIDIA driver")
    assert "--runtime=nvidia and NVIDIA_VISIBLE_DEVICES=all fail with" in message
    assert "`failed to initialize NVML: ERROR_LIBRARY_NOT_FOUND`" in message
    assert "because no driver is present" in message
    assert "nvidia_runtime_containers" in finding["evidence"]  # type: ignore[operator]


def test_userspace_without_the_module_names_its_own_nvml_error() -> None:
    facts = facts_without_driver({"nvidia": "/usr/bin/nvidia-container-runtime"}, "Unknown Error")
    assert "`failed to initialize NVML: Unknown Error`" in str(driver_finding(facts)["message"])


def test_without_the_nvidia_runtime_the_message_stays_short() -> None:
    finding = driver_finding(facts_without_driver({"runc": "runc"}))
    assert "--runtime=nvidia" not in str(finding["message"])
    assert "nvidia_runtime_containers" not in finding["evidence"]  # type: ignore[operator]


@pytest.mark.skipif(nvidia_gpu_present(), reason="needs a machine without an NVIDIA driver")
def test_nvml_error_on_a_machine_without_a_driver() -> None:
    gpu = collect_gpu()
    assert gpu.status is SourceStatus.ABSENT
    assert gpu.nvml_error == "ERROR_LIBRARY_NOT_FOUND"


def test_userspace_without_the_kernel_module_is_an_absent_driver_not_an_unreadable_one() -> None:
    """Debian's libnvidia-ml1 without the module: NVML says Unknown Error, as seen in a container."""
    import pynvml

    from gpuhost.facts.gpu import _classify_init_error, nvml_error_as_printed, parse_proc_driver_version

    unknown = pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
    status, error = _classify_init_error(pynvml, unknown, None)
    assert status is SourceStatus.ABSENT
    assert error.startswith("no NVIDIA driver loaded: the userspace library is installed but the kernel module is not")
    assert "Unknown Error" in error
    # as nvidia-container-runtime prints it: "failed to initialize NVML: Unknown Error"
    assert nvml_error_as_printed(pynvml, unknown) == "Unknown Error"
    # with the module loaded the same answer is a driver that cannot be read
    loaded = parse_proc_driver_version("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release")
    assert _classify_init_error(pynvml, unknown, loaded)[0] is SourceStatus.UNREADABLE


def test_nvswitch_host_without_a_matching_running_fabric_manager(drifted: HostFacts) -> None:
    finding = only(drifted, "gpu.fabric-manager")
    assert finding.severity is Severity.FAIL
    assert "nvidia-fabricmanager.service is failed (exit-code)" in finding.message
    assert "802" in finding.message
    assert finding.evidence["nvswitches"] == ["0000:07:00.0"]
    # the package matches the driver (580.126.09) here; at another version it is named
    drifted.packages.fabricmanager_version = "580.95.05-1"
    assert "does not match driver 580.126.09" in only(drifted, "gpu.fabric-manager").message
    fixed = copy.deepcopy(drifted)
    fixed.packages.fabricmanager_version = "580.126.09-1"
    fixed.units.units["nvidia-fabricmanager.service"] = UnitStatus(
        "nvidia-fabricmanager.service", "loaded", "active", "running", "success", "enabled"
    )
    assert found(fixed, "gpu.fabric-manager") == []
    fixed.platform.nvswitches = []
    fixed.units.units.pop("nvidia-fabricmanager.service")
    assert found(fixed, "gpu.fabric-manager") == []
    # Hopper's own view: registration with the fabric not finished
    fixed.gpu.gpus[0].fabric_state = "in-progress"
    assert "fabric in-progress" in only(fixed, "gpu.fabric-manager").message


def test_nvswitch_pci_class_alone_is_what_marks_a_host() -> None:
    facts = seed_facts()
    facts.platform.nvidia_gpus = [PciFunction("0000:53:00.0", "0x10de", "0x2330", "0x030200")]
    assert found(facts, "gpu.fabric-manager") == []


def test_upgrade_risk_from_unattended_upgrades_reboot_required_and_the_library(drifted: HostFacts) -> None:
    finding = only(drifted, "gpu.upgrade-risk")
    assert finding.severity is Severity.FAIL  # libnvidia-ml 580.159.04 on disk, module 580.126.09 loaded
    assert "Driver/library version mismatch" in finding.message
    assert "reboot-required.pkgs names libnvidia-compute-580, nvidia-driver-580-open" in finding.message
    assert finding.evidence["exposed"] == ["libnvidia-compute-580", "nvidia-dkms-580-open", "nvidia-fabricmanager-580"]
    drifted.packages.nvml_library_versions = ["580.126.09"]
    drifted.packages.reboot_required_pkgs = []
    assert only(drifted, "gpu.upgrade-risk").severity is Severity.WARN
    drifted.packages.unattended_blacklist.extend(["nvidia-", "libnvidia-"])
    assert found(drifted, "gpu.upgrade-risk") == []


def test_next_kernel_without_an_nvidia_module(drifted: HostFacts, tmp_path: Path) -> None:
    finding = only(drifted, "gpu.next-kernel")
    assert finding.severity is Severity.FAIL
    assert "6.8.0-1031-aws" in finding.message and "couldn't communicate with the NVIDIA driver" in finding.message
    drifted.boot.next_nvidia_modules = ["updates/dkms/nvidia.ko"]
    assert found(drifted, "gpu.next-kernel") == []
    drifted.boot.next_unsigned_modules = ["updates/dkms/nvidia.ko"]
    drifted.boot.secure_boot = True
    assert "unsigned" in only(drifted, "gpu.next-kernel").message
    drifted.boot.next = drifted.boot.running
    assert found(drifted, "gpu.next-kernel") == []


def test_persistence_off_names_the_daemon_state(drifted: HostFacts, h100: HostFacts) -> None:
    drifted.gpu.gpus[0].persistence_mode = False
    finding = only(drifted, "gpu.persistence")
    assert "nvidia-persistenced.service is inactive" in finding.message
    assert "driver rpc error: timed out" in finding.message


def test_xids_since_boot(drifted: HostFacts) -> None:
    findings = found(drifted, "gpu.xid")
    assert [(f.evidence["xid"], f.severity) for f in findings] == [(79, Severity.FAIL), (119, Severity.FAIL)]
    assert "fallen off the bus" in findings[0].message  # Xid 13, an application's fault, is no finding
    drifted.kmsg.xids = [x for x in drifted.kmsg.xids if x.code == 13]
    assert found(drifted, "gpu.xid") == []


def test_pending_retirement_and_remapping(h100: HostFacts) -> None:
    h100.gpu.gpus[0].remapped_rows_pending = True
    assert "row remapping is pending" in only(h100, "gpu.retired-pages-pending").message
    h100.gpu.gpus[0].remapped_rows_pending = False
    h100.gpu.gpus[0].retired_pages_pending = True
    assert "page retirement is pending" in only(h100, "gpu.retired-pages-pending").message


def test_mig_mode_with_whole_gpu_containers(h100: HostFacts) -> None:
    h100.docker.containers = [gpu_paths_of(safe_container(), h100.docker.runtimes)]
    h100.gpu.gpus[0].mig_pending = True
    finding = only(h100, "gpu.mig")
    assert finding.severity is Severity.FAIL and "comfyui" in finding.message and "pending" in finding.message
    mig_container = safe_container()
    mig_container["Config"]["Env"] = ["NVIDIA_VISIBLE_DEVICES=MIG-5b4b2f3e-8c1a-5d0e-9a57-0f2d3c4b5a6e"]
    h100.docker.containers = [gpu_paths_of(mig_container, h100.docker.runtimes)]
    assert found(h100, "gpu.mig") == []
    h100.docker.containers = []
    assert only(h100, "gpu.mig").severity is Severity.WARN


def test_gsp_on_g5_from_dmi_and_params(h100: HostFacts) -> None:
    h100.platform.product_name = "g5.2xlarge"
    assert h100.gpu.proc_driver is not None
    assert found(h100, "gpu.gsp")[0].evidence["evidence"].startswith("the open kernel module")
    h100.gpu.proc_driver.open_kernel_module = False
    h100.gpu.params = {"EnableGpuFirmware": "18"}
    assert only(h100, "gpu.gsp").severity is Severity.WARN
    h100.gpu.params = {"EnableGpuFirmware": "0"}
    assert found(h100, "gpu.gsp") == []
    h100.gpu.params = {"EnableGpuFirmware": "18"}
    h100.platform.product_name = "p5.48xlarge"
    assert found(h100, "gpu.gsp") == []
