"""The remote side of a fleet check: run the gpuhost agent's `facts` on the host, with nothing installed.

One command probes for an installed agent (roles/gpuhost_agent) that is byte-for-byte the one this
controller would ship (the zipapp is reproducible, so equal bytes mean equal collectors) and runs it;
otherwise it makes a private directory (`mktemp -d`, mode 0700), the agent goes there over SFTP (or,
where sshd has no sftp subsystem, through `cat` on the exec channel), its sha256 is checked there, it
runs with the host's python3 (>= 3.9) and the directory is removed. Facts come back as JSON; the rules run
on the controller (gpuhost.check.report_for), so a host's verdict is what `gpuhost check` on that host
says for the same facts, under the options of this run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import marshal
import os
import shlex
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from typing import Any, Callable

import paramiko

from gpuhost.fleet.ssh import ConnectFailure, run_command
from gpuhost.fleet.targets import Target
from gpuhost.hostfacts import CollectOptions
from gpuhost.ship import zipapp_bytes

# where roles/gpuhost_agent installs the zipapp (gpuhost_agent_path's default)
INSTALLED_AGENT = "/usr/local/lib/gpuhost/gpuhost-agent.pyz"
SHIP_MARKER = "gpuhost-fleet-ship "
CLEANUP_SECONDS = 5.0
# what the run command says when the copied agent's sha256 is not the one sent
DAMAGED = "gpuhost-fleet: agent checksum mismatch"
DAMAGED_EXIT = 71


class Agent:
    """The agent this run ships: the reproducible zipapp (what roles/gpuhost_agent installs), and for
    hosts whose python3 is this controller's major.minor the same archive with compiled modules added.

    zipimport never writes bytecode, so the plain archive compiles every module on every run (about
    0.25 s of the host's CPU); a host with another Python skips the added .pyc files (their magic
    number does not match) and compiles the sources as before.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.python = f"{sys.version_info[0]}.{sys.version_info[1]}"
        self._compiled: bytes | None = None
        self._lock = threading.Lock()

    @classmethod
    def build(cls) -> Agent:
        return cls(zipapp_bytes())

    def payload_for(self, remote_python: str) -> tuple[bytes, bool]:
        """The bytes to ship to a host whose `python3 -V` said `remote_python`, and whether compiled."""
        words = remote_python.split()  # "Python 3.11.2"
        if len(words) == 2 and words[0] == "Python" and ".".join(words[1].split(".")[:2]) == self.python:
            return self.compiled(), True
        return self.data, False

    def compiled(self) -> bytes:
        with self._lock:
            if self._compiled is None:
                self._compiled = _cached(f"fleet-agent-{self.sha256[:16]}-py{self.python}.pyz", self._compile)
            return self._compiled

    def _compile(self) -> bytes:
        shebang, _, _ = self.data.partition(b"\n")
        source = zipfile.ZipFile(io.BytesIO(self.data))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for info in source.infolist():
                body = source.read(info)
                archive.writestr(info, body)
                if info.filename.endswith(".py") and info.filename != "__main__.py":
                    code = compile(body, info.filename, "exec", dont_inherit=True)
                    # PEP 552 unchecked-hash pyc: magic, flags=1, source hash, code
                    header = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
                    pyc = header + importlib.util.source_hash(body) + marshal.dumps(code)
                    compiled = zipfile.ZipInfo(info.filename + "c", date_time=info.date_time)
                    compiled.external_attr, compiled.compress_type = info.external_attr, zipfile.ZIP_DEFLATED
                    archive.writestr(compiled, pyc)
        return shebang + b"\n" + buffer.getvalue()


