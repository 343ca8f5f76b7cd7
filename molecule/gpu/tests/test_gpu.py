"""What site.yml leaves on a real GPU host (molecule gpu scenario, run on the host itself)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

SMOKE_IMAGE = "ubuntu:24.04"


@pytest.fixture(scope="module")
def report(host: Any) -> dict[str, Any]:
    result = host.run("gpuhost-agent check")
    assert result.rc in (0, 1), result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def nvml_uuids(host: Any) -> list[str]:
    gpu = json.loads(host.check_output("gpuhost-agent facts --area gpu"))["gpu"]
    assert gpu["status"] == "ok", gpu["error"]
    assert gpu["gpus"], "NVML lists no GPU"
    return sorted(device["uuid"] for device in gpu["gpus"])


def test_no_failing_finding(report: dict[str, Any]) -> None:
    assert report["failing"] == [], [f for f in report["findings"] if f["severity"] == "fail"]


def test_nvidia_runtime_container_sees_every_gpu(host: Any, nvml_uuids: list[str]) -> None:
    out = host.check_output(
        f"docker run --rm --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all -e NVIDIA_DRIVER_CAPABILITIES=utility "
        f"{SMOKE_IMAGE} nvidia-smi -L"
    )
    assert sorted(re.findall(r"UUID: (GPU-[0-9a-fA-F-]+)", out)) == nvml_uuids


def test_cdi_device_request_sees_every_gpu(host: Any, nvml_uuids: list[str]) -> None:
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    if not info.get("CDISpecDirs"):
        pytest.skip(f"Docker {info['ServerVersion']} has no CDI device requests (needs >= 25)")
    out = host.check_output(f"docker run --rm --device nvidia.com/gpu=all {SMOKE_IMAGE} nvidia-smi -L")
    assert sorted(re.findall(r"UUID: (GPU-[0-9a-fA-F-]+)", out)) == nvml_uuids


def test_one_fresh_cdi_spec_lists_every_gpu(host: Any, report: dict[str, Any], nvml_uuids: list[str]) -> None:
    specs = [s for s in report["facts"]["cdi"]["specs"] if s["kind"] == "nvidia.com/gpu"]
    assert len(specs) == 1, specs
    assert specs[0]["driver_version"] == report["facts"]["gpu"]["driver_version"]
    indexed = [d for d in specs[0]["devices"] if d.isdigit()]
    assert len(indexed) == len(nvml_uuids)


def test_refresh_unit_and_persistence(host: Any) -> None:
    assert host.service("nvidia-cdi-refresh.path").is_enabled
    assert host.service("nvidia-persistenced").is_running
