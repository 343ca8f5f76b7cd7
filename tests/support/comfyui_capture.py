"""Record a ComfyUI capture in the fixtures' format (../shared/fixtures/comfyui/README.md) from the real
image (gpuhost-comfyui:0.3.64) or from the replay stand-in, and say where two captures disagree.

    scripts/record-comfyui-capture [--out DIR] [--compare] SCENARIO... | all
    python -m tests.support.comfyui_capture record ...

A capture NAME is three files:

  NAME.log        the container's output as `docker logs` gives it (stdout and stderr, one stream)
  NAME.timed.log  each line as `+SECONDS<TAB>line`, SECONDS since the container started (Docker's own
                  clock: State.StartedAt and each line's timestamp), then `<<child exited rc=N>>` at
                  State.FinishedAt: ComfyUI's exit code, or -N when the recorder ended the run with
                  signal N (exit 143 -> -15), as capture-launcher.py wrote a child it killed
  NAME.http.json  the readiness probe (GET /system_stats every 0.1 s: each change of its answer and the
                  first 200), the HTTP answers once it served (status, content type, Server header; the
                  body when under 16 KiB, else its size, digest and for /object_info its class count),
                  the addresses it listened on, the image and the command

Each scenario runs in a container with no network but its own loopback (`--network none`, IPv6
switched on for `lo`), ComfyUI listening on port 8188 there as the scenario says; the probe runs inside
that namespace (`nsenter --net`, so this needs root). Nothing is reachable from outside, a bare
`--listen` binding 0.0.0.0 and :: included, and the port is the one the fixtures record. The base
directory is the comfyui role's layout: models, custom_nodes, user, input and output mounted at
/basedir, owned by a non-root id that the container runs ComfyUI as (WANTED_UID/WANTED_GID), on the CPU
(COMFY_CMDLINE_EXTRA=--cpu).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from tests.support.comfyui_real import IMAGE as REAL_IMAGE
from tests.support.paths import FIXTURES, REPO

NAME_PREFIX = "gpuhost-comfyui-capture-"
PORT = 8188
CAPTURE_ID = 4243  # the id ComfyUI runs as; no account on the host has it
BASE_FOLDERS = ("models", "custom_nodes", "user", "input", "output")
PROBE_INTERVAL = 0.1
BODY_LIMIT = 16 * 1024
HTTP_SCHEMA = "gpuhost.comfyui-capture-http/v1"
# what the recorder asks once the server answered 200: ComfyUI's idle routes, its settings (which
# create user/default: the first write into the user directory), the frontend, an unknown route
ROUTES = ("/system_stats", "/queue", "/prompt", "/history", "/features", "/settings", "/object_info", "/",
          "/no-such-route")
OWN_DIR = FIXTURES / "comfyui"

BROKEN_NODE = 'raise ImportError("broken_node: deliberately broken custom node for a test fixture")\n'
BLOCKING_NODE = (
    "import threading\n"
    'print("blocking_node: waiting for a lock that nobody releases", flush=True)\n'
    "threading.Event().wait()\n"
)


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    # ComfyUI's --listen as its command line has it: ("--listen", ADDR) or a bare ("--listen",)
    listen: tuple[str, ...] = ("--listen", "127.0.0.1")
    # how the recording ends: "term" (SIGTERM) or "kill" (SIGKILL) once it served and the answers are
    # in, "exit" when it exits by itself, "silent": SIGTERM after `silence` s without a new line
    end: str = "term"
    custom_nodes: tuple[tuple[str, str], ...] = ()
    # "role": the five folders mounted, owned by the id; "user-dir-not-writable": user/ owned by root,
    # 0755; "base-dir-not-writable": no user/, and /basedir itself a root-owned 0755 mount
    layout: str = "role"
    silence: float = 25.0

    def command(self) -> list[str]:
        return [*self.listen, "--port", str(PORT)]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("startup-cpu", "a healthy start (--listen 127.0.0.1), then SIGTERM"),
    Scenario("startup-cpu-listen-all", "a healthy start with --listen 0.0.0.0, then SIGTERM",
             listen=("--listen", "0.0.0.0")),
    Scenario("startup-cpu-listen-dual", "a healthy start with a bare --listen (0.0.0.0 and ::: two GUI lines), "
             "then SIGTERM", listen=("--listen",)),
    Scenario("startup-cpu-killed", "a healthy start, then SIGKILL once it served", end="kill"),
    Scenario("failure-custom-node-import", "custom_nodes/broken_node raises ImportError at import, then SIGTERM",
             custom_nodes=(("broken_node/__init__.py", BROKEN_NODE),)),
    Scenario("failure-custom-node-blocks", "custom_nodes/blocking_node prints a line and blocks at import; "
             "SIGTERM after 25 s without a line", end="silent",
             custom_nodes=(("blocking_node/__init__.py", BLOCKING_NODE),)),
    Scenario("failure-user-dir-not-writable", "the mounted user directory is root's (0755): ComfyUI cannot "
             "create its database there; then SIGTERM", layout="user-dir-not-writable"),
    Scenario("failure-base-dir-not-writable", "no user directory, in a base directory that is root's (0755): "
             "ComfyUI cannot create it and exits", end="exit", layout="base-dir-not-writable"),
)}


# --- a capture ------------------------------------------------------------------------------------


@dataclass
class Capture:
    name: str
    lines: list[tuple[float, str]]
    raw: bytes
    exit_at: float | None
    # the fixtures' rc: the exit code, or -N for signal N the recorder sent (see the module's docstring)
    returncode: int | None
    http: dict[str, Any] = field(default_factory=dict)

    @property
    def gui_lines(self) -> list[str]:
        from gpuhost.comfyui.readiness import gui_address

        return [text for _, text in self.lines if gui_address(text)]

    @property
    def first_200_at(self) -> float | None:
        value = self.http.get("first_200_at")
        return float(value) if isinstance(value, (int, float)) else None

    def timed_log(self) -> str:
        rows = [f"+{at:.3f}\t{text}" for at, text in self.lines]
        if self.returncode is not None and self.exit_at is not None:
            rows.append(f"+{self.exit_at:.3f}\t<<child exited rc={self.returncode}>>")
        return "\n".join(rows) + "\n"

    def write(self, out: Path) -> list[Path]:
        out.mkdir(parents=True, exist_ok=True)
        written = [out / f"{self.name}.log", out / f"{self.name}.timed.log", out / f"{self.name}.http.json"]
        written[0].write_bytes(self.raw)
        written[1].write_text(self.timed_log())
        written[2].write_text(json.dumps(self.http, indent=2, sort_keys=True, allow_nan=False) + "\n")
        return written


def load_capture(name: str, directory: Path | None = None) -> Capture:
    """A capture as the fixtures hold it: the project's copy (tests/fixtures/comfyui) where there is one,
    else the shared one; `directory` to read another."""
    from gpuhost.comfyui.readiness import parse_timed_log
    from tests.support.comfyui_replay import capture_file

    timed_path = directory / f"{name}.timed.log" if directory else capture_file(f"{name}.timed.log")
    log = parse_timed_log(timed_path.read_text())
    raw_path = timed_path.with_name(f"{name}.log")
    http_path = timed_path.with_name(f"{name}.http.json")
    return Capture(
        name=name,
        lines=log.lines,
        raw=raw_path.read_bytes() if raw_path.is_file() else b"",
        exit_at=log.exit_at,
        returncode=log.returncode,
        http=json.loads(http_path.read_text()) if http_path.is_file() else {},
    )


# --- how a capture is judged and compared ---------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    phase: str
    reason: str
    warnings: tuple[tuple[str, str], ...]  # (kind, node), sorted
    failing_line: str
    last_line: str


def judge(capture: Capture, stall_timeout: float = 60.0, probe_at: float | None = None) -> Judgement:
    """The readiness machine's verdict on a capture, fed as wait-ready feeds it live: each line at its
    time, the recorded first 200 (or one at `probe_at`), time passing until the recorded end, and the
    exit when the run ended by itself (not when the recorder ended it: rc < 0)."""
    from gpuhost.comfyui.readiness import ContainerState, LogLine, ProbeResult, ReadinessMachine, Tick

    machine = ReadinessMachine(stall_timeout=stall_timeout, started_at=0.0, host_network=True)
    url = f"http://127.0.0.1:{PORT}/system_stats"
    first_200 = capture.first_200_at if probe_at is None else probe_at
    gui_at = next((at for at, text in capture.lines if text.startswith("To see the GUI go to: ")), None)
    if first_200 is not None and gui_at is not None and probe_at is None:
        # the server binds, then prints the line, and Docker stamps the line when it reads it: a poll can
        # land in between. Alone in its namespace, every 200 the recorder got is the server's own.
        first_200 = max(first_200, gui_at)
    events: list[tuple[float, int, Any]] = []
    for number, (at, text) in enumerate(capture.lines):
        events.append((at, 0, (number, LogLine(at, text))))
        events.append((at, 1, (number, Tick(at))))
    if first_200 is not None:
        events.append((first_200, 2, (0, ProbeResult(first_200, url, 200))))
    if capture.exit_at is not None:
        events.append((capture.exit_at, 3, (0, Tick(capture.exit_at))))
        if capture.returncode is not None and capture.returncode >= 0:
            events.append((capture.exit_at, 4, (0, ContainerState(capture.exit_at, "exited", capture.returncode))))
    for _, _, (_, event) in sorted(events, key=lambda item: (item[0], item[1], item[2][0])):
        machine.feed(event)
    verdict = machine.verdict
    return Judgement(verdict.phase.value, verdict.reason,
                     tuple(sorted((w.kind, w.node) for w in verdict.warnings)), verdict.failing_line,
                     verdict.last_line)


def shape(value: Any) -> Any:
    """A JSON value's shape: its keys and the kinds of its leaves, not their values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        shapes = {json.dumps(shape(item), sort_keys=True) for item in value}
        return [json.loads(item) for item in sorted(shapes)]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "string"


