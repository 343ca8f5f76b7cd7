"""A non-blocking readiness verdict for `gpuhost check`: the logs so far, the state, one probe."""

from __future__ import annotations

import time
from typing import Any, Optional

from gpuhost.comfyui.container import ComfyContainer, container_from_inspect, since_param, split_log_line
from gpuhost.comfyui.http import probe
from gpuhost.comfyui.readiness import DEFAULT_STALL_TIMEOUT, LogLine, ProbeResult, ReadinessMachine, Tick, Verdict
from gpuhost.comfyui.scrub import scrubber_for
from gpuhost.comfyui.wait import state_event
from gpuhost.engine import EngineClient, LogDemuxer

# Startup output is at the start of the log; a long-running server's log can be huge. Reading
# stops at the GUI line (everything readiness needs is before it), after this many bytes, or at
# the deadline (a daemon that trickles its answer).
MAX_LOG_BYTES = 8 * 1024 * 1024
LOG_DEADLINE_S = 5.0


def snapshot_verdict(
    client: EngineClient,
    inspect: dict[str, Any],
    probe_timeout: float = 1.0,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    now: Optional[float] = None,
) -> tuple[ComfyContainer, Verdict]:
    container = container_from_inspect(inspect)
    now = time.time() if now is None else now
    machine = ReadinessMachine(
        stall_timeout=stall_timeout,
        started_at=container.started_at or now,
        # a snapshot judges the current run; earlier restarts are reported by the rule
        restart_count=container.restart_count,
        host_network=container.host_network,
    )
    params: dict[str, Any] = {"stdout": True, "stderr": True, "timestamps": True}
    if container.started_at:
        params["since"] = since_param(container.started_at)
    demuxer = LogDemuxer(tty=container.tty)
    read = 0
    handle = client.open_stream(
        f"/containers/{container.id}/logs", params=params, timeout=5.0, deadline=LOG_DEADLINE_S
    )
    try:
        while read < MAX_LOG_BYTES and not machine.gui_seen:
            chunk = handle.read()
            if not chunk:
                break
            read += len(chunk)
            for _, line in demuxer.feed(chunk):
                at, text = split_log_line(line)
                machine.feed(LogLine(at if at is not None else now, text))
                if machine.gui_seen:
                    break
    finally:
        handle.close()

    machine.feed(state_event(container, now))
    if container.running and not machine.decided:
        url, why = container.probe_url(machine.gui_port, machine.gui_host)
        machine.feed(
            probe(url, timeout=probe_timeout, clock=lambda: now + 0.001)
            if url
            else ProbeResult(at=now, url="", error=why, reachable=False)
        )
    machine.feed(Tick(now))
    return container, scrubber_for(inspect).verdict(machine.verdict)
