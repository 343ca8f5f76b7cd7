"""The machine under the driver: NVIDIA PCI functions by class (GPUs, NVSwitches), the DMI product
name (the instance type on EC2 Nitro), and the /dev/char links systemd needs for /dev/nvidia*."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from gpuhost import userfile

PCI_DEVICES = "sys/bus/pci/devices"
DMI_PRODUCT_NAME = "sys/class/dmi/id/product_name"
NVIDIA_VENDOR = "0x10de"
# PCI class 0x0680xx: bridge, other. NVIDIA's NVSwitches show up as this (the EKS AMI tests the same).
NVSWITCH_CLASS_PREFIX = "0x0680"
# 0x0300xx VGA, 0x0302xx 3D controller
GPU_CLASS_PREFIXES = ("0x0300", "0x0302")


@dataclass
class PciFunction:
    address: str
    vendor: str
    device: str
    pci_class: str


@dataclass
class PlatformFacts:
    product_name: str = ""
    nvidia_gpus: list[PciFunction] = field(default_factory=list)
    nvswitches: list[PciFunction] = field(default_factory=list)
    # /dev/nvidia* character devices, and those without a /dev/char/<major>:<minor> link
    nvidia_nodes: list[str] = field(default_factory=list)
    char_links_missing: list[str] = field(default_factory=list)


def _read(path: str) -> str:
    return (userfile.read_host_prefix(path, 256) or "").strip()


def nvidia_pci_functions(root: str) -> list[PciFunction]:
    base = os.path.join(root, PCI_DEVICES)
    try:
        addresses = sorted(os.listdir(base))
    except OSError:
        return []
    functions = []
    for address in addresses:
        vendor = _read(os.path.join(base, address, "vendor")).lower()
        if vendor != NVIDIA_VENDOR:
            continue
        functions.append(
            PciFunction(
                address=address,
                vendor=vendor,
                device=_read(os.path.join(base, address, "device")).lower(),
                pci_class=_read(os.path.join(base, address, "class")).lower(),
            )
        )
    return functions


def char_links(dev_root: str) -> tuple[list[str], list[str]]:
    """(/dev/nvidia* character devices, those lacking /dev/char/MAJOR:MINOR)."""
    nodes: list[str] = []
    missing: list[str] = []
    try:
        names = sorted(os.listdir(dev_root))
    except OSError:
        return nodes, missing
    for name in names:
        if not name.startswith("nvidia"):
            continue
        path = os.path.join(dev_root, name)
        try:
            info = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISCHR(info.st_mode):
            continue
        shown = f"/dev/{name}"
        nodes.append(shown)
        link = os.path.join(dev_root, "char", f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}")
        if not os.path.lexists(link):
            missing.append(shown)
    return nodes, missing


def collect_platform(root: str = "/", dev_root: str = "/dev") -> PlatformFacts:
    facts = PlatformFacts(product_name=_read(os.path.join(root, DMI_PRODUCT_NAME)))
    for function in nvidia_pci_functions(root):
        if function.pci_class.startswith(NVSWITCH_CLASS_PREFIX):
            facts.nvswitches.append(function)
        elif function.pci_class.startswith(GPU_CLASS_PREFIXES):
            facts.nvidia_gpus.append(function)
    facts.nvidia_nodes, facts.char_links_missing = char_links(dev_root)
    return facts
