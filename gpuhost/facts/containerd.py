"""containerd's root directory: where Docker keeps images when it uses the containerd image store."""

from __future__ import annotations

import os
from dataclasses import dataclass

from gpuhost.facts.storage import PathLocation, locate

try:
    import tomllib
except ImportError:  # Python < 3.11 on remote hosts
    import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]

CONFIG = "etc/containerd/config.toml"
DEFAULT_ROOT = "/var/lib/containerd"


@dataclass
class ContainerdFacts:
    config_path: str = "/" + CONFIG
    config_error: str = ""
    root_dir: str = DEFAULT_ROOT
    location: PathLocation | None = None


def collect_containerd(root: str = "/") -> ContainerdFacts:
    facts = ContainerdFacts()
    try:
        with open(os.path.join(root, CONFIG), "rb") as fh:
            config = tomllib.load(fh)
        configured = config.get("root")
        if isinstance(configured, str) and os.path.isabs(configured):
            facts.root_dir = configured
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        facts.config_error = f"{facts.config_path}: {exc}"
    facts.location = locate(facts.root_dir, root)
    return facts
