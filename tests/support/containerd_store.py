"""Docker with the containerd image store for the benches: Debian 13's Docker 26 and containerd
1.7 (or containerd 2.x from Debian unstable) in a systemd container, its image store on a loop
disk of the host.

The container runs systemd (the molecule scenarios' flags: SYS_ADMIN, NET_ADMIN, MKNOD, host
cgroup namespace; --privileged fails on this host) plus SYS_PACCT for process accounting. The
loop disk's directories are bind-mounted at /var/lib/containerd and /var/lib/docker: containerd's
overlayfs snapshotter mounts its layers there, on XFS (the container's own root is an overlay,
on which overlayfs cannot stack). Its network namespace is its own; the registry is started inside
it (nsenter), on 127.0.0.1, which Docker pulls from without TLS.

The host reaches the inner daemon through /proc/PID/root/run/docker.sock, times pulls with the
host's clocks and the loop disk's counters, and proves which decompressor ran with the kernel's
process accounting inside the container (accton, dump-acct): the programs that ran, their CPU time.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuhost.engine import EngineClient, EngineUnavailable

BASE_IMAGE = "local/debian-systemd:trixie"
PACKAGES = ["docker.io", "docker-cli", "containerd", "isal", "pigz", "zstd", "acct", "curl", "python3-typer",
            "python3-rich", "ca-certificates"]
APT_CACHE = Path("/var/cache/gpuhost/apt/trixie")
SYSTEMD_FLAGS = [
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "MKNOD", "--cap-add", "SYS_PACCT",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined", "--cgroupns=host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
]
DAEMON_JSON = {
    "features": {"containerd-snapshotter": True},
    "bridge": "none",
    "iptables": False,
    "ip-masq": False,
    "max-concurrent-downloads": 3,
}
ACCT_FILE = "/var/log/gpuhost-bench.acct"
SOURCE_DIR = "/opt/gpuhost"  # the repository, read-only: `python3 -m gpuhost` inside


def _run(*command: str, timeout: float = 900.0, check: bool = True) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)[:200]}: {proc.stderr.strip()[-1500:] or proc.stdout.strip()[-1500:]}")
    return proc.stdout.strip()


@dataclass(frozen=True)
class Flavour:
    """Which Docker and containerd the image holds."""

    name: str  # "containerd" (Debian 13: Docker 26, containerd 1.7) or "containerd2" (containerd 2.x from sid)
    image: str

    @property
    def from_unstable(self) -> bool:
        return self.name == "containerd2"


def flavour(name: str, prefix: str) -> Flavour:
    return Flavour(name, f"{prefix}-{name}:trixie")


def build_image(chosen: Flavour, log: Any) -> bool:
    """Build the flavour's image unless it exists; True when this call built it."""
    if subprocess.run(["docker", "image", "inspect", chosen.image], capture_output=True, check=False).returncode == 0:
        return False
    APT_CACHE.mkdir(parents=True, exist_ok=True)
    name = chosen.image.replace(":", "-").replace("/", "-") + "-build"
    script = ["set -e", "export DEBIAN_FRONTEND=noninteractive", "apt-get update -qq",
              f"apt-get install -y -qq --no-install-recommends {' '.join(PACKAGES)} >/dev/null"]
    if chosen.from_unstable:
        # containerd 2.x: Debian unstable's, a static Go binary that only needs libc
        script += ["echo 'deb http://deb.debian.org/debian sid main' > /etc/apt/sources.list.d/sid.list",
                   "apt-get -o Acquire::Check-Valid-Until=false update -qq",
                   "apt-get install -y -qq --no-install-recommends -t sid containerd >/dev/null",
                   "rm /etc/apt/sources.list.d/sid.list", "apt-get update -qq"]
    script += ["systemctl disable docker.service docker.socket containerd.service >/dev/null 2>&1 || true",
               "apt-get clean"]
    log(f"building {chosen.image} (apt-get install {' '.join(PACKAGES)})")
    _run("docker", "run", "--name", name, "-v", f"{APT_CACHE}:/var/cache/apt/archives", BASE_IMAGE,
         "bash", "-c", "; ".join(script), timeout=1800)
    try:
        _run("docker", "commit", "-c", 'CMD ["/lib/systemd/systemd"]', name, chosen.image)
    finally:
        _run("docker", "rm", "-f", name, check=False)
    return True


