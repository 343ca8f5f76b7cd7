"""BPF device-filter exposure: the seed host that is exposed, the paths that are safe, and the
conditions (cgroup, bpf_jit_harden, the toolkit's mode, Docker's --gpus through CDI) that decide it."""

from __future__ import annotations

from typing import Any

import pytest

from gpuhost.check import report_for
from gpuhost.facts.docker import gpu_paths_of
from gpuhost.facts.source import SourceStatus
from gpuhost.hostfacts import HostFacts
from gpuhost.model import ExitCode, Severity
from gpuhost.rules import RuleOptions, evaluate
from tests.support.recorded_facts import findings_with, found, one, only, safe_container, seed_facts


def test_seed_host_is_exposed_with_the_remedy() -> None:
    facts = seed_facts()
    report = report_for(facts, RuleOptions())
    exposure = one(report.findings, "bpf.exposure")
    assert exposure.severity is Severity.FAIL
    assert "EXPOSED" in exposure.message
    assert "container comfyui (created) uses --gpus" in exposure.message
    assert "--runtime=nvidia" in exposure.remedy
    assert "nvidia.com/gpu=all" in exposure.remedy
    assert exposure.evidence["bpf_jit_harden"] == 2
    assert exposure.evidence["cgroup_version"] == 2
    assert exposure.evidence["runc"] == "1.3.4"
    assert exposure.evidence["toolkit"] == "1.18.1"
    container = one(report.findings, "bpf.gpus-container")
    assert container.severity is Severity.FAIL
    assert container.evidence["container"] == "comfyui"
    assert "--runtime=nvidia" in container.remedy
    assert report.exit_code is ExitCode.FAILING
    assert {"bpf.exposure", "bpf.gpus-container"} <= set(report.to_dict()["failing"])


@pytest.mark.parametrize(
    "inspect, path",
    [
        (safe_container(), "nvidia-runtime"),
        (safe_container("runc", DeviceRequests=[{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]), "cdi"),
    ],
    ids=["runtime-nvidia", "cdi-device"],
)
def test_seed_host_recreated_on_a_safe_path_is_not_exposed(inspect: dict[str, Any], path: str) -> None:
    facts = seed_facts()
    facts.docker.containers = [gpu_paths_of(inspect, facts.docker.runtimes)]
    assert facts.docker.containers[0].gpu_paths == [path]
    findings = evaluate(facts)
    exposure = one(findings, "bpf.exposure")
    assert exposure.severity is Severity.OK
    assert "kernel conditions are present" in exposure.message
    assert findings_with(findings, "bpf.gpus-container") == []


def test_gpus_container_without_hardened_jit_is_a_warning_only() -> None:
    facts = seed_facts()
    facts.kernel.bpf_jit_harden = 0
    findings = evaluate(facts)
    assert one(findings, "bpf.exposure").severity is Severity.OK
    assert "not hardened" in one(findings, "bpf.exposure").message
    warning = one(findings, "bpf.gpus-container")
    assert warning.severity is Severity.WARN


def test_hybrid_cgroup_host_is_not_exposed() -> None:
    facts = seed_facts()
    facts.kernel.cgroup_mode, facts.kernel.cgroup_version = "hybrid", 1
    exposure = one(evaluate(facts), "bpf.exposure")
    assert exposure.severity is Severity.OK
    assert "v1 devices controller" in exposure.message


def test_legacy_mode_alone_exposes_a_hardened_host() -> None:
    facts = seed_facts()
    facts.docker.containers = []
    facts.toolkit.mode = "legacy"
    findings = evaluate(facts)
    assert one(findings, "bpf.exposure").severity is Severity.FAIL
    assert 'mode = "legacy"' in one(findings, "bpf.exposure").message
    assert one(findings, "toolkit.mode").severity is Severity.FAIL


def test_unknown_kernel_facts_give_a_warning_not_a_verdict() -> None:
    facts = seed_facts()
    facts.kernel.status = SourceStatus.UNREADABLE
    facts.kernel.error = "cannot read /proc/sys/kernel/osrelease"
    assert one(evaluate(facts), "bpf.exposure").severity is Severity.WARN


def test_gpus_through_cdi_from_docker_29_2_is_not_legacy(h100: HostFacts) -> None:
    """moby #50228 (first in Docker Engine 29.2.0): --gpus becomes nvidia.com/gpu=... when nvidia-cdi-hook
    is installed and CDI is enabled."""
    h100.docker.containers[0].state = "running"
    h100.docker.cdi_enabled = True
    h100.toolkit.binaries["nvidia-cdi-hook"] = "/usr/bin/nvidia-cdi-hook"
    h100.docker.server_version = "29.1.5"
    assert only(h100, "bpf.gpus-container").severity is Severity.FAIL
    h100.docker.server_version = "29.2.0"
    assert found(h100, "bpf.gpus-container") == []
    assert only(h100, "bpf.exposure").severity is Severity.OK
    del h100.toolkit.binaries["nvidia-cdi-hook"]
    assert only(h100, "bpf.gpus-container").severity is Severity.FAIL
