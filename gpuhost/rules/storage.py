"""Docker data-root placement and free space."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuhost.facts.source import SourceStatus
from gpuhost.model import Finding, Severity

if TYPE_CHECKING:
    from gpuhost.facts import HostFacts
    from gpuhost.rules import RuleOptions

GIB = 1024**3


def data_root(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    docker = facts.docker
    location = docker.data_root_location
    if docker.status is not SourceStatus.OK or location is None:
        return []
    evidence = {
        "data_root": docker.data_root,
        "device": location.device,
        "disk": location.disk,
        "class": location.device_class,
        "fstype": location.fstype,
        "mountpoint": location.mountpoint,
        "ebs_volume_id": location.ebs_volume_id,
        "free_bytes": location.free_bytes,
    }
    findings = []
    if location.device_class == "ebs" and location.on_root_disk:
        findings.append(
            Finding(
                "storage.data-root-ebs",
                "storage",
                Severity.WARN,
                f"Docker's data-root {docker.data_root} is on the root EBS volume {location.ebs_volume_id}: "
                "image unpack runs at the volume's throughput (gp3 baseline 125 MiB/s, ~18 min for 140 GB)",
                "Move data-root to instance-store NVMe (roles/docker_storage) or raise the volume's throughput "
                "before the pull (gpuhost tune-ebs --preset pull).",
                evidence,
            )
        )
    if location.free_bytes is not None:
        free_gib = location.free_bytes / GIB
        if free_gib < options.min_free_gib:
            findings.append(
                Finding(
                    "storage.data-root-free",
                    "storage",
                    Severity.FAIL,
                    f"only {free_gib:.1f} GiB free under {docker.data_root} (threshold {options.min_free_gib:g} GiB)",
                    "Free space (docker system prune, docker image prune -a) or move data-root to a larger disk; "
                    "set the threshold with --min-free-gb.",
                    evidence,
                )
            )
    if not findings:
        free = f"{location.free_bytes / GIB:.1f} GiB free" if location.free_bytes is not None else "free space unknown"
        findings.append(
            Finding(
                "storage.data-root",
                "storage",
                Severity.OK,
                f"data-root {docker.data_root} on {location.device or location.source} "
                f"({location.fstype}, {location.device_class or 'unknown class'}), {free}",
                "",
                evidence,
            )
        )
    return findings