class Instance:
    """One running container of a flavour with its image store on `store_dir`."""

    def __init__(self, chosen: Flavour, name: str, store_dir: Path, repository: Path) -> None:
        self.flavour = chosen
        self.name = name
        self.store_dir = store_dir
        self.repository = repository
        self.pid = 0

    def start(self) -> Instance:
        for sub in ("containerd", "docker"):
            (self.store_dir / sub).mkdir(parents=True, exist_ok=True)
        _run("docker", "run", "-d", "--name", self.name, *SYSTEMD_FLAGS,
             "-v", f"{self.store_dir / 'containerd'}:/var/lib/containerd",
             "-v", f"{self.store_dir / 'docker'}:/var/lib/docker",
             "-v", f"{self.repository}:{SOURCE_DIR}:ro",
             self.flavour.image, "/lib/systemd/systemd")
        self.pid = int(_run("docker", "inspect", "-f", "{{.State.Pid}}", self.name))
        deadline = time.monotonic() + 60
        while self.exec("systemctl", "is-system-running", check=False) not in ("running", "degraded"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: systemd did not come up")
            time.sleep(0.5)
        self.exec("mkdir", "-p", "/etc/docker")
        self.write("/etc/docker/daemon.json", json.dumps(DAEMON_JSON))
        return self

    def exec(self, *command: str, check: bool = True, timeout: float = 900.0) -> str:
        return _run("docker", "exec", self.name, *command, check=check, timeout=timeout)

    def write(self, path: str, text: str) -> None:
        subprocess.run(["docker", "exec", "-i", self.name, "sh", "-c", f"cat > {path}"], input=text, text=True,
                       check=True, timeout=60)

    @property
    def host(self) -> str:
        return f"unix:///proc/{self.pid}/root/run/docker.sock"

    def client(self) -> EngineClient:
        return EngineClient(self.host, timeout=900.0)

    def restart_daemons(self, environment: dict[str, str]) -> None:
        """containerd and dockerd again, containerd with `environment` (the decompressor switches)."""
        self.exec("mkdir", "-p", "/etc/systemd/system/containerd.service.d")
        lines = "".join(f"Environment={key}={value}\n" for key, value in sorted(environment.items()))
        self.write("/etc/systemd/system/containerd.service.d/gpuhost-bench.conf", f"[Service]\n{lines}")
        self.exec("systemctl", "daemon-reload")
        self.exec("systemctl", "stop", "docker.service", "docker.socket", "containerd.service", check=False)
        self.exec("systemctl", "start", "containerd.service", "docker.service")
        deadline = time.monotonic() + 60
        client = self.client()
        while True:
            with contextlib.suppress(EngineUnavailable, OSError):
                if client.ping():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: dockerd did not answer: "
                                   f"{self.exec('journalctl', '-u', 'docker', '-n', '20', check=False)}")
            time.sleep(0.3)

    def daemon_pids(self) -> list[int]:
        """Host pids of containerd and dockerd (their CPU time, with reaped children, is the unpack's)."""
        listing = _run("docker", "top", self.name, "-eo", "pid,comm")
        return [int(line.split()[0]) for line in listing.splitlines()[1:]
                if len(line.split()) == 2 and line.split()[1] in ("containerd", "dockerd")]

    @contextlib.contextmanager
    def accounting(self) -> Iterator[dict[str, dict[str, float]]]:
        """Process accounting in the container while the block runs; yields, filled afterwards,
        {program: {"processes": n, "cpu_s": seconds}} of what ran."""
        ran: dict[str, dict[str, float]] = {}
        self.exec("sh", "-c", f": > {ACCT_FILE}")
        self.exec("accton", ACCT_FILE)
        try:
            yield ran
        finally:
            self.exec("accton", "off", check=False)
            ran.update(parse_dump_acct(self.exec("dump-acct", ACCT_FILE, check=False)))

    def gpuhost(self, *args: str, timeout: float = 1800.0) -> str:
        """`python3 -m gpuhost ARGS` inside (Debian's python3-typer and python3-rich)."""
        return self.exec("env", f"PYTHONPATH={SOURCE_DIR}", "python3", "-m", "gpuhost", *args, timeout=timeout)

    def stop(self) -> None:
        _run("docker", "rm", "-f", "-v", self.name, check=False, timeout=120)


def parse_dump_acct(text: str) -> dict[str, dict[str, float]]:
    """dump-acct's lines (comm|version|utime|stime|elapsed|...) summed per program."""
    ran: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 5 or not fields[0]:
            continue
        try:
            cpu = float(fields[2]) + float(fields[3])
        except ValueError:
            continue
        entry = ran.setdefault(fields[0], {"processes": 0, "cpu_s": 0.0})
        entry["processes"] += 1
        # dump-acct prints clock ticks
        entry["cpu_s"] = round(entry["cpu_s"] + cpu / 100.0, 2)
    return ran


def remove_image(chosen: Flavour) -> None:
    if shutil.which("docker"):
        _run("docker", "rmi", "-f", chosen.image, check=False)
