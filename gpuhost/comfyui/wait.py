"""Drive the readiness machine from a live container: its log, its state and HTTP probes.

The log so far (the backlog) is fed first, in the caller's thread (gpuhost.comfyui.backlog); then one
thread follows `/containers/{id}/logs?follow=1&timestamps=1` (demuxed) from where the backlog ended
and queues lines; the caller's thread feeds them to the machine as they arrive, inspects the
container every second, and probes /system_stats through the container's own published port:
right away and every `probe_interval` once the GUI line is seen, every second before (a 200 then is
another process). Ticks, probes and states carry times on the daemon's clock, the log's timeline.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from gpuhost.comfyui.backlog import LogCursor, read_backlog
from gpuhost.comfyui.container import (
    ComfyContainer,
    check_container_ref,
    container_from_inspect,
    parse_timestamp,
    run_log_since,
    since_param,
    split_log_line,
)
from gpuhost.comfyui.http import check_url, probe
from gpuhost.comfyui.readiness import (
    DEFAULT_STALL_TIMEOUT,
    ContainerState,
    LogLine,
    Phase,
    ProbeResult,
    ReadinessMachine,
    Tick,
    Verdict,
)
from gpuhost.comfyui.scrub import scrubber_for
from gpuhost.engine import (
    DOCKER_HOST_OPTION,
    EngineBadAnswer,
    EngineClient,
    EngineError,
    EnginePermissionDenied,
    EngineStream,
    EngineUnavailable,
    LogDemuxer,
    quote_ref,
)
from gpuhost.model import SourceError, UsageError, to_jsonable
from gpuhost.options import Command, Option, json_flag
from gpuhost.units import parse_duration

WAIT_SCHEMA = "gpuhost.wait-ready/v1"
DEFAULT_TIMEOUT = "10m"
DEFAULT_STALL_TIMEOUT_TEXT = "3m"
WAIT_MANY_SCHEMA = "gpuhost.wait-ready.instances/v1"
MAX_CONTAINERS = 64
_EOF = object()


@dataclass
class WaitOptions:
    timeout: float = 600.0
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    # probe this URL instead of the container's published port
    url: Optional[str] = None
    probe_interval: float = 0.1
    pre_gui_probe_interval: float = 1.0
    probe_timeout: float = 2.0
    inspect_interval: float = 1.0

    @classmethod
    def parse(
        cls, timeout: str = DEFAULT_TIMEOUT, stall_timeout: str = DEFAULT_STALL_TIMEOUT_TEXT, url: Optional[str] = None
    ) -> WaitOptions:
        """The options as typed (CLI or agent): durations like 90, 30s, 10m, 1h."""
        return cls(
            timeout=parse_duration(timeout, "--timeout"),
            stall_timeout=parse_duration(stall_timeout, "--stall-timeout"),
            url=check_url(url, "--url").geturl() if url is not None else None,
        )


@dataclass
class Progress:
    phase: Phase
    elapsed_s: float
    lines_seen: int
    last_line: str
    last_probe: str


@dataclass
class WaitResult:
    container: str
    container_id: str
    image: str
    verdict: Verdict
    elapsed_s: float
    # wall-clock time the verdict was reached, and the decisive event's own time
    reached_at: float = 0.0
    started_at: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict.phase is Phase.READY else 1

    def to_dict(self) -> dict[str, Any]:
        verdict = self.verdict
        return {
            "schema": WAIT_SCHEMA,
            "container": self.container,
            "container_id": self.container_id[:12],
            "image": self.image,
            **verdict.summary(),
            "message": verdict.message,
            "remedy": verdict.remedy,
            "warnings": to_jsonable(verdict.warnings),
            "notes": verdict.notes,
            "lines_seen": verdict.lines_seen,
            "container_exit_code": verdict.exit_code,
            "restart_count": verdict.restart_count,
            "elapsed_s": round(self.elapsed_s, 3),
            "decided_at": verdict.decided_at,
            "reached_at": self.reached_at,
            "tail": verdict.tail,
            "exit_code": self.exit_code,
        }


def inspect_container(client: EngineClient, ref: str) -> tuple[ComfyContainer, dict[str, Any]]:
    check_container_ref(ref, "CONTAINER")
    try:
        body = client.get(f"/containers/{quote_ref(ref)}/json")
    except EngineError as exc:
        if exc.status == 404:
            raise UsageError(
                f"no container named {ref!r}", "List containers with `docker ps -a`; pass its name or id."
            ) from exc
        raise
    return container_from_inspect(body), body


def start_error(inspect: dict[str, Any]) -> str:
    """Docker's own error when it could not start the container (State.Error): the process never ran, so
    the log is empty (e.g. `nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.8`)."""
    state = inspect.get("State") or {}
    return str(state.get("Error") or "") if isinstance(state, dict) else ""


def state_event(container: ComfyContainer, at: float, error: str = "") -> ContainerState:
    """The container's state at `at` (the log's timeline); a stopped one's at the time it stopped."""
    when = at
    if container.status in ("exited", "dead") and container.finished_at:
        when = container.finished_at
    return ContainerState(
        at=when,
        status=container.status,
        exit_code=container.exit_code,
        restart_count=container.restart_count,
        oom_killed=container.oom_killed,
        error=error,
        started_at=container.started_at,
    )


