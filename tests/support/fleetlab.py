"""A fleet of real SSH hosts on this machine, for the fleet-check tests and bench/fleet.py.

Each host is a container of `gpuhost-fleet-sshd:<release>` (local/debian-systemd:bookworm or
:trixie plus openssh-server, built here once) in the HOST network namespace, its sshd listening on its own
127.0.0.1:<port> with its own host key; a user `fleet` (passwordless sudo) logs in with one test key.
Nothing is reached through a bridge or a container address. A host can be given files (a CDI spec,
an installed agent), a changed host key (known_hosts lists another key), an sshd without the sftp
subsystem, or no container at all (a port where nothing listens). The lab writes an ssh_config, a
known_hosts file and an Ansible inventory that gpuhost, ssh and Ansible all use as they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IMAGE = "gpuhost-fleet-sshd"  # :bookworm (python 3.11), :trixie (python 3.13)
PREFIX = "gpuhost-fleet-"
LABEL = "gpuhost-fleet.lab"
USER = "fleet"
KEY_DIR = "/etc/ssh/gpuhost-fleet"
DOCKERFILE = f"""FROM local/debian-systemd:{{release}}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server \\
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \\
 && mkdir -p /run/sshd \\
 && useradd --create-home --shell /bin/sh {USER} \\
 && echo '{USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{USER} && chmod 0440 /etc/sudoers.d/{USER}
