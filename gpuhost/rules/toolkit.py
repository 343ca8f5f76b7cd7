"""NVIDIA Container Toolkit: installed, new enough, and in a BPF-safe mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuhost.facts.source import SourceStatus
from gpuhost.facts.toolkit import version_tuple
from gpuhost.model import Finding, Severity
from gpuhost.rules.bpf import kernel_conditions

if TYPE_CHECKING:
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions

MIN_VERSION = (1, 18)


def installed(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    toolkit = facts.toolkit
    evidence = {"version": toolkit.version, "source": toolkit.version_source, "binaries": toolkit.binaries}
    if not toolkit.installed:
        return [
            Finding(
                "toolkit.installed",
                "toolkit",
                Severity.FAIL,
                "the NVIDIA Container Toolkit is not installed: containers cannot get GPUs",
                "Install it with roles/nvidia_container_toolkit (>= 1.18).",
                evidence,
            )
        ]
    if toolkit.version and version_tuple(toolkit.version)[:2] < MIN_VERSION:
        return [
            Finding(
                "toolkit.installed",
                "toolkit",
                Severity.WARN,
                f"NVIDIA Container Toolkit {toolkit.version} is older than 1.18: no jit-cdi `auto` mode and no "
                "nvidia-cdi-refresh units to keep the CDI spec fresh",
                "Upgrade to >= 1.18 (roles/nvidia_container_toolkit pins it).",
                evidence,
            )
        ]
    return [
        Finding(
            "toolkit.installed",
            "toolkit",
            Severity.OK,
            f"NVIDIA Container Toolkit {toolkit.version or '(version unknown)'}",
            "",
            evidence,
        )
    ]


def mode(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    toolkit = facts.toolkit
    if not toolkit.installed:
        return []
    evidence = {"config": toolkit.config_path, "mode": toolkit.mode}
    if toolkit.config_error:
        return [
            Finding(
                "toolkit.mode",
                "toolkit",
                Severity.FAIL,
                f"the runtime configuration cannot be parsed: {toolkit.config_error}",
                "Regenerate it with `nvidia-ctk config default --output=/etc/nvidia-container-runtime/config.toml`.",
                evidence,
            )
        ]
    if not toolkit.config_present:
        return [
            Finding(
                "toolkit.mode",
                "toolkit",
                Severity.WARN,
                f"{toolkit.config_path} is missing: the runtime uses its built-in defaults",
                "Create it with `nvidia-ctk config default --in-place`.",
                evidence,
            )
        ]
    if toolkit.mode == "legacy":
        exposed = kernel_conditions(facts)
        return [
            Finding(
                "toolkit.mode",
                "toolkit",
                Severity.FAIL if exposed else Severity.WARN,
                'nvidia-container-runtime mode = "legacy" uses the libnvidia-container hook'
                + (", which trips the BPF device-filter bug on this host" if exposed else ""),
                'Set mode = "auto" (jit-cdi on >= 1.18): nvidia-ctk config --in-place '
                "--set nvidia-container-runtime.mode=auto",
                evidence,
            )
        ]
    if toolkit.mode == "cdi":
        return [
            Finding(
                "toolkit.mode",
                "toolkit",
                Severity.WARN,
                'mode = "cdi" needs a CDI spec for every GPU request and breaks plain --gpus '
                "(nvidia-container-toolkit #1246)",
                'Prefer mode = "auto", which selects jit-cdi on toolkit >= 1.18.',
                evidence,
            )
        ]
    return [Finding("toolkit.mode", "toolkit", Severity.OK, f'runtime mode = "{toolkit.mode}"', "", evidence)]


def no_cgroups(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    toolkit = facts.toolkit
    if not toolkit.no_cgroups or (facts.docker.status is SourceStatus.OK and facts.docker.rootless):
        return []
    return [
        Finding(
            "toolkit.no-cgroups",
            "toolkit",
            Severity.FAIL,
            f"{toolkit.config_path} sets nvidia-container-cli no-cgroups = true on a rootful Docker: every "
            "legacy-path container (--gpus, mode = \"legacy\") gets no device access and fails with "
            "`Failed to initialize NVML: Unknown Error`",
            "`nvidia-ctk config --in-place --set nvidia-container-cli.no-cgroups=false` "
            "(roles/nvidia_container_toolkit sets it); no-cgroups is for rootless engines only.",
            {"config": toolkit.config_path, "no_cgroups": True, "rootless": facts.docker.rootless},
        )
    ]


def distribution_ldconfig(os_id: str) -> str:
    """The value NVIDIA's packages mean for each distribution: Ubuntu ships ldconfig.real, the others not."""
    return "@/sbin/ldconfig.real" if os_id == "ubuntu" else "@/sbin/ldconfig"


def ldconfig(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    toolkit = facts.toolkit
    if not toolkit.ldconfig:
        return []
    wanted = distribution_ldconfig(facts.kernel.os_id)
    evidence = {"config": toolkit.config_path, "ldconfig": toolkit.ldconfig, "expected": wanted}
    remedy = (
        f"`nvidia-ctk config --in-place --set nvidia-container-cli.ldconfig={wanted}` "
        "(roles/nvidia_container_toolkit writes the distribution's value)."
    )
    if toolkit.ldconfig_exists is False:
        return [
            Finding(
                "toolkit.ldconfig",
                "toolkit",
                Severity.FAIL,
                f"nvidia-container-cli ldconfig = {toolkit.ldconfig!r} names a binary this host does not have: "
                f"containers fail with `ldcache error: open failed: {toolkit.ldconfig.lstrip('@')}`",
                remedy,
                evidence,
            )
        ]
    if not toolkit.ldconfig.startswith("@"):
        return [
            Finding(
                "toolkit.ldconfig",
                "toolkit",
                Severity.WARN,
                f"nvidia-container-cli ldconfig = {toolkit.ldconfig!r} has no leading '@': it runs the image's "
                "ldconfig, which images without one (or with another libc) do not have",
                remedy,
                evidence,
            )
        ]
    return []