def _media_type(answer: dict[str, Any]) -> str:
    return str(answer.get("content_type") or "").split(";")[0].strip()


def _body_shape(answer: dict[str, Any]) -> Any:
    """A JSON body's shape; None for other bodies (their media type is compared) and big ones."""
    body = answer.get("body")
    if not isinstance(body, str) or _media_type(answer) != "application/json":
        return None
    try:
        return shape(json.loads(body))
    except ValueError:
        return "not JSON"


def differences(real: Capture, other: Capture, stall_timeout: float = 60.0) -> list[str]:
    """Where `other` (the replay's recording, or an older capture) disagrees with `real`: the GUI lines,
    the readiness verdict and its warnings, the exit code, whether it served, each HTTP answer's status,
    media type and body shape (for /object_info the status only), the addresses it listened on."""
    found: list[str] = []

    def differ(what: str, mine: Any, theirs: Any) -> None:
        if mine != theirs:
            found.append(f"{what}: real {mine!r}, other {theirs!r}")

    differ("GUI lines", real.gui_lines, other.gui_lines)
    mine, theirs = judge(real, stall_timeout), judge(other, stall_timeout)
    differ("verdict", (mine.phase, mine.reason), (theirs.phase, theirs.reason))
    differ("warnings", mine.warnings, theirs.warnings)
    differ("exit", real.returncode, other.returncode)
    differ("served (a 200 after the GUI line)", real.first_200_at is not None, other.first_200_at is not None)
    differ("listening on", real.http.get("listening"), other.http.get("listening"))
    real_answers = real.http.get("answers") or {}
    other_answers = other.http.get("answers") or {}
    for route in sorted(real_answers):
        answer, replayed = real_answers[route], other_answers.get(route)
        if replayed is None:
            found.append(f"{route}: real answers {answer.get('status')}, other not asked")
            continue
        differ(f"{route} status", answer.get("status"), replayed.get("status"))
        differ(f"{route} media type", _media_type(answer), _media_type(replayed))
        if route != "GET /object_info":
            differ(f"{route} body shape", _body_shape(answer), _body_shape(replayed))
    return found


