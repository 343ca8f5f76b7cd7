"""Drive the readiness machine from a live container: its log stream, its state and HTTP probes.

One thread follows `/containers/{id}/logs?follow=1&timestamps=1` (demuxed) and queues lines; the
caller's thread feeds them to the machine as they arrive, inspects the container every second,
and probes /system_stats through the container's own published port: right away and every
`probe_interval` once the GUI line is seen, every second before (a 200 then is another process).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from gpuhost.comfyui.container import (
    ComfyContainer,
    check_container_ref,
    container_from_inspect,
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
    EngineClient,
    EngineError,
    EnginePermissionDenied,
    EngineStream,
    EngineUnavailable,
    LogDemuxer,
    quote_ref,
)
from gpuhost.model import SourceError, UsageError, to_jsonable
from gpuhost.units import parse_duration

WAIT_SCHEMA = "gpuhost.wait-ready/v1"
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
    def parse(cls, timeout: str = "10m", stall_timeout: str = "3m", url: Optional[str] = None) -> WaitOptions:
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
    )


class LogFollower(threading.Thread):
    """Queue a container's log lines (epoch seconds, text) as they arrive; _EOF at the end."""

    def __init__(self, client: EngineClient, container: ComfyContainer, since: Optional[float], timeout: float) -> None:
        super().__init__(name=f"logs-{container.name}", daemon=True)
        self.client = client
        self.container = container
        self.since = since
        self.timeout = timeout
        self.lines: queue.Queue[Any] = queue.Queue()
        self._stream: Optional[EngineStream] = None
        self._stopped = threading.Event()
        self.error = ""

    def run(self) -> None:
        params: dict[str, Any] = {"follow": True, "stdout": True, "stderr": True, "timestamps": True}
        if self.since:
            params["since"] = since_param(self.since)
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
                    self.lines.put(split_log_line(line))
            for _, line in demuxer.flush():
                self.lines.put(split_log_line(line))
        except (EngineError, EngineUnavailable, EnginePermissionDenied) as exc:
            self.error = str(exc)  # the log cannot be read at all (e.g. --log-driver none)
        except OSError:
            pass  # the connection ended: the caller inspects the container
        finally:
            if self._stream is not None:
                self._stream.close()
            self.lines.put(_EOF)

    def stop(self) -> None:
        self._stopped.set()
        if self._stream is not None:
            self._stream.shutdown()


def wait_ready(
    client: EngineClient,
    ref: str,
    options: Optional[WaitOptions] = None,
    on_progress: Optional[Callable[[Progress], None]] = None,
    clock: Callable[[], float] = time.time,
) -> WaitResult:
    """Follow container `ref` until ComfyUI is ready, failed or stalled (or the timeout)."""
    options = options or WaitOptions()
    if options.timeout <= 0 or options.stall_timeout <= 0:
        raise UsageError("--timeout and --stall-timeout must be positive")
    begin = clock()
    container, body = inspect_container(client, ref)
    machine = ReadinessMachine(
        stall_timeout=options.stall_timeout,
        started_at=container.started_at or begin,
        restart_count=container.restart_count,
        host_network=container.host_network,
        deadline=begin + options.timeout,
    )
    while container.status == "created" and not start_error(body) and clock() < begin + options.timeout:
        time.sleep(0.2)  # not started yet (docker create, or a start in flight)
        container, body = inspect_container(client, ref)
    if start_error(body):
        machine.feed(state_event(container, clock(), start_error(body)))
    follower = LogFollower(client, container, container.started_at, timeout=options.timeout + 30)
    follower.start()
    next_inspect = clock() + options.inspect_interval
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
                        raise SourceError(
                            f"the log of container {container.name}",
                            follower.error,
                            "Readiness reads the log through the Engine API: run the container with a log driver "
                            "`docker logs` can read (json-file, local, journald).",
                        )
                    stream_open = False
                    next_inspect = clock()  # the stream ends when the container stops
                else:
                    at, text = item
                    machine.feed(LogLine(at if at is not None else clock(), text))
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
                machine.feed(state_event(container, now, start_error(body)))
                next_inspect = now + options.inspect_interval
                if not stream_open and container.running and not machine.decided:
                    # restarted under a restart policy: the machine has decided already; a stream
                    # that ended for another reason is reopened from the last line seen
                    follower = LogFollower(client, container, machine.last_activity, timeout=options.timeout + 30)
                    follower.start()
                    stream_open = True
            if machine.decided:
                break
            if now >= next_probe:
                machine.feed(_probe(container, machine, options, clock))
                interval = options.probe_interval if machine.gui_seen else options.pre_gui_probe_interval
                next_probe = clock() + interval
            machine.feed(Tick(clock()))
            if on_progress is not None:
                verdict = machine.verdict
                on_progress(Progress(verdict.phase, clock() - begin, verdict.lines_seen,
                                     scrubber_for(body).text(verdict.last_line), verdict.last_probe))
    finally:
        follower.stop()
    reached = clock()
    try:  # record how the container stands now (an exit code after a failure), the verdict stays
        container, _ = inspect_container(client, container.id)
        machine.feed(state_event(container, reached))
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