class LogFollower(threading.Thread):
    """Queue a container's new log lines (epoch seconds, text) as they arrive; _EOF at the end.

    It starts where the backlog (or the stream before it) ended, at the cursor, and skips what the
    Engine API resends from there."""

    def __init__(self, client: EngineClient, container: ComfyContainer, cursor: LogCursor, timeout: float) -> None:
        super().__init__(name=f"logs-{container.name}", daemon=True)
        self.client = client
        self.container = container
        self.cursor = cursor
        self.timeout = timeout
        self.lines: queue.Queue[Any] = queue.Queue()
        self._stream: Optional[EngineStream] = None
        self._stopped = threading.Event()
        self.error = ""

    def run(self) -> None:
        params: dict[str, Any] = {"follow": True, "stdout": True, "stderr": True, "timestamps": True}
        since = self.cursor.last_at if self.cursor.last_at is not None else run_log_since(self.container)
        if since is not None:
            params["since"] = since_param(since)
        if self.cursor.last_at is not None and not self.cursor.reached_end:
            params["tail"] = 0  # the backlog was cut short: new lines only, not the rest of a huge log
        self.cursor.reopened()
        demuxer = LogDemuxer(tty=self.container.tty)
        try:
            self._stream = self.client.open_stream(
                f"/containers/{self.container.id}/logs", params=params, timeout=self.timeout
            )
            while not self._stopped.is_set():
                chunk = self._stream.read()
                if not chunk:
                    break
                for _, line in demuxer.feed(chunk):
                    self._put(line)
            for _, line in demuxer.flush():
                self._put(line)
        except (EngineError, EngineUnavailable, EnginePermissionDenied) as exc:
            self.error = str(exc)  # the log cannot be read at all (e.g. --log-driver none)
        except OSError:
            pass  # the connection ended: the caller inspects the container
        finally:
            if self._stream is not None:
                self._stream.close()
            self.lines.put(_EOF)

    def _put(self, line: str) -> None:
        at, text = split_log_line(line)
        if self.cursor.skip(at):
            return
        self.cursor.fed(at)
        self.lines.put((at, text))

    def stop(self) -> None:
        self._stopped.set()
        if self._stream is not None:
            self._stream.shutdown()


def daemon_clock_offset(client: EngineClient, clock: Callable[[], float]) -> float:
    """Seconds to add to `clock` to read the daemon's clock, the one that stamps log lines and
    State.StartedAt (GET /info's SystemTime, halfway through the request); 0 when it does not say."""
    before = clock()
    try:
        info = client.get("/info")
    except EngineError:  # an answer that is not the Engine API's included
        return 0.0
    after = clock()
    stamp = parse_timestamp(str(info.get("SystemTime") or "")) if isinstance(info, dict) else None
    return 0.0 if stamp is None else stamp - (before + after) / 2


