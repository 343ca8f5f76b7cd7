"""ComfyUI readiness: a pure state machine over log lines, container state and HTTP probes.

starting -> ready | failed | stalled. Nothing here reads a clock, a socket or a file: every
event carries its own time, so recorded logs replay through it as fast as they can be fed and a
live driver (gpuhost.comfyui.wait) feeds the same machine from the Engine API.

Every time is on the log's own timeline (the daemon's clock that stamps each line): a driver feeds a
container's backlog before its first tick, so idleness is measured from the last line written, not
from when someone started watching, and a run that began long ago is judged by what it wrote then.

What the real captures (../shared/fixtures/comfyui) show, and what the machine does with it:
- Ready is the line `To see the GUI go to: http://HOST:PORT` AND an HTTP 200 from /system_stats
  that arrives after it. A 200 before that line comes from another process (the port-in-use
  capture: a first instance keeps serving while this one dies with Errno 98).
- A healthy start also prints Traceback / ModuleNotFoundError / IMPORT FAILED lines for
  comfy_extras nodes (torchaudio missing) and for broken custom nodes: those are warnings that
  name the node, never failures.
- Fatal: ModuleNotFoundError before `ComfyUI version:` (the process exits 1 soon after), an
  uncaught traceback from main.py, `OSError: [Errno 98]`, the container exiting or restarting.
- SIGTERM is silent (exit 143): a stopped container's log has no shutdown line.
"""

from __future__ import annotations

import enum
import os
import re
import signal
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from gpuhost.model import for_humans
from gpuhost.units import format_duration

DEFAULT_STALL_TIMEOUT = 180.0
TAIL_LINES = 30
# State.StartedAt later than the judged run's by more than this is another run (Docker's
# timestamps are exact; the slack only absorbs rounding through float seconds)
NEW_RUN_SLACK_S = 0.001


