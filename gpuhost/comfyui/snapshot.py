"""A non-blocking readiness verdict for `gpuhost check`: the logs so far, the state, one probe."""

from __future__ import annotations

import time
from typing import Any, Optional

from gpuhost.comfyui.backlog import read_backlog
from gpuhost.comfyui.container import ComfyContainer, container_from_inspect
from gpuhost.comfyui.http import probe
from gpuhost.comfyui.readiness import DEFAULT_STALL_TIMEOUT, ProbeResult, ReadinessMachine, Tick, Verdict
from gpuhost.comfyui.scrub import scrubber_for
from gpuhost.comfyui.wait import state_event
from gpuhost.engine import EngineClient

# A running server's start-up output is at the start of its log, which can be huge: reading stops at
# the GUI line (everything readiness needs is before it). A stopped one's log is read to its last
# lines (what it said before it stopped), past a size cap through its tail (gpuhost.comfyui.backlog).
# Either ends at the deadline (a daemon that trickles its answer).
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
        run_started_at=container.started_at,
    )
    cursor = read_backlog(client, container, machine, lambda: now, LOG_DEADLINE_S, stop_at_gui=container.running)
    machine.feed(state_event(container, now))
    if container.running and not machine.decided:
        url, why = container.probe_url(machine.gui_port, machine.gui_host)
        machine.feed(
            probe(url, timeout=probe_timeout, clock=lambda: now + 0.001)
            if url
            else ProbeResult(at=now, url="", error=why, reachable=False)
        )
    if cursor.reached_end or machine.gui_seen:
        # idleness counts from the last line only when that line was read
        machine.feed(Tick(now))
    return container, scrubber_for(inspect).verdict(machine.verdict)
