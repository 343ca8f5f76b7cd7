"""SSH connections for fleet checks (paramiko), the way OpenSSH would make them.

Honours ~/.ssh/config (or `-F FILE`): HostName, User, Port, IdentityFile, ProxyJump, ProxyCommand,
UserKnownHostsFile, GlobalKnownHostsFile, StrictHostKeyChecking=accept-new; the ssh agent; known_hosts.
A host whose key is not known is refused unless the user opted in (`--accept-new-host-keys` or
StrictHostKeyChecking accept-new); a host whose key CHANGED is always refused. Every failure is a
ConnectFailure carrying the finding id the fleet report gives that host.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import getpass
import glob
import hashlib
import logging
import os
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

import paramiko

from gpuhost import userfile
from gpuhost.fleet.targets import Target, parse_host_spec, parse_port
from gpuhost.model import UsageError

# paramiko logs transport errors from its own threads; the fleet report already says what went wrong.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

DEFAULT_USER_KNOWN_HOSTS = "~/.ssh/known_hosts ~/.ssh/known_hosts2"
DEFAULT_GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"
_INCLUDE = re.compile(r"^\s*include\s+(.+)$", re.IGNORECASE)


class ConnectFailure(Exception):
    """Why a host could not be reached or run: becomes that host's `fleet.*` finding."""

    def __init__(self, finding_id: str, message: str, remedy: str = "", evidence: dict[str, Any] | None = None):
        super().__init__(message)
        self.finding_id = finding_id
        self.message = message
        self.remedy = remedy
        self.evidence = evidence or {}


