"""The BPF device-filter bug: `--gpus` containers on cgroup v2 hosts whose kernel hardens the eBPF JIT fail
with `last insn is not an exit or jmp`. The verdict, and the containers that trip it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuhost.facts.docker import ContainerGpuAccess
from gpuhost.facts.source import SourceStatus
from gpuhost.facts.toolkit import version_tuple
from gpuhost.model import Finding, Severity

if TYPE_CHECKING:
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions

SAFE_RUN = (
    "docker run --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all "
    "-e NVIDIA_DRIVER_CAPABILITIES=compute,utility IMAGE"
)
SAFE_CDI = "docker run --device nvidia.com/gpu=all IMAGE (Docker >= 25 with features.cdi)"
REMEDY = (
    f"Start GPU containers through the nvidia runtime or CDI, never --gpus: {SAFE_RUN}, or {SAFE_CDI}. "
    'Keep mode = "auto" (jit-cdi on toolkit >= 1.18) in /etc/nvidia-container-runtime/config.toml.'
)
LIVE_STATES = ("running", "created", "restarting", "paused")
# The first Docker Engine release that turns --gpus into CDI device requests when nvidia-cdi-hook is
# on dockerd's PATH (moby pull request 50228, merged 2026-01-20, first tagged in docker-v29.2.0).
GPUS_VIA_CDI_DOCKER = (29, 2, 0)


def gpus_via_cdi(facts: HostFacts) -> bool:
    """Whether this engine serves --gpus through CDI: Docker >= 29.2.0, nvidia-cdi-hook installed, CDI
    enabled and a valid nvidia.com/gpu spec to resolve the request against (otherwise dockerd falls
    back to the nvidia-container-runtime-hook, the legacy path)."""
    docker = facts.docker
    if docker.status is not SourceStatus.OK or not docker.server_version:
        return False
    if version_tuple(docker.server_version) < GPUS_VIA_CDI_DOCKER:
        return False
    return (
        "nvidia-cdi-hook" in facts.toolkit.binaries
        and bool(docker.cdi_enabled)
        and any(spec.valid and spec.kind == "nvidia.com/gpu" for spec in facts.cdi.specs)
    )


def legacy_hook_containers(facts: HostFacts) -> list[ContainerGpuAccess]:
    """Containers whose GPUs come through the legacy hook: --gpus on an engine that does not route it
    through CDI."""
    if gpus_via_cdi(facts):
        return []
    return [c for c in facts.docker.containers if c.uses_legacy_hook]


def kernel_conditions(facts: HostFacts) -> bool | None:
    """cgroup v2 with a hardened eBPF JIT; None when the kernel facts are unknown."""
    kernel = facts.kernel
    if kernel.status is not SourceStatus.OK or not kernel.cgroup_mode:
        return None
    return kernel.cgroup_version == 2 and kernel.jit_hardened


def legacy_paths(facts: HostFacts) -> list[str]:
    paths = []
    for container in legacy_hook_containers(facts):
        if container.state in LIVE_STATES:
            paths.append(f"container {container.name} ({container.state}) uses --gpus (DeviceRequests)")
    if facts.toolkit.mode == "legacy":
        paths.append('nvidia-container-runtime mode = "legacy"')
    return paths


def inputs(facts: HostFacts) -> dict[str, Any]:
    kernel, docker, toolkit = facts.kernel, facts.docker, facts.toolkit
    return {
        "kernel": kernel.release,
        "os": kernel.os_pretty_name,
        "cgroup_mode": kernel.cgroup_mode,
        "cgroup_version": kernel.cgroup_version,
        "bpf_jit_harden": kernel.bpf_jit_harden,
        "bpf_jit_enable": kernel.bpf_jit_enable,
        "docker": docker.server_version,
        "runc": docker.runc_version,
        "toolkit": toolkit.version,
        "runtime_mode": toolkit.mode,
        "default_runtime": docker.default_runtime,
        "cdi_enabled": docker.cdi_enabled,
        "cdi_specs": [spec.path for spec in facts.cdi.specs],
    }


def exposure(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    conditions = kernel_conditions(facts)
    paths = legacy_paths(facts)
    evidence = inputs(facts)
    evidence["legacy_paths"] = paths
    if conditions is None:
        return [
            Finding(
                "bpf.exposure",
                "bpf",
                Severity.WARN,
                "cannot tell whether this host is exposed to the BPF device-filter bug: "
                + (facts.kernel.error or "cgroup mode unknown"),
                "Run gpuhost check as root on the host itself (not in a container without /proc and /sys).",
                evidence,
            )
        ]
    if conditions and paths:
        return [
            Finding(
                "bpf.exposure",
                "bpf",
                Severity.FAIL,
                "EXPOSED to the BPF device-filter bug: cgroup v2 with net.core.bpf_jit_harden=2 and a legacy "
                "GPU path in use (" + "; ".join(paths) + "). GPU containers on this path fail with "
                "'unable to generate new device filter program ... last insn is not an exit or jmp'.",
                REMEDY,
                evidence,
            )
        ]
    if conditions:
        return [
            Finding(
                "bpf.exposure",
                "bpf",
                Severity.OK,
                "not exposed: the kernel conditions are present (cgroup v2, bpf_jit_harden=2) but no legacy "
                "GPU path is in use. Any `docker run --gpus` here will fail.",
                REMEDY,
                evidence,
            )
        ]
    if facts.kernel.cgroup_version != 2:
        why = f"cgroup {facts.kernel.cgroup_mode}: devices are controlled by the v1 devices controller, not BPF"
    else:
        why = f"the eBPF JIT is not hardened for root (net.core.bpf_jit_harden={facts.kernel.bpf_jit_harden})"
    return [Finding("bpf.exposure", "bpf", Severity.OK, f"not exposed: {why}", "", evidence)]


def gpus_containers(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    conditions = kernel_conditions(facts)
    findings = []
    for container in legacy_hook_containers(facts):
        evidence = {
            "container": container.name,
            "id": container.id,
            "image": container.image,
            "state": container.state,
            "device_requests": container.device_requests,
        }
        if conditions:
            findings.append(
                Finding(
                    "bpf.gpus-container",
                    "bpf",
                    Severity.FAIL,
                    f"container {container.name} was created with --gpus on a host exposed to the BPF "
                    "device-filter bug: it cannot start (or restart) here.",
                    f"Recreate it without --gpus: {SAFE_RUN}.",
                    evidence,
                )
            )
        else:
            findings.append(
                Finding(
                    "bpf.gpus-container",
                    "bpf",
                    Severity.WARN,
                    f"container {container.name} gets GPUs through --gpus (the legacy hook): it works on this "
                    "kernel but fails on cgroup v2 hosts with a hardened eBPF JIT.",
                    f"Prefer {SAFE_RUN}.",
                    evidence,
                )
            )
    return findings
