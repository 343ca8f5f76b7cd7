"""Driver packages and what may replace them: dpkg holds, unattended-upgrades, reboot-required,
the installed NVML library against the loaded module, the fabric manager's version."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

from gpuhost import userfile

DPKG_STATUS = "var/lib/dpkg/status"
APT_CONF_DIR = "etc/apt/apt.conf.d"
REBOOT_REQUIRED_PKGS = ("run/reboot-required.pkgs", "var/run/reboot-required.pkgs")
VERSIONLOCK_LIST = "etc/dnf/plugins/versionlock.list"
MODULE_VERSION = "sys/module/nvidia/version"
LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib64", "usr/lib")
MAX_FILE = 4 * 1024 * 1024

# Packages whose upgrade replaces the driver under a loaded module. The container toolkit's
# packages are NVIDIA's too but do not belong to the driver.
DRIVER_PACKAGE_RE = re.compile(
    r"^(lib)?nvidia-|^linux-(modules|objects|signatures)-nvidia-|^cuda-drivers|^firmware-nvidia-|"
    r"^xserver-xorg-video-nvidia"
)
NOT_DRIVER_RE = re.compile(r"container|^nvidia-ctk|^nvidia-docker")
FABRICMANAGER_RE = re.compile(r"^nvidia-fabric-?manager(-\d+)?$")


@dataclass
class PackageFacts:
    # dpkg-based host (Debian, Ubuntu)
    dpkg: bool = False
    # installed driver packages -> version, and which of them are held
    driver_packages: dict[str, str] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)
    unattended_upgrades_installed: bool = False
    # APT::Periodic::Unattended-Upgrade as configured ("" when no file sets it)
    unattended_upgrade_periodic: str = ""
    # Unattended-Upgrade::Package-Blacklist entries (regular expressions on package names)
    unattended_blacklist: list[str] = field(default_factory=list)
    versionlock: list[str] = field(default_factory=list)
    reboot_required_pkgs: list[str] = field(default_factory=list)
    # libnvidia-ml.so.<version> files on disk, and the loaded kernel module's version
    nvml_library_versions: list[str] = field(default_factory=list)
    module_version: str = ""
    fabricmanager_package: str = ""
    fabricmanager_version: str = ""

    @property
    def unattended_upgrades_enabled(self) -> bool:
        return self.unattended_upgrades_installed and self.unattended_upgrade_periodic not in ("", "0")

    def blacklisted(self, package: str) -> bool:
        for pattern in self.unattended_blacklist:
            try:
                if re.match(pattern, package):
                    return True
            except re.error:
                if package.startswith(pattern):
                    return True
        return False


def _read(root: str, relative: str) -> str | None:
    return userfile.read_host_prefix(os.path.join(root, relative), MAX_FILE)


def parse_dpkg_packages(text: str) -> dict[str, tuple[str, bool]]:
    """Installed packages -> (version, held) from /var/lib/dpkg/status."""
    packages: dict[str, tuple[str, bool]] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        status = fields.get("Status", "").split()
        name = fields.get("Package")
        if name and len(status) == 3 and status[2] == "installed":
            packages[name] = (fields.get("Version", ""), status[0] == "hold")
    return packages


_COMMENT_RE = re.compile(r"^\s*(//|#(?!include|clear)).*$", re.MULTILINE)
_PERIODIC_RE = re.compile(r'APT::Periodic::Unattended-Upgrade\s+"(?P<value>[^"]*)"\s*;')
_BLACKLIST_RE = re.compile(r"Unattended-Upgrade::Package-Blacklist\s*\{(?P<body>[^}]*)\}", re.DOTALL)
_ENTRY_RE = re.compile(r'"(?P<entry>[^"]+)"')


def parse_apt_conf(texts: list[str]) -> tuple[str, list[str]]:
    """(APT::Periodic::Unattended-Upgrade, Package-Blacklist entries) over apt.conf.d files in the
    order apt reads them: the last value wins, list entries add up."""
    periodic = ""
    blacklist: list[str] = []
    for text in texts:
        text = _COMMENT_RE.sub("", text)
        for match in _PERIODIC_RE.finditer(text):
            periodic = match.group("value")
        for match in _BLACKLIST_RE.finditer(text):
            blacklist.extend(m.group("entry") for m in _ENTRY_RE.finditer(match.group("body")))
    return periodic, blacklist


def _apt_conf_texts(root: str) -> list[str]:
    directory = os.path.join(root, APT_CONF_DIR)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    texts = []
    for name in names:
        # apt ignores files with other characters or with a dot in their name (except .conf)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or ("." in name and not name.endswith(".conf")):
            continue
        text = _read(root, os.path.join(APT_CONF_DIR, name))
        if text is not None:
            texts.append(text)
    return texts


def nvml_library_versions(root: str) -> list[str]:
    versions: set[str] = set()
    for directory in LIBRARY_DIRS:
        for path in glob.glob(os.path.join(root, directory, "libnvidia-ml.so.*")):
            suffix = os.path.basename(path)[len("libnvidia-ml.so."):]
            if re.fullmatch(r"\d+\.\d+(\.\d+)?", suffix):
                versions.add(suffix)
    return sorted(versions)


def collect_packages(root: str = "/") -> PackageFacts:
    facts = PackageFacts()
    status = _read(root, DPKG_STATUS)
    if status is not None:
        facts.dpkg = True
        packages = parse_dpkg_packages(status)
        for name, (version, held) in sorted(packages.items()):
            if FABRICMANAGER_RE.match(name):
                facts.fabricmanager_package, facts.fabricmanager_version = name, version
            if DRIVER_PACKAGE_RE.search(name) and not NOT_DRIVER_RE.search(name):
                facts.driver_packages[name] = version
                if held:
                    facts.held.append(name)
        facts.unattended_upgrades_installed = "unattended-upgrades" in packages
        facts.unattended_upgrade_periodic, facts.unattended_blacklist = parse_apt_conf(_apt_conf_texts(root))
    lock = _read(root, VERSIONLOCK_LIST)
    if lock is not None:
        facts.versionlock = [line.strip() for line in lock.splitlines() if line.strip() and not line.startswith("#")]
    for relative in REBOOT_REQUIRED_PKGS:
        text = _read(root, relative)
        if text is not None:
            facts.reboot_required_pkgs = sorted({line.strip() for line in text.splitlines() if line.strip()})
            break
    facts.nvml_library_versions = nvml_library_versions(root)
    facts.module_version = (_read(root, MODULE_VERSION) or "").strip()
    return facts
