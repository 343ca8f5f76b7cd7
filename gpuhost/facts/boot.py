"""The kernel that boots next and whether an NVIDIA module is built for it (/boot, /lib/modules)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from gpuhost import userfile

SECURE_BOOT_EFIVAR = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e098032b8c4b"
MODULE_NAMES = ("nvidia.ko", "nvidia.ko.xz", "nvidia.ko.zst", "nvidia.ko.gz")
SIGNATURE_MARK = b"~Module signature appended~\n"
GRUBENV = ("boot/grub2/grubenv", "boot/grub/grubenv")
MAX_WALK_ENTRIES = 50000


@dataclass
class BootFacts:
    running: str = ""
    next: str = ""
    # how `next` was found: grubenv saved_entry, /boot/vmlinuz link, newest installed, running
    next_source: str = ""
    installed: list[str] = field(default_factory=list)
    # nvidia.ko* under /lib/modules/<next>, relative to that directory
    next_nvidia_modules: list[str] = field(default_factory=list)
    # the uncompressed ones that carry no module signature
    next_unsigned_modules: list[str] = field(default_factory=list)
    secure_boot: bool | None = None


def _version_key(release: str) -> list[tuple[int, str]]:
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.findall(r"\d+|[A-Za-z]+", release)]


def installed_kernels(root: str) -> list[str]:
    """Releases with a modules directory and a kernel image (a removed kernel can leave its modules
    directory behind)."""
    try:
        names = os.listdir(os.path.join(root, "lib/modules"))
    except OSError:
        return []
    kernels = [
        name
        for name in names
        if os.path.exists(os.path.join(root, "boot", f"vmlinuz-{name}"))
        or os.path.exists(os.path.join(root, "lib/modules", name, "vmlinuz"))
    ]
    return sorted(kernels, key=_version_key)


def _saved_entry(root: str, installed: list[str]) -> str:
    for relative in GRUBENV:
        text = userfile.read_host_prefix(os.path.join(root, relative), 4096)
        if text is None:
            continue
        for line in text.splitlines():
            if line.startswith("saved_entry="):
                entry = line.split("=", 1)[1].strip()
                # grubby names entries <machine-id>-<release>; Debian's are menu titles or indices
                matches = [k for k in installed if entry.endswith(k)]
                if matches:
                    return max(matches, key=len)
    return ""


def next_kernel(root: str, running: str, installed: list[str]) -> tuple[str, str]:
    saved = _saved_entry(root, installed)
    if saved:
        return saved, "grubenv saved_entry"
    link = os.path.join(root, "boot/vmlinuz")
    if os.path.islink(link):
        target = os.path.basename(os.readlink(link))
        if target.startswith("vmlinuz-"):
            return target[len("vmlinuz-"):], "/boot/vmlinuz"
    if installed:
        return installed[-1], "newest installed kernel"
    return running, "running kernel"


def nvidia_modules(root: str, release: str) -> tuple[list[str], list[str]]:
    base = os.path.join(root, "lib/modules", release)
    found: list[str] = []
    unsigned: list[str] = []
    seen = 0
    for directory, dirs, files in os.walk(base):
        seen += len(files) + len(dirs)
        if seen > MAX_WALK_ENTRIES:
            break
        for name in files:
            if name in MODULE_NAMES:
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, base)
                found.append(relative)
                if name == "nvidia.ko" and not _signed(path):
                    unsigned.append(relative)
    return sorted(found), sorted(unsigned)


def _signed(path: str) -> bool:
    try:
        fd = userfile.open_regular(path)
    except userfile.UserFileError:
        return False
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, len(SIGNATURE_MARK), max(0, size - len(SIGNATURE_MARK))) == SIGNATURE_MARK
    except OSError:
        return False
    finally:
        os.close(fd)


def read_secure_boot(root: str) -> bool | None:
    try:
        fd = userfile.open_regular(os.path.join(root, SECURE_BOOT_EFIVAR))
    except userfile.UserFileError:
        return None
    try:
        data = os.read(fd, 16)
    except OSError:
        return None
    finally:
        os.close(fd)
    return len(data) >= 5 and data[4] == 1


def collect_boot(root: str = "/", running: str = "") -> BootFacts:
    facts = BootFacts(running=running)
    facts.installed = installed_kernels(root)
    facts.next, facts.next_source = next_kernel(root, running, facts.installed)
    if facts.next:
        facts.next_nvidia_modules, facts.next_unsigned_modules = nvidia_modules(root, facts.next)
    facts.secure_boot = read_secure_boot(root)
    return facts