"""
DOCKERFILE_SHA = hashlib.sha256(DOCKERFILE.encode()).hexdigest()[:16]


def _docker() -> Any:
    import docker

    return docker.from_env(timeout=120)


def ensure_image(release: str = "bookworm") -> str:
    """Build the sshd image for a Debian release unless the one there was built from this Dockerfile
    on the current base image (a rebuilt base image, e.g. with a fixed root mode, rebuilds it)."""
    import docker

    client = _docker()
    tag = f"{IMAGE}:{release}"
    base = client.images.get(f"local/debian-systemd:{release}").id
    outdated = None
    try:
        image = client.images.get(tag)
        labels = image.labels
        if labels.get("gpuhost-fleet.dockerfile") == DOCKERFILE_SHA and labels.get("gpuhost-fleet.base") == base:
            return tag
        outdated = image.id
    except docker.errors.ImageNotFound:
        pass
    client.images.build(
        fileobj=io.BytesIO(DOCKERFILE.replace("{release}", release).encode()),
        tag=tag,
        rm=True,
        forcerm=True,
        network_mode="host",  # apt reaches deb.debian.org directly; no bridge needed
        labels={"gpuhost-fleet.dockerfile": DOCKERFILE_SHA, "gpuhost-fleet.base": base},
    )
    if outdated:
        with contextlib.suppress(docker.errors.APIError):  # still used by a container of another run
            client.images.remove(outdated)
    return tag


def new_key() -> tuple[bytes, str]:
    """An ed25519 key pair: (private key in OpenSSH format, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        dirs: set[str] = set()
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in dirs:
                    dirs.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    archive.addfile(info)
            data, mode = files[path]
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class LabHost:
    name: str
    port: int = 0
    release: str = "bookworm"  # the Debian (and so Python) of the host
    jump_via: str = ""  # reached through this lab host with ProxyJump
    sshd_options: list[str] = field(default_factory=list)  # e.g. ["LogLevel=DEBUG1"]
    sftp: bool = True  # False: sshd_config without `Subsystem sftp`, as on hardened hosts
    running: bool = True  # False: nothing listens on the port
    changed_key: bool = False  # known_hosts lists another key than the one the host offers
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # path -> (content, mode)
    binds: dict[str, str] = field(default_factory=dict)  # this machine's path -> the host's path (read-write)
    inventory_vars: dict[str, Any] = field(default_factory=dict)
    container: str = ""
    host_public_key: str = ""
    known_public_key: str = ""

    @property
    def known_hosts_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"


class FleetLab:
    """Hosts are declared with add(), then start() brings them all up in parallel; stop() removes them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.hosts: dict[str, LabHost] = {}
        self.tag = f"{os.getpid()}-{os.urandom(3).hex()}"
        self.identity = workdir / "id_ed25519"
        self.ssh_config = workdir / "ssh_config"
        self.known_hosts = workdir / "known_hosts"
        self.inventory = workdir / "inventory.yml"

    def add(self, name: str, **settings: Any) -> LabHost:
        host = LabHost(name=name, **settings)
        self.hosts[name] = host
        return host

    def __getitem__(self, name: str) -> LabHost:
        return self.hosts[name]

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, ready_timeout: float = 30.0) -> None:
        for release in sorted({h.release for h in self.hosts.values() if h.running}):
            ensure_image(release)
        self._remove_leftovers()
        self.workdir.mkdir(parents=True, exist_ok=True)
        private, public = new_key()
        self.identity.write_bytes(private)
        self.identity.chmod(0o600)
        Path(f"{self.identity}.pub").write_text(public + "\n")
        for host, port in zip(self.hosts.values(), free_ports(len(self.hosts))):
            host.port = port
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda h: self._start_host(h, public), self.hosts.values()))
        self._write_client_files()
        self._wait_ready(ready_timeout)

    def _start_host(self, host: LabHost, user_public_key: str) -> None:
        if not host.running:
            return
        key_dir = self.workdir / "hosts" / host.name
        key_dir.mkdir(parents=True, exist_ok=True)
        private, host.host_public_key = new_key()
        (key_dir / "host_key").write_bytes(private)
        (key_dir / "host_key").chmod(0o600)
        (key_dir / "authorized_keys").write_text(user_public_key + "\n")
        (key_dir / "authorized_keys").chmod(0o644)
        host.known_public_key = new_key()[1] if host.changed_key else host.host_public_key
        host.container = f"{PREFIX}{host.name}-{self.tag}"
        command = [
            "/usr/sbin/sshd", "-D", "-e", "-p", str(host.port),
            "-o", "ListenAddress=127.0.0.1",
            "-o", f"HostKey={KEY_DIR}/host_key",
            "-o", f"AuthorizedKeysFile={KEY_DIR}/authorized_keys",
            "-o", "UseDNS=no",
            "-o", "MaxStartups=100",
        ]  # fmt: skip
        for option in host.sshd_options:
            command += ["-o", option]
        if not host.sftp:
            # no `-o` can remove a subsystem: sshd reads a copy of its config without the Subsystem lines
            config = "/etc/ssh/sshd_config.nosftp"
            strip = f"grep -iv '^[[:space:]]*subsystem' /etc/ssh/sshd_config > {config} && exec \"$@\""
            command = ["/bin/sh", "-c", strip, "sshd", *command, "-f", config]
        container = _docker().containers.create(
            f"{IMAGE}:{host.release}",
            command=command,
            name=host.container,
            network_mode="host",
            volumes={str(key_dir): {"bind": KEY_DIR, "mode": "ro"},
                     **{source: {"bind": target, "mode": "rw"} for source, target in host.binds.items()}},
            labels={LABEL: self.tag, f"{LABEL}.pid": str(os.getpid())},
        )
        if host.files:
            container.put_archive("/", _tar(host.files))
        container.start()

    def _write_client_files(self) -> None:
        self.known_hosts.write_text(
            "".join(f"{h.known_hosts_name} {h.known_public_key}\n" for h in self.hosts.values() if h.running)
        )
        self.ssh_config.write_text(self.client_config(self.known_hosts, identity=True))
        gpu_hosts = {}
        for host in self.hosts.values():
            host_vars: dict[str, Any] = {"ansible_host": "127.0.0.1", "ansible_port": host.port}
            if host.jump_via:
                jump = self.hosts[host.jump_via]
                host_vars["ansible_ssh_common_args"] = f"-F {self.ssh_config} -o ProxyJump={USER}@127.0.0.1:{jump.port}"
            gpu_hosts[host.name] = {**host_vars, **host.inventory_vars}
        inventory = {
            "all": {
                "vars": {
                    "ansible_user": USER,
                    "ansible_ssh_common_args": f"-F {self.ssh_config}",
                    "ansible_python_interpreter": "/usr/bin/python3",
                },
                "children": {"gpu_hosts": {"hosts": gpu_hosts}},
            }
        }
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))

    def client_config(self, known_hosts: Path, identity: bool = True) -> str:
        """An ssh_config for this lab: OpenSSH (`ssh -F`), Ansible and gpuhost read the same file."""
        lines = [
            "Host *",
            f"  User {USER}",
            f"  UserKnownHostsFile {known_hosts}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "  ConnectTimeout 10",
        ]
        if identity:
            lines += [f"  IdentityFile {self.identity}", "  IdentitiesOnly yes"]
        return "\n".join(lines) + "\n"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {h.name: h.port for h in self.hosts.values() if h.running}
        while pending:
            for name, port in list(pending.items()):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                        if sock.recv(64).startswith(b"SSH-2.0-"):
                            del pending[name]
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                logs = {n: self.logs(n)[-400:] for n in pending}
                raise RuntimeError(f"sshd did not answer within {timeout:g} s: {logs}")
            if pending:
                time.sleep(0.1)

    def logs(self, name: str) -> str:
        host = self.hosts[name]
        if not host.container:
            return ""
        try:
            return str(_docker().containers.get(host.container).logs().decode(errors="replace"))
        except Exception as exc:
            return f"(no logs: {exc})"

    def exec(self, name: str, command: list[str], user: str = "root") -> tuple[int, str]:
        result = _docker().containers.get(self.hosts[name].container).exec_run(command, user=user)
        return int(result.exit_code), result.output.decode(errors="replace")

    def stop(self) -> None:
        client = _docker()
        for host in self.hosts.values():
            if host.container:
                with contextlib.suppress(Exception):  # already gone
                    client.containers.get(host.container).remove(force=True)

    def _remove_leftovers(self) -> None:
        """Containers of labs whose process is gone (an interrupted run); never another live run's."""
        for container in _docker().containers.list(all=True, filters={"label": LABEL}):
            if not container.name.startswith(PREFIX):
                continue
            pid = int(container.labels.get(f"{LABEL}.pid", "0") or 0)
            if pid and not os.path.exists(f"/proc/{pid}"):
                container.remove(force=True)
