"""What gpuhost needs to know about one ComfyUI container, from its Engine API inspect body."""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass, field
from typing import Any, Optional

DEFAULT_PORT = 8188
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


def _flag_value(tokens: list[str], flag: str) -> Optional[str]:
    for index, token in enumerate(tokens):
        if token == flag and index + 1 < len(tokens):
            return tokens[index + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    return None


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
    # --listen / --port from the command line or environment (COMFY_CMDLINE_EXTRA and the like)
    listen: str = ""
    port: int = DEFAULT_PORT
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


def container_from_inspect(inspect: dict[str, Any]) -> ComfyContainer:
    config = inspect.get("Config") or {}
    host_config = inspect.get("HostConfig") or {}
    state = inspect.get("State") or {}
    network = inspect.get("NetworkSettings") or {}
    ports: dict[str, list[tuple[str, int]]] = {}
    for key, bindings in (network.get("Ports") or {}).items():
        ports[key] = [
            (str(b.get("HostIp") or ""), int(b.get("HostPort") or 0)) for b in bindings or [] if b.get("HostPort")
        ]
    tokens: list[str] = [str(t) for t in (config.get("Entrypoint") or []) + (config.get("Cmd") or [])]
    for item in config.get("Env") or []:
        _, _, value = str(item).partition("=")
        tokens.extend(value.split())
    port_text = _flag_value(tokens, "--port")
    listen = _flag_value(tokens, "--listen") or ""
    status = str(state.get("Status") or "")
    return ComfyContainer(
        id=str(inspect.get("Id", "")),
        name=str(inspect.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        status=status,
        running=bool(state.get("Running")),
        exit_code=state.get("ExitCode") if status in ("exited", "dead") else None,
        restart_count=int(inspect.get("RestartCount") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        started_at=parse_timestamp(str(state.get("StartedAt") or "")),
        finished_at=parse_timestamp(str(state.get("FinishedAt") or "")),
        network_mode=str(host_config.get("NetworkMode") or ""),
        tty=bool(config.get("Tty")),
        ports=ports,
        listen=listen,
        port=int(port_text) if port_text and port_text.isdigit() else DEFAULT_PORT,
        labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
    )


def looks_like_comfyui(image: str, labels: dict[str, str]) -> bool:
    """A container gpuhost treats as ComfyUI: labelled by roles/comfyui, or running an image named
    after it. Not the container's name: `comfyui-proxy` may well be an nginx."""
    return "gpuhost.comfyui" in labels or "comfyui" in image.lower()
