"""What gpuhost needs to know about one ComfyUI container, from its Engine API inspect body."""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from gpuhost.facts.docker import CONTAINER_LABELS
from gpuhost.model import UsageError

DEFAULT_PORT = 8188
# Docker's container names ([a-zA-Z0-9][a-zA-Z0-9_.-]+, a leading / as inspect prints them) and ids
# (hexadecimal, any unique prefix): nothing that, URL-encoded and decoded again, names another path.
CONTAINER_REF_RE = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]*", re.ASCII)
MAX_CONTAINER_REF = 255


def check_container_ref(ref: str, what: str = "container") -> str:
    """A container name or id as Docker accepts it, unchanged; UsageError naming `what` otherwise."""
    if not ref:
        raise UsageError(f"{what}: a container name or id cannot be empty", "Example: gpuhost wait-ready comfyui")
    if len(ref) > MAX_CONTAINER_REF or not CONTAINER_REF_RE.fullmatch(ref):
        raise UsageError(
            f"{what}: {ref[:100]!r} is not a container name or id",
            "Docker names start with a letter or digit and hold only letters, digits, `_`, `.` and `-`; "
            "list them with `docker ps -a`.",
        )
    return ref
TIMESTAMP_RE = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d{2}:\d{2})$"
)


def parse_timestamp(text: str) -> Optional[float]:
    """Epoch seconds of a Docker RFC3339Nano timestamp ("...T07:19:02.123456789Z"); None for the zero time."""
    text = text.strip()
    if not text or text.startswith("0001-01-01"):
        return None
    match = TIMESTAMP_RE.match(text)
    if match is None:
        return None
    seconds = float(calendar.timegm(time.strptime(match.group("base"), "%Y-%m-%dT%H:%M:%S")))
    frac = match.group("frac")
    if frac:
        seconds += int(frac) / 10 ** len(frac)
    tz = match.group("tz")
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        hours, minutes = int(tz[1:3]), int(tz[4:6])
        seconds -= sign * (hours * 3600 + minutes * 60)
    return seconds


def split_log_line(line: str) -> tuple[Optional[float], str]:
    """A `timestamps=1` log line -> (epoch seconds, text)."""
    stamp, sep, text = line.partition(" ")
    at = parse_timestamp(stamp) if sep else None
    if at is None:
        return None, line
    return at, text


def since_param(epoch: float) -> str:
    """The Engine API's `since` for logs: seconds.nanoseconds, a millisecond before `epoch`."""
    nanos = max(0, round(epoch * 1e9) - 1_000_000)
    return f"{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}"


# ComfyUI's `--listen [IP]`: one address or several, comma-separated; `--listen` alone means every one
LISTEN_ALL = "0.0.0.0,::"
LISTEN_RE = re.compile(r"[A-Za-z0-9.:%\[\]-]+(,[A-Za-z0-9.:%\[\]-]+)*", re.ASCII)
MAX_LISTEN = 255


@dataclass(frozen=True)
class ComfyArguments:
    """The only values of a container's command line and environment that gpuhost keeps: where ComfyUI
    listens. Everything else there (`--api-key`, HF_TOKEN, ...) stays on the host, unread."""

    listen: str = ""  # "" when not given (ComfyUI's default, 127.0.0.1)
    port: int = 0  # 0 when not given (DEFAULT_PORT)


def _listen_value(value: Optional[str]) -> Optional[str]:
    if value is None:
        return LISTEN_ALL
    return value if len(value) <= MAX_LISTEN and LISTEN_RE.fullmatch(value) else None


def parse_comfy_arguments(argv: Sequence[str], extra: Sequence[str] = ()) -> ComfyArguments:
    """--listen and --port as ComfyUI's argparse reads them from the command (`argv`) and the values of
    its environment variables (`extra`: COMFY_CMDLINE_EXTRA and the like, which images append to the
    command; each split on white space on its own, so no token runs into the next variable).

    The last one given wins; `--listen` with no address (the next token is a flag, or there is none)
    means every address. A value that is not an address or a port is not kept: a token that is not the
    value of one of these two flags is never returned."""
    listen, port = "", 0
    for tokens in [list(argv)] + [value.split() for value in extra]:
        for index, token in enumerate(tokens):
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            if following is not None and following.startswith("-"):
                following = None
            name, equals, attached = token.partition("=")
            if name == "--listen":
                found = _listen_value(attached if equals else following)
                listen = found if found is not None else listen
            elif name == "--port":
                number = _port(attached if equals else following)
                port = number or port
    return ComfyArguments(listen=listen, port=port)


# Docker sets State.StartedAt once the process has started, so the run's first lines can carry an
# earlier time (21 ms before it, measured on a loaded host): a run's log is read from a little before.
RUN_START_SLACK_S = 1.0


