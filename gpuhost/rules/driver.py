"""The driver's lifecycle around the GPU: the fabric manager on NVSwitch hosts, upgrades that replace
the libraries under a loaded module, the kernel that boots next, GSP firmware on g4dn/g5."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuhost.facts.source import SourceStatus
from gpuhost.model import Finding, Severity

if TYPE_CHECKING:
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions

FABRICMANAGER_UNIT = "nvidia-fabricmanager.service"
# instance families whose GPUs (T4, A10G, T4G) are slow and unstable with GSP firmware; the EKS AMI
# loads the proprietary module with NVreg_EnableGpuFirmware=0 on them
GSP_AVOID_FAMILIES = ("g4dn", "g5", "g5g")


def running_driver(facts: HostFacts) -> str:
    """The loaded driver's version: NVML's, else the kernel module's own."""
    if facts.gpu.status is SourceStatus.OK and facts.gpu.driver_version:
        return facts.gpu.driver_version
    if facts.gpu.proc_driver is not None and facts.gpu.proc_driver.version:
        return facts.gpu.proc_driver.version
    return facts.packages.module_version


def _upstream(version: str) -> str:
    """580.159.04-1 -> 580.159.04; 1:580.159.04-0ubuntu1 -> 580.159.04."""
    return version.split(":")[-1].split("-", 1)[0]