def log_unreadable(container: ComfyContainer, error: str) -> SourceError:
    return SourceError(
        f"the log of container {container.name}",
        error,
        "Readiness reads the log through the Engine API: run the container with a log driver "
        "`docker logs` can read (json-file, local, journald).",
    )


def wait_ready(
    client: EngineClient,
    ref: str,
    options: Optional[WaitOptions] = None,
    on_progress: Optional[Callable[[Progress], None]] = None,
    clock: Callable[[], float] = time.time,
) -> WaitResult:
    """Follow container `ref` until ComfyUI is ready, failed or stalled (or the timeout).

    Its log so far is read first; every event is then fed on the log's timeline (`clock` moved onto
    the daemon's clock), so a run that started long ago is judged by when it wrote its lines."""
    options = options or WaitOptions()
    if options.timeout <= 0 or options.stall_timeout <= 0:
        raise UsageError("--timeout and --stall-timeout must be positive")
    begin = clock()
    container, body = inspect_container(client, ref)
    while container.status == "created" and not start_error(body) and clock() < begin + options.timeout:
        time.sleep(0.2)  # not started yet (docker create, or a start in flight)
        container, body = inspect_container(client, ref)
    offset = daemon_clock_offset(client, clock)

    def log_clock() -> float:
        return clock() + offset

    deadline = begin + offset + options.timeout
    machine = ReadinessMachine(
        stall_timeout=options.stall_timeout,
        started_at=container.started_at or log_clock(),
        restart_count=container.restart_count,
        host_network=container.loopback_network,
        deadline=deadline,
        run_started_at=container.started_at,
    )
    if start_error(body):
        machine.feed(state_event(container, log_clock(), start_error(body)))
    cursor = LogCursor()
    if not machine.decided:
        try:
            cursor = read_backlog(client, container, machine, log_clock, max(0.1, deadline - log_clock()))
        except EngineBadAnswer:
            raise  # the daemon, not the log: Docker unreadable
        except EngineError as exc:
            raise log_unreadable(container, str(exc)) from exc
    follower = LogFollower(client, container, cursor, timeout=options.timeout + 30)
    if not machine.decided:
        follower.start()
    next_inspect = clock()
    next_probe = clock()
    stream_open = True
    try:
        while not machine.decided:
            now = clock()
            wait_for = max(0.0, min(next_inspect, next_probe, begin + options.timeout) - now)
            item = _next(follower, wait_for if stream_open else min(wait_for, 0.2))
            gui_before = machine.gui_seen
            while item is not None:
                if item is _EOF:
                    if follower.error:
                        raise log_unreadable(container, follower.error)
                    stream_open = False
                    next_inspect = clock()  # the stream ends when the container stops
                else:
                    at, text = item
                    machine.feed(LogLine(at if at is not None else log_clock(), text))
                    if machine.decided:
                        break
                item = _next(follower, 0.0)
            if machine.decided:
                break
            if machine.gui_seen and not gui_before:
                next_probe = clock()  # probe the moment the server says it listens
            now = clock()
            if now >= next_inspect:
                container, body = inspect_container(client, container.id)
                machine.feed(state_event(container, log_clock(), start_error(body)))
                next_inspect = now + options.inspect_interval
                if not stream_open and container.running and not machine.decided:
                    # the stream ended but the same run goes on (a new run decides `restarted`):
                    # reopen it where it ended
                    follower = LogFollower(client, container, cursor, timeout=options.timeout + 30)
                    follower.start()
                    stream_open = True
            if machine.decided:
                break
            if now >= next_probe:
                machine.feed(_probe(container, machine, options, log_clock))
                interval = options.probe_interval if machine.gui_seen else options.pre_gui_probe_interval
                next_probe = clock() + interval
            machine.feed(Tick(log_clock()))
            if on_progress is not None:
                verdict = machine.verdict
                on_progress(Progress(verdict.phase, clock() - begin, verdict.lines_seen,
                                     scrubber_for(body).text(verdict.last_line), verdict.last_probe))
    finally:
        follower.stop()
    reached = clock()
    try:  # record how the container stands now (an exit code after a failure), the verdict stays
        container, _ = inspect_container(client, container.id)
        machine.feed(state_event(container, reached + offset))
    except (UsageError, EngineError):
        pass  # removed meanwhile
    return WaitResult(
        container=container.name,
        container_id=container.id,
        image=container.image,
        verdict=scrubber_for(body).verdict(machine.verdict),
        elapsed_s=reached - begin,
        reached_at=reached,
        started_at=container.started_at,
    )


