"""`gpuhost check` across many hosts: over SSH with the shipped agent, from `--host` specs or an
Ansible inventory, in parallel, with every host's failure reported as that host's finding."""

from __future__ import annotations

from gpuhost.fleet.report import FLEET_SCHEMA, FleetReport, HostResult
from gpuhost.fleet.runner import DEFAULT_CONNECT_TIMEOUT, DEFAULT_FORKS, DEFAULT_TIMEOUT, FleetOptions, run_fleet
from gpuhost.fleet.targets import Target, parse_host_spec

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
