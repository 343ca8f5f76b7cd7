"""GPU and driver rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuhost.facts.docker import ContainerGpuAccess
from gpuhost.facts.kmsg import XidEvent
from gpuhost.facts.source import SourceStatus
from gpuhost.model import Finding, Severity

if TYPE_CHECKING:
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions


def driver(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    gpu = facts.gpu
    proc = gpu.proc_driver
    evidence = {
        "nvml_status": gpu.status.value,
        "driver_version": gpu.driver_version,
        "cuda_driver_version": gpu.cuda_driver_version,
        "kernel_module": proc.version if proc else None,
        "gpus": [g.name for g in gpu.gpus],
    }
    if gpu.status is SourceStatus.ABSENT:
        consequence = _nvidia_runtime_without_driver(facts)
        if consequence:
            evidence["nvidia_runtime_containers"] = consequence
        return [
            Finding(
                "gpu.driver",
                "gpu",
                Severity.FAIL,
                f"no GPU: {gpu.error}" + (f"; {consequence}" if consequence else ""),
                "Install the NVIDIA driver (roles/nvidia_driver) on a GPU instance, then reboot if asked.",
                evidence,
            )
        ]
    if gpu.status is SourceStatus.UNREADABLE:
        return [
            Finding(
                "gpu.driver",
                "gpu",
                Severity.FAIL,
                f"the NVIDIA driver could not be queried: {gpu.error}",
                "If the driver was just upgraded, reboot (or reload the nvidia modules) so the kernel module "
                "and the libraries match; otherwise run as root and check /dev/nvidia* permissions.",
                evidence,
            )
        ]
    if proc and proc.version and gpu.driver_version and proc.version != gpu.driver_version:
        return [
            Finding(
                "gpu.driver",
                "gpu",
                Severity.FAIL,
                f"driver/library version mismatch: kernel module {proc.version}, NVML {gpu.driver_version}",
                "Reboot so the new kernel module is loaded (or unload and reload the nvidia modules).",
                evidence,
            )
        ]
    if not gpu.gpus:
        return [
            Finding(
                "gpu.driver",
                "gpu",
                Severity.FAIL,
                f"driver {gpu.driver_version} is loaded but NVML lists no GPU",
                "Check that the instance type has a GPU and that `nvidia-smi -L` lists it.",
                evidence,
            )
        ]
    names = ", ".join(sorted({g.name for g in gpu.gpus}))
    return [
        Finding(
            "gpu.driver",
            "gpu",
            Severity.OK,
            f"driver {gpu.driver_version} (CUDA {gpu.cuda_driver_version}), {len(gpu.gpus)} GPU(s): {names}",
            "",
            evidence,
        )
    ]


def _nvidia_runtime_without_driver(facts: HostFacts) -> str:
    """What a GPU container does on this host when the nvidia runtime is registered but no driver is."""
    docker = facts.docker
    registered = any(
        name == "nvidia" or "nvidia-container-runtime" in path for name, path in docker.runtimes.items()
    )
    if docker.status is not SourceStatus.OK or not registered:
        return ""
    nvml_error = facts.gpu.nvml_error or "ERROR_LIBRARY_NOT_FOUND"
    return (
        "containers started with --runtime=nvidia and NVIDIA_VISIBLE_DEVICES=all fail with "
        f"`failed to initialize NVML: {nvml_error}` because no driver is present "
        "(without NVIDIA_VISIBLE_DEVICES, or with =void, they run without GPUs)"
    )


def health(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    findings = []
    for device in facts.gpu.gpus:
        subject = f"GPU {device.index} ({device.name}, {device.pci_bus_id})"
        evidence = {"index": device.index, "uuid": device.uuid, "pci_bus_id": device.pci_bus_id}
        if device.remapped_rows_failure:
            findings.append(
                Finding(
                    "gpu.remapped-rows",
                    "gpu",
                    Severity.FAIL,
                    f"{subject}: row remapping failed; the GPU needs service",
                    "Drain the host and ask the cloud provider to replace the instance.",
                    {**evidence, "uncorrectable": device.remapped_rows_uncorrectable},
                )
            )
        elif device.remapped_rows_pending or device.retired_pages_pending:
            what = "a row remapping" if device.remapped_rows_pending else "a page retirement"
            findings.append(
                Finding(
                    "gpu.retired-pages-pending",
                    "gpu",
                    Severity.WARN,
                    f"{subject}: {what} is pending and takes effect only after the GPU is reset: until then the "
                    "bad memory stays in use",
                    "Drain the GPU's work, then reset it (nvidia-smi -r -i INDEX) or reboot the instance.",
                    {**evidence, "remapped_rows_pending": device.remapped_rows_pending,
                     "retired_pages_pending": device.retired_pages_pending},
                )
            )
        if device.ecc_pending is not None and device.ecc_enabled not in (None, device.ecc_pending):
            findings.append(
                Finding(
                    "gpu.ecc",
                    "gpu",
                    Severity.WARN,
                    f"{subject}: an ECC mode change is pending until reboot",
                    "Reboot to apply the pending ECC mode.",
                    evidence,
                )
            )
        if device.persistence_mode is False:
            daemon = facts.units.get(PERSISTENCED_UNIT)
            state = (
                f"{PERSISTENCED_UNIT} is {daemon.active_state}" if daemon and daemon.exists
                else f"{PERSISTENCED_UNIT} is not installed" if facts.units.status is SourceStatus.OK
                else f"{PERSISTENCED_UNIT}'s state is unknown"
            )
            findings.append(
                Finding(
                    "gpu.persistence",
                    "gpu",
                    Severity.WARN,
                    f"{subject}: persistence mode is off ({state}), so every container start re-initialises the "
                    "GPU: slow starts and `driver rpc error: timed out`",
                    "`systemctl enable --now nvidia-persistenced` (roles/nvidia_driver enables it; this is drift).",
                    {**evidence, "persistenced": daemon.active_state if daemon else ""},
                )
            )
    return findings


PERSISTENCED_UNIT = "nvidia-persistenced.service"

# Xid codes that say something about the host rather than one application's bug:
# (severity, meaning, remedy)
XID_MEANINGS = {
    48: (Severity.FAIL, "double-bit ECC error", "Drain the host, reset the GPU or reboot; replace it if it recurs."),
    63: (Severity.WARN, "ECC page retirement or row remapping recorded",
         "Reset the GPU (or reboot) when it is idle so the retirement takes effect."),
    64: (Severity.FAIL, "ECC page retirement or row remapping failed",
         "Drain the host and ask the cloud provider to replace the instance."),
    79: (Severity.FAIL, "the GPU has fallen off the bus",
         "Reboot; if it recurs, stop/start the instance onto other hardware."),
    94: (Severity.WARN, "contained ECC error: the affected application was stopped",
         "Restart the affected containers; reset the GPU when it is idle."),
    95: (Severity.FAIL, "uncontained ECC error: every process on the GPU is affected",
         "Drain the host and reset the GPU (or reboot)."),
    119: (Severity.FAIL, "GSP RPC timeout",
          "Reset the GPU or reboot; on g4dn/g5 load the proprietary module with NVreg_EnableGpuFirmware=0."),
    120: (Severity.FAIL, "GSP error",
          "Reset the GPU or reboot; on g4dn/g5 load the proprietary module with NVreg_EnableGpuFirmware=0."),
}


def xid(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    by_code: dict[int, list[XidEvent]] = {}
    for event in facts.kmsg.xids:
        if event.code in XID_MEANINGS:
            by_code.setdefault(event.code, []).append(event)
    findings = []
    for code, events in sorted(by_code.items()):
        severity, meaning, remedy = XID_MEANINGS[code]
        devices = sorted({e.pci for e in events})
        last = events[-1]
        findings.append(
            Finding(
                "gpu.xid",
                "gpu",
                severity,
                f"Xid {code} ({meaning}) logged {len(events)} time(s) since boot on {', '.join(devices)}; last: "
                f"{last.detail}",
                remedy,
                {"xid": code, "count": len(events), "pci": devices, "last_at_s": last.at_s, "last": last.detail},
            )
        )
    return findings


def _asks_for_mig(container: ContainerGpuAccess) -> bool:
    requested = [container.nvidia_visible_devices or "", *container.cdi_devices]
    for request in container.device_requests:
        requested.extend(str(d) for d in request.get("DeviceIDs") or [])
    return any("MIG-" in r or "mig" in r.lower().split("=")[0] or ":" in r.split("=")[-1] for r in requested)


def mig(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    enabled = [d for d in facts.gpu.gpus if d.mig_enabled or d.mig_pending]
    if not enabled:
        return []
    live = [c for c in facts.docker.containers if c.uses_gpu and c.state in ("running", "created", "restarting")]
    if any(_asks_for_mig(c) for c in live):
        whole = [c.name for c in live if not _asks_for_mig(c)]
    else:
        whole = [c.name for c in live]
    if live and not whole:
        return []
    gpus = ", ".join(
        f"GPU {d.index} ({'enabled' if d.mig_enabled else 'pending: enabled after the next GPU reset'})"
        for d in enabled
    )
    consequence = (
        f"containers {', '.join(whole)} ask for whole GPUs and find no CUDA device" if whole
        else "a container that asks for a whole GPU (--gpus all, NVIDIA_VISIBLE_DEVICES=all) finds no CUDA device"
    )
    return [
        Finding(
            "gpu.mig",
            "gpu",
            Severity.FAIL if whole else Severity.WARN,
            f"MIG mode is on for {gpus}: {consequence}",
            "Disable MIG (`nvidia-smi -i INDEX -mig 0`, then reset the GPU) or ask for MIG devices "
            "(NVIDIA_VISIBLE_DEVICES=MIG-<uuid>, or nvidia.com/mig-<profile> devices in the CDI spec).",
            {"gpus": [d.index for d in enabled], "whole_gpu_containers": whole},
        )
    ]
