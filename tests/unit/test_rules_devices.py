"""Device nodes: whether a container (or --run-as) can open /dev/nvidia*, and the nodes being there."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from gpuhost.facts.devices import DeviceNode
from gpuhost.facts.docker import gpu_paths_of
from gpuhost.model import Severity
from gpuhost.rules import RuleOptions, RunAs, evaluate
from tests.support.recorded_facts import h100_gpu_facts, one, safe_container, seed_facts


def restricted_nodes() -> list[DeviceNode]:
    return [
        DeviceNode(path=p, uid=0, gid=27, group="video", mode="0660", is_char_device=True)
        for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm")
    ]


def test_container_without_the_device_group_cannot_open_the_nodes() -> None:
    facts = seed_facts()
    facts.devices.nodes = restricted_nodes()
    inspect = safe_container()
    inspect["HostConfig"]["GroupAdd"] = []
    facts.docker.containers = [gpu_paths_of(inspect, facts.docker.runtimes)]
    finding = one(evaluate(facts), "devices.permissions")
    assert finding.severity is Severity.FAIL
    assert "Insufficient Permissions" in finding.message
    assert "--group-add 27" in finding.remedy

    inspect["HostConfig"]["GroupAdd"] = ["27"]
    facts.docker.containers = [gpu_paths_of(inspect, facts.docker.runtimes)]
    ok = one(evaluate(facts), "devices.permissions")
    assert ok.severity is Severity.OK
    assert "gid 27 (video) mode 0660" in ok.message


def test_run_as_identity_is_checked() -> None:
    facts = seed_facts()
    facts.docker.containers = []
    facts.devices.nodes = restricted_nodes()
    denied = one(evaluate(facts, RuleOptions(run_as=RunAs.parse("1000:1000"))), "devices.permissions")
    assert denied.severity is Severity.FAIL
    allowed = one(evaluate(facts, RuleOptions(run_as=RunAs.parse("1000:1000,27"))), "devices.permissions")
    assert allowed.severity is Severity.OK
    with pytest.raises(ValueError, match="UID"):
        RunAs.parse("comfy:video")


def test_named_container_user_is_a_warning() -> None:
    facts = seed_facts()
    facts.devices.nodes = restricted_nodes()
    inspect = copy.deepcopy(safe_container())
    inspect["Config"]["User"] = "comfy"
    facts.docker.containers = [gpu_paths_of(inspect, facts.docker.runtimes)]
    assert one(evaluate(facts), "devices.permissions").severity is Severity.WARN


def test_nodes_missing_while_nvml_sees_gpus(shared_dir: Path) -> None:
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    facts.devices.nodes = []
    assert one(evaluate(facts), "devices.nodes").severity is Severity.FAIL