def _next(follower: LogFollower, timeout: float) -> Any:
    try:
        if timeout <= 0:
            return follower.lines.get_nowait()
        return follower.lines.get(timeout=timeout)
    except queue.Empty:
        return None


def _probe(
    container: ComfyContainer, machine: ReadinessMachine, options: WaitOptions, clock: Callable[[], float]
) -> ProbeResult:
    if options.url:
        return probe(options.url, timeout=options.probe_timeout, clock=clock)
    url, why = container.probe_url(machine.gui_port, machine.gui_host)
    if not url:
        return ProbeResult(at=clock(), url="", error=why, reachable=False)
    return probe(url, timeout=options.probe_timeout, clock=clock)


def wait_ready_many(
    make_client: Callable[[], EngineClient], refs: list[str], options: Optional[WaitOptions] = None
) -> list[WaitResult]:
    """wait_ready on several containers at once (the instances of one host), each with a client and a thread
    of its own; every name is checked and found before any wait starts."""
    options = options or WaitOptions()
    if not refs or len(refs) > MAX_CONTAINERS:
        raise UsageError(f"give 1 to {MAX_CONTAINERS} containers", "Example: gpuhost wait-ready comfyui-0 comfyui-1")
    if len(set(refs)) != len(refs):
        raise UsageError("a container is named twice", "Name each container once.")
    if options.url and len(refs) > 1:
        raise UsageError("--url probes one server: give one CONTAINER with it", "Leave --url out for several.")
    client = make_client()
    for ref in refs:
        inspect_container(client, ref)  # a missing one is bad usage before anything waits
    results: dict[int, Any] = {}

    def run(index: int, ref: str) -> None:
        try:
            results[index] = wait_ready(make_client(), ref, options)
        except Exception as exc:  # handed to the caller's thread below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, ref), daemon=True) for i, ref in enumerate(refs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(len(refs)):
        if isinstance(results[index], Exception):
            raise results[index]
    return [results[index] for index in range(len(refs))]


def many_to_dict(results: list[WaitResult]) -> dict[str, Any]:
    ready = sum(1 for result in results if result.exit_code == 0)
    return {
        "schema": WAIT_MANY_SCHEMA,
        "ready": ready,
        "total": len(results),
        "containers": [result.to_dict() for result in results],
        "exit_code": 0 if ready == len(results) else 1,
    }


WAIT_READY = Command(
    cli="wait-ready",
    agent="wait-ready",
    summary="wait until ComfyUI in a container really serves (see gpuhost wait-ready)",
    options=(
        Option("CONTAINER", "The ComfyUI container's name or id; several (a host's instances) are judged at once.",
               kind="name", repeat=True, required=True, dest="containers"),
        Option("--timeout", "Give up (exit 1) when ComfyUI is not ready after this long.", default=DEFAULT_TIMEOUT,
               metavar="DURATION", example="--timeout 15m"),
        Option("--stall-timeout", "Before the GUI line: stalled (exit 1) when no new log line comes for this long; "
               "the last line seen is reported.", default=DEFAULT_STALL_TIMEOUT_TEXT, metavar="DURATION",
               example="--stall-timeout 90s"),
        Option("--url", "Probe this URL instead of /system_stats through the container's published port (or its "
               "--listen/--port on the host network).", metavar="URL",
               example="--url http://127.0.0.1:8188/system_stats"),
        DOCKER_HOST_OPTION,
        json_flag("the result (schema gpuhost.wait-ready/v1)"),
    ),
    parsers=(WaitOptions.parse,),
)