# --- recording ------------------------------------------------------------------------------------


@dataclass
class Live:
    """What a `during` callback gets while the container runs."""

    name: str
    pid: int
    netns: str  # the namespace's file: Docker's sandbox key, else /proc/PID/ns/net
    port: int = PORT

    def in_netns(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the container's network namespace (its loopback; the Engine API's socket
        is a path, reachable from any namespace)."""
        return in_netns(self.netns, argv)


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    return ["nsenter", f"--net={netns}", "--", *argv]


def netns_of(attrs: dict[str, Any]) -> str:
    """A started container's network namespace as a file to enter. Docker's sandbox key is a bind mount
    of it that root opens as any file; /proc/PID/ns/net of a process that changed its user (the
    entrypoint drops to the wanted UID) also needs CAP_SYS_PTRACE, which root in a container lacks."""
    key = str((attrs.get("NetworkSettings") or {}).get("SandboxKey") or "")
    return key if key and os.path.exists(key) else f"/proc/{attrs['State']['Pid']}/ns/net"


@dataclass
class Recorded:
    capture: Capture
    name: str
    base_dir: Path
    during_result: Any = None
    during_error: BaseException | None = None


def probe_hosts(listen: Sequence[str]) -> list[str]:
    """Where a client inside the namespace reaches each address ComfyUI listens on."""
    if not listen:
        return ["127.0.0.1"]
    value = listen[1] if len(listen) > 1 else "0.0.0.0,::"
    hosts = []
    for host in value.split(","):
        host = host.strip().strip("[]")
        hosts.append({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host))
    return hosts


def listening(pid: int, port: int) -> list[str]:
    """The TCP addresses the network namespace of `pid` listens on at `port` (its /proc/PID/net)."""
    found = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        path = Path(f"/proc/{pid}/net/{name}")
        if not path.is_file():
            continue
        for row in path.read_text().splitlines()[1:]:
            fields = row.split()
            local, state = fields[1], fields[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port or len(address) != width:
                continue
            raw = bytes.fromhex(address)
            if name == "tcp":
                text = ".".join(str(b) for b in raw[::-1])
            else:  # four host-order 32-bit words
                import ipaddress

                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                text = f"[{ipaddress.IPv6Address(words).compressed}]"
            found.append(f"{text}:{port}")
    return sorted(found)


def make_base_dir(root: Path, scenario: Scenario, uid: int = CAPTURE_ID) -> tuple[Path, dict[str, dict[str, str]]]:
    """The base directory on the host and its mounts, as the scenario lays them out."""
    root.mkdir(parents=True, exist_ok=True)
    folders = [f for f in BASE_FOLDERS if not (scenario.layout == "base-dir-not-writable" and f == "user")]
    for folder in folders:
        (root / folder).mkdir(exist_ok=True)
        os.chown(root / folder, uid, uid)
    for relative, text in scenario.custom_nodes:
        path = root / "custom_nodes" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for part in (path, *path.relative_to(root / "custom_nodes").parents):
            os.chown(root / "custom_nodes" / part, uid, uid)
    if scenario.layout == "user-dir-not-writable":
        os.chown(root / "user", 0, 0)
        (root / "user").chmod(0o755)
    mounts = {str(root / folder): {"bind": f"/basedir/{folder}", "mode": "rw"} for folder in folders}
    if scenario.layout == "base-dir-not-writable":
        os.chown(root, 0, 0)
        root.chmod(0o755)
        mounts[str(root)] = {"bind": "/basedir", "mode": "rw"}
    return root, mounts


class _Prober:
    """GET /system_stats from inside the container's namespace every 0.1 s; once it answers 200, the
    answers to ROUTES and whether every address answers (`python -m tests.support.comfyui_capture
    probe` under nsenter, reporting JSON lines)."""

    def __init__(self, netns: str, hosts: list[str]) -> None:
        argv = in_netns(netns, [sys.executable, "-m", "tests.support.comfyui_capture", "probe",
                                "--port", str(PORT), "--hosts", ",".join(hosts)])
        self.process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.transitions: list[tuple[float, str]] = []
        self.answers: dict[str, Any] | None = None
        self.reach: dict[str, int] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            report = json.loads(line)
            if "state" in report:
                self.transitions.append((float(report["at"]), str(report["state"])))
            if "answers" in report:
                self.reach = report["reach"]
                self.answers = report["answers"]

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        self.thread.join(5)
        return err or ""


def _follow(client: Any, container_id: str, lines: list[tuple[float, str]], seen: list[float]) -> None:
    from gpuhost.comfyui.container import split_log_line

    pending = b""
    for chunk in client.api.logs(container_id, stream=True, follow=True, timestamps=True):
        pending += chunk
        while b"\n" in pending:
            raw, pending = pending.split(b"\n", 1)
            at, text = split_log_line(raw.decode("utf-8", "replace"))
            lines.append((at if at is not None else time.time(), text))
            seen[0] = time.time()
    if pending:
        at, text = split_log_line(pending.decode("utf-8", "replace"))
        lines.append((at if at is not None else time.time(), text))


@contextlib.contextmanager
def recording(
    scenario: Scenario,
    work_dir: Path,
    *,
    image: str = REAL_IMAGE,
    command: Sequence[str] | None = None,
    during: Callable[[Live], Any] | None = None,
    silence: float | None = None,
    timeout: float = 420.0,
) -> Iterator[Recorded]:
    """Run the scenario in `image` (its command: the scenario's ComfyUI arguments unless `command`),
    record it until it ends as the scenario says, and yield the capture with the container still there
    (removed on leaving the block). `during(live)` runs in a thread as soon as the container started
    (e.g. `gpuhost wait-ready` in its namespace); the run is not ended before it returns."""
    import docker
    import docker.errors

    from gpuhost.comfyui.container import parse_timestamp

    client = docker.from_env()
    name = f"{NAME_PREFIX}{scenario.name}-{uuid.uuid4().hex[:6]}"
    base_dir, mounts = make_base_dir(work_dir / f"{scenario.name}-basedir", scenario)
    argv = list(command) if command is not None else scenario.command()
    container = client.containers.create(
        image, argv, name=name, network_mode="none", volumes=mounts,
        environment={"WANTED_UID": str(CAPTURE_ID), "WANTED_GID": str(CAPTURE_ID), "COMFY_CMDLINE_EXTRA": "--cpu"},
        sysctls={"net.ipv6.conf.all.disable_ipv6": "0", "net.ipv6.conf.lo.disable_ipv6": "0"},
        labels={"gpuhost.test": "comfyui-capture"},
    )
    prober: _Prober | None = None
    outcome: dict[str, Any] = {}
    try:
        container.start()
        container.reload()
        state = container.attrs["State"]
        started = parse_timestamp(state["StartedAt"]) or time.time()
        pid = int(state["Pid"])
        netns = netns_of(container.attrs) if pid else ""
        lines: list[tuple[float, str]] = []
        last_line = [time.time()]
        follower = threading.Thread(target=_follow, args=(client, container.id, lines, last_line), daemon=True)
        follower.start()
        if pid:
            prober = _Prober(netns, probe_hosts(scenario.listen))
        helper = None
        if during is not None and pid:
            def run_during() -> None:
                try:
                    outcome["result"] = during(Live(name, pid, netns))
                except BaseException as exc:  # handed to the caller
                    outcome["error"] = exc
            helper = threading.Thread(target=run_during, daemon=True)
            helper.start()
        listen_seen: list[str] = []
        sent: int | None = None
        deadline = time.monotonic() + timeout
        quiet = scenario.silence if silence is None else silence
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                break
            helper_done = helper is None or not helper.is_alive()
            served = prober is not None and prober.answers is not None
            if served and not listen_seen:
                listen_seen = listening(pid, PORT)
            if helper_done and scenario.end in ("term", "kill") and served:
                sent = 15 if scenario.end == "term" else 9
            elif helper_done and scenario.end == "silent" and (served or time.time() - last_line[0] >= quiet):
                sent = 15
            elif time.monotonic() > deadline:
                container.kill()
                container.wait(timeout=60)
                raise RuntimeError(f"{scenario.name}: not ended after {timeout:.0f} s as it should ({scenario.end}); "
                                   f"last lines:\n" + "\n".join(text for _, text in lines[-20:]))
            if sent is not None:
                with contextlib.suppress(docker.errors.APIError):  # it ended by itself meanwhile
                    container.kill(signal="SIGTERM" if sent == 15 else "SIGKILL")
                break
            time.sleep(0.2)
        container.wait(timeout=120)
        follower.join(30)
        if helper is not None:
            helper.join(max(0.0, deadline - time.monotonic()))
        probe_errors = prober.stop() if prober is not None else ""
        container.reload()
        state = container.attrs["State"]
        code = int(state["ExitCode"])
        finished = parse_timestamp(state["FinishedAt"]) or time.time()
        rc = -sent if sent is not None and code == 128 + sent else code
        assert prober is not None or not pid
        http: dict[str, Any] = {
            "schema": HTTP_SCHEMA,
            "image": image,
            "image_id": container.attrs["Image"],
            "command": argv,
            "probe": [[round(at - started, 3), what] for at, what in (prober.transitions if prober else [])],
            "first_200_at": next((round(at - started, 3) for at, what in (prober.transitions if prober else [])
                                  if what == "HTTP 200"), None),
            "answers": (prober.answers if prober else None) or {},
            "reach": prober.reach if prober else {},
            "listening": listen_seen,
        }
        if prober is not None and prober.answers is None and probe_errors.strip():
            http["probe_errors"] = probe_errors.strip()[-2000:]
        capture = Capture(
            name=scenario.name,
            lines=[(round(max(0.0, at - started), 3), text) for at, text in lines],
            raw=bytes(container.logs(stdout=True, stderr=True)),
            exit_at=round(finished - started, 3),
            returncode=rc,
            http=http,
        )
        yield Recorded(capture, name, base_dir, outcome.get("result"), outcome.get("error"))
    finally:
        if prober is not None and prober.process.poll() is None:
            prober.stop()
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True)


def record(scenario: Scenario, work_dir: Path, **kwargs: Any) -> Capture:
    with recording(scenario, work_dir, **kwargs) as recorded:
        return recorded.capture


def replay_command(scenario: Scenario, speed: float = 1.0) -> list[str]:
    """The replay image's command for the project's capture of `scenario`, with the same arguments."""
    return ["play", scenario.name, *scenario.command(), "--speed", str(speed)]


# --- the probe, inside the namespace --------------------------------------------------------------


def _answer(url: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(url, method=method)
    try:
        response = urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as exc:
        response = exc
    with response:
        data = response.read(16 * 1024 * 1024)
        answer: dict[str, Any] = {
            "status": int(response.status),
            "content_type": response.headers.get("Content-Type", ""),
            "server": response.headers.get("Server", ""),
        }
    if len(data) <= BODY_LIMIT:
        answer["body"] = data.decode("utf-8", "replace")
    else:
        answer["bytes"] = len(data)
        answer["sha256"] = hashlib.sha256(data).hexdigest()
        with contextlib.suppress(ValueError):
            parsed = json.loads(data)
            if isinstance(parsed, dict):
                answer["keys"] = len(parsed)
    return answer


def probe_main(port: int, hosts: list[str]) -> int:
    def url(host: str, path: str) -> str:
        return f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"

    last = ""
    while True:
        try:
            with urllib.request.urlopen(url(hosts[0], "/system_stats"), timeout=2) as response:
                response.read(1024 * 1024)
                state = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            state = f"HTTP {exc.code}"
        except Exception as exc:  # what the capture launcher recorded: the error's kind and reason
            state = f"ERR {type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if state != last:
            print(json.dumps({"at": time.time(), "state": state}), flush=True)
            last = state
        if state == "HTTP 200":
            break
        time.sleep(PROBE_INTERVAL)
    answers = {f"GET {path}": _answer(url(hosts[0], path)) for path in ROUTES}
    reach = {host: _answer(url(host, "/system_stats"))["status"] for host in hosts}
    print(json.dumps({"answers": answers, "reach": reach}), flush=True)
    return 0


# --- the command line ----------------------------------------------------------------------------


class _UsageFormatter(argparse.RawDescriptionHelpFormatter):
    """The scripts' usage line, as every other script in scripts/ prints it: "Usage: scripts/NAME ..."."""

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, "Usage: " if prefix is None else prefix)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: {message}\nscripts/record-comfyui-capture --help shows the usage\n")


