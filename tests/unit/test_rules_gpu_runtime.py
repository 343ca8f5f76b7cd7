"""No driver but the nvidia runtime registered: the finding explains why GPU containers fail."""

from __future__ import annotations

import pytest

from gpuhost.facts.docker import DockerFacts
from gpuhost.facts.gpu import GpuFacts, collect_gpu
from gpuhost.facts.source import SourceStatus
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Severity
from gpuhost.rules import RuleOptions, evaluate
from tests.support.paths import nvidia_gpu_present


def facts_without_driver(runtimes: dict[str, str], nvml_error: str = "ERROR_LIBRARY_NOT_FOUND") -> HostFacts:
    facts = HostFacts(hostname="instance")
    facts.gpu = GpuFacts(
        status=SourceStatus.ABSENT,
        error="no NVIDIA driver: libnvidia-ml.so.1 not found and no kernel module loaded",
        nvml_error=nvml_error,
    )
    facts.docker = DockerFacts(server_version="26.1.5", runtimes=runtimes, default_runtime="runc")
    return facts


def driver_finding(facts: HostFacts) -> dict[str, object]:
    matches = [f for f in evaluate(facts, RuleOptions()) if f.id == "gpu.driver"]
    assert len(matches) == 1
    assert matches[0].severity is Severity.FAIL
    return matches[0].to_dict()


def test_nvidia_runtime_without_a_driver_explains_the_nvml_failure() -> None:
    finding = driver_finding(facts_without_driver({"nvidia": "/usr/bin/nvidia-container-runtime", "runc": "runc"}))
    message = str(finding["message"])
    assert message.startswith("no GPU: no NVIDIA driver")
    assert "--runtime=nvidia and NVIDIA_VISIBLE_DEVICES=all fail with" in message
    assert "`failed to initialize NVML: ERROR_LIBRARY_NOT_FOUND`" in message
    assert "because no driver is present" in message
    assert "nvidia_runtime_containers" in finding["evidence"]  # type: ignore[operator]


def test_userspace_without_the_module_names_its_own_nvml_error() -> None:
    facts = facts_without_driver({"nvidia": "/usr/bin/nvidia-container-runtime"}, "Unknown Error")
    assert "`failed to initialize NVML: Unknown Error`" in str(driver_finding(facts)["message"])


def test_without_the_nvidia_runtime_the_message_stays_short() -> None:
    finding = driver_finding(facts_without_driver({"runc": "runc"}))
    assert "--runtime=nvidia" not in str(finding["message"])
    assert "nvidia_runtime_containers" not in finding["evidence"]  # type: ignore[operator]


@pytest.mark.skipif(nvidia_gpu_present(), reason="needs a machine without an NVIDIA driver")
def test_nvml_error_on_a_machine_without_a_driver() -> None:
    gpu = collect_gpu()
    assert gpu.status is SourceStatus.ABSENT
    assert gpu.nvml_error == "ERROR_LIBRARY_NOT_FOUND"


def test_userspace_without_the_kernel_module_is_an_absent_driver_not_an_unreadable_one() -> None:
    """Debian's libnvidia-ml1 without the module: NVML says Unknown Error, as seen in a container."""
    import pynvml

    from gpuhost.facts.gpu import _classify_init_error, nvml_error_as_printed, parse_proc_driver_version

    unknown = pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
    status, error = _classify_init_error(pynvml, unknown, None)
    assert status is SourceStatus.ABSENT
    assert error.startswith("no NVIDIA driver loaded: the userspace library is installed but the kernel module is not")
    assert "Unknown Error" in error
    # as nvidia-container-runtime prints it: "failed to initialize NVML: Unknown Error"
    assert nvml_error_as_printed(pynvml, unknown) == "Unknown Error"
    # with the module loaded the same answer is a driver that cannot be read
    loaded = parse_proc_driver_version("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release")
    assert _classify_init_error(pynvml, unknown, loaded)[0] is SourceStatus.UNREADABLE