def _cached(name: str, build: Callable[[], bytes]) -> bytes:
    """Build once per controller: kept under ~/.cache/gpuhost (or $XDG_CACHE_HOME/gpuhost)."""
    directory = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gpuhost")
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        pass
    data = build()
    try:
        os.makedirs(directory, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=directory, prefix=name + ".")
        with os.fdopen(handle, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        pass  # no cache: build again next run
    return data


@dataclass
class RemoteFacts:
    facts: dict[str, Any]
    agent: str  # "installed", "shipped" or "shipped-compiled"
    transfer: str = ""  # how a shipped agent travelled: "sftp", or "pipe" where sshd offers no SFTP


def facts_arguments(options: CollectOptions) -> list[str]:
    """The agent's `facts` flags for the collect options that differ from the defaults."""
    default = CollectOptions()
    args: list[str] = []
    for flag, value, standard in (
        ("--root", options.root, default.root),
        ("--dev-root", options.dev_root, default.dev_root),
        ("--docker-host", options.docker_host, default.docker_host),
        ("--daemon-json", options.daemon_json, default.daemon_json),
    ):
        if value is not None and value != standard:
            args += [flag, value]
    return args


def _agent_command(target: Target, pyz: str, args: list[str]) -> str:
    words = (["sudo", "-n"] if target.become else []) + [target.python, pyz, "facts", *args]
    return " ".join(shlex.quote(w) for w in words)


def probe_script(target: Target, agent: Agent, args: list[str]) -> str:
    installed = shlex.quote(INSTALLED_AGENT)
    return (
        f"p={installed}; "
        f'if [ -r "$p" ] && [ "$(sha256sum < "$p" 2>/dev/null)" = "{agent.sha256}  -" ]; then '
        f"exec {_agent_command(target, INSTALLED_AGENT, args)}; fi; "
        'd=$(mktemp -d "${TMPDIR:-/tmp}/gpuhost-fleet.XXXXXXXX") || exit 70; '
        f"v=$({shlex.quote(target.python)} -V 2>&1); "
        f'printf "{SHIP_MARKER}%s %s\\n" "$d" "$v"'
    )


def collect_remote_facts(
    client: paramiko.SSHClient, target: Target, agent: Agent, args: list[str], deadline: float
) -> RemoteFacts:
    probe = run_command(client, probe_script(target, agent, args), deadline)
    first_line = probe.stdout.split(b"\n", 1)[0].decode(errors="replace")
    if probe.exit_status == 0 and first_line.startswith(SHIP_MARKER):
        directory, _, python_version = first_line[len(SHIP_MARKER) :].strip().partition(" ")
        payload, compiled = agent.payload_for(python_version)
        facts, transfer = _ship_and_run(client, target, payload, args, directory, deadline)
        return RemoteFacts(facts, "shipped-compiled" if compiled else "shipped", transfer)
    if probe.exit_status == 70:
        raise ConnectFailure(
            "fleet.agent-failed",
            f"cannot create a private temporary directory: {_tail(probe.stderr)}",
            "Check that /tmp (or $TMPDIR) is writable for the SSH user.",
        )
    return RemoteFacts(_parse_facts(probe.exit_status, probe.stdout, probe.stderr, target), "installed")


def _ship_and_run(
    client: paramiko.SSHClient, target: Target, payload: bytes, args: list[str], directory: str, deadline: float
) -> tuple[dict[str, Any], str]:
    """Copy the agent into the private directory, check its sha256 there, run it, remove the directory."""
    if not directory.startswith("/") or "gpuhost-fleet." not in directory:
        raise ConnectFailure("fleet.agent-failed", f"unexpected temporary directory {directory!r} from mktemp")
    pyz = f"{directory}/gpuhost-agent.pyz"
    quoted = shlex.quote(directory)
    try:
        transfer = _upload(client, payload, pyz, deadline)
        result = run_command(client, run_script(target, directory, hashlib.sha256(payload).hexdigest(), args), deadline)
    except ConnectFailure:
        _cleanup(client, quoted)
        raise
    if result.exit_status == DAMAGED_EXIT and DAMAGED.encode() in result.stderr:
        raise ConnectFailure(
            "fleet.agent-failed",
            f"the agent copied to the host over {transfer} does not have the sha256 it was sent with",
            "Check the host's disk space in $TMPDIR (or /tmp), then run again.",
        )
    return _parse_facts(result.exit_status, result.stdout, result.stderr, target), transfer


def run_script(target: Target, directory: str, sha256: str, args: list[str]) -> str:
    """Check the copied agent's sha256, run it, remove its directory whatever happened; exit with its code."""
    pyz = f"{directory}/gpuhost-agent.pyz"
    quoted = shlex.quote(directory)
    return (
        f'[ "$(sha256sum < {shlex.quote(pyz)})" = "{sha256}  -" ] || '
        f"{{ echo '{DAMAGED}' >&2; rm -rf {quoted}; exit {DAMAGED_EXIT}; }}; "
        f"{_agent_command(target, pyz, args)}; rc=$?; rm -rf {quoted}; exit $rc"
    )


def _upload(client: paramiko.SSHClient, data: bytes, path: str, deadline: float) -> str:
    """Copy `data` to `path`: over SFTP, or through `cat` on the exec channel where sshd has no sftp
    subsystem (what Ansible's `smart` transfer falls back to). Returns which one carried it."""
    try:
        sftp = client.open_sftp()
    except (paramiko.SSHException, OSError, EOFError):
        _pipe(client, data, path, deadline)
        return "pipe"
    try:
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(max(0.1, deadline - time.monotonic()))
        with sftp.open(path, "wb") as remote_file:
            remote_file.set_pipelined(True)
            remote_file.write(data)
    except OSError as exc:
        if deadline <= time.monotonic():
            raise ConnectFailure("fleet.timeout", "the per-host time limit ran out while copying the agent") from None
        raise ConnectFailure("fleet.agent-failed", f"cannot copy the agent to {path}: {exc}") from None
    finally:
        sftp.close()
    return "sftp"


def _pipe(client: paramiko.SSHClient, data: bytes, path: str, deadline: float) -> None:
    result = run_command(client, f"umask 077 && cat > {shlex.quote(path)}", deadline, stdin=data)
    if result.exit_status != 0:
        raise ConnectFailure(
            "fleet.agent-failed",
            f"cannot copy the agent to {path} (no SFTP on this host, and `cat` exited {result.exit_status}): "
            f"{_tail(result.stderr)}",
            "Check that $TMPDIR (or /tmp) on the host has room, or install the agent (roles/gpuhost_agent).",
        )


def _cleanup(client: paramiko.SSHClient, quoted_directory: str) -> None:
    with contextlib.suppress(ConnectFailure):
        run_command(client, f"rm -rf {quoted_directory}", time.monotonic() + CLEANUP_SECONDS)


def _tail(data: bytes, lines: int = 3) -> str:
    text = data.decode(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "(no output)"


def _parse_facts(exit_status: int, stdout: bytes, stderr: bytes, target: Target) -> dict[str, Any]:
    err = stderr.decode(errors="replace")
    if exit_status == 127 or "needs Python >= 3.9" in err:
        raise ConnectFailure(
            "fleet.python",
            f"the agent cannot run with {target.python}: {_tail(stderr)}",
            "Install python3 >= 3.9 on the host (AL2023, Ubuntu 22.04 and Debian 12 have it), or point "
            "ansible_python_interpreter at one.",
        )
    if target.become and exit_status == 1 and err.lstrip().startswith("sudo:"):
        raise ConnectFailure(
            "fleet.become-failed",
            f"sudo -n failed: {_tail(stderr)}",
            "Allow the SSH user passwordless sudo for the agent, or check without --become.",
        )
    try:
        payload = json.loads(stdout.decode(errors="replace"))
    except ValueError:
        raise ConnectFailure(
            "fleet.agent-failed",
            f"the agent exited {exit_status} without a JSON report: {_tail(stderr or stdout)}",
            "Run it by hand on the host: python3 gpuhost-agent.pyz facts",
        ) from None
    if isinstance(payload, dict) and "error" in payload:
        raise ConnectFailure(
            "fleet.agent-failed", f"the agent failed: {payload['error']}", str(payload.get("remedy") or "")
        )
    if not isinstance(payload, dict) or "kernel" not in payload:
        raise ConnectFailure("fleet.agent-failed", "the agent printed JSON that is not a facts document")
    return payload
