"""What the README's first command (scripts/provision) leaves on a fresh GPU-less Debian 12 machine."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

PREFIX = "/opt/gpuhost"
NVIDIA_RUNTIME = "/usr/bin/nvidia-container-runtime"


def ok(host: Any, command: str) -> str:
    result = host.run(command)
    assert result.rc == 0, f"{command}: rc={result.rc} {result.stdout} {result.stderr}"
    return str(result.stdout)


@pytest.fixture(scope="module")
def provision_log(host: Any) -> str:
    """The output of the last scripts/provision run (idempotence's), folded to single spaces."""
    return " ".join(host.file("/root/provision.log").content_string.split())


@pytest.fixture(scope="module")
def check_report(host: Any) -> dict[str, Any]:
    result = host.run("gpuhost check --json")
    assert result.rc == 1, result.stdout + result.stderr  # no GPU here: a failing finding
    return dict(json.loads(result.stdout))


def test_commands_are_on_path(host: Any) -> None:
    for command in ("gpuhost", "ansible-playbook"):
        assert host.file(f"/usr/local/bin/{command}").linked_to == f"{PREFIX}/bin/{command}"
    assert re.match(r"gpuhost \d+\.\d+", ok(host, "gpuhost --version").strip())
    assert re.match(r"gpuhost-agent \d+\.\d+", ok(host, "gpuhost-agent --version").strip())
    assert f"({PREFIX}/bin/python)" in ok(host, "ansible-playbook --version")


def test_collections_come_with_the_install(host: Any) -> None:
    listing = ok(host, f"{PREFIX}/bin/ansible-galaxy collection list --format json")
    found = {name for path in json.loads(listing).values() for name in path}
    assert {"community.docker", "community.general", "amazon.aws"} <= found


def test_second_run_changed_nothing(provision_log: str) -> None:
    recap = re.findall(r"localhost : ok=\d+ changed=(\d+) unreachable=0 failed=(\d+)", provision_log)
    assert recap == [("0", "0")], provision_log[-2000:]


def test_roles_that_need_a_gpu_stood_aside_and_said_why(provision_log: str) -> None:
    assert "No NVIDIA GPU on this host (no PCI device of vendor 0x10de" in provision_log
    assert "/dev/nvidia0 does not exist: this host has no NVIDIA GPU with a loaded driver" in provision_log


def test_run_ends_with_the_check_table(provision_log: str) -> None:
    tail = provision_log[provision_log.rindex("==> gpuhost check") :]
    # one row per area; the GPU's is the one failing
    assert re.search(r"│ gpu +│ FAIL +│ no GPU", tail), tail
    assert "(1 failing, " in tail
    assert "gpuhost check has failing findings (exit 1)" in tail


def test_docker_runs_with_the_nvidia_runtime(host: Any) -> None:
    docker = host.service("docker")
    assert docker.is_running and docker.is_enabled
    info = json.loads(ok(host, "docker info --format '{{json .}}'"))
    assert info["Runtimes"]["nvidia"]["path"] == NVIDIA_RUNTIME
    daemon_json = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert daemon_json["runtimes"]["nvidia"] == {"path": NVIDIA_RUNTIME, "args": []}
    if int(info["ServerVersion"].split(".")[0]) >= 25:
        assert daemon_json["features"]["cdi"] is True
    else:
        # Debian 12's docker.io (20.10) has no CDI: the toolkit role leaves features.cdi out and says so
        assert info["ServerVersion"].startswith("20.10.")
        assert "cdi" not in daemon_json.get("features", {})


def test_toolkit_and_cdi_refresh_units(host: Any) -> None:
    assert "version 1.20.0" in ok(host, "nvidia-ctk --version")
    assert host.service("nvidia-cdi-refresh.path").is_enabled
    assert host.file("/lib/systemd/system/nvidia-cdi-refresh.service").exists


def test_check_fails_only_on_what_needs_the_gpu(check_report: dict[str, Any]) -> None:
    assert check_report["failing"] == ["gpu.driver"], [
        (f["id"], f["message"]) for f in check_report["findings"] if f["severity"] == "fail"
    ]
    driver = next(f for f in check_report["findings"] if f["id"] == "gpu.driver")
    assert driver["message"].startswith("no GPU")
