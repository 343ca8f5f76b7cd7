"""CDI spec health: valid, fresh for the running driver, one definition per device, one writer."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gpuhost.facts.source import SourceStatus
from gpuhost.model import Finding, Severity

if TYPE_CHECKING:
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions

GPU_KIND = "nvidia.com/gpu"
REGENERATE = (
    "Regenerate the spec: `systemctl restart nvidia-cdi-refresh.service` (toolkit >= 1.18) or "
    "`nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`."
)


def specs(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    findings: list[Finding] = []
    cdi = facts.cdi
    running_driver = facts.gpu.driver_version if facts.gpu.status is SourceStatus.OK else ""
    for spec in cdi.specs:
        if not spec.valid:
            findings.append(
                Finding(
                    "cdi.spec-invalid",
                    "cdi",
                    Severity.FAIL,
                    f"{spec.path}: {spec.error}; Docker and the nvidia runtime reject every CDI request "
                    "while it is there",
                    f"Remove or fix the file. {REGENERATE}",
                    {"path": spec.path},
                )
            )
        elif spec.kind == GPU_KIND and running_driver and spec.driver_version and spec.driver_version != running_driver:
            findings.append(
                Finding(
                    "cdi.spec-stale",
                    "cdi",
                    Severity.FAIL,
                    f"{spec.path} was generated for driver {spec.driver_version} but driver {running_driver} is "
                    "running: containers would mount libraries that no longer exist",
                    REGENERATE,
                    {"path": spec.path, "spec_driver": spec.driver_version, "running_driver": running_driver},
                )
            )

    owners: dict[str, list[str]] = {}
    for spec in cdi.specs:
        if spec.valid:
            for name in spec.qualified_devices:
                owners.setdefault(name, []).append(spec.path)
    duplicates = {name: paths for name, paths in owners.items() if len(paths) > 1}
    if duplicates:
        files = sorted({p for paths in duplicates.values() for p in paths})
        findings.append(
            Finding(
                "cdi.spec-duplicate",
                "cdi",
                Severity.FAIL,
                f"{len(duplicates)} CDI device name(s) are defined in more than one file ({', '.join(files)}): "
                "`--device nvidia.com/gpu=all` fails with a conflict",
                "Keep one CDI writer: nvidia-cdi-refresh writes /var/run/cdi/nvidia.yaml; remove "
                "/etc/cdi/nvidia.yaml and disable any other generator.",
                {"duplicates": duplicates},
            )
        )

    gpu_specs = [s for s in cdi.specs if s.valid and s.kind == GPU_KIND]
    if not gpu_specs:
        has_gpu = facts.gpu.status is SourceStatus.OK and bool(facts.gpu.gpus)
        findings.append(
            Finding(
                "cdi.spec-missing",
                "cdi",
                Severity.FAIL if has_gpu else Severity.OK,
                "no CDI spec defines nvidia.com/gpu"
                + (
                    ": jit-cdi and `--device nvidia.com/gpu=all` have nothing to use"
                    if has_gpu
                    else " (expected without a GPU driver: the spec is generated from it)"
                ),
                REGENERATE if has_gpu else "",
                {"spec_dirs": cdi.spec_dirs},
            )
        )
    elif not any(f.severity is Severity.FAIL for f in findings):
        devices = sorted({d for s in gpu_specs for d in s.devices})
        findings.append(
            Finding(
                "cdi.spec",
                "cdi",
                Severity.OK,
                f"CDI spec {', '.join(s.path for s in gpu_specs)}: devices {', '.join(devices)}"
                + (f" (driver {gpu_specs[0].driver_version})" if gpu_specs[0].driver_version else ""),
                "",
                {"specs": [s.path for s in gpu_specs], "devices": devices},
            )
        )
    return findings


def writers(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    enabled = [u.name for u in facts.toolkit.cdi_writer_units if u.enabled]
    refresh = [u for u in enabled if u.startswith("nvidia-cdi-refresh")]
    own = [u for u in enabled if u.startswith("gpuhost-cdi-generate")]
    if refresh and own:
        return [
            Finding(
                "cdi.writers",
                "cdi",
                Severity.FAIL,
                f"two CDI spec writers are enabled ({', '.join(enabled)}): they write nvidia.com/gpu twice",
                "Disable gpuhost-cdi-generate.service where the toolkit ships nvidia-cdi-refresh "
                "(roles/nvidia_container_toolkit does this).",
                {"enabled": enabled},
            )
        ]
    return []


REQUIRED_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm")
REFRESH_SERVICE = "nvidia-cdi-refresh.service"
REFRESH_PATH = "nvidia-cdi-refresh.path"


# How `nvidia-ctk cdi generate --device-name-strategy` names a whole GPU (pkg/nvcdi/namer.go of the
# toolkit; MIG devices are "1:0", "mig1:0" and "MIG-<uuid>"): each strategy names every GPU, and the
# toolkit's default (1.20) is index and uuid together.
GPU_NAME_STRATEGIES = {
    "index": re.compile(r"\d+"),
    "type-index": re.compile(r"gpu\d+"),
    "uuid": re.compile(r"GPU-[0-9a-fA-F-]+"),
}


def gpus_named(devices: list[str], nvml_uuids: list[str]) -> dict[str, int]:
    """How many whole GPUs a spec names under each strategy it uses (by UUID: those NVML sees, when
    it says)."""
    named: dict[str, int] = {}
    for strategy, pattern in GPU_NAME_STRATEGIES.items():
        names = {d for d in devices if pattern.fullmatch(d)}
        if strategy == "uuid" and nvml_uuids:
            names &= set(nvml_uuids)
        if names:
            named[strategy] = len(names)
    return named


def completeness(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    findings = []
    gpus = len(facts.gpu.gpus) if facts.gpu.status is SourceStatus.OK else 0
    for spec in facts.cdi.specs:
        if not spec.valid or spec.kind != GPU_KIND:
            continue
        problems = []
        missing_nodes = [n for n in REQUIRED_NODES if spec.device_nodes is not None and n not in spec.device_nodes]
        if missing_nodes:
            problems.append(f"no {' or '.join(missing_nodes)}")
        named = gpus_named(spec.devices, [g.uuid for g in facts.gpu.gpus if g.uuid] if gpus else [])
        best = max(named.values(), default=0)
        if gpus and best < gpus:
            problems.append(f"{best} GPU device(s) for the {gpus} NVML sees")
        if problems:
            findings.append(
                Finding(
                    "cdi.spec-incomplete",
                    "cdi",
                    Severity.FAIL,
                    f"{spec.path} is incomplete ({'; '.join(problems)}), as a spec generated before the driver "
                    "finished loading is: requests fail with `unresolvable CDI devices` or containers lack devices",
                    REGENERATE,
                    {"path": spec.path, "device_nodes": spec.device_nodes, "devices": spec.devices, "nvml_gpus": gpus,
                     "gpus_named": named},
                )
            )
        if spec.missing_hooks:
            findings.append(
                Finding(
                    "cdi.hook-missing",
                    "cdi",
                    Severity.FAIL,
                    f"{spec.path} calls {', '.join(spec.missing_hooks)}, which does not exist on this host: every "
                    f"container using the spec fails with `fork/exec {spec.missing_hooks[0]}: "
                    "no such file or directory`",
                    "Install nvidia-container-toolkit-base (it ships nvidia-cdi-hook), then regenerate the spec so its "
                    f"hook paths are this host's. {REGENERATE}",
                    {"path": spec.path, "missing_hooks": spec.missing_hooks},
                )
            )
    return findings


def refresh(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    units = facts.units
    if units.status is not SourceStatus.OK:
        return []
    service, watcher = units.get(REFRESH_SERVICE), units.get(REFRESH_PATH)
    problems = []
    if service is not None and service.exists and service.load_state != "masked" and service.failed:
        problems.append(f"{REFRESH_SERVICE} is {service.active_state} (result {service.result})")
    if (
        watcher is not None
        and watcher.unit_file_state == "enabled"
        and not watcher.active
    ):
        problems.append(f"{REFRESH_PATH} is enabled but {watcher.active_state}: driver changes go unnoticed")
    if not problems:
        return []
    return [
        Finding(
            "cdi.refresh-failed",
            "cdi",
            Severity.FAIL,
            "the CDI spec is not kept fresh: " + "; ".join(problems)
            + "; after the next reboot or driver change requests fail with `unresolvable CDI devices`",
            f"`systemctl reset-failed {REFRESH_SERVICE} && systemctl restart {REFRESH_SERVICE} && "
            f"systemctl enable --now {REFRESH_PATH}`; if it fails again, `journalctl -u {REFRESH_SERVICE}` says why.",
            {
                "service": {"active": service.active_state, "result": service.result} if service else None,
                "path": {"active": watcher.active_state, "enabled": watcher.unit_file_state} if watcher else None,
            },
        )
    ]