def fingerprint(key: paramiko.PKey) -> str:
    """The SHA256 fingerprint as `ssh-keygen -l` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


# ---- ~/.ssh/config ---------------------------------------------------------------------------


def _config_text(path: str, depth: int = 0) -> str:
    """The file with its `Include` lines expanded in place (paramiko does not follow them)."""
    if depth > 16:
        raise UsageError(f"ssh config {path}: Include nested more than 16 deep")
    lines = userfile.read_text(path, "ssh config", userfile.SSH_CONFIG_MAX, errors="replace").splitlines()
    base = os.path.dirname(path)
    out: list[str] = []
    for line in lines:
        match = _INCLUDE.match(line)
        if not match:
            out.append(line)
            continue
        for pattern in match.group(1).split():
            pattern = os.path.expanduser(pattern)
            if not os.path.isabs(pattern):
                pattern = os.path.join(base, pattern)
            for included in sorted(glob.glob(pattern)):
                if os.path.isfile(included):
                    out.append(_config_text(included, depth + 1))
    return "\n".join(out)


MAX_KEY_FILE_BYTES = 1024 * 1024  # an RSA-16384 key in PEM is about 13 kB
DEFAULT_SSH_CONFIGS = ("~/.ssh/config", "/etc/ssh/ssh_config")


def ssh_config_name(path: str | None) -> str:
    """How messages name the ssh config a run reads."""
    return path or " and ".join(DEFAULT_SSH_CONFIGS)


def load_ssh_config(path: str | None = None) -> paramiko.SSHConfig:
    """`path` when given (like `ssh -F`), else ~/.ssh/config followed by /etc/ssh/ssh_config."""
    # what is there is read: a FIFO or a directory there is refused by name, not skipped
    defaults = [p for p in map(os.path.expanduser, DEFAULT_SSH_CONFIGS) if os.path.lexists(p)]
    candidates = [path] if path else defaults
    name = ssh_config_name(path)
    text = "\n".join(_config_text(candidate) for candidate in candidates)
    try:
        return paramiko.SSHConfig.from_text(text)
    except Exception as exc:  # ConfigParseError, and whatever else a line paramiko cannot read raises
        raise UsageError(
            f"ssh config {name}: {exc}", "Fix that line; `ssh -G HOST` shows how OpenSSH reads the file."
        ) from None


@dataclass
class SshSettings:
    """Where and how to connect to one host, resolved like OpenSSH: command line/inventory, then config."""

    hostname: str
    port: int = 22
    user: str = ""
    identity_files: list[str] = field(default_factory=list)
    proxy_jump: str | None = None
    proxy_command: str | None = None
    user_known_hosts: list[str] = field(default_factory=list)
    global_known_hosts: list[str] = field(default_factory=list)
    accept_new: bool = False

    @property
    def address(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{self.user}@{host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return known_hosts_name(self.hostname, self.port)


def _none_or(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if not text or text.lower() == "none" else text


def resolve(target: Target, config: paramiko.SSHConfig, accept_new_host_keys: bool = False) -> SshSettings:
    """How to reach `target`; a config value that cannot be used (a port that is not one) is a UsageError."""
    try:
        options: dict[str, Any] = dict(config.lookup(target.hostname))
    except Exception as exc:  # a token or Match paramiko cannot evaluate
        raise UsageError(f"cannot look up {target.hostname}: {exc}") from None
    for key, value in target.ssh_options.items():
        options[key] = [value] if key == "identityfile" else value
    hostname = str(options.get("hostname") or target.hostname)
    port = target.port or (parse_port(options["port"], f"Port for {target.hostname}") if options.get("port") else 22)
    user = target.user or str(options.get("user") or "") or getpass.getuser()
    identity_files = [os.path.expanduser(p) for p in [*target.identity_files, *options.get("identityfile", [])]]
    strict = str(options.get("stricthostkeychecking", "yes")).lower()

    def paths(key: str, default: str) -> list[str]:
        return [os.path.expanduser(p) for p in str(options.get(key) or default).split()]

    return SshSettings(
        hostname=hostname,
        port=port,
        user=user,
        identity_files=[p for p in dict.fromkeys(identity_files) if _usable_key_file(p)],
        proxy_jump=_none_or(options.get("proxyjump")),
        proxy_command=_none_or(options.get("proxycommand")),
        user_known_hosts=paths("userknownhostsfile", DEFAULT_USER_KNOWN_HOSTS),
        global_known_hosts=paths("globalknownhostsfile", DEFAULT_GLOBAL_KNOWN_HOSTS),
        accept_new=accept_new_host_keys or strict in ("accept-new", "no", "off"),
    )


def _usable_key_file(path: str) -> bool:
    """A key file paramiko may read: a regular file of key size (a FIFO would block it, a device
    such as /dev/zero would never end; OpenSSH skips what it cannot use, and so does this)."""
    try:
        return os.path.isfile(path) and os.path.getsize(path) <= MAX_KEY_FILE_BYTES
    except OSError:
        return False


# ---- known_hosts -------------------------------------------------------------------------------


class KnownHosts:
    """known_hosts files, each parsed once per run and shared by every connection."""

    def __init__(self) -> None:
        self._files: dict[str, paramiko.HostKeys] = {}
        self._revoked: set[bytes] = set()
        self._lock = threading.Lock()

    def _file(self, path: str) -> paramiko.HostKeys:
        with self._lock:
            keys = self._files.get(path)
            if keys is None:
                keys = self._files[path] = paramiko.HostKeys()
                # unreadable, missing, a FIFO or huge: no keys from it (OpenSSH skips it too)
                for line in (userfile.read_host_text(path, userfile.KNOWN_HOSTS_MAX) or "").splitlines():
                    self._add_line(keys, line.strip())
            return keys

    def _add_line(self, keys: paramiko.HostKeys, line: str) -> None:
        """One known_hosts line, leniently like OpenSSH: a line it cannot use is skipped, not fatal.
        `@revoked` keys are remembered and never accepted; `@cert-authority` lines are not used."""
        if not line or line.startswith("#"):
            return
        marker = ""
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        except Exception:  # InvalidHostKey, a key type paramiko cannot read, ...
            return
        if entry is None or entry.key is None:
            return
        if marker == "@revoked":
            self._revoked.add(entry.key.asbytes())
        elif not marker:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)

    def is_revoked(self, key: paramiko.PKey) -> bool:
        return key.asbytes() in self._revoked

    def lookup(self, name: str, files: list[str]) -> dict[str, paramiko.PKey]:
        found: dict[str, paramiko.PKey] = {}
        for path in files:
            entry = self._file(path).lookup(name)
            if entry is not None:
                for keytype in entry:
                    if not self.is_revoked(entry[keytype]):
                        found.setdefault(keytype, entry[keytype])
        return found

    def remember(self, name: str, key: paramiko.PKey, path: str) -> None:
        """Append a newly accepted key (what OpenSSH's accept-new does)."""
        keys = self._file(path)
        with self._lock:
            keys.add(name, key.get_name(), key)
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            line = paramiko.hostkeys.HostKeyEntry([name], key).to_line() or ""
            try:
                fd = userfile.open_regular(path, "known_hosts", flags=os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            except userfile.UserFileError as exc:
                raise ConnectFailure("fleet.host-key-unknown", f"cannot record the key of {name}: {exc}",
                                     "Make known_hosts a regular file you can write.") from None
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


class _Policy(paramiko.MissingHostKeyPolicy):
    def __init__(self, known: KnownHosts, settings: SshSettings, prefix: str) -> None:
        self.known = known
        self.settings = settings
        self.prefix = prefix

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if self.known.is_revoked(key):
            raise ConnectFailure(
                "fleet.host-key-unknown",
                f"{self.prefix}host key of {hostname} ({key.get_name()} {fingerprint(key)}) is marked @revoked "
                "in known_hosts; refusing to connect",
                "Find out why the key was revoked before trusting this host again.",
                {"known_hosts_name": hostname, "key_type": key.get_name(), "fingerprint": fingerprint(key)},
            )
        if self.settings.accept_new and self.settings.user_known_hosts:
            self.known.remember(hostname, key, self.settings.user_known_hosts[0])
            return
        raise ConnectFailure(
            "fleet.host-key-unknown",
            f"{self.prefix}host key of {hostname} is not in known_hosts ({key.get_name()} {fingerprint(key)}); "
            "refusing to connect",
            "Check the fingerprint out of band and add the key to known_hosts "
            f"(ssh-keyscan -p {self.settings.port} {self.settings.hostname}), or pass --accept-new-host-keys "
            "to trust hosts seen for the first time.",
            {"known_hosts_name": hostname, "key_type": key.get_name(), "fingerprint": fingerprint(key)},
        )


def _tcp_connect(hostname: str, port: int, timeout: float) -> socket.socket:
    """The TCP connection paramiko would open, with Nagle off: a check is a lockstep of small
    messages, and Nagle with delayed ACKs costs about 40 ms on each of them."""
    sock = socket.create_connection((hostname, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _unreachable(message: str, where: str) -> ConnectFailure:
    return ConnectFailure(
        "fleet.unreachable",
        message,
        "Check that the host is up and sshd listens there (security group, port, ProxyJump).",
        {"address": where},
    )


def _no_keys(exc: BaseException) -> bool:
    return "No authentication methods available" in str(exc)


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, socket.timeout):
        return f"no answer within {timeout:g} s"
    # paramiko's banner error wraps what happened: the other side hung up (EOFError) or said nothing
    hung_up = "protocol banner" in str(exc) and isinstance(exc.__context__, EOFError)
    if hung_up or "Indecipherable protocol version" in str(exc):
        return "it answered, but not SSH, and hung up (is something other than sshd listening on that port?)"
    # a server that accepts TCP but never completes the SSH handshake (paramiko says either)
    if "protocol banner" in str(exc) or "No existing session" in str(exc):
        return f"no SSH answer within {timeout:g} s (is an SSH server listening there?)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens on that port)"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        errors = list(exc.errors.values())
        if errors and all(getattr(e, "errno", None) == errno.ECONNREFUSED for e in errors):
            return "connection refused (nothing listens on that port)"
        return "; ".join(str(getattr(e, "strerror", None) or e) for e in errors) or str(exc)
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the name: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


# ---- connections -------------------------------------------------------------------------------


@dataclass
class _Jump:
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: paramiko.SSHClient | None = None
    failure: ConnectFailure | None = None


def _parse_jump(spec: str) -> Target:
    text = spec[len("ssh://") :] if spec.startswith("ssh://") else spec
    try:
        target = parse_host_spec(text)
    except UsageError:
        raise ConnectFailure(
            "fleet.unreachable", f"ProxyJump {spec!r} is not [USER@]HOST[:PORT]", "Fix ProxyJump in the ssh config."
        ) from None
    target.name = spec
    return target


class Connector:
    """Opens SSH connections for one fleet run; jump hosts are connected once and shared."""

    def __init__(
        self,
        config: paramiko.SSHConfig,
        accept_new_host_keys: bool = False,
        connect_timeout: float = 10.0,
        configs: dict[str, paramiko.SSHConfig] | None = None,
    ) -> None:
        self.config = config
        self.configs = configs or {}
        self.accept_new = accept_new_host_keys
        self.connect_timeout = connect_timeout
        self.known = KnownHosts()
        # keyed by (ssh config file, hop, hop, ...): one connection per jump path, shared by its hosts
        self._jumps: dict[tuple[str, ...], _Jump] = {}
        self._lock = threading.Lock()

    def _config(self, path: str) -> paramiko.SSHConfig:
        return self.configs.get(path, self.config) if path else self.config

    def settings_for(self, target: Target) -> SshSettings:
        return resolve(target, self._config(target.ssh_config_file or ""), self.accept_new)

    def validate(self, target: Target) -> None:
        """Resolve `target` and the jump hosts on its way: a config value that cannot be used is a
        UsageError before any host is contacted. A jump spec that is not [USER@]HOST[:PORT] stays that
        host's finding."""
        config = self._config(target.ssh_config_file or "")
        settings = resolve(target, config, self.accept_new)
        for hop in (settings.proxy_jump or "").split(","):
            if hop.strip():
                with contextlib.suppress(ConnectFailure):
                    resolve(_parse_jump(hop.strip()), config, self.accept_new)

    def connect(self, target: Target, deadline: float) -> paramiko.SSHClient:
        settings = self.settings_for(target)
        sock: Any = None
        via = ""
        if settings.proxy_jump:
            chain = tuple(hop.strip() for hop in settings.proxy_jump.split(",") if hop.strip())
            via = f" via {settings.proxy_jump}"
            sock = self._open_through((target.ssh_config_file or "", *chain), settings, deadline)
        elif settings.proxy_command:
            via = " via ProxyCommand"
            command = settings.proxy_command.replace("%h", settings.hostname).replace("%p", str(settings.port))
            command = command.replace("%r", settings.user)
            try:
                sock = paramiko.ProxyCommand(command)
            except (OSError, paramiko.SSHException) as exc:
                raise ConnectFailure("fleet.unreachable", f"ProxyCommand failed: {exc}") from None
        return self._client(settings, "", sock, deadline, via)

    def _timeout(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ConnectFailure("fleet.timeout", "the per-host time limit ran out while connecting")
        return min(self.connect_timeout, left)

    def _client(
        self, settings: SshSettings, prefix: str, sock: Any, deadline: float, via: str = ""
    ) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        name = settings.known_hosts_name
        known = self.known.lookup(name, settings.user_known_hosts + settings.global_known_hosts)
        for keytype, key in known.items():
            client.get_host_keys().add(name, keytype, key)
        client.set_missing_host_key_policy(_Policy(self.known, settings, prefix))
        timeout = self._timeout(deadline)
        where = f"{settings.address}{via}"
        try:
            if sock is None:
                sock = _tcp_connect(settings.hostname, settings.port, timeout)
            client.connect(
                settings.hostname,
                port=settings.port,
                username=settings.user,
                # paramiko takes a list of files too (its stubs say one)
                key_filename=cast(Any, settings.identity_files or None),
                look_for_keys=not settings.identity_files,
                allow_agent=True,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                sock=sock,
            )
        except ConnectFailure:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise ConnectFailure(
                "fleet.host-key-changed",
                f"{prefix}HOST KEY CHANGED for {name}: known_hosts has {exc.expected_key.get_name()} "
                f"{fingerprint(exc.expected_key)}, the host offers {exc.key.get_name()} {fingerprint(exc.key)}; "
                "refusing to connect (a rebuilt host, or someone in the middle)",
                f"If the host was rebuilt, verify the new key and remove the old one: ssh-keygen -R '{name}'.",
                {
                    "known_hosts_name": name,
                    "expected": fingerprint(exc.expected_key),
                    "offered": fingerprint(exc.key),
                },
            ) from None
        except (paramiko.AuthenticationException, paramiko.SSHException) as exc:
            client.close()
            if not isinstance(exc, paramiko.AuthenticationException) and not _no_keys(exc):
                raise _unreachable(f"{prefix}cannot reach {where}: {_reason(exc, timeout)}", where) from None
            keys = ", ".join(settings.identity_files) or "the ssh agent and ~/.ssh/id_*"
            raise ConnectFailure(
                "fleet.auth-failed",
                f"{prefix}authentication as {settings.user} failed at {where}: {exc}",
                f"Check the user and key ({keys}); try `ssh -p {settings.port} {settings.user}@{settings.hostname}`.",
                {"address": where},
            ) from None
        except (OSError, EOFError) as exc:
            client.close()
            raise _unreachable(f"{prefix}cannot reach {where}: {_reason(exc, timeout)}", where) from None
        return client

    def _jump_client(self, path: tuple[str, ...], deadline: float) -> paramiko.SSHClient:
        """`path` is (ssh config file, first hop, ..., this hop): the config applies to every hop, as `ssh -F`."""
        with self._lock:
            entry = self._jumps.setdefault(path, _Jump())
        with entry.lock:
            if entry.client is None and entry.failure is None:
                hop = _parse_jump(path[-1])
                settings = resolve(hop, self._config(path[0]), self.accept_new)
                settings.proxy_jump = settings.proxy_command = None
                try:
                    sock = self._open_through(path[:-1], settings, deadline) if len(path) > 2 else None
                    entry.client = self._client(settings, f"jump host {hop.name}: ", sock, deadline)
                except ConnectFailure as exc:
                    entry.failure = exc
            if entry.failure is not None:
                raise entry.failure
            assert entry.client is not None
            return entry.client

    def _open_through(self, path: tuple[str, ...], settings: SshSettings, deadline: float) -> Any:
        transport = self._jump_client(path, deadline).get_transport()
        if transport is None or not transport.is_active():
            raise ConnectFailure("fleet.unreachable", f"the connection to jump host {path[-1]} closed")
        try:
            return transport.open_channel(
                "direct-tcpip", (settings.hostname, settings.port), ("127.0.0.1", 0), timeout=self._timeout(deadline)
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectFailure(
                "fleet.unreachable",
                f"jump host {path[-1]} cannot reach {settings.hostname}:{settings.port}: {exc}",
                "Check that the host is up and reachable from the jump host.",
                {"address": f"{settings.hostname}:{settings.port}", "via": ",".join(path[1:])},
            ) from None

    def close(self) -> None:
        for entry in self._jumps.values():
            if entry.client is not None:
                entry.client.close()


# ---- commands ----------------------------------------------------------------------------------


@dataclass
class CommandResult:
    exit_status: int
    stdout: bytes
    stderr: bytes


STDIN_CHUNK = 32768
MAX_OUTPUT = 64 * 2**20  # a host's facts are tens of kB


def _send_stdin(channel: paramiko.Channel, data: bytes, deadline: float) -> None:
    """Feed `data` to the command's stdin, then close it. A command that exits early stops the feed:
    its exit status and stderr say why."""
    offset = 0
    while offset < len(data):
        left = deadline - time.monotonic()
        if left <= 0:
            raise ConnectFailure("fleet.timeout", "the per-host time limit ran out while sending the agent")
        channel.settimeout(min(left, 1.0))
        try:
            offset += channel.send(data[offset : offset + STDIN_CHUNK])
        except socket.timeout:
            continue
        except OSError:
            return
    with contextlib.suppress(OSError, EOFError):
        channel.shutdown_write()


def run_command(client: paramiko.SSHClient, command: str, deadline: float, stdin: bytes = b"") -> CommandResult:
    """Run `command` (fed `stdin`, then end of file) and collect its output, giving up at `deadline`
    (a ConnectFailure fleet.timeout)."""
    transport = client.get_transport()
    if transport is None:
        raise ConnectFailure("fleet.unreachable", "the SSH connection closed")
    left = deadline - time.monotonic()
    if left <= 0:
        raise ConnectFailure("fleet.timeout", "the per-host time limit ran out")
    try:
        channel = transport.open_session(timeout=left)
        channel.exec_command(command)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ConnectFailure("fleet.unreachable", f"cannot start a command over SSH: {exc}") from None
    stdout, stderr = bytearray(), bytearray()
    try:
        if stdin:
            _send_stdin(channel, stdin, deadline)
        channel.setblocking(False)
        while True:
            while channel.recv_ready():
                stdout += channel.recv(65536)
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(65536)
            if len(stdout) + len(stderr) > MAX_OUTPUT:
                limit = MAX_OUTPUT // 2**20
                raise ConnectFailure("fleet.agent-failed", f"the host sent more than {limit} MiB of output; stopped")
            pending = channel.recv_ready() or channel.recv_stderr_ready()
            finished = channel.eof_received or channel.closed
            if finished and channel.exit_status_ready() and not pending:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectFailure("fleet.timeout", "the per-host time limit ran out while the agent ran")
            if finished and not pending:
                # output is complete (its EOF keeps the channel readable); wait for the exit status
                channel.status_event.wait(min(left, 1.0))
            else:
                select.select([channel], [], [], min(left, 1.0))
        return CommandResult(channel.recv_exit_status(), bytes(stdout), bytes(stderr))
    finally:
        channel.close()
