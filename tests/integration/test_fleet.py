"""`gpuhost check` across a real fleet: 15 sshd containers in the host network on their own
127.0.0.1 ports (tests/support/fleetlab.py), one more port where nothing listens. Every host's verdict
and failing finding ids are asserted exactly, for the CLI (--inventory, --host, aws_ec2) and for
playbooks/check.yml.

Why the healthy hosts fail: the containers have no NVIDIA driver (gpu.driver), no Docker socket
(docker.engine) and no toolkit (toolkit.installed). Those three are what `gpuhost check` says on
such a host, and the test proves the fleet says exactly that, plus what each broken host adds.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuhost.fleet.remote import INSTALLED_AGENT
from gpuhost.ship import zipapp_bytes
from tests.support.fleetlab import USER, FleetLab

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PLAIN = ["docker.engine", "gpu.driver", "toolkit.installed"]
COMPILED = "shipped-compiled" if sys.version_info[:2] == (3, 11) else "shipped"  # the lab's hosts run 3.11
# what nvidia-ctk writes (trimmed): the same devices in /etc/cdi and /var/run/cdi is the broken state
CDI_SPEC = b"""---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
  - name: "0"
    containerEdits:
      deviceNodes:
        - path: /dev/nvidia0
  - name: all
    containerEdits:
      deviceNodes:
        - path: /dev/nvidia0
containerEdits:
  deviceNodes:
    - path: /dev/nvidiactl
    - path: /dev/nvidia-uvm
  mounts:
    - hostPath: /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.126.09
      containerPath: /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.126.09
      options: [ro, nosuid, nodev, bind]
"""
# records how the agent was started (its directory's mode and owner, the uid), then runs python3
PROBE_PYTHON = b"""#!/bin/sh
case "$1" in
  */gpuhost-agent.pyz) echo "$(stat -c '%a %U' "$(dirname "$1")") uid=$(id -u)" >> /home/fleet/agent-probe.log ;;
