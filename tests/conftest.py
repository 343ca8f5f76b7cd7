"""Shared test fixtures: paths to recorded data and what this machine can run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GPUHOST_SHARED", REPO.parent / "shared"))
FIXTURES = REPO / "tests" / "fixtures"
# ansible-playbook, molecule and friends live beside the interpreter running the tests
VENV_BIN = Path(sys.executable).parent


def nvidia_gpu_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount()) > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if nvidia_gpu_present():
        return
    skip = pytest.mark.skip(reason="no NVIDIA GPU and driver on this machine (NVML lists no device)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "fixtures").is_dir():
        pytest.fail(
            f"recorded fixtures not found at {SHARED}/fixtures: check out the project beside its shared/ "
            "directory or set GPUHOST_SHARED"
        )
    return SHARED


# EC2/IMDS stand-ins for the EBS tests (moto is imported only when one is used)
from tests.support.aws_fixtures import aws_env, ec2_errors, ec2_server, imds_stand_in  # noqa: E402, F401