def run_log_since(container: ComfyContainer) -> Optional[float]:
    """Where the log of the container's current run starts (the `since` to read it from); None: the
    whole log is this run's. While it runs, State.FinishedAt is the previous run's end (zero before a
    first run); a stopped container's earlier runs ended at an unknown time before StartedAt."""
    if container.started_at is None:
        return None
    if container.status in ("running", "paused", "restarting"):
        if container.finished_at is None:
            return None
        if container.finished_at <= container.started_at:
            return max(container.finished_at, container.started_at - RUN_START_SLACK_S)
    return container.started_at - RUN_START_SLACK_S



@dataclass
class ComfyContainer:
    id: str
    name: str
    image: str
    status: str
    running: bool
    exit_code: Optional[int]
    restart_count: int
    oom_killed: bool
    started_at: Optional[float]
    finished_at: Optional[float]
    network_mode: str
    tty: bool
    # container port -> [(host ip, host port)] as bound now (NetworkSettings.Ports)
    ports: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    # --listen / --port from the command line or environment (COMFY_CMDLINE_EXTRA and the like): the
    # parsed values only (parse_comfy_arguments), never the command line or a variable
    listen: str = ""
    port: int = DEFAULT_PORT
    # only gpuhost.facts.docker.CONTAINER_LABELS
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def host_network(self) -> bool:
        return self.network_mode == "host"

    def probe_url(self, container_port: Optional[int] = None, listen: str = "") -> tuple[str, str]:
        """(url, "") for GET /system_stats through this container's own address on the host, or
        ("", why) when the host cannot reach it."""
        port = container_port or self.port
        if self.host_network:
            host = listen or self.listen
            if host in ("", "0.0.0.0", "::", "[::]", "localhost") or "," in host:
                host = "127.0.0.1"
            return _url(host, port), ""
        bindings = self.ports.get(f"{port}/tcp") or []
        for host_ip, host_port in bindings:
            if host_port:
                host = "127.0.0.1" if host_ip in ("", "0.0.0.0", "::") else host_ip
                return _url(host, host_port), ""
        published = ", ".join(sorted(self.ports)) or "none"
        return "", f"container port {port}/tcp is not published on the host (published: {published})"


def _url(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/system_stats"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _port(value: Any) -> int:
    text = str(value)
    return int(text) if text.isdigit() and 0 < len(text) <= 5 and int(text) <= 65535 else 0


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def container_from_inspect(inspect: dict[str, Any]) -> ComfyContainer:
    """The container as an inspect body describes it; fields of the wrong type read as absent."""
    inspect = _mapping(inspect)
    config = _mapping(inspect.get("Config"))
    host_config = _mapping(inspect.get("HostConfig"))
    state = _mapping(inspect.get("State"))
    network = _mapping(inspect.get("NetworkSettings"))
    ports: dict[str, list[tuple[str, int]]] = {}
    for key, bindings in _mapping(network.get("Ports")).items():
        listed = [_mapping(b) for b in bindings] if isinstance(bindings, list) else []
        ports[str(key)] = [
            (str(b.get("HostIp") or ""), _port(b.get("HostPort"))) for b in listed if _port(b.get("HostPort"))
        ]
    arguments = parse_comfy_arguments(
        _strings(config.get("Entrypoint")) + _strings(config.get("Cmd")),
        [item.partition("=")[2] for item in _strings(config.get("Env"))],
    )
    labels = _mapping(config.get("Labels"))
    status = str(state.get("Status") or "")
    exit_code = state.get("ExitCode")
    return ComfyContainer(
        id=str(inspect.get("Id", "")),
        name=str(inspect.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        status=status,
        running=bool(state.get("Running")),
        exit_code=exit_code if status in ("exited", "dead") and isinstance(exit_code, int) else None,
        restart_count=_count(inspect.get("RestartCount")),
        oom_killed=bool(state.get("OOMKilled")),
        started_at=parse_timestamp(str(state.get("StartedAt") or "")),
        finished_at=parse_timestamp(str(state.get("FinishedAt") or "")),
        network_mode=str(host_config.get("NetworkMode") or ""),
        tty=bool(config.get("Tty")),
        ports=ports,
        listen=arguments.listen,
        port=arguments.port or DEFAULT_PORT,
        labels={key: str(labels[key]) for key in CONTAINER_LABELS if key in labels},
    )


def looks_like_comfyui(image: str, labels: dict[str, str]) -> bool:
    """A container gpuhost treats as ComfyUI: labelled by roles/comfyui, or running an image named
    after it. Not the container's name: `comfyui-proxy` may well be an nginx."""
    return "gpuhost.comfyui" in labels or "comfyui" in image.lower()