class Phase(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STALLED = "stalled"

    @property
    def final(self) -> bool:
        return self is not Phase.STARTING


@dataclass(frozen=True)
class LogLine:
    at: float
    text: str


@dataclass(frozen=True)
class ContainerState:
    """The container as the Engine API reports it (State.Status, ExitCode, RestartCount)."""

    at: float
    status: str  # created, running, restarting, paused, exited, dead, removed
    exit_code: Optional[int] = None
    restart_count: int = 0
    oom_killed: bool = False
    error: str = ""
    # State.StartedAt of the run it describes: a later one than the machine's run is a new run
    started_at: Optional[float] = None


@dataclass(frozen=True)
class ProbeResult:
    """One GET /system_stats. status None: no HTTP answer (refused, reset, timeout)."""

    at: float
    url: str
    status: Optional[int] = None
    error: str = ""
    # False when there is no way to reach the server from here (port not published)
    reachable: bool = True


@dataclass(frozen=True)
class Tick:
    """Time passing without news: drives the stall and deadline checks."""

    at: float


Event = Union[LogLine, ContainerState, ProbeResult, Tick]


@dataclass
class NodeWarning:
    """A node that failed to import while the server still starts (a warning, not a failure)."""

    # "custom-node", "comfy-extras", or a start-up warning: "gpu-arch", "frontend", "cuda-malloc", "hf-download"
    kind: str
    node: str
    path: str = ""
    reason: str = ""
    line: str = ""
    remedy: str = ""


@dataclass
class Verdict:
    phase: Phase = Phase.STARTING
    # stable code: starting, ready, missing-module, port-in-use, crashed, exited, stopped,
    # restarted, removed, paused, listen-loopback, not-published, stalled, timeout, driver-too-old,
    # cuda-too-new, start-failed, gpu-arch-unsupported, frontend-missing, bad-arguments, host-oom,
    # restart-required, dir-not-writable, dead
    reason: str = "starting"
    message: str = ""
    remedy: str = ""
    failing_line: str = ""
    last_line: str = ""
    # time of the event that decided the verdict (a log line's, a probe's, the exit's)
    decided_at: Optional[float] = None
    gui_url: str = ""
    # when the GUI line was written (its log time)
    gui_line_at: Optional[float] = None
    probe_url: str = ""
    last_probe: str = ""
    comfyui_version: str = ""
    warnings: list[NodeWarning] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lines_seen: int = 0
    tail: list[str] = field(default_factory=list)
    foreign_answer: bool = False
    exit_code: Optional[int] = None
    restart_count: int = 0
    # the run had printed the GUI line (it was serving) when it stopped, restarted or was paused
    was_serving: bool = False

    def summary(self) -> dict[str, Any]:
        """The fields every report of a verdict carries, under their JSON names."""
        return {
            "verdict": self.phase.value,
            "reason": self.reason,
            "failing_line": self.failing_line,
            "last_line": self.last_line,
            "url": self.probe_url,
            "gui_url": self.gui_url,
            "last_probe": self.last_probe,
            "comfyui_version": self.comfyui_version,
            "was_serving": self.was_serving,
        }


# --- line classification ---------------------------------------------------------------

GUI_RE = re.compile(
    r"To see the GUI go to: (?P<url>(?P<scheme>https?)://(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<port>\d+))"
)
VERSION_RE = re.compile(r"^ComfyUI version: (?P<version>\S+)")
ERRNO98_RE = re.compile(r"OSError: \[Errno 98\]")
BIND_ADDRESS_RE = re.compile(r"\('(?P<host>[^']*)', (?P<port>\d+)")
CUSTOM_NODE_FAILED_RE = re.compile(r"^\s*[\d.]+ seconds \(IMPORT FAILED\): (?P<path>.+?)\s*$")
EXTRAS_FAILED_RE = re.compile(r"^IMPORT FAILED: (?P<node>.+?)\s*$")
CANNOT_IMPORT_RE = re.compile(r"^Cannot import (?P<path>.+?) module for custom nodes: (?P<reason>.*)$")
FRAME_RE = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
EXCEPTION_RE = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")
NO_MODULE_RE = re.compile(r"No module named '(?P<module>[^']+)'")

# Lines a healthy start prints that look alarming but are harmless: the server still serves.
HARMLESS = (
    (re.compile(r"torchaudio missing"), "torchaudio missing: audio nodes disabled"),
    (re.compile(r"^\*{6} (User settings have been changed|For multi-user setups)"), "first boot: user settings"),
    (re.compile(r"(?i)sage ?attention"), "sageattention not available"),
    (re.compile(r"(?i)\bonnx(runtime)?\b"), "onnxruntime note"),
    (re.compile(r"^WARNING: some comfy_extras/ nodes did not import correctly"), "comfy_extras import warning"),
    # ComfyUI-Manager fetches its registry after the GUI line in bursts with long gaps: progress, not a stall
    (re.compile(r"^FETCH ComfyRegistry Data"), "ComfyUI-Manager fetches registry data"),
)

# Exception texts with a known cause on GPU hosts: (pattern, remedy).
KNOWN_CAUSES = (
    (
        re.compile(r"Insufficient Permissions"),
        "NVML may not open /dev/nvidia*: run the container with the host's device group "
        "(--group-add <gid of /dev/nvidia0>; roles/comfyui does this) and check `gpuhost check --run-as`.",
    ),
    (
        re.compile(r"Found no NVIDIA driver|CUDA driver initialization failed|no CUDA-capable device"),
        "The container got no GPU: run it with the nvidia runtime (NVIDIA_VISIBLE_DEVICES=all) or CDI "
        "(--device nvidia.com/gpu=all), and check `gpuhost check`.",
    ),
    (
        re.compile(r"Torch not compiled with CUDA enabled"),
        "The image's torch is a CPU build: install a CUDA build of torch or start ComfyUI with --cpu.",
    ),
)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

# Lines that decide a start on their own, wherever they appear (a traceback's last line included).
DRIVER_TOO_OLD_RE = re.compile(r"The NVIDIA driver on your system is too old \(found version (?P<found>\d+)\)")
NO_KERNEL_IMAGE_RE = re.compile(r"no kernel image is available for execution on the device")
ARCH_UNSUPPORTED_RE = re.compile(
    r"with CUDA capability (?P<arch>sm_\d+) is not compatible with the current PyTorch installation"
)
FRONTEND_MISSING_RE = re.compile(r"comfyui-frontend-package is not installed")
FRONTEND_OLD_RE = re.compile(
    r"Installed frontend version (?P<installed>\S+) is lower than the recommended version (?P<wanted>\S+?)\.?$"
)
BAD_ARGUMENTS_RE = re.compile(r"main\.py: error: (?P<what>unrecognized arguments: .*)$")
PERMISSION_RE = re.compile(r"PermissionError: \[Errno 13\] Permission denied: '(?P<path>[^']+)'")
CUDA_MALLOC_RE = re.compile(r"WARNING: this card most likely does not support cuda-malloc")
MANAGER_PIP_RE = re.compile(r"## ComfyUI-Manager: EXECUTE => \[.*'pip',\s*'install'")
MANAGER_RESTART_RE = re.compile(r"After restarting ComfyUI")
HF_OFFLINE_RE = re.compile(
    r"We couldn't connect to 'https://huggingface\.co'|LocalEntryNotFoundError|"
    r"problem when trying to write in your cache folder|cache folder .*not writable"
)
MODEL_LOAD_RE = re.compile(r"^Requested to load |^loaded (completely|partially)")
CUSTOM_NODE_PATH_RE = re.compile(r"custom_nodes/(?P<node>[^/\s\"']+)")
CUDA_REQUIREMENT_RE = re.compile(r"requirement error: unsatisfied condition: (?P<condition>cuda\s*>=\s*[\d.]+)")
TORCH_VERSION_RE = re.compile(r"^pytorch version: (?P<version>\S+)")
MOUNTED_DIRS = ("user", "output", "input", "temp", "models", "custom_nodes")


def mounted_dir_of(path: str) -> str:
    """The directory ComfyUI's data lives in that `path` is, or is inside (`/basedir/user` for
    `/basedir/user/default/comfy.settings.json`): ComfyUI creates subdirectories and files there
    itself, so a permission error on any of them is the mount's ownership. "" for other paths
    (a Python package's own `models/` module is no data directory)."""
    parts = path.split("/")
    if any(part in ("site-packages", "dist-packages") for part in parts):
        return ""
    for index, part in enumerate(parts):
        if part in MOUNTED_DIRS:
            return "/".join(parts[: index + 1])
    return ""


def _signal_note(code: Optional[int]) -> str:
    """`: killed by SIGSEGV` for an exit code above 128 (128 + the signal's number)."""
    if code is None or not 128 < code < 128 + 65:
        return ""
    try:
        return f": killed by {signal.Signals(code - 128).name}"
    except ValueError:
        return ""


def _cuda_of(found: str) -> str:
    """CUDA driver API versions as torch prints them: 12020 -> 12.2."""
    value = int(found)
    return f"{value // 1000}.{(value % 1000) // 10}"


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def gui_address(line: str) -> Optional[tuple[str, str, int]]:
    """(url, host, port) of a `To see the GUI go to:` line, or None."""
    match = GUI_RE.search(line)
    if not match:
        return None
    return match.group("url"), _strip_brackets(match.group("host")), int(match.group("port"))


def _node_name(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or path


@dataclass
class _Traceback:
    started_at: float
    first_line: str
    frames: list[tuple[str, str]] = field(default_factory=list)  # (file:line, function)

    def first_frame_is_main(self) -> bool:
        if not self.frames:
            return False
        location, function = self.frames[0]
        return os.path.basename(location.split(":")[0]) == "main.py" and function == "<module>"

    def in_node_loader(self) -> bool:
        return any(function in ("load_custom_node", "load_custom_nodes", "init_external_custom_nodes")
                   for _, function in self.frames)


class ReadinessMachine:
    """Feed events in time order; read `verdict`. Once final, further events change nothing
    but the exit code and restart count it records."""

    def __init__(
        self,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        started_at: Optional[float] = None,
        restart_count: int = 0,
        host_network: Optional[bool] = None,
        deadline: Optional[float] = None,
        tail_lines: int = TAIL_LINES,
        run_started_at: Optional[float] = None,
    ) -> None:
        """`started_at`: where idleness counts from before the first line (the run's start);
        `run_started_at`: State.StartedAt of the run being judged, when known: a state with a later
        one is a new run (`docker restart` counts no restart)."""
        self.stall_timeout = stall_timeout
        self.deadline = deadline
        self.run_started_at = run_started_at
        self.host_network = host_network
        self.baseline_restarts = restart_count
        self.verdict = Verdict(restart_count=restart_count)
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._last_activity = started_at
        self._gui_at: Optional[float] = None
        self._gui_host = ""
        self._gui_port: Optional[int] = None
        self._version_seen = False
        self._traceback: Optional[_Traceback] = None
        self._import_reasons: dict[str, str] = {}
        self._notes: dict[str, None] = {}
        self._torch_version = ""
        self._last_node = ""
        self._manager_installed = False
        self._loading_model = False

    # -- public view ------------------------------------------------------------------------

    @property
    def decided(self) -> bool:
        return self.verdict.phase.final

    @property
    def gui_seen(self) -> bool:
        return self._gui_at is not None

    @property
    def gui_port(self) -> Optional[int]:
        return self._gui_port

    @property
    def gui_host(self) -> str:
        return self._gui_host

    @property
    def last_activity(self) -> Optional[float]:
        return self._last_activity

    def note(self, text: str) -> None:
        """Something the driver wants the verdict to carry (a gap in the log it read)."""
        self._notes.setdefault(text, None)
        self.verdict.notes = list(self._notes)

    def feed(self, event: Event) -> Verdict:
        if isinstance(event, LogLine):
            self._on_line(event)
        elif isinstance(event, ContainerState):
            self._on_state(event)
        elif isinstance(event, ProbeResult):
            self._on_probe(event)
        elif isinstance(event, Tick):
            self._on_tick(event)
        else:  # pragma: no cover - typing guards this
            raise TypeError(f"not a readiness event: {event!r}")
        self.verdict.tail = list(self._tail)
        self.verdict.notes = list(self._notes)
        return self.verdict

    # -- decisions --------------------------------------------------------------------------

    def _decide(self, phase: Phase, reason: str, at: float, message: str, remedy: str = "", line: str = "") -> None:
        if self.decided:
            return
        verdict = self.verdict
        verdict.phase = phase
        verdict.reason = reason
        verdict.decided_at = at
        # sentences for people: a log line quoted in them keeps no terminal control, a URL no credentials
        verdict.message = for_humans(message)
        verdict.remedy = for_humans(remedy)
        verdict.failing_line = line

    # -- log lines --------------------------------------------------------------------------

    def _on_line(self, event: LogLine) -> None:
        text = event.text.rstrip("\r\n")
        verdict = self.verdict
        verdict.lines_seen += 1
        self._tail.append(text)
        self._last_activity = event.at
        if text.strip():
            verdict.last_line = text
        if self.decided:
            return

        node_path = CUSTOM_NODE_PATH_RE.search(text)
        if node_path:
            self._last_node = node_path.group("node")
        if self._known_line(text, event.at):
            self._traceback = None
            return

        if self._traceback is not None and self._in_traceback(text, event.at):
            return

        if text.startswith("Traceback (most recent call last):"):
            self._traceback = _Traceback(started_at=event.at, first_line=text)
            return

        if ERRNO98_RE.search(text):
            self._port_in_use(event.at, text)
            return

        version = VERSION_RE.match(text)
        if version:
            self._version_seen = True
            verdict.comfyui_version = version.group("version")
            return

        gui = gui_address(text)
        if gui:
            self._on_gui(event.at, text, *gui)
            return

        cannot = CANNOT_IMPORT_RE.match(text)
        if cannot:
            self._import_reasons[cannot.group("path").rstrip("/")] = cannot.group("reason")
            return

        custom = CUSTOM_NODE_FAILED_RE.match(text)
        if custom:
            path = custom.group("path").rstrip("/")
            self._warn("custom-node", _node_name(path), path, self._import_reasons.get(path, ""), text)
            return

        extras = EXTRAS_FAILED_RE.match(text)
        if extras:
            node = extras.group("node")
            path = next((p for p in self._import_reasons if os.path.basename(p) == node), "")
            self._warn("comfy-extras", node, path, self._import_reasons.get(path, ""), text)
            return

        for pattern, note in HARMLESS:
            if pattern.search(text):
                self._notes.setdefault(note, None)
                return

    def _warn(self, kind: str, node: str, path: str, reason: str, line: str, remedy: str = "") -> None:
        if any(w.kind == kind and w.node == node for w in self.verdict.warnings):
            return
        self.verdict.warnings.append(
            NodeWarning(kind=kind, node=node, path=path, reason=reason, line=line, remedy=remedy)
        )

    def _known_line(self, text: str, at: float) -> bool:
        """Lines with a known cause and verdict (the issue table of GPU start-up failures); True when handled."""
        torch = TORCH_VERSION_RE.match(text)
        if torch:
            self._torch_version = torch.group("version")
            return False
        if MODEL_LOAD_RE.search(text):
            self._loading_model = text.startswith("Requested to load")
            return False
        old = DRIVER_TOO_OLD_RE.search(text)
        if old:
            torch_text = f"torch {self._torch_version}" if self._torch_version else "the image's torch"
            self._decide(
                Phase.FAILED, "driver-too-old", at,
                f"{torch_text} needs a newer NVIDIA driver: the host's driver supports CUDA "
                f"{_cuda_of(old.group('found'))} only (found version {old.group('found')})",
                "Upgrade the host's driver (roles/nvidia_driver: a newer nvidia_driver_branch) or use an image whose "
                "torch is built for the host's CUDA version (`gpuhost check` shows it).",
                text,
            )
            return True
        if NO_KERNEL_IMAGE_RE.search(text):
            self._decide(
                Phase.FAILED, "gpu-arch-unsupported", at,
                "the image's torch has no kernels for this GPU's architecture: `no kernel image is available for "
                "execution on the device`",
                "Use a torch build that includes this GPU's architecture (B200 sm_100 and RTX 50 sm_120 need CUDA "
                "12.8+ wheels), rebuild the image and recreate the container.",
                text,
            )
            return True
        arch = ARCH_UNSUPPORTED_RE.search(text)
        if arch:
            self._warn(
                "gpu-arch", arch.group("arch"), "", "torch lacks this GPU's architecture", text,
                "Use a torch build with this architecture (CUDA 12.8+ wheels for sm_100/sm_120); the first prompt "
                "fails with `no kernel image is available` otherwise.",
            )
            return True
        if FRONTEND_MISSING_RE.search(text):
            self._decide(
                Phase.FAILED, "frontend-missing", at,
                "comfyui-frontend-package is not installed: ComfyUI exits without a traceback",
                "Install ComfyUI's requirements.txt into the image (`pip install -r requirements.txt`), rebuild and "
                "recreate the container.",
                text,
            )
            return True
        frontend = FRONTEND_OLD_RE.search(text)
        if frontend:
            self._warn(
                "frontend", "comfyui-frontend-package", "",
                f"installed {frontend.group('installed')}, recommended {frontend.group('wanted')}", text,
                "Install ComfyUI's requirements.txt into the image so the frontend matches this ComfyUI version.",
            )
            return True
        arguments = BAD_ARGUMENTS_RE.search(text)
        if arguments:
            self._decide(
                Phase.FAILED, "bad-arguments", at,
                f"ComfyUI refused its command line ({arguments.group('what')}): this version does not know the flag",
                "Remove the flag from the container's command (or COMFY_CMDLINE_EXTRA), or use a ComfyUI version that "
                "has it (`python main.py --help` in the image lists them).",
                text,
            )
            return True
        permission = PERMISSION_RE.search(text)
        mounted = mounted_dir_of(permission.group("path")) if permission else ""
        if permission and mounted:
            path = permission.group("path")
            inside = "" if path.rstrip("/") == mounted else f" (inside {mounted}, or what ComfyUI made there)"
            self._decide(
                Phase.FAILED, "dir-not-writable", at,
                f"ComfyUI cannot write {path}: the mounted directory{inside} is not writable by the "
                "container's user",
                "chown the host directory to the container's UID:GID (or run the container as the directory's owner); "
                "roles/comfyui checks these directories before it starts the container.",
                text,
            )
            return True
        if CUDA_MALLOC_RE.search(text):
            self._warn(
                "cuda-malloc", "cuda-malloc", "", "this GPU most likely does not support cuda-malloc", text,
                "Start ComfyUI with --disable-cuda-malloc.",
            )
            return True
        if MANAGER_PIP_RE.search(text):
            self._manager_installed = True
            return True
        if MANAGER_RESTART_RE.search(text) and self._manager_installed:
            self._decide(
                Phase.FAILED, "restart-required", at,
                "ComfyUI-Manager installed Python dependencies at start-up: the nodes that need them load only "
                "after ComfyUI restarts",
                "Restart the container once; better, install the dependencies in the image so every start is the "
                "same.",
                text,
            )
            return True
        if HF_OFFLINE_RE.search(text):
            node = self._last_node or "a custom node"
            self._warn(
                "hf-download", node, "", "downloads from huggingface.co at first use", text,
                "Give the container a persistent, writable HF_HOME (a volume) and pre-download the model, or allow "
                "network access to huggingface.co; offline, set HF_HUB_OFFLINE=1 with the files in the cache.",
            )
            return True
        return False

    def _in_traceback(self, text: str, at: float) -> bool:
        """Consume a line inside a traceback; False when the traceback is over and the line
        must be classified on its own."""
        tb = self._traceback
        assert tb is not None
        frame = FRAME_RE.match(text)
        if frame:
            tb.frames.append((f"{frame.group('file')}:{frame.group('line')}", frame.group("func").strip()))
            return True
        if not text.strip() or text[0].isspace():
            return bool(text.strip())  # source lines and carets stay inside; a blank line ends it
        self._traceback = None
        exception = EXCEPTION_RE.match(text)
        if exception is None:
            return False
        self._on_exception(tb, at, text, exception.group("name"), exception.group("message") or "")
        return True

    def _on_exception(self, tb: _Traceback, at: float, line: str, name: str, message: str) -> None:
        short = name.rsplit(".", 1)[-1]
        if ERRNO98_RE.search(line):
            self._port_in_use(at, line)
            return
        missing = NO_MODULE_RE.search(message) if short in ("ModuleNotFoundError", "ImportError") else None
        if tb.in_node_loader() and not tb.first_frame_is_main():
            return  # a node failed to import: the IMPORT FAILED line that follows names it
        fatal = tb.first_frame_is_main() or (missing is not None and not self._version_seen)
        if not fatal:
            self._notes.setdefault(f"logged exception: {short}", None)
            return
        importer = tb.frames[-1][0] if tb.frames else ""
        if missing is not None:
            module = missing.group("module")
            top = module.split(".")[0]
            self._decide(
                Phase.FAILED,
                "missing-module",
                at,
                f"Python module '{module}' is missing: ComfyUI cannot finish importing and exits"
                + (f" (imported from {importer})" if importer else ""),
                f"Install the package that provides '{top}' into the image's Python environment "
                f"(e.g. `pip install {top}` in the Dockerfile), rebuild the image and recreate the container.",
                line,
            )
            return
        remedy = "Fix what the exception names (the traceback is in the last log lines), then recreate the container."
        for pattern, known in KNOWN_CAUSES:
            if pattern.search(line):
                remedy = known
                break
        self._decide(Phase.FAILED, "crashed", at, f"ComfyUI stopped on an unhandled {short}: {message}".rstrip(": "),
                     remedy, line)

    def _port_in_use(self, at: float, line: str) -> None:
        bind = BIND_ADDRESS_RE.search(line)
        address = f"{bind.group('host')}:{bind.group('port')}" if bind else "its port"
        other = (
            " Another process already answers there (HTTP 200 on /system_stats): a probe of the port alone "
            "would call this deploy ready."
            if self.verdict.foreign_answer
            else ""
        )
        self._decide(
            Phase.FAILED,
            "port-in-use",
            at,
            f"ComfyUI could not bind {address}: address already in use; this instance exits.{other}",
            "Stop the process that holds the port (another ComfyUI? `ss -ltnp`), or start this one with another "
            "--port and publish that.",
            line,
        )

    def _on_gui(self, at: float, line: str, url: str, host: str, port: int) -> None:
        if self._gui_at is not None:
            return  # a bare --listen prints one line per address; the first one is enough
        self._gui_at = at
        self._gui_host = host
        self._gui_port = port
        self.verdict.gui_url = url
        self.verdict.gui_line_at = at
        if self.host_network is False and host in LOOPBACK_HOSTS:
            self._decide(
                Phase.FAILED,
                "listen-loopback",
                at,
                f"ComfyUI listens on {host} inside the container ({url}): nothing outside the container, "
                "a published port included, can reach it",
                "Start ComfyUI with --listen 0.0.0.0 inside the container and publish the port on 127.0.0.1 "
                "(-p 127.0.0.1:8188:8188), or run it with the host network.",
                line,
            )

    # -- container state -----------------------------------------------------------------------

    def _on_state(self, event: ContainerState) -> None:
        verdict = self.verdict
        status = event.status
        if status in ("exited", "dead"):
            verdict.exit_code = event.exit_code
        if event.restart_count > verdict.restart_count:
            verdict.restart_count = event.restart_count
        if self.decided:
            return
        if event.error:
            requirement = CUDA_REQUIREMENT_RE.search(event.error)
            if requirement:
                self._decide(
                    Phase.FAILED, "cuda-too-new", event.at,
                    f"Docker could not start the container: the image requires {requirement.group('condition')} "
                    "and the host's driver is older (no log: the process never ran)",
                    "Upgrade the host's driver (roles/nvidia_driver) or use an image built for the host's CUDA "
                    "version; NVIDIA_DISABLE_REQUIRE=1 skips the check but the CUDA calls then fail.",
                    event.error,
                )
            else:
                self._decide(
                    Phase.FAILED, "start-failed", event.at,
                    f"Docker could not start the container: {event.error}",
                    "Fix what Docker's error names (`docker start` prints the same), then start it again.",
                    event.error,
                )
            return
        new_run = (
            event.started_at is not None
            and self.run_started_at is not None
            and event.started_at > self.run_started_at + NEW_RUN_SLACK_S
        )
        if status in ("exited", "dead"):
            self._stopped(event)
        elif event.restart_count > self.baseline_restarts or status == "restarting" or new_run:
            self._restarted(event)
        elif status == "removed":
            self._decide(Phase.FAILED, "removed", event.at, "the container was removed while waiting", "", "")
        elif status == "paused":
            verdict.was_serving = self._gui_at is not None
            self._decide(
                Phase.FAILED, "paused", event.at,
                f"{self._serving_until(event.at)}the container is paused: it answers nothing"
                if verdict.was_serving
                else "the container is paused before ComfyUI was ready",
                "`docker unpause` it.", "",
            )

    def _serving_until(self, at: float) -> str:
        """`ComfyUI was serving (URL, for 5 min) until ` for a run that printed the GUI line."""
        assert self._gui_at is not None
        served = format_duration(at - self._gui_at) if at >= self._gui_at else "a while"
        return f"ComfyUI was serving ({self.verdict.gui_url} printed, {served} before this) until "

    def _restarted(self, event: ContainerState) -> None:
        verdict = self.verdict
        verdict.was_serving = self._gui_at is not None
        last = verdict.last_line or "(no output)"
        count = f"restart count {event.restart_count}"
        if verdict.was_serving:
            message = (
                f"{self._serving_until(event.at)}its process ended and the container restarted ({count}); last "
                f"line of the run that served: {last}"
            )
            remedy = ("It ran, then ended: read the last log lines of that run (`docker logs`); a restart policy "
                      "hides a crash after start-up, and `docker restart` starts a new run too.")
        else:
            message = (f"the container restarted ({count}): its previous run ended before ComfyUI was ready; "
                       f"last line: {last}")
            remedy = "Read the last log lines below: the restart policy hides a crash loop."
        self._decide(Phase.FAILED, "restarted", event.at, message, remedy, verdict.last_line)

    def _stopped(self, event: ContainerState) -> None:
        verdict = self.verdict
        code = event.exit_code
        last = verdict.last_line or "(no output)"
        serving = self._gui_at is not None
        verdict.was_serving = serving
        dead = ""
        if event.status == "dead":
            dead = "Docker marks it dead (it could not be stopped or removed cleanly) after it "
        if event.oom_killed:
            reason = "exited"
            how = f"was killed by the kernel's OOM killer at its memory limit (exit {code}, State.OOMKilled)"
            remedy = "Give the container more memory (or remove its memory limit)."
        elif code == 137 and (self._loading_model or verdict.last_line.strip() == "Killed"):
            self._decide(
                Phase.FAILED,
                "host-oom",
                event.at,
                (self._serving_until(event.at) if serving else "")
                + "the container was killed (exit 137, not by its own memory limit) while loading a model: the "
                f"host ran out of RAM; last line: {last}",
                "Use an instance with more RAM, add swap, or load smaller/fp8 models (--lowvram, --cache-none); "
                "`journalctl -k | grep -i oom` shows the kernel's OOM kill.",
                verdict.last_line,
            )
            return
        elif code == 137:
            reason = "stopped"
            how = ("was killed with SIGKILL (exit 137: `docker kill`, or `docker stop` past its grace period; not its "
                   "own memory limit)")
            remedy = ("Something killed it: start it again; if nobody did, look for the host's OOM killer "
                      "(`journalctl -k | grep -i oom`).")
        elif code == 143:
            reason = "stopped"
            how = "was stopped with SIGTERM (exit 143: `docker stop`, a deploy or the host shutting down)"
            remedy = ("Something stopped it (docker stop, a deploy, the host): start it again (`docker start`, or "
                      "run the comfyui role) and watch `gpuhost wait-ready`.")
        elif code == 0:
            reason = "exited"
            how = "exited with code 0: ComfyUI ended by itself"
            remedy = ("Read the last log lines for why it ended; start it again, with a restart policy "
                      "(unless-stopped) that brings it back.")
        else:
            reason = "exited"
            how = f"exited with code {code}{_signal_note(code)}"
            remedy = "Read the last log lines below for the cause."
        if event.status == "dead":
            reason = "dead"
            remedy += " Then remove the dead container (`docker rm -f`) and create it again."
        if serving:
            message = f"{self._serving_until(event.at)}{dead or 'the container '}{how}; last line: {last}"
        elif code == 143 and not event.oom_killed:
            message = (f"{dead or 'the container '}{how} before ComfyUI was ready; ComfyUI prints nothing on "
                       f"SIGTERM; last line: {last}")
        else:
            message = f"{dead or 'the container '}{how} before ComfyUI was ready; last line: {last}"
        self._decide(Phase.FAILED, reason, event.at, message, remedy, verdict.last_line)

    # -- HTTP probes ---------------------------------------------------------------------------

    def _on_probe(self, event: ProbeResult) -> None:
        verdict = self.verdict
        verdict.probe_url = event.url
        verdict.last_probe = f"HTTP {event.status}" if event.status is not None else (event.error or "no answer")
        if self.decided:
            return
        if not event.reachable:
            if self._gui_at is not None:
                self._decide(
                    Phase.FAILED,
                    "not-published",
                    event.at,
                    f"ComfyUI is up inside the container ({verdict.gui_url}) but cannot be reached from the host: "
                    f"{event.error}",
                    "Publish the port (-p 127.0.0.1:8188:8188) or pass --url to probe another address.",
                    "",
                )
            return
        if event.status != 200:
            return
        if self._gui_at is None or event.at < self._gui_at:
            verdict.foreign_answer = True
            return
        version = f" {verdict.comfyui_version}" if verdict.comfyui_version else ""
        self._decide(
            Phase.READY,
            "ready",
            event.at,
            f"ComfyUI{version} is serving: it printed {verdict.gui_url} and {event.url} answered 200",
        )

    # -- time --------------------------------------------------------------------------------

    def _on_tick(self, event: Tick) -> None:
        if self.decided:
            return
        verdict = self.verdict
        if self.deadline is not None and event.at >= self.deadline:
            waiting_for = (
                f"{verdict.gui_url} was printed but {verdict.probe_url or '/system_stats'} never answered 200 "
                f"(last probe: {verdict.last_probe or 'none'})"
                if self._gui_at is not None
                else f"last line: {verdict.last_line or '(no output)'}"
            )
            self._decide(Phase.FAILED, "timeout", event.at, f"not ready before the deadline; {waiting_for}",
                         "Raise --timeout if the start is slow but progressing; otherwise read the last lines.",
                         verdict.last_line)
            return
        if self._gui_at is not None or self._last_activity is None:
            return  # after the GUI line ComfyUI is quiet by design; only the deadline applies
        idle = event.at - self._last_activity
        if idle >= self.stall_timeout:
            self._decide(
                Phase.STALLED,
                "stalled",
                event.at,
                f"no new log line for {idle:.0f} s; last line: {verdict.last_line or '(no output)'}",
                "It hangs there (a download, a lock, a GPU wait?): read the last line, then inspect the container "
                "(docker top, py-spy) or raise --stall-timeout if that step is known to be slow and silent.",
                verdict.last_line,
            )


# --- recorded logs ------------------------------------------------------------------------

EXIT_MARKER_RE = re.compile(r"^<<child exited rc=(?P<rc>-?\d+)>>$")


@dataclass
class TimedLog:
    """A `.timed.log` capture: (seconds since spawn, line) and the recorded exit."""

    lines: list[tuple[float, str]]
    exit_at: Optional[float] = None
    # the child's return code as Python saw it: -15 means killed by SIGTERM (docker: 143)
    returncode: Optional[int] = None

    @property
    def container_exit_code(self) -> Optional[int]:
        if self.returncode is None:
            return None
        return 128 - self.returncode if self.returncode < 0 else self.returncode


def parse_timed_log(text: str) -> TimedLog:
    log = TimedLog(lines=[])
    for number, raw in enumerate(text.splitlines(), start=1):
        stamp, sep, line = raw.partition("\t")
        if not sep or not stamp.startswith("+"):
            raise ValueError(f"line {number}: expected '+SECONDS<TAB>text', got {raw[:60]!r}")
        at = float(stamp[1:])
        marker = EXIT_MARKER_RE.match(line)
        if marker:
            log.exit_at = at
            log.returncode = int(marker.group("rc"))
            continue
        log.lines.append((at, line))
    return log
