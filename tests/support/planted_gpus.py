"""A planted multi-GPU host: the CDI spec nvidia-ctk writes for N GPUs and the device nodes the driver
makes, under a directory that stands for the root of the host.

The spec is the one recorded on a real H100 host (tests/fixtures/cdi/nvidia-h100-580.159.04.yaml) with
its one GPU repeated: per GPU a device named by its index and one named by its UUID, both giving that
GPU's /dev/nvidiaN, and `all` giving every node. The nodes are real character devices (NVIDIA's major
195), owned by `gid`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from tests.support.paths import FIXTURES

RECORDED_SPEC = FIXTURES / "cdi" / "nvidia-h100-580.159.04.yaml"
NVIDIA_MAJOR = 195


def gpu_uuid(index: int) -> str:
    return f"GPU-{index:08x}-f7f2-8149-8c59-933b6717452f"


def cdi_spec(count: int) -> dict[str, object]:
    spec = yaml.safe_load(RECORDED_SPEC.read_text())
    devices: list[dict[str, object]] = []
    for index in range(count):
        nodes = {"deviceNodes": [{"path": f"/dev/nvidia{index}"}]}
        devices.append({"name": str(index), "containerEdits": nodes})
        devices.append({"name": gpu_uuid(index), "containerEdits": nodes})
    devices.append({"name": "all", "containerEdits": {
        "deviceNodes": [{"path": f"/dev/nvidia{index}"} for index in range(count)]}})
    spec["devices"] = devices
    return dict(spec)


def make_node(path: Path, minor: int, gid: int = 0, mode: int = 0o660) -> None:
    if not path.exists():
        os.mknod(path, stat.S_IFCHR | mode, os.makedev(NVIDIA_MAJOR, minor))
    os.chown(path, 0, gid)
    os.chmod(path, mode)


def plant_gpu_host(root: Path, count: int, *, spec: bool = True, gid: int = 0) -> Path:
    """`root` made to look like a host with `count` GPUs: /etc/cdi/nvidia.yaml (unless spec is False),
    /dev/nvidia0..N-1 and /dev/nvidiactl."""
    (root / "dev").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        make_node(root / "dev" / f"nvidia{index}", index, gid)
    make_node(root / "dev" / "nvidiactl", 255, gid)
    if spec:
        (root / "etc" / "cdi").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "cdi" / "nvidia.yaml").write_text(yaml.safe_dump(cdi_spec(count), sort_keys=False))
    return root
