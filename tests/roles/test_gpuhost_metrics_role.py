"""The gpuhost_metrics role, run by ansible-playbook into a Debian 12 systemd container (the
local/debian-systemd base image that scripts/setup-test-host builds, on a network of its own):
check mode changes nothing, the converge installs the distribution's node_exporter and the timer,
a second run changes nothing; then the units are run as systemd runs them: node_exporter serves
the check's metrics, and a missing or read-only textfile directory fails the service with a
message that names it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ansible import PlaybookRun, run_playbook

pytestmark = pytest.mark.docker
IMAGE = "local/debian-systemd:bookworm"
NAME = f"gpuhost-metrics-role-{secrets.token_hex(4)}"
APT_CACHE = Path(os.environ.get("GPUHOST_APT_CACHE", "/var/cache/gpuhost/apt")) / "bookworm"
TEXTFILE = "/var/lib/prometheus/node-exporter"
PLAYBOOK = """---
- name: gpuhost metrics
  hosts: all
  roles:
    - role: gpuhost_metrics
"""
VARIABLES = {
    # the exporter stays inside the container's own network namespace
    "gpuhost_metrics_node_exporter_listen_address": "127.0.0.1:9100",
    # no Docker in the container: the check says so without waiting for a socket
    # with a space, a `%` and a `$` in an argument: the unit quotes and escapes each one
    "gpuhost_metrics_check_args": [
        "--docker-host", "unix:///run/gpuhost-test-no-docker.sock", "--daemon-json", "/etc/docker/daemon %i $X.json",
    ],
}


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def inside(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return docker("exec", NAME, *command, timeout=timeout)


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    APT_CACHE.mkdir(parents=True, exist_ok=True)
    created = docker("network", "create", NAME)
    assert created.returncode == 0, created.stderr
    try:
        started = docker(
            "run", "-d", "--name", NAME, "--hostname", NAME, "--network", NAME, "--cgroupns", "host",
            "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined", "--tmpfs", "/run", "--tmpfs", "/run/lock",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "-v", f"{APT_CACHE}:/var/cache/apt/archives:rw",
            IMAGE, "/lib/systemd/systemd",
        )
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 90
        while (state := inside("systemctl", "is-system-running").stdout.strip()) not in ("running", "degraded"):
            assert time.monotonic() < deadline, f"systemd in the container: {state}"
            time.sleep(1)
        # as molecule's prepare does: Ansible's apt module needs python3-apt for check mode
        prepared = inside("sh", "-c", "apt-get update -q && apt-get install -y -q --no-install-recommends python3-apt",
                          timeout=300)
        assert prepared.returncode == 0, prepared.stdout[-2000:] + prepared.stderr[-2000:]
        yield NAME
    finally:
        docker("rm", "-f", NAME)
        docker("network", "rm", NAME)


def converge(tmp_path: Path, *extra: str) -> PlaybookRun:
    return run_playbook(tmp_path, PLAYBOOK, "-i", f"{NAME},", "-c", "community.docker.docker",
                        "-e", json.dumps(VARIABLES), "-e", "ansible_python_interpreter=/usr/bin/python3", *extra)


def changed(run: PlaybookRun) -> int:
    found = re.search(rf"{NAME}\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", run.output)
    assert found, run.output
    return int(found.group(1))


def metrics() -> str:
    url = "http://127.0.0.1:9100/metrics"
    script = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    result = inside("python3", "-c", script)
    assert result.returncode == 0, result.stderr
    return result.stdout


def start_service() -> subprocess.CompletedProcess[str]:
    return inside("systemctl", "start", "gpuhost-metrics.service", timeout=90)


def journal() -> str:
    return inside("journalctl", "-u", "gpuhost-metrics.service", "--no-pager", "-n", "40").stdout


def test_check_mode_converge_idempotence_and_the_units(container: str, tmp_path: Path) -> None:
    dry = converge(tmp_path, "--check")
    assert dry.returncode == 0, dry.output
    assert changed(dry) > 0
    assert inside("test", "-e", "/usr/bin/prometheus-node-exporter").returncode != 0, "check mode installed it"
    assert inside("test", "-e", "/etc/systemd/system/gpuhost-metrics.timer").returncode != 0

    first = converge(tmp_path)
    assert first.returncode == 0, first.output
    second = converge(tmp_path)
    assert second.returncode == 0, second.output
    assert changed(second) == 0, second.output

    assert inside("systemctl", "is-enabled", "gpuhost-metrics.timer").stdout.strip() == "enabled"
    assert inside("systemctl", "is-active", "gpuhost-metrics.timer").stdout.strip() == "active"
    assert inside("systemctl", "is-active", "prometheus-node-exporter.service").stdout.strip() == "active"

    exec_start = inside("systemctl", "show", "-p", "ExecStart", "gpuhost-metrics.service").stdout
    # one argument, its `%` no specifier; systemd shows `$$` as written and passes `$` (systemd.service(5))
    assert "--daemon-json /etc/docker/daemon %i $$X.json ;" in exec_start, exec_start

    # the service as the timer starts it: node_exporter serves what it wrote
    result = start_service()
    assert result.returncode == 0, result.stderr + journal()
    served = metrics()
    assert "gpuhost_check_timestamp_seconds " in served
    assert 'gpuhost_finding{area="gpu",id="gpu.driver",severity="fail"} 1' in served  # no GPU in a container
    assert "gpuhost_check_run_success 1" in served
    assert 'node_textfile_scrape_error 0' in served
    listing = inside("ls", "-A", TEXTFILE).stdout.split()
    # beside what Debian's recommended node_exporter collectors write (apt.prom, ...), and no temporary file
    assert {"gpuhost-run.prom", "gpuhost.prom"} <= set(listing)
    assert not [name for name in listing if name.startswith(".gpuhost")], listing

    # the timer runs it again by itself (10 s after it started, then every minute)
    before = inside("stat", "-c", "%Y", f"{TEXTFILE}/gpuhost-run.prom").stdout
    inside("systemctl", "restart", "gpuhost-metrics.timer")
    deadline = time.monotonic() + 40
    while inside("stat", "-c", "%Y", f"{TEXTFILE}/gpuhost-run.prom").stdout == before:
        assert time.monotonic() < deadline, "the timer did not run the service"
        time.sleep(2)


def test_a_bad_textfile_directory_fails_the_unit_and_says_why(container: str, tmp_path: Path) -> None:
    if inside("test", "-e", "/etc/systemd/system/gpuhost-metrics.service").returncode != 0:
        assert converge(tmp_path).returncode == 0
    with contextlib.ExitStack() as restore:
        # read-only: a tmpfs mounted read-only over it (root ignores file modes)
        assert inside("mount", "-t", "tmpfs", "-o", "ro", "tmpfs", TEXTFILE).returncode == 0
        restore.callback(inside, "umount", TEXTFILE)
        result = start_service()
        assert result.returncode != 0
        assert f"textfile directory {TEXTFILE} is not writable" in journal()
    # missing
    assert inside("mv", TEXTFILE, TEXTFILE + ".moved").returncode == 0
    try:
        result = start_service()
        assert result.returncode != 0
        assert f"textfile directory {TEXTFILE} does not exist" in journal()
        assert inside("systemctl", "is-failed", "gpuhost-metrics.service").stdout.strip() == "failed"
    finally:
        inside("mv", TEXTFILE + ".moved", TEXTFILE)
