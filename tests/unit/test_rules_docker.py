"""Docker and the nvidia runtime: the runtime registered and its binary there, CDI enabled, and the
cgroup reload that takes GPUs from running --gpus containers."""

from __future__ import annotations

from gpuhost.hostfacts import HostFacts
from gpuhost.model import Severity
from gpuhost.rules import evaluate
from tests.support.recorded_facts import found, one, only, seed_facts


def test_missing_nvidia_runtime_and_missing_binary_fail() -> None:
    facts = seed_facts()
    facts.docker.runtimes.pop("nvidia")
    assert one(evaluate(facts), "docker.nvidia-runtime").severity is Severity.FAIL
    facts = seed_facts()
    facts.docker.runtime_binaries["nvidia"] = ""
    finding = one(evaluate(facts), "docker.nvidia-runtime")
    assert finding.severity is Severity.FAIL
    assert "does not exist" in finding.message


def test_docker_25_without_cdi_feature_warns() -> None:
    facts = seed_facts()
    assert one(evaluate(facts), "docker.cdi").severity is Severity.WARN
    facts.docker.cdi_enabled = True
    assert one(evaluate(facts), "docker.cdi").severity is Severity.OK


def test_cgroup_reload_exposes_gpus_containers_without_char_links(h100: HostFacts) -> None:
    assert h100.docker.cgroup_driver == "systemd"
    assert h100.docker.containers[0].uses_legacy_hook  # the seed's --gpus container
    h100.docker.containers[0].state = "running"
    h100.platform.nvidia_nodes = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    h100.platform.char_links_missing = ["/dev/nvidia-uvm"]
    finding = only(h100, "docker.cgroup-reload")
    assert finding.severity is Severity.FAIL
    assert "comfyui (--gpus)" in finding.message and "Failed to initialize NVML: Unknown Error" in finding.message
    h100.platform.char_links_missing = []
    assert found(h100, "docker.cgroup-reload") == []
    h100.platform.char_links_missing = ["/dev/nvidia-uvm"]
    h100.docker.cgroup_driver = "cgroupfs"
    assert found(h100, "docker.cgroup-reload") == []