def main(argv: list[str] | None = None) -> int:
    scenarios = "\n".join(f"  {s.name}: {s.what}" for s in SCENARIOS.values())
    parser = _Parser(
        prog="scripts/record-comfyui-capture",
        formatter_class=_UsageFormatter,
        description="Record ComfyUI captures from the real image in the fixtures' format: NAME.log, "
                    "NAME.timed.log, NAME.http.json\n(tests/support/comfyui_capture.py says what each holds).",
        epilog=f"scenarios:\n{scenarios}",
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="record")
    rec = sub.add_parser("record", help="record scenarios", formatter_class=_UsageFormatter,
                         epilog=f"scenarios:\n{scenarios}")
    rec.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="a scenario name, or all")
    rec.add_argument("--out", type=Path, default=OWN_DIR, help=f"where to write them (default: {OWN_DIR})")
    rec.add_argument("--image", default=REAL_IMAGE)
    rec.add_argument("--compare", action="store_true",
                     help="also record the replay of the project's capture and print where it differs")
    probe = sub.add_parser("probe")  # run by the recorder inside the container's namespace
    probe.add_argument("--port", type=int, required=True)
    probe.add_argument("--hosts", required=True)
    args = parser.parse_args(argv)
    if args.mode == "probe":
        return probe_main(args.port, args.hosts.split(","))
    names = list(SCENARIOS) if args.scenarios == ["all"] else args.scenarios
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"no scenario {', '.join(unknown)}; have: {', '.join(SCENARIOS)}")
    if os.geteuid() != 0:
        parser.error("run as root: the probe enters the container's network namespace (nsenter)")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="gpuhost-comfyui-capture-") as tmp:
        if args.compare:
            from tests.support.comfyui_replay import IMAGE as REPLAY_IMAGE
            from tests.support.comfyui_replay import build_image

            build_image()
        for name in names:
            scenario = SCENARIOS[name]
            capture = record(scenario, Path(tmp), image=args.image)
            for path in capture.write(args.out):
                print(path)
            verdict = judge(capture)
            print(f"{name}: exit {capture.returncode}, {len(capture.lines)} lines, first 200 at "
                  f"{capture.first_200_at}, verdict {verdict.phase} ({verdict.reason})")
            if args.compare:
                replayed = record(scenario, Path(tmp) / "replay", image=REPLAY_IMAGE,
                                  command=replay_command(scenario))
                found = differences(capture, replayed)
                failed += bool(found)
                print("\n".join(f"  differs: {line}" for line in found) or "  the replay agrees")
            shutil.rmtree(Path(tmp) / f"{name}-basedir", ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
