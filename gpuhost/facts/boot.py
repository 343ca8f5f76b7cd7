"""The kernel that boots next and whether an NVIDIA module is built for it (/boot, /lib/modules)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from gpuhost import userfile

SECURE_BOOT_EFIVAR = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e098032b8c4b"
# The NVIDIA core module as each packaging names its file (its -modeset, -drm, -uvm and -peermem
# siblings are not it), compressed as the kernel's own modules are:
# - nvidia.ko: NVIDIA's installer (kernel/drivers/video/), Ubuntu's DKMS packages nvidia-dkms-N[-open]
#   (updates/dkms/nvidia.ko.zst on 24.04) and its prebuilt linux-modules-nvidia-N[-server][-open]-KERNEL
#   (kernel/nvidia-N/, kernel/nvidia-Nsrv/, kernel/nvidia-Nsrv-open/).
# - Debian's DKMS packages rename it (dkms.conf DEST_MODULE_NAME[0]="$PACKAGE_NAME", in updates/dkms/;
#   /etc/nvidia/<flavour>/nvidia-modprobe.conf has `install nvidia modprobe -i nvidia-current`):
#   nvidia-kernel-dkms -> nvidia-current.ko, nvidia-open-kernel-dkms -> nvidia-current-open.ko,
#   nvidia-tesla[-N]-kernel-dkms -> nvidia-tesla[-N].ko, nvidia-legacy-Nxx-kernel-dkms -> nvidia-legacy-Nxx.ko
#   (read from the bookworm 535.261.03 and trixie 550.163.01 packages, tesla 470/525/535).
# - Compression: DKMS compresses like the kernel's modules (dkms 3.x: .gz, .xz, .zst); Debian 12's
#   are uncompressed, Debian 13's .ko.xz (under /usr/lib/modules), Ubuntu 24.04's .ko.zst.
MODULE_RE = re.compile(r"nvidia(?:-(?:current|tesla(?:-\d+)?|legacy-\d+xx))?(?:-open)?\.ko(?:\.(?:xz|zst|gz))?")
SIGNATURE_MARK = b"~Module signature appended~\n"
GRUBENV = ("boot/grub2/grubenv", "boot/grub/grubenv")
GRUB_CFG = ("boot/grub2/grub.cfg", "boot/grub/grub.cfg")
MAX_GRUB_CFG = 1024 * 1024
# grub.cfg's `set default="..."` (00_header): "${saved_entry}" with GRUB_DEFAULT=saved, a title, an id or
# an index otherwise; "${next_entry}" is grub-reboot's one-time choice, read from grubenv first
GRUB_DEFAULT_RE = re.compile(r'^\s*set default="(?P<value>[^"]*)"', re.M)
VMLINUZ_LINKS = ("boot/vmlinuz", "vmlinuz")
MAX_WALK_ENTRIES = 50000


@dataclass
class BootFacts:
    running: str = ""
    next: str = ""
    # how `next` was found: grubenv next_entry or saved_entry, grub.cfg default, the /boot/vmlinuz or
    # /vmlinuz link, newest installed kernel, running kernel
    next_source: str = ""
    installed: list[str] = field(default_factory=list)
    # the NVIDIA core module (MODULE_RE) under /lib/modules/<next>, relative to that directory
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


def _grubenv(root: str) -> dict[str, str]:
    for relative in GRUBENV:
        text = userfile.read_host_prefix(os.path.join(root, relative), 4096)
        if text is None:
            continue
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {}


def _grub_cfg(root: str) -> str | None:
    for relative in GRUB_CFG:
        try:
            with open(os.path.join(root, relative), encoding="utf-8", errors="replace") as fh:
                return fh.read(MAX_GRUB_CFG)
        except OSError:
            continue
    return None


def grub_entry(root: str) -> tuple[str, str]:
    """(the menu entry GRUB boots next, where it was read): grubenv's next_entry (grub-reboot, once);
    else grub.cfg's default, which is grubenv's saved_entry with GRUB_DEFAULT=saved (and where no
    grub.cfg can be read); ("", "") when nothing names one (GRUB boots its first entry)."""
    env = _grubenv(root)
    if env.get("next_entry", "").strip():
        return env["next_entry"].strip(), "grubenv next_entry"
    cfg = _grub_cfg(root)
    defaults = [m.group("value") for m in GRUB_DEFAULT_RE.finditer(cfg or "") if m.group("value") != "${next_entry}"]
    if cfg is None or (defaults and defaults[-1] == "${saved_entry}"):
        saved = env.get("saved_entry", "").strip()
        return (saved, "grubenv saved_entry") if saved else ("", "")
    return (defaults[-1].strip(), "grub.cfg default") if defaults else ("", "")


def kernel_of_entry(entry: str, installed: list[str]) -> str:
    """The installed release a GRUB menu entry boots, named by title or by id, with or without its
    submenu, as Debian's 10_linux and grubby write them:
      Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)
      gnulinux-advanced-<uuid>>gnulinux-6.1.0-18-amd64-advanced-<uuid>
      <machine-id>-6.1.79-99.167.amzn2023.x86_64 (a BLS entry)
    "" for an index, the version-less first entry (`gnulinux-simple-<uuid>`, the newest kernel) or an
    entry that names no installed kernel."""
    last = entry.split(">")[-1]
    matches = [
        release for release in installed
        if re.search(rf"(?:^|[\s-]){re.escape(release)}(?:$|[\s(-])", last)
    ]
    return max(matches, key=len) if matches else ""


def next_kernel(root: str, running: str, installed: list[str]) -> tuple[str, str]:
    entry, where = grub_entry(root)
    pinned = kernel_of_entry(entry, installed) if entry else ""
    if pinned:
        return pinned, where
    for relative in VMLINUZ_LINKS:
        link = os.path.join(root, relative)
        if os.path.islink(link):
            target = os.path.basename(os.readlink(link))
            if target.startswith("vmlinuz-"):
                return target[len("vmlinuz-"):], f"/{relative}"
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
            if MODULE_RE.fullmatch(name):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, base)
                found.append(relative)
                # a compressed module carries its signature inside the compressed data: not read here
                if name.endswith(".ko") and not _signed(path):
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
