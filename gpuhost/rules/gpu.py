"""GPU and driver rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
        elif device.remapped_rows_pending:
            findings.append(
                Finding(
                    "gpu.remapped-rows",
                    "gpu",
                    Severity.WARN,
                    f"{subject}: a row remapping is pending until the GPU is reset",
                    "Stop GPU work and reset the GPU (nvidia-smi -r) or reboot the instance.",
                    evidence,
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
            findings.append(
                Finding(
                    "gpu.persistence",
                    "gpu",
                    Severity.WARN,
                    f"{subject}: persistence mode is off, so every container start re-initialises the GPU",
                    "Enable nvidia-persistenced (roles/nvidia_driver does).",
                    evidence,
                )
            )
    return findings
