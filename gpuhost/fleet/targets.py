"""Fleet targets: the hosts a fleet check reaches, from `--host` specs or an Ansible inventory."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from gpuhost.model import UsageError
from gpuhost.redact import redact_url

DEFAULT_PYTHON = "python3"
# `ansible_connection` values a fleet check can serve: over SSH (paramiko), or this machine in-process.
SSH_CONNECTIONS = frozenset({"ssh", "paramiko", "smart", "ansible.builtin.ssh", "ansible.builtin.paramiko_ssh"})
LOCAL_CONNECTIONS = frozenset({"local", "ansible.builtin.local"})

_HOST_SPEC = re.compile(
    r"""^(?:(?P<user>[^@\s]+)@)?          # optional user@
        (?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]   # [ipv6]
          |(?P<host>[^:@\[\]\s/]+))        # or a name / IPv4
        (?::(?P<port>\d+))?$""",
    re.VERBOSE,
)


@dataclass
class Target:
    """One host to check and how to reach it. Unset fields fall back to ~/.ssh/config, then defaults."""

    name: str
    hostname: str
    port: int | None = None
    user: str | None = None
    identity_files: list[str] = field(default_factory=list)
    # `-F FILE` and `-o Key=Value` / `-J JUMP` taken from ansible_ssh_common_args / ansible_ssh_extra_args
    ssh_config_file: str | None = None
    ssh_options: dict[str, str] = field(default_factory=dict)
    connection: str = "ssh"
    python: str = DEFAULT_PYTHON
    become: bool = False
    # why this host cannot be checked (an unsupported connection or become method): a finding, not an error
    unsupported: str = ""

    @property
    def is_local(self) -> bool:
        return self.connection in LOCAL_CONNECTIONS

    @property
    def is_ssh(self) -> bool:
        return self.connection in SSH_CONNECTIONS


def parse_port(text: str, what: str) -> int:
    try:
        port = int(str(text).strip())
    except ValueError:
        raise UsageError(f"{what}: port {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise UsageError(f"{what}: port {port} is outside 1-65535")
    return port


def parse_host_spec(spec: str) -> Target:
    """`[USER@]HOST[:PORT]`, IPv6 as `[ADDR]:PORT`: the form `--host` takes."""
    text = spec.strip()
    # a `user:password@` typed here is shown as `***@`, never repeated
    shown = redact_url(f"ssh://{spec}")[len("ssh://"):]
    match = _HOST_SPEC.match(text)
    if not match:
        raise UsageError(
            f"--host {shown!r} is not [USER@]HOST[:PORT]",
            "Examples: --host gpu-01, --host ubuntu@10.0.3.7, --host h2:2222, --host admin@[2001:db8::7]:22",
        )
    if ":" in (match.group("user") or ""):
        raise UsageError(
            f"--host {shown!r}: a password cannot be given in --host",
            "gpuhost logs in with SSH keys (ssh-agent, IdentityFile in ssh_config, --ssh-config): "
            "write --host USER@HOST[:PORT].",
        )
    hostname = match.group("v6") or match.group("host")
    port = parse_port(match.group("port"), f"--host {shown!r}") if match.group("port") else None
    return Target(name=text, hostname=hostname, port=port, user=match.group("user"))


def parse_ssh_args(text: str, what: str) -> tuple[str | None, dict[str, str]]:
    """The OpenSSH arguments Ansible users put in ansible_ssh_common_args that decide where and how
    to connect: `-F FILE`, `-o Key=Value` (or `-o Key Value`), `-J JUMP`, `-p PORT`, `-l USER`, `-i KEY`.
    Other flags are ignored."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{what}: cannot split {text!r}: {exc}") from None
    config_file: str | None = None
    options: dict[str, str] = {}
    flag_keys = {"-J": "proxyjump", "-p": "port", "-l": "user", "-i": "identityfile"}
    index = 0
    while index < len(words):
        word = words[index]
        flag, value = word[:2], word[2:]
        if flag in ("-F", "-o", *flag_keys) and not value:
            index += 1
            if index >= len(words):
                raise UsageError(f"{what}: {flag} needs a value in {text!r}")
            value = words[index]
        if flag == "-F":
            config_file = value
        elif flag == "-o":
            key, sep, val = value.partition("=")
            if not sep:
                key, _, val = value.partition(" ")
            options[key.strip().lower()] = val.strip()
        elif flag in flag_keys:
            options[flag_keys[flag]] = value
        index += 1
    return config_file, options
