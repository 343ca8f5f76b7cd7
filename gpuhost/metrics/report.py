"""One host's check report as Prometheus metric families (docs/monitoring.md lists them).

Every finding is a series labelled with its rule id, area and severity, so a healthy host exports its
`ok` series (absence is not health); its value counts the findings of that id at that severity (a
rule reports one per ComfyUI container, per Xid code). Besides: the check's timestamp, duration and
exit code, each source's readability, and the facts worth graphing that the check already read.
No message, remedy, evidence or environment value becomes a label: only identifiers, versions,
container names and paths do, escaped by gpuhost.exposition.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from gpuhost import __version__
from gpuhost.check import CheckReport
from gpuhost.comfyui.readiness import Phase
from gpuhost.exposition import Family, render
from gpuhost.facts.source import SourceStatus

PREFIX = "gpuhost_"
# the sources whose failure to read makes the check exit 3 (gpuhost.check.unreadable_sources)
SOURCES = ("kernel", "gpu", "docker")
CHECK_TIMESTAMP = "gpuhost_check_timestamp_seconds"


def report_families(report: CheckReport) -> list[Family]:
    facts = report.facts
    families = [
        Family("gpuhost_info", "gauge", "gpuhost's version on this host (always 1).").add(1, {"version": __version__}),
        Family(CHECK_TIMESTAMP, "gauge", "When gpuhost check read this host's facts, in seconds since the epoch.").add(
            facts.collected_at
        ),
        Family("gpuhost_check_duration_seconds", "gauge", "How long gpuhost check took on this host.").add(
            round(report.duration_ms / 1000, 4)
        ),
        Family(
            "gpuhost_check_exit_code",
            "gauge",
            "gpuhost check's exit code: 0 no failing finding, 1 a failing finding, 3 a source could not be read.",
        ).add(int(report.exit_code)),
        _findings(report),
        _unreadable(report),
        Family(
            "gpuhost_gpus", "gauge", "GPUs the NVIDIA driver (NVML) lists; 0 when it lists none or cannot be read."
        ).add(len(facts.gpu.gpus) if facts.gpu.status is SourceStatus.OK else 0),
    ]
    driver = _driver_info(report)
    if driver is not None:
        families.append(driver)
    families.append(_xids(report))
    families.extend(_disks(report))
    families.extend(_comfyui(report))
    return families


def render_report(report: CheckReport) -> str:
    return render(report_families(report))


def _findings(report: CheckReport) -> Family:
    family = Family(
        "gpuhost_finding",
        "gauge",
        "Findings of gpuhost check by rule id, area and severity (ok, warn, fail): how many the rule reported "
        "(usually 1). A healthy host exports its ok series.",
    )
    counts = Counter((f.id, f.area, f.severity.value) for f in report.findings)
    for (finding_id, area, severity), count in sorted(counts.items()):
        family.add(count, {"id": finding_id, "area": area, "severity": severity})
    return family


def _unreadable(report: CheckReport) -> Family:
    family = Family(
        "gpuhost_source_unreadable",
        "gauge",
        "1 when a source gpuhost check needs exists but could not be read (permissions, a broken library): "
        "the check then exits 3.",
    )
    for source in SOURCES:
        family.add(1 if source in report.unreadable_sources else 0, {"source": source})
    return family


def _driver_info(report: CheckReport) -> Optional[Family]:
    gpu = report.facts.gpu
    module = gpu.proc_driver.version if gpu.proc_driver else ""
    if not (gpu.driver_version or module):
        return None
    labels = {
        "version": gpu.driver_version,
        "kernel_module_version": module,
        "cuda_version": gpu.cuda_driver_version,
        "open_kernel_module": "" if gpu.proc_driver is None or gpu.proc_driver.open_kernel_module is None
        else str(gpu.proc_driver.open_kernel_module).lower(),
    }
    return Family(
        "gpuhost_gpu_driver_info",
        "gauge",
        "The NVIDIA driver: NVML's version, the loaded kernel module's, the CUDA version it supports and whether "
        "the module is the open one (always 1).",
    ).add(1, labels)


def _xids(report: CheckReport) -> Family:
    family = Family(
        "gpuhost_gpu_xid_events_total",
        "counter",
        "NVIDIA Xid events by code in the kernel log since boot (as far as the kernel's ring buffer still holds "
        "them): it restarts at 0 on reboot.",
    )
    for code, count in sorted(Counter(event.code for event in report.facts.kmsg.xids).items()):
        family.add(count, {"code": str(code)})
    return family


def _disks(report: CheckReport) -> list[Family]:
    free = Family(
        "gpuhost_disk_free_bytes",
        "gauge",
        "Free bytes (for unprivileged users, as df shows them) on the filesystem of Docker's data-root or of "
        "the models directory.",
    )
    size = Family(
        "gpuhost_disk_size_bytes",
        "gauge",
        "Size in bytes of the filesystem of Docker's data-root or of the models directory.",
    )
    facts = report.facts
    places: list[tuple[str, str, Optional[int], Optional[int]]] = []
    location = facts.docker.data_root_location
    if location is not None:
        places.append(("data-root", location.path, location.free_bytes, location.total_bytes))
    if facts.models.directory:
        places.append(("models", facts.models.directory, facts.models.free_bytes, facts.models.total_bytes))
    for use, path, free_bytes, total_bytes in places:
        if free_bytes is not None and total_bytes is not None:
            free.add(free_bytes, {"use": use, "path": path})
            size.add(total_bytes, {"use": use, "path": path})
    return [free, size]


def _comfyui(report: CheckReport) -> list[Family]:
    phase = Family(
        "gpuhost_comfyui_phase",
        "gauge",
        "Each ComfyUI container's readiness phase (starting, ready, failed, stalled): 1 for the phase it is in, "
        "0 for the others.",
    )
    queue = Family(
        "gpuhost_comfyui_queue_remaining",
        "gauge",
        "Prompts running or waiting in a ready ComfyUI container's queue (GET /prompt), when it answered.",
    )
    for container in report.facts.comfyui.containers:
        for candidate in Phase:
            phase.add(1 if container.verdict.phase is candidate else 0,
                      {"container": container.name, "phase": candidate.value})
        if container.queue_remaining is not None:
            queue.add(container.queue_remaining, {"container": container.name})
    return [phase, queue]
