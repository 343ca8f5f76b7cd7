"""The packages dpkg has installed, from its status database, for every collector that asks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from gpuhost import userfile

STATUS = "var/lib/dpkg/status"


@dataclass(frozen=True)
class InstalledPackage:
    version: str
    held: bool  # `apt-mark hold`: dpkg's selection is hold


def parse_status(text: str) -> dict[str, InstalledPackage]:
    """Installed packages by name, in the database's order; removed ones (config-files, not-installed)
    are left out."""
    packages: dict[str, InstalledPackage] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        # Status: want flag status, e.g. "install ok installed", "hold ok installed"
        status = fields.get("Status", "").split()
        name = fields.get("Package")
        if name and len(status) == 3 and status[2] == "installed":
            packages[name] = InstalledPackage(fields.get("Version", ""), status[0] == "hold")
    return packages


def read_installed(root: str = "/") -> Optional[dict[str, InstalledPackage]]:
    """The installed packages of the host (or of a captured tree at `root`); None on a host without
    dpkg's database, or where it cannot be read."""
    text = userfile.read_host_text(os.path.join(root, STATUS), userfile.HOST_DATABASE_MAX)
    return parse_status(text) if text is not None else None
