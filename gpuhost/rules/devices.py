"""Device node permissions for the identities GPU containers run with.

NVML reports "Insufficient Permissions" when a container runs as a user that may not open
/dev/nvidia*: the nodes are often 0660 and owned by a group (video, render, or a custom one)
whose GID means nothing inside the image. The fix is --group-add with the host's GID.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuhost.facts.devices import DeviceNode
from gpuhost.facts.source import SourceStatus
from gpuhost.model import Finding, Severity

if TYPE_CHECKING:
    from gpuhost.facts.docker import ContainerGpuAccess
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions, RunAs


def _gpu_nodes(facts: HostFacts) -> list[DeviceNode]:
    return [n for n in facts.devices.nodes if n.is_char_device]


def container_identity(container: ContainerGpuAccess) -> tuple[int, list[int]] | None:
    """Numeric uid and gids of a container, or None when names would need the image's passwd."""
    user = container.user or "0"
    uid_text, _, gid_text = user.partition(":")
    if not uid_text.isdigit() or (gid_text and not gid_text.isdigit()):
        return None
    gids = [int(gid_text)] if gid_text else ([0] if uid_text == "0" else [])
    for group in container.group_add:
        if not group.isdigit():
            return None
        gids.append(int(group))
    return int(uid_text), gids


def _denied(nodes: list[DeviceNode], uid: int, gids: list[int]) -> list[DeviceNode]:
    return [n for n in nodes if not n.allows(uid, gids)]


def _denial(subject: str, uid: int, gids: list[int], denied: list[DeviceNode]) -> Finding:
    groups = sorted({n.gid for n in denied})
    return Finding(
        "devices.permissions",
        "devices",
        Severity.FAIL,
        f"{subject} runs as uid {uid} gids {gids or '[]'} and cannot open "
        + ", ".join(f"{n.path} ({n.mode} {n.uid}:{n.gid})" for n in denied[:4])
        + ": NVML fails with 'Insufficient Permissions'",
        "Add the device group to the container: " + " ".join(f"--group-add {g}" for g in groups)
        + " (roles/comfyui does this from the host's /dev/nvidia0 group).",
        {"uid": uid, "gids": gids, "denied": [n.path for n in denied], "device_gids": groups},
    )


def permissions(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    nodes = _gpu_nodes(facts)
    if not nodes:
        if facts.gpu.status is SourceStatus.OK and facts.gpu.gpus:
            return [
                Finding(
                    "devices.nodes",
                    "devices",
                    Severity.FAIL,
                    "NVML sees GPUs but /dev/nvidia* device nodes are missing",
                    "Run `nvidia-modprobe -u -c=0` or enable nvidia-persistenced so the nodes are created at boot.",
                    {},
                )
            ]
        return []
    findings: list[Finding] = []
    identities: list[tuple[str, RunAs | None, tuple[int, list[int]] | None]] = []
    if options.run_as is not None:
        identities.append(("--run-as", options.run_as, (options.run_as.uid, options.run_as.gids)))
    for container in facts.docker.containers:
        if container.uses_gpu and container.state in ("running", "created", "restarting"):
            identities.append((f"container {container.name}", None, container_identity(container)))
    for subject, _run_as, identity in identities:
        if identity is None:
            findings.append(
                Finding(
                    "devices.permissions",
                    "devices",
                    Severity.WARN,
                    f"{subject} runs as a named user or group, so gpuhost cannot tell whether it may open /dev/nvidia*",
                    "Use numeric --user UID:GID and --group-add GID so the identity is the same inside and outside.",
                    {},
                )
            )
            continue
        uid, gids = identity
        denied = _denied(nodes, uid, gids)
        if denied:
            findings.append(_denial(subject, uid, gids, denied))
    if not findings:
        restricted = sorted({(n.gid, n.group, n.mode) for n in nodes if int(n.mode, 8) & 0o006 != 0o006})
        message = f"{len(nodes)} device node(s) under /dev are usable by the GPU containers found"
        remedy = ""
        if restricted:
            message += "; nodes not open to others: " + ", ".join(
                f"gid {gid}{f' ({name})' if name else ''} mode {mode}" for gid, name, mode in restricted
            )
            remedy = "Non-root containers need --group-add " + ",".join(str(g) for g, _, _ in restricted) + "."
        findings.append(
            Finding(
                "devices.permissions",
                "devices",
                Severity.OK,
                message,
                remedy,
                {"nodes": [f"{n.path} {n.mode} {n.uid}:{n.gid}" for n in nodes]},
            )
        )
    return findings
