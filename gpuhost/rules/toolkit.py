"""NVIDIA Container Toolkit: installed, new enough, and in a BPF-safe mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
