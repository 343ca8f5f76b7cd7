"""Pure rules: HostFacts -> findings. Every rule is a function of facts and options only."""

from __future__ import annotations

from typing import Callable

from gpuhost.hostfacts import HostFacts
from gpuhost.model import Finding
from gpuhost.rules import bpf, cdi, comfyui, devices, docker, door, driver, ebs, gpu, instances, storage, toolkit
from gpuhost.rules.options import RuleOptions, RunAs

__all__ = ["Rule", "RuleOptions", "RunAs", "all_rules", "evaluate"]


Rule = Callable[[HostFacts, RuleOptions], "list[Finding]"]


def all_rules() -> list[Rule]:
    return [
        gpu.driver,
        gpu.health,
        gpu.xid,
        gpu.mig,
        driver.fabric_manager,
        driver.upgrade_risk,
        driver.next_kernel,
        driver.gsp,
        bpf.exposure,
        bpf.gpus_containers,
        docker.engine,
        docker.nvidia_runtime,
        docker.cdi_feature,
        docker.cgroup_reload,
        toolkit.installed,
        toolkit.mode,
        toolkit.no_cgroups,
        toolkit.ldconfig,
        cdi.specs,
        cdi.writers,
        cdi.completeness,
        cdi.refresh,
        devices.permissions,
        storage.data_root,
        storage.containerd_store,
        storage.containerd_double_copy,
        ebs.volumes,
        ebs.pull_time,
        comfyui.readiness,
        comfyui.import_failures,
        comfyui.models,
        instances.shared,
        instances.gone,
        instances.mismatch,
        door.exposure,
    ]


def evaluate(facts: HostFacts, options: RuleOptions | None = None) -> list[Finding]:
    options = options or RuleOptions()
    findings: list[Finding] = []
    for rule in all_rules():
        findings.extend(rule(facts, options))
    return findings
