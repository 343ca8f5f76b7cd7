"""Ownership and mode of the NVIDIA device nodes (/dev/nvidia*)."""

from __future__ import annotations

import grp
import os
import stat
from dataclasses import dataclass, field


@dataclass
class DeviceNode:
    path: str
    uid: int
    gid: int
    group: str
    mode: str  # octal permission bits, e.g. "0660"
    is_char_device: bool

    def allows(self, uid: int, gids: list[int]) -> bool:
        """Whether an identity (uid and all its groups) may open the node read-write."""
        bits = int(self.mode, 8)
        if uid == 0:
            return True
        if uid == self.uid:
            return bits & 0o600 == 0o600
        if self.gid in gids:
            return bits & 0o060 == 0o060
        return bits & 0o006 == 0o006


@dataclass
class DeviceFacts:
    nodes: list[DeviceNode] = field(default_factory=list)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def collect_devices(dev_root: str = "/dev") -> DeviceFacts:
    facts = DeviceFacts()
    candidates: list[str] = []
    try:
        candidates = sorted(n for n in os.listdir(dev_root) if n.startswith("nvidia"))
    except OSError:
        return facts
    for name in candidates:
        path = os.path.join(dev_root, name)
        try:
            info = os.stat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            # /dev/nvidia-caps holds MIG capability nodes; list them too.
            for child in sorted(os.listdir(path)):
                child_path = os.path.join(path, child)
                try:
                    child_info = os.stat(child_path)
                except OSError:
                    continue
                facts.nodes.append(_node(child_path, child_info))
            continue
        facts.nodes.append(_node(path, info))
    return facts


def _node(path: str, info: os.stat_result) -> DeviceNode:
    return DeviceNode(
        path=path,
        uid=info.st_uid,
        gid=info.st_gid,
        group=_group_name(info.st_gid),
        mode=f"{stat.S_IMODE(info.st_mode):04o}",
        is_char_device=stat.S_ISCHR(info.st_mode),
    )
