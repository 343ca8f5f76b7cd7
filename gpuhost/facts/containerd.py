"""containerd's root directory: where Docker keeps images when it uses the containerd image store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from gpuhost import userfile
from gpuhost.facts.storage import PathLocation, locate

try:
    import tomllib
except ImportError:  # Python < 3.11 on remote hosts
    import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]

CONFIG = "etc/containerd/config.toml"
DEFAULT_ROOT = "/var/lib/containerd"
# /info DriverStatus "driver-type" of a daemon that keeps images in containerd's store
CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1"


def image_store(info: dict[str, Any]) -> str:
    """"containerd" when the daemon that answered `info` (/info) keeps images in containerd's
    image store (Docker 29's default on fresh installs), else "classic" (graph drivers)."""
    status = info.get("DriverStatus")
    if isinstance(status, list):
        for pair in status:
            if isinstance(pair, list) and len(pair) == 2 and pair == ["driver-type", CONTAINERD_SNAPSHOTTER]:
                return "containerd"
    return "classic"


@dataclass
class ContainerdFacts:
    config_path: str = "/" + CONFIG
    config_error: str = ""
    root_dir: str = DEFAULT_ROOT
    location: PathLocation | None = None


def collect_containerd(root: str = "/") -> ContainerdFacts:
    facts = ContainerdFacts()
    path = os.path.join(root, CONFIG)
    try:
        config = tomllib.loads(userfile.read_text(path, "", userfile.HOST_CONFIG_MAX))
        configured = config.get("root")
        if isinstance(configured, str) and os.path.isabs(configured):
            facts.root_dir = configured
    except userfile.UserFileError as exc:
        if not exc.missing:
            facts.config_error = str(exc).replace(path, facts.config_path, 1)
    except (ValueError, RecursionError) as exc:  # tomllib recurses into nested arrays and tables
        facts.config_error = f"{facts.config_path}: {exc if isinstance(exc, ValueError) else 'nested too deeply'}"
    facts.location = locate(facts.root_dir, root)
    return facts
