"""Shared fixtures, and the marker each test gets from its directory:

tests/unit         no Docker, no network, no root: `pytest tests/unit` is the fast loop (seconds)
tests/integration  real dockerd and Engine API, moto's EC2 server, sshd containers, loop devices
tests/roles        ansible-playbook runs of the roles
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.paths import SHARED, nvidia_gpu_present

pytest_plugins = ["tests.support.aws_fixtures", "tests.support.recorded_facts"]

KINDS = ("unit", "integration", "roles")

# Property tests: a quick profile for the edit loop, a deeper one that scripts/test selects
# (GPUHOST_HYPOTHESIS_PROFILE=deep). Both are derandomized so a failure reproduces.
settings.register_profile(
    "quick", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("GPUHOST_HYPOTHESIS_PROFILE", "quick"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        kind = Path(item.fspath).relative_to(tests_dir).parts[0]
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))
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
