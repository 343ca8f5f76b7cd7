"""`gpuhost check` across many hosts: over SSH with the shipped agent, from `--host` specs or an
Ansible inventory, in parallel, with every host's failure reported as that host's finding.

What this package exports loads on first use: the check command's options (gpuhost.fleet.options) are
read by the agent too, on hosts without paramiko or Ansible."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpuhost.fleet.options import DEFAULT_CONNECT_TIMEOUT, DEFAULT_FORKS, DEFAULT_TIMEOUT
    from gpuhost.fleet.report import FLEET_SCHEMA, FleetReport, HostResult
    from gpuhost.fleet.runner import FleetOptions, run_fleet
    from gpuhost.fleet.targets import Target, parse_host_spec

_WHERE = {
    "DEFAULT_CONNECT_TIMEOUT": "gpuhost.fleet.options",
    "DEFAULT_FORKS": "gpuhost.fleet.options",
    "DEFAULT_TIMEOUT": "gpuhost.fleet.options",
    "FLEET_SCHEMA": "gpuhost.fleet.report",
    "FleetOptions": "gpuhost.fleet.runner",
    "FleetReport": "gpuhost.fleet.report",
    "HostResult": "gpuhost.fleet.report",
    "Target": "gpuhost.fleet.targets",
    "parse_host_spec": "gpuhost.fleet.targets",
    "run_fleet": "gpuhost.fleet.runner",
}

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_FORKS",
    "DEFAULT_TIMEOUT",
    "FLEET_SCHEMA",
    "FleetOptions",
    "FleetReport",
    "HostResult",
    "Target",
    "parse_host_spec",
    "run_fleet",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'gpuhost.fleet' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
