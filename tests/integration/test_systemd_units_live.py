"""gpuhost_agent's systemd_* filters against a running systemd (Debian 12's, PID 1 of a container): a command
line written by systemd_exec runs with exactly the arguments given, and a service whose EnvironmentFile=
was written by systemd_environment_file gets exactly the values given, which `systemctl show` never shows.
systemd-analyze cannot show either: it reads neither environment files nor `$` at exec time."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.role_templates import systemd_filters
from tests.support.systemd_units import parse_environment_file

pytestmark = pytest.mark.docker

IMAGE = "local/debian-systemd:bookworm"
HOSTILE = [
    "two words", 'double"quote', "single'quote", "back\\slash", "trailing\\", "100%", "%h%n%%", "$HOME",
    "${HOME}", "$$", "semi;colon", ";", "\\;", " lead", "trail ", "é☃\U0001f600", "-dash", "@at", "+plus",
    "!bang", "#hash", "[Service]", "", "`backtick`", "a=b", "'", '"',
]


def docker(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, timeout=120, check=check)


@pytest.fixture(scope="module")
def systemd() -> Iterator[str]:
    name = f"gpuhost-units-systemd-{os.getpid()}"
    docker("run", "-d", "--name", name, "--network", "none", "--cgroupns", "host", "--cap-add", "SYS_ADMIN",
           "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined", "--tmpfs", "/run",
           "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", IMAGE, "/lib/systemd/systemd")
    try:
        deadline = time.monotonic() + 60
        while docker("exec", name, "systemctl", "is-system-running", check=False).stdout.strip() not in (
            "running", "degraded"
        ):
            assert time.monotonic() < deadline, docker("logs", name, check=False).stdout[-2000:]
            time.sleep(0.5)
        yield name
    finally:
        docker("rm", "-f", name, check=False)


def write(container: str, path: str, text: str) -> None:
    docker("exec", "-i", container, "sh", "-c", f"cat > {path}", stdin=text)


def run_unit(container: str, name: str, unit: str) -> str:
    """Install and start a oneshot unit whose stdout goes to a file; the file's text."""
    write(container, f"/etc/systemd/system/{name}", unit)
    docker("exec", container, "systemctl", "daemon-reload")
    started = docker("exec", container, "systemctl", "start", name, check=False)
    journal = docker("exec", container, "journalctl", "-u", name, check=False).stdout
    assert started.returncode == 0, started.stderr + journal
    return docker("exec", container, "cat", f"/run/{name}.out").stdout


def test_a_command_line_runs_with_exactly_the_arguments_given(systemd: str) -> None:
    argv = ["/usr/bin/printf", "%s\\0", *HOSTILE]
    unit = (
        "[Service]\nType=oneshot\n"
        f"StandardOutput=file:/run/argv.service.out\nExecStart={systemd_filters().systemd_exec(argv)}\n"
    )
    assert run_unit(systemd, "argv.service", unit).split("\0")[:-1] == HOSTILE


def test_a_service_gets_each_environment_value_whole_and_systemctl_show_shows_none(systemd: str) -> None:
    variables = {f"GPUHOST_V{i}": value for i, value in enumerate(HOSTILE)}
    variables["AWS_SECRET_ACCESS_KEY"] = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    text = systemd_filters().systemd_environment_file(variables)
    assert parse_environment_file(text) == list(variables.items())  # the port reads it as systemd does
    write(systemd, "/run/gpuhost-test.env", text)
    docker("exec", systemd, "chmod", "0600", "/run/gpuhost-test.env")
    unit = (
        "[Service]\nType=oneshot\nEnvironmentFile=/run/gpuhost-test.env\n"
        "StandardOutput=file:/run/env.service.out\nExecStart=/usr/bin/env -0\n"
    )
    seen = dict(entry.split("=", 1) for entry in run_unit(systemd, "env.service", unit).split("\0") if entry)
    assert {name: seen.get(name) for name in variables} == variables
    shown = docker("exec", systemd, "systemctl", "show", "env.service").stdout
    assert "EnvironmentFiles=/run/gpuhost-test.env" in shown
    assert "wJalrXUtnFEMI" not in shown and "GPUHOST_V" not in shown