def fabric_manager(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    switches = [f.address for f in facts.platform.nvswitches]
    pending = [
        f"GPU {d.index}: fabric {d.fabric_state}" + (f" (status {d.fabric_status})" if d.fabric_status else "")
        for d in facts.gpu.gpus
        if d.fabric_state in ("not-started", "in-progress") or (d.fabric_state == "completed" and d.fabric_status)
    ]
    if not switches and not pending:
        return []
    driver = running_driver(facts)
    unit = facts.units.get(FABRICMANAGER_UNIT)
    package, version = facts.packages.fabricmanager_package, _upstream(facts.packages.fabricmanager_version)
    evidence: dict[str, Any] = {
        "nvswitches": switches,
        "driver": driver,
        "fabricmanager_package": package,
        "fabricmanager_version": version,
        "unit": unit.active_state if unit else ("unknown" if facts.units.status is not SourceStatus.OK else "absent"),
        "gpu_fabric": pending,
    }
    problems = []
    if facts.packages.dpkg and not package:
        problems.append("nvidia-fabricmanager is not installed")
    elif package and driver and version and version != driver:
        problems.append(
            f"nvidia-fabricmanager {version} does not match driver {driver} (`fabric manager ... interface version "
            "don't match with driver version`)"
        )
    if facts.units.status is SourceStatus.OK and (unit is None or not unit.active):
        state = f"{unit.active_state} ({unit.result})" if unit and unit.exists else "not installed"
        problems.append(f"{FABRICMANAGER_UNIT} is {state}")
    problems.extend(pending)
    if not problems:
        return []
    branch = driver.split(".")[0] if driver else "<branch>"
    return [
        Finding(
            "gpu.fabric-manager",
            "gpu",
            Severity.FAIL,
            f"NVSwitch host ({len(switches)} NVSwitch(es)): " + "; ".join(problems)
            + ". CUDA fails with error 802 `system not yet initialized` until the fabric manager of the driver's "
            "version runs",
            f"Install nvidia-fabricmanager-{branch}" + (f" {driver}" if driver else " at the driver's version")
            + ", hold it with the driver and `systemctl enable --now nvidia-fabricmanager`.",
            evidence,
        )
    ]


def upgrade_risk(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    packages = facts.packages
    reasons = []
    severity = Severity.WARN
    loaded = packages.module_version or running_driver(facts)
    evidence: dict[str, Any] = {
        "module_version": loaded,
        "nvml_libraries": packages.nvml_library_versions,
        "unattended_upgrades": packages.unattended_upgrades_enabled,
        "held": packages.held,
        "blacklist": packages.unattended_blacklist,
    }
    if loaded and packages.nvml_library_versions and loaded not in packages.nvml_library_versions:
        severity = Severity.FAIL
        reasons.append(
            f"the installed NVML library is {', '.join(packages.nvml_library_versions)} but module {loaded} is loaded: "
            "`Driver/library version mismatch` until a reboot"
        )
    pending = [p for p in packages.reboot_required_pkgs if p in packages.driver_packages or "nvidia" in p]
    if pending:
        reasons.append(
            f"/var/run/reboot-required.pkgs names {', '.join(pending)}: an upgraded driver waits for a reboot"
        )
    exposed = []
    if packages.unattended_upgrades_enabled:
        exposed = [
            name
            for name in packages.driver_packages
            if name not in packages.held and not packages.blacklisted(name)
        ]
        if exposed:
            shown = ", ".join(exposed[:6]) + (f" and {len(exposed) - 6} more" if len(exposed) > 6 else "")
            reasons.append(
                f"unattended-upgrades is enabled and may upgrade {shown} (neither held nor blacklisted)"
            )
    evidence["exposed"] = exposed
    evidence["reboot_required"] = pending
    if not reasons:
        return []
    return [
        Finding(
            "gpu.upgrade-risk",
            "gpu",
            severity,
            "; ".join(reasons),
            "Hold the driver packages (`apt-mark hold`) and add `\"nvidia-\"; \"libnvidia-\";` to "
            "Unattended-Upgrade::Package-Blacklist (roles/nvidia_driver holds them); upgrade the driver on purpose "
            "and reboot"
            + (" now to load the installed one." if severity is Severity.FAIL or pending else "."),
            evidence,
        )
    ]


def next_kernel(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    boot = facts.boot
    uses_driver = facts.gpu.proc_driver is not None or bool(facts.packages.module_version)
    if not uses_driver or not boot.next or boot.next == boot.running:
        return []
    evidence: dict[str, Any] = {
        "running": boot.running,
        "next": boot.next,
        "next_source": boot.next_source,
        "nvidia_modules": boot.next_nvidia_modules,
        "secure_boot": boot.secure_boot,
    }
    if not boot.next_nvidia_modules:
        problem = (f"has no NVIDIA kernel module under /lib/modules/{boot.next} (nvidia.ko, or Debian's "
                   "nvidia-current.ko and the like, compressed or not)")
    elif boot.secure_boot and boot.next_unsigned_modules == boot.next_nvidia_modules:
        problem = f"has only unsigned NVIDIA modules ({', '.join(boot.next_unsigned_modules)}) and Secure Boot is on"
    else:
        return []
    return [
        Finding(
            "gpu.next-kernel",
            "gpu",
            Severity.FAIL,
            f"the kernel that boots next ({boot.next}, from {boot.next_source}; running {boot.running}) {problem}: "
            "after the next reboot `NVIDIA-SMI has failed ... couldn't communicate with the NVIDIA driver`",
            f"Build the module for it before rebooting (`dkms autoinstall -k {boot.next}`, or install "
            f"linux-modules-nvidia-<branch>-server for that kernel on Ubuntu), or keep booting {boot.running}; "
            "on Debian, roles/nvidia_driver installs the kernel headers metapackage so DKMS builds for new kernels.",
            evidence,
        )
    ]


def instance_type(facts: HostFacts) -> tuple[str, str]:
    """(instance type, where it came from): IMDS, else the DMI product name Nitro reports."""
    if facts.aws.instance_type:
        return facts.aws.instance_type, "IMDS"
    product = facts.platform.product_name
    if "." in product and " " not in product:
        return product, "DMI product name"
    return "", ""


def gsp_enabled(facts: HostFacts) -> tuple[bool | None, str]:
    gpu = facts.gpu
    running = [v for v in gpu.gpu_firmware.values() if v and v.upper() != "N/A"]
    if gpu.gpu_firmware:
        shown = ", ".join(sorted(set(gpu.gpu_firmware.values())))
        return bool(running), f"/proc/driver/nvidia/gpus/*/information GPU Firmware: {shown}"
    if gpu.proc_driver is not None and gpu.proc_driver.open_kernel_module:
        return True, "the open kernel module (always runs GSP firmware)"
    raw = gpu.params.get("EnableGpuFirmware")
    if raw is not None:
        try:
            mode = int(raw, 0) & 0xF
        except ValueError:
            return None, ""
        # 0: disabled, 1: enabled, 2: the driver's default, which enables GSP on these GPUs
        return mode != 0, f"/proc/driver/nvidia/params EnableGpuFirmware: {raw}"
    return None, ""


def gsp(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    itype, source = instance_type(facts)
    if itype.split(".")[0] not in GSP_AVOID_FAMILIES:
        return []
    enabled, why = gsp_enabled(facts)
    if not enabled:
        return []
    return [
        Finding(
            "gpu.gsp",
            "gpu",
            Severity.WARN,
            f"{itype} ({source}) runs the GPU's GSP firmware ({why}): on g4dn/g5 it brings very slow NVML calls, "
            "`Unknown Error` readings and container hook timeouts",
            "Install the proprietary kernel module (nvidia_driver_open_modules: false) and load it with "
            "NVreg_EnableGpuFirmware=0 (`options nvidia NVreg_EnableGpuFirmware=0` in /etc/modprobe.d), then reboot.",
            {"instance_type": itype, "source": source, "evidence": why},
        )
    ]