esac
exec /usr/bin/python3 "$@"
"""
# answers `-V` like python3, then hangs: the per-host time limit must end it
SLOW_PYTHON = b"""#!/bin/sh
[ "$1" = "-V" ] && exec /usr/bin/python3 -V
sleep 60
"""
EXPECTED = {  # in inventory order
    **{f"fleet-{i:02d}": PLAIN for i in range(1, 15)},
    "fleet-11": sorted([*PLAIN, "cdi.spec-duplicate"]),  # the broken host
    "fleet-changed": ["fleet.host-key-changed"],
    "fleet-down": ["fleet.unreachable"],
}
AGENTS = {
    **{name: COMPILED for name in EXPECTED},
    "fleet-09": "installed",  # the same agent is installed there: used as it is
    "fleet-10": COMPILED,  # an older agent is installed there: ours is shipped
    "fleet-13": "shipped",  # Debian 13, Python 3.13: the sources, compiled there
    "fleet-changed": "",
    "fleet-down": "",
}
TRANSFERS = {
    **{name: "sftp" if agent.startswith("shipped") else "" for name, agent in AGENTS.items()},
    "fleet-14": "pipe",  # its sshd has no sftp subsystem: the agent goes through `cat`
}


def declare_test_fleet(lab: FleetLab) -> None:
    """The test fleet (README's fleet table is this fleet)."""
    for index in range(1, 8):
        lab.add(f"fleet-{index:02d}")
    lab["fleet-01"].sshd_options.append("LogLevel=DEBUG1")  # logs the forwards it carries for fleet-12
    lab["fleet-03"].files["/usr/local/bin/python3-slow"] = (SLOW_PYTHON, 0o755)
    lab.add(
        "fleet-08",
        files={"/usr/local/bin/python3-probe": (PROBE_PYTHON, 0o755)},
        inventory_vars={"ansible_python_interpreter": "/usr/local/bin/python3-probe"},
    )
    lab.add("fleet-09", files={INSTALLED_AGENT: (zipapp_bytes(), 0o755)})
    lab.add("fleet-10", files={INSTALLED_AGENT: (b"#!/usr/bin/env python3\n# an older agent\n", 0o755)})
    lab.add("fleet-11", files={"/etc/cdi/nvidia.yaml": (CDI_SPEC, 0o644), "/run/cdi/nvidia.yaml": (CDI_SPEC, 0o644)})
    lab.add("fleet-12", jump_via="fleet-01")
    lab.add("fleet-13", release="trixie")
    lab.add(  # no sftp subsystem: the agent goes through `cat`; the probe records its directory's mode
        "fleet-14",
        sftp=False,
        files={"/usr/local/bin/python3-probe": (PROBE_PYTHON, 0o755)},
        inventory_vars={"ansible_python_interpreter": "/usr/local/bin/python3-probe"},
    )
    lab.add("fleet-changed", changed_key=True)
    lab.add("fleet-down", running=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetLab]:
    lab = FleetLab(tmp_path_factory.mktemp("fleet"))
    declare_test_fleet(lab)
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


def gpuhost(lab: FleetLab, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuhost", "check", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "160", "XDG_CACHE_HOME": str(lab.workdir / "cache"), **(env or {})},
    )


def by_host(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    data = json.loads(result.stdout)
    return {host["host"]: host for host in data["hosts"]}


def leftovers(lab: FleetLab, name: str) -> str:
    return lab.exec(name, ["sh", "-c", "ls -d /tmp/gpuhost-fleet.* 2>/dev/null; true"])[1].strip()


@pytest.fixture(scope="module")
def fleet_run(lab: FleetLab) -> subprocess.CompletedProcess[str]:
    return gpuhost(lab, "--inventory", str(lab.inventory), "--forks", "15", "--json")


def test_every_host_verdict(lab: FleetLab, fleet_run: subprocess.CompletedProcess[str]) -> None:
    assert fleet_run.returncode == 1, fleet_run.stderr
    data = json.loads(fleet_run.stdout)
    hosts = by_host(fleet_run)
    assert list(hosts) == list(EXPECTED)  # inventory order
    assert {name: host["failing"] for name, host in hosts.items()} == EXPECTED
    assert {name: host["fleet"]["agent"] for name, host in hosts.items()} == AGENTS
    assert {name: host["fleet"]["transfer"] for name, host in hosts.items()} == TRANSFERS
    assert {name: host["verdict"] for name, host in hosts.items()} == dict.fromkeys(EXPECTED, "fail")
    assert data["summary"] == {"hosts": 16, "ok": 0, "warn": 0, "fail": 16, "unreached": 2}
    assert data["failing_hosts"] == list(EXPECTED)
    assert (data["schema"], data["verdict"], data["exit_code"]) == ("gpuhost.fleet/v1", "fail", 1)

    reached = hosts["fleet-01"]
    assert reached["schema"] == "gpuhost.check/v1" and reached["facts"]["kernel"]["release"]
    assert reached["fleet"]["address"] == f"{USER}@127.0.0.1:{lab['fleet-01'].port}"
    duplicate = next(f for f in hosts["fleet-11"]["findings"] if f["id"] == "cdi.spec-duplicate")
    assert duplicate["evidence"]["duplicates"] == {
        "nvidia.com/gpu=0": ["/etc/cdi/nvidia.yaml", "/var/run/cdi/nvidia.yaml"],
        "nvidia.com/gpu=all": ["/etc/cdi/nvidia.yaml", "/var/run/cdi/nvidia.yaml"],
    }
    changed = hosts["fleet-changed"]
    (finding,) = changed["findings"]
    assert f"[127.0.0.1]:{lab['fleet-changed'].port}" in finding["message"]
    assert "HOST KEY CHANGED" in finding["message"] and "ssh-keygen -R" in finding["remedy"]
    assert changed["facts"] is None and changed["exit_code"] == 1
    assert "connection refused" in hosts["fleet-down"]["findings"][0]["message"]


def test_agent_leaves_nothing_and_runs_private(lab: FleetLab, fleet_run: subprocess.CompletedProcess[str]) -> None:
    """Shipped into a fresh mode-0700 directory owned by the SSH user, removed afterwards; the
    inventory's ansible_python_interpreter runs it."""
    assert fleet_run.returncode == 1
    for name in ("fleet-01", "fleet-08", "fleet-11", "fleet-13", "fleet-14"):
        assert leftovers(lab, name) == "", name
    for name in ("fleet-08", "fleet-14"):
        _, probe = lab.exec(name, ["cat", "/home/fleet/agent-probe.log"])
        assert probe.splitlines()[-1] == f"700 {USER} uid=1000", name
    # fleet-14 really has no SFTP: OpenSSH's sftp is refused there
    port = str(lab["fleet-14"].port)
    sftp = subprocess.run(
        ["sftp", "-b", "-", "-F", str(lab.ssh_config), "-P", port, "127.0.0.1"],
        input="ls\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert sftp.returncode != 0 and "subsystem request failed" in sftp.stderr, sftp.stderr


def test_jump_host_carries_the_connection(lab: FleetLab, fleet_run: subprocess.CompletedProcess[str]) -> None:
    assert by_host(fleet_run)["fleet-12"]["failing"] == PLAIN
    forwards = [line for line in lab.logs("fleet-01").splitlines() if "direct_tcpip" in line or "direct-tcpip" in line]
    assert any(f"port {lab['fleet-12'].port}" in line for line in forwards), forwards


def test_table_and_summary(lab: FleetLab) -> None:
    result = gpuhost(lab, "-i", str(lab.inventory), "--limit", "fleet-01:fleet-11:fleet-changed:fleet-down")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    row = {name: next(line for line in lines if f" {name} " in line) for name in ("fleet-01", "fleet-11")}
    assert "FAIL" in row["fleet-01"] and "docker.engine, gpu.driver, toolkit.installed" in row["fleet-01"]
    assert "cdi.spec-duplicate" in row["fleet-11"]
    assert any(line.startswith("fleet-changed: fleet.host-key-changed") for line in lines)
    assert any(line.startswith("fleet-down: fleet.unreachable") for line in lines)
    assert any(line.startswith("4 hosts: 0 ok, 0 warn, 4 fail (2 not checked);") for line in lines)


def test_equals_the_check_run_on_the_host(lab: FleetLab, fleet_run: subprocess.CompletedProcess[str]) -> None:
    """The single-host check, run on the host over plain OpenSSH, finds what the fleet found there."""
    agent = lab.workdir / "agent.pyz"
    agent.write_bytes(zipapp_bytes())
    hosts = by_host(fleet_run)
    for name in ("fleet-01", "fleet-11", "fleet-13"):
        port = str(lab[name].port)
        ssh = ["-F", str(lab.ssh_config)]
        subprocess.run(["scp", "-q", *ssh, "-P", port, str(agent), "127.0.0.1:agent.pyz"], check=True, timeout=30)
        run = subprocess.run(
            ["ssh", *ssh, "-p", port, "127.0.0.1", "python3 agent.pyz check; rc=$?; rm -f agent.pyz; exit $rc"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        local = json.loads(run.stdout)
        assert run.returncode == local["exit_code"] == hosts[name]["exit_code"] == 1
        assert hosts[name]["findings"] == local["findings"], name
        assert hosts[name]["failing"] == local["failing"] == EXPECTED[name]


def test_host_specs_and_ssh_config(lab: FleetLab) -> None:
    """--host with the user and keys from the ssh config; the host's own key checked either way."""
    specs = [f"127.0.0.1:{lab['fleet-02'].port}", f"{USER}@127.0.0.1:{lab['fleet-04'].port}"]
    result = gpuhost(lab, *(a for s in specs for a in ("--host", s)), "-F", str(lab.ssh_config), "--json")
    assert result.returncode == 1
    assert {name: host["failing"] for name, host in by_host(result).items()} == dict.fromkeys(specs, PLAIN)


def test_unknown_keys_need_consent_and_changed_keys_never_pass(lab: FleetLab, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    kept = [line for line in lab.known_hosts.read_text().splitlines() if f":{lab['fleet-02'].port} " not in line]
    known.write_text("\n".join(kept) + "\n")
    config = tmp_path / "ssh_config"
    config.write_text(lab.client_config(known))
    new = f"127.0.0.1:{lab['fleet-02'].port}"
    changed = f"127.0.0.1:{lab['fleet-changed'].port}"
    args = ["--host", new, "--host", changed, "-F", str(config), "--json"]

    refused = by_host(gpuhost(lab, *args))
    assert refused[new]["failing"] == ["fleet.host-key-unknown"]
    assert refused[changed]["failing"] == ["fleet.host-key-changed"]
    assert known.read_text().count(f":{lab['fleet-02'].port}]") == 0

    accepted = by_host(gpuhost(lab, *args, "--accept-new-host-keys"))
    assert accepted[new]["failing"] == PLAIN
    assert accepted[changed]["failing"] == ["fleet.host-key-changed"]  # opting in never covers a changed key
    name = lab["fleet-02"].known_hosts_name
    recorded = [line for line in known.read_text().splitlines() if line.startswith(f"{name} ")]
    assert recorded == [f"{name} {lab['fleet-02'].host_public_key}"]

    again = by_host(gpuhost(lab, *args))
    assert again[new]["failing"] == PLAIN


def test_ssh_agent_keys(lab: FleetLab, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(lab.client_config(lab.known_hosts, identity=False))
    spec = f"127.0.0.1:{lab['fleet-05'].port}"
    home = {"HOME": str(tmp_path)}  # no ~/.ssh/id_* to fall back on
    without = by_host(gpuhost(lab, "--host", spec, "-F", str(config), "--json", env={**home, "SSH_AUTH_SOCK": ""}))
    assert without[spec]["failing"] == ["fleet.auth-failed"]

    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):  # the agent creates its socket right after it starts
            if sock.exists() or agent.poll() is not None:
                break
            time.sleep(0.1)
        env = {**home, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(lab.identity)], env={**os.environ, **env}, check=True, timeout=10)
        with_agent = by_host(gpuhost(lab, "--host", spec, "-F", str(config), "--json", env=env))
        assert with_agent[spec]["failing"] == PLAIN
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_become_runs_the_agent_as_root(lab: FleetLab) -> None:
    result = gpuhost(lab, "-i", str(lab.inventory), "--limit", "fleet-08", "--become", "--json")
    assert by_host(result)["fleet-08"]["failing"] == PLAIN
    _, probe = lab.exec("fleet-08", ["cat", "/home/fleet/agent-probe.log"])
    assert probe.splitlines()[-1] == f"700 {USER} uid=0"


def test_timeouts_are_findings(lab: FleetLab, tmp_path: Path) -> None:
    """A host that accepts TCP but never speaks SSH, and one whose agent hangs: each ends at its
    limit as that host's finding, and the hung one's private directory is still removed."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        inventory = tmp_path / "inventory.yml"
        common = {"ansible_host": "127.0.0.1", "ansible_user": USER, "ansible_ssh_common_args": f"-F {lab.ssh_config}"}
        hosts = {
            "silent": {**common, "ansible_port": silent.getsockname()[1]},
            "hangs": {
                **common,
                "ansible_port": lab["fleet-03"].port,
                "ansible_python_interpreter": "/usr/local/bin/python3-slow",
            },
        }
        inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
        result = gpuhost(lab, "-i", str(inventory), "--connect-timeout", "1", "--timeout", "3", "--json")
    finally:
        silent.close()
    assert result.returncode == 1
    found = by_host(result)
    assert found["silent"]["failing"] == ["fleet.unreachable"]
    assert "within 1 s" in found["silent"]["findings"][0]["message"]
    assert found["hangs"]["failing"] == ["fleet.timeout"]
    assert leftovers(lab, "fleet-03") == ""


def test_aws_ec2_inventory(lab: FleetLab, tmp_path: Path) -> None:
    """inventories/aws's example, pointed at a moto EC2 on 127.0.0.1 whose instances are lab hosts."""
    import boto3

    from tests.support.aws import clean_moto_server

    with clean_moto_server() as endpoint:
        ec2 = boto3.client(
            "ec2",
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for name, tagged in (("fleet-06", True), ("fleet-07", True), ("fleet-11", True), ("fleet-05", False)):
            tags = [{"Key": "Name", "Value": f"aws-{name}"}, {"Key": "ssh_port", "Value": str(lab[name].port)}]
            tags += [{"Key": "gpuhost", "Value": "true"}] if tagged else []
            ec2.run_instances(
                ImageId="ami-03cf127a",
                MinCount=1,
                MaxCount=1,
                InstanceType="g5.xlarge",
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
            )
        example = yaml.safe_load((REPO / "inventories/aws/aws_ec2.yml").read_text())
        example.update(endpoint_url=endpoint, access_key="testing", secret_key="testing")
        example["compose"] = {  # the lab's hosts listen on loopback, each on its own port
            "ansible_host": "'127.0.0.1'",
            "ansible_port": "tags.ssh_port | int",
            "ansible_user": f"'{USER}'",
            "ansible_ssh_common_args": f"'-F {lab.ssh_config}'",
        }
        inventory = tmp_path / "lab.aws_ec2.yml"
        inventory.write_text(yaml.safe_dump(example))
        result = gpuhost(lab, "-i", str(inventory), "--limit", "gpu_hosts:&type_g5_xlarge", "--json")
    assert result.returncode == 1, result.stderr
    assert {name: host["failing"] for name, host in by_host(result).items()} == {
        "aws-fleet-06": PLAIN,
        "aws-fleet-07": PLAIN,
        "aws-fleet-11": EXPECTED["fleet-11"],
    }


def test_playbook_check(lab: FleetLab, tmp_path: Path) -> None:
    """playbooks/check.yml on the same fleet: the same verdicts, the failing hosts failed with their
    findings printed. Runs last: it installs the agent everywhere."""
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    result = subprocess.run(
        [
            "ansible-playbook", "-i", str(lab.inventory), "playbooks/check.yml", "--forks", "15",
            "-e", f"gpuhost_agent_build_path={tmp_path}/gpuhost-agent.pyz",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert shutil.which("ansible-playbook", path=env["PATH"])
    assert result.returncode != 0  # failing hosts fail the run
    report = json.loads(result.stdout)
    stats = report["stats"]
    assert {name: bool(s["unreachable"]) for name, s in stats.items()} == {
        name: name in ("fleet-changed", "fleet-down") for name in EXPECTED
    }
    assert {name: s["failures"] for name, s in stats.items() if not s["unreachable"]} == {
        name: 1 for name in EXPECTED if name not in ("fleet-changed", "fleet-down")
    }
    tasks = {task["task"]["name"]: task["hosts"] for play in report["plays"] for task in play["tasks"]}
    printed = tasks["Print the failing findings"]
    failed = tasks["Fail the host when gpuhost check fails"]
    for name, expected in EXPECTED.items():
        if name in ("fleet-changed", "fleet-down"):
            continue
        shown = sorted(item["item"]["id"] for item in printed[name]["results"])
        assert shown == expected, name
        assert f"failing {', '.join(expected)};" in failed[name]["msg"], name

    # the agent is installed everywhere now, and the fleet check uses it for the same verdicts
    after = by_host(gpuhost(lab, "-i", str(lab.inventory), "--forks", "15", "--json"))
    assert {name: host["failing"] for name, host in after.items()} == EXPECTED
    assert {name: host["fleet"]["agent"] for name, host in after.items()} == {
        name: ("installed" if AGENTS[name] else "") for name in EXPECTED
    }
