#!/usr/bin/env python3
"""Wall time of `gpuhost check` over 1, 10 and 20 hosts, against the single-host check over OpenSSH
one host after another (scp the agent, ssh it), and against `ansible -m command` running the agent
(copied beforehand, not timed), in one run. Prints ONE JSON line.

The hosts are the test fleet (tests/support/fleetlab.py): sshd containers in the host network on
127.0.0.1:<port>. They all share this machine's cores with the controller, so the remote side's
CPU (sshd, the agent's Python) adds up here as it would not on a real fleet: the line reports the
CPU seconds spent on the controller and in the hosts for the 20-host run, to tell the two apart.

    .venv/bin/python bench/fleet.py [--hosts 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gpuhost.ship import zipapp_bytes  # noqa: E402
from tests.support.fleetlab import FleetLab  # noqa: E402

TARGET_RATIO = 2.0
REMOTE_AGENT = "/tmp/gpuhost-bench-agent.pyz"


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and the CPU seconds the command's processes used on this side."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def container_cpu_seconds(lab: FleetLab) -> float | None:
    """CPU used so far by the lab's containers (cgroup v1 cpuacct or cgroup v2 cpu.stat)."""
    import docker

    client = docker.from_env()
    total = 0.0
    for host in lab.hosts.values():
        cid = client.containers.get(host.container).id
        for path, scale in (
            (f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage", 1e-9),
            (f"/sys/fs/cgroup/cpu,cpuacct/docker/{cid}/cpuacct.usage", 1e-9),
            (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", 1e-6),
            (f"/sys/fs/cgroup/docker/{cid}/cpu.stat", 1e-6),
        ):
            try:
                text = Path(path).read_text()
            except OSError:
                continue
            value = text.split()[1] if text.startswith("usage_usec") else text.split()[0]
            total += int(value) * scale
            break
        else:
            return None
    return total


def median(samples: list[float]) -> float:
    return round(statistics.median(samples), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = sorted({1, min(10, args.hosts), args.hosts})
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="gpuhost-bench-fleet-") as tmp:
        work = Path(tmp)
        lab = FleetLab(work / "lab")
        names = [f"fleet-{i:02d}" for i in range(1, args.hosts + 1)]
        for name in names:
            lab.add(name)
        lab.start()
        try:
            env = {"XDG_CACHE_HOME": str(work / "cache"), "ANSIBLE_LOCAL_TEMP": str(work / "ansible-local")}
            agent = work / "agent.pyz"
            agent.write_bytes(zipapp_bytes())
            python = sys.executable
            ansible = str(Path(python).with_name("ansible"))

            def gpuhost(count: int, forks: int) -> list[str]:
                limit = ":".join(names[:count])
                return [python, "-m", "gpuhost", "check", "-i", str(lab.inventory), "--limit", limit, "-f", str(forks)]

            def ssh_one_by_one(count: int) -> list[str]:
                script = "".join(
                    f"scp -q -F {lab.ssh_config} -P {lab[n].port} {agent} 127.0.0.1:agent.pyz && "
                    f"ssh -F {lab.ssh_config} -p {lab[n].port} 127.0.0.1 'python3 agent.pyz check; rm -f agent.pyz' "
                    ">/dev/null; "
                    for n in names[:count]
                )
                return ["sh", "-c", script]

            def ansible_command(count: int) -> list[str]:
                limit = ":".join(names[:count])
                return [ansible, "-i", str(lab.inventory), "gpu_hosts", "--limit", limit, "-f", str(args.hosts),
                        "-m", "ansible.builtin.command", "-a", f"python3 {REMOTE_AGENT} check"]  # fmt: skip

            def cold_ansible() -> dict[str, str]:
                # a fresh ControlPath directory per run: no connection reused from the run before
                return {**env, "ANSIBLE_SSH_CONTROL_PATH_DIR": tempfile.mkdtemp(dir=work, prefix="cp-")}

            timed(gpuhost(1, 1), env)  # builds the compiled agent once (cached per controller)
            results: dict[str, Any] = {"gpuhost_s": {}, "ssh_one_by_one_s": {}, "ansible_command_s": {}}
            for count in sizes:
                results["gpuhost_s"][str(count)] = median(
                    [timed(gpuhost(count, args.hosts), env)[0] for _ in range(args.repeats)]
                )
                results["ssh_one_by_one_s"][str(count)] = median(
                    [timed(ssh_one_by_one(count))[0] for _ in range(args.repeats)]
                )
            results["gpuhost_default_forks_s"] = median(
                [timed(gpuhost(args.hosts, 5), env)[0] for _ in range(args.repeats)]
            )
            copy = [ansible, "-i", str(lab.inventory), "gpu_hosts", "-f", str(args.hosts), "-m", "ansible.builtin.copy",
                    "-a", f"src={agent} dest={REMOTE_AGENT} mode=0644"]  # fmt: skip
            results["ansible_copy_s"] = round(timed(copy, cold_ansible())[0], 3)
            for count in sizes:
                results["ansible_command_s"][str(count)] = median(
                    [timed(ansible_command(count), cold_ansible())[0] for _ in range(args.repeats)]
                )

            cpu: dict[str, Any] = {}
            for count in (1, args.hosts):
                hosts_before = container_cpu_seconds(lab)
                wall, controller = timed(gpuhost(count, args.hosts), env)
                hosts_after = container_cpu_seconds(lab)
                spent = None if hosts_before is None or hosts_after is None else hosts_after - hosts_before
                cpu[str(count)] = {
                    "wall": round(wall, 2),
                    "controller": round(controller, 2),
                    "hosts": None if spent is None else round(spent, 2),
                    # no run on this machine can be shorter: every host's work shares its cores
                    "floor_on_these_cores": None if spent is None else round((controller + spent) / cores, 2),
                }
        finally:
            lab.stop()

    one, many = results["gpuhost_s"]["1"], results["gpuhost_s"][str(args.hosts)]
    line = {
        "bench": "fleet",
        "hosts": args.hosts,
        "cores": cores,
        "repeats": args.repeats,
        "forks": args.hosts,
        **results,
        "ratio_many_vs_one": round(many / one, 2),
        "target_ratio": TARGET_RATIO,
        "target_met": many / one <= TARGET_RATIO,
        # one more run each, CPU seconds: this controller's process vs all the hosts' containers
        "cpu_s": cpu,
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
