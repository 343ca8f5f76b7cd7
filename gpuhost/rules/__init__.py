"""Pure rules: HostFacts -> findings. Every rule is a function of facts and options only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from gpuhost.facts import HostFacts
from gpuhost.model import Finding


@dataclass
class RunAs:
    """An identity a container would run with: uid, primary gid and supplementary gids."""

    uid: int
    gids: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> RunAs:
        """Parse `UID[:GID[,GID...]]`, e.g. `1000:1000,44`."""
        uid_text, _, gid_text = text.partition(":")
        try:
            uid = int(uid_text)
            gids = [int(g) for g in gid_text.split(",") if g.strip()] if gid_text else []
        except ValueError as exc:
            raise ValueError(f"--run-as expects UID[:GID[,GID...]] with numbers, got {text!r}") from exc
        return cls(uid=uid, gids=gids)


@dataclass
class RuleOptions:
    min_free_gib: float = 20.0
    run_as: RunAs | None = None


Rule = Callable[[HostFacts, RuleOptions], "list[Finding]"]


def all_rules() -> list[Rule]:
    from gpuhost.rules import bpf, cdi, devices, docker, ebs, gpu, storage, toolkit

    return [
        gpu.driver,
        gpu.health,
        bpf.exposure,
        bpf.gpus_containers,
        docker.engine,
        docker.nvidia_runtime,
        docker.cdi_feature,
        toolkit.installed,
        toolkit.mode,
        cdi.specs,
        cdi.writers,
        devices.permissions,
        storage.data_root,
        ebs.volumes,
        ebs.pull_time,
    ]


def evaluate(facts: HostFacts, options: RuleOptions | None = None) -> list[Finding]:
    options = options or RuleOptions()
    findings: list[Finding] = []
    for rule in all_rules():
        findings.extend(rule(facts, options))
    return findings
