"""Kernel, cgroup and sysctl facts from /proc and /sys, read under an injectable root."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gpuhost import userfile
from gpuhost.facts.source import SourceStatus
from gpuhost.model import optional_int


@dataclass
class KernelFacts:
    status: SourceStatus = SourceStatus.OK
    error: str = ""
    release: str = ""
    os_id: str = ""
    os_version_id: str = ""
    os_pretty_name: str = ""
    # "unified" (cgroup v2 only), "hybrid" (v1 controllers, v2 mounted beside) or "legacy" (v1)
    cgroup_mode: str = ""
    cgroup_version: int = 0
    bpf_jit_enable: int | None = None
    bpf_jit_harden: int | None = None
    sysctls: dict[str, str] = field(default_factory=dict)

    @property
    def jit_hardened(self) -> bool:
        """Constant blinding applies to root's programs too (runc loads them as root)."""
        return self.bpf_jit_harden == 2 and self.bpf_jit_enable != 0


SYSCTLS = (
    "net/core/bpf_jit_enable",
    "net/core/bpf_jit_harden",
    "kernel/unprivileged_bpf_disabled",
)


def _read(root: str, relative: str) -> str | None:
    return userfile.read_host_text(os.path.join(root, relative.lstrip("/")), userfile.HOST_CONFIG_MAX)


def parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def cgroup_mode_from_mountinfo(mountinfo: str) -> str:
    """Classify the cgroup setup the way systemd does, from /proc/self/mountinfo."""
    fstype_at: dict[str, str] = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        fstype_at[fields[4]] = right.split()[0]
    top = fstype_at.get("/sys/fs/cgroup")
    if top == "cgroup2":
        return "unified"
    if fstype_at.get("/sys/fs/cgroup/unified") == "cgroup2":
        return "hybrid"
    if top is not None or any(t == "cgroup" for t in fstype_at.values()):
        return "legacy"
    return ""


def collect_kernel(root: str = "/") -> KernelFacts:
    facts = KernelFacts()
    release = _read(root, "proc/sys/kernel/osrelease")
    if release is None:
        facts.status = SourceStatus.UNREADABLE
        facts.error = f"cannot read {os.path.join(root, 'proc/sys/kernel/osrelease')}"
        return facts
    facts.release = release.strip()

    os_release = _read(root, "etc/os-release") or _read(root, "usr/lib/os-release") or ""
    parsed = parse_os_release(os_release)
    facts.os_id = parsed.get("ID", "")
    facts.os_version_id = parsed.get("VERSION_ID", "")
    facts.os_pretty_name = parsed.get("PRETTY_NAME", "")

    for name in SYSCTLS:
        value = _read(root, f"proc/sys/{name}")
        if value is not None:
            facts.sysctls[name.replace("/", ".")] = value.strip()
    facts.bpf_jit_enable = optional_int(facts.sysctls.get("net.core.bpf_jit_enable"))
    facts.bpf_jit_harden = optional_int(facts.sysctls.get("net.core.bpf_jit_harden"))

    mountinfo = _read(root, "proc/self/mountinfo")
    mode = cgroup_mode_from_mountinfo(mountinfo) if mountinfo else ""
    if not mode:
        if os.path.exists(os.path.join(root, "sys/fs/cgroup/cgroup.controllers")):
            mode = "unified"
        elif os.path.isdir(os.path.join(root, "sys/fs/cgroup/unified")):
            mode = "hybrid"
        elif os.path.isdir(os.path.join(root, "sys/fs/cgroup")):
            mode = "legacy"
    facts.cgroup_mode = mode
    # Device access control follows the v1 devices controller unless the hierarchy is unified.
    facts.cgroup_version = {"unified": 2, "hybrid": 1, "legacy": 1}.get(mode, 0)
    return facts
