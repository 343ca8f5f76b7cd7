"""Containers that have run for a while: the readiness machine fed a run's old backlog before its first
tick (every timer on the log's own timeline), how a run that served and then stopped is told apart
from one that never got ready, and what `gpuhost check`'s rule makes of each."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuhost.comfyui.backlog import LogCursor
from gpuhost.comfyui.facts import ComfyUIContainerFacts, ComfyUIFacts
from gpuhost.comfyui.readiness import (
    ContainerState,
    LogLine,
    Phase,
    ProbeResult,
    ReadinessMachine,
    Tick,
    TimedLog,
    Verdict,
    parse_timed_log,
)
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Severity
from gpuhost.rules import RuleOptions
from gpuhost.rules.comfyui import readiness

URL = "http://127.0.0.1:8188/system_stats"
# a run that started an hour before anyone looked at it
STARTED = 1_700_000_000.0
NOW = STARTED + 3600.0


def timed(shared_dir: Path, name: str) -> TimedLog:
    return parse_timed_log((shared_dir / "fixtures" / "comfyui" / f"{name}.timed.log").read_text())


def backlog(machine: ReadinessMachine, log: TimedLog, until: float = float("inf")) -> None:
    for at, text in log.lines:
        if at <= until:
            machine.feed(LogLine(STARTED + at, text))


def served_run(shared_dir: Path) -> ReadinessMachine:
    """The recorded healthy start, written an hour ago, then ready."""
    machine = ReadinessMachine(stall_timeout=3.0, started_at=STARTED, host_network=True, run_started_at=STARTED)
    backlog(machine, timed(shared_dir, "startup-cpu"))
    return machine


# --- item: the backlog comes before the first tick ---------------------------------------------


def test_an_old_backlog_with_the_gui_line_then_a_tick_is_not_a_stall(shared_dir: Path) -> None:
    machine = served_run(shared_dir)
    machine.feed(ContainerState(NOW, "running", started_at=STARTED))
    machine.feed(Tick(NOW))  # an hour after the last line, with a 3 s stall timeout
    assert machine.verdict.phase is Phase.STARTING
    machine.feed(ProbeResult(NOW + 0.01, URL, 200))
    verdict = machine.verdict
    assert (verdict.phase, verdict.reason) == (Phase.READY, "ready")
    assert not verdict.foreign_answer  # the 200 came after the line it printed an hour ago


def test_a_tick_before_the_backlog_is_what_called_it_stalled() -> None:
    """The order the driver used to feed: the first tick before any line. Idleness then runs from the
    run's start, which is why the backlog must come first."""
    machine = ReadinessMachine(stall_timeout=3.0, started_at=STARTED, run_started_at=STARTED)
    machine.feed(Tick(NOW))
    assert (machine.verdict.phase, machine.verdict.reason) == (Phase.STALLED, "stalled")
    assert "(no output)" in machine.verdict.message


def test_idleness_counts_from_the_last_line_of_an_old_backlog(shared_dir: Path) -> None:
    """A start that began long ago and still writes: not stalled until stall_timeout after its last line."""
    log = timed(shared_dir, "startup-cpu")
    machine = ReadinessMachine(stall_timeout=30.0, started_at=STARTED - 600, run_started_at=STARTED - 600)
    backlog(machine, log, until=6.0)  # its last line at STARTED + 5.103
    last_at = STARTED + 5.103
    machine.feed(Tick(last_at + 29.9))
    assert machine.verdict.phase is Phase.STARTING
    machine.feed(Tick(last_at + 30.1))
    assert machine.verdict.reason == "stalled"
    assert machine.verdict.last_line == "torchaudio missing, MMAudio VAE model will be broken"


def test_a_backlog_that_went_quiet_before_the_gui_line_is_stalled_at_once(shared_dir: Path) -> None:
    machine = ReadinessMachine(stall_timeout=30.0, started_at=STARTED)
    backlog(machine, timed(shared_dir, "startup-cpu"), until=6.0)
    machine.feed(Tick(NOW))
    assert machine.verdict.reason == "stalled"
    assert "no new log line for 3595 s" in machine.verdict.message


def test_the_deadline_is_on_the_log_timeline(shared_dir: Path) -> None:
    """The driver sets the deadline from when it began, on the daemon's clock: an old backlog does not
    exhaust it, and the ticks after it count."""
    machine = ReadinessMachine(stall_timeout=3.0, started_at=STARTED, deadline=NOW + 60.0)
    backlog(machine, timed(shared_dir, "startup-cpu"))
    machine.feed(Tick(NOW + 59.0))
    assert machine.verdict.phase is Phase.STARTING
    machine.feed(Tick(NOW + 60.0))
    assert machine.verdict.reason == "timeout"
    assert "never answered 200" in machine.verdict.message


def test_a_new_run_is_a_restart_even_when_docker_counts_none(shared_dir: Path) -> None:
    """`docker restart` starts a new run (State.StartedAt) without raising RestartCount."""
    machine = ReadinessMachine(stall_timeout=60.0, started_at=STARTED, run_started_at=STARTED)
    backlog(machine, timed(shared_dir, "startup-cpu"), until=6.0)
    machine.feed(ContainerState(STARTED + 7.0, "running", started_at=STARTED))
    assert not machine.decided
    machine.feed(ContainerState(STARTED + 8.0, "running", started_at=STARTED + 7.5))
    verdict = machine.verdict
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "restarted")
    assert "before ComfyUI was ready" in verdict.message and not verdict.was_serving


@pytest.mark.parametrize(
    ("fed", "resent", "new"),
    [
        # the stream opened at the newest time resends the lines at that time, then goes on
        ([1.0, 2.0, 2.0], [1.999, 2.0, 2.0, 2.0, 3.0], [2.0, 3.0]),
        ([1.0], [0.9995, 1.0, 1.0, 1.5], [1.0, 1.5]),
        ([], [5.0, 6.0], [5.0, 6.0]),
    ],
)
def test_following_resumes_after_the_backlog_without_a_line_twice(
    fed: list[float], resent: list[float], new: list[float]
) -> None:
    cursor = LogCursor()
    for at in fed:
        cursor.fed(at)
    cursor.reopened()
    delivered = []
    for at in resent:
        if not cursor.skip(at):
            cursor.fed(at)
            delivered.append(at)
    assert delivered == new


# --- item: a run that served, then stopped ------------------------------------------------------

GUI_AT = STARTED + 12.107
STOPPED = GUI_AT + 300.0  # five minutes of serving


@pytest.mark.parametrize(
    ("state", "reason", "phrases"),
    [
        (ContainerState(STOPPED, "exited", 137), "stopped", ["SIGKILL", "exit 137", "docker kill"]),
        (ContainerState(STOPPED, "exited", 137, oom_killed=True), "exited", ["OOM killer", "State.OOMKilled"]),
        (ContainerState(STOPPED, "exited", 143), "stopped", ["SIGTERM", "exit 143", "docker stop"]),
        (ContainerState(STOPPED, "exited", 0), "exited", ["exited with code 0", "ended by itself"]),
        (ContainerState(STOPPED, "exited", 3), "exited", ["exited with code 3"]),
        (ContainerState(STOPPED, "exited", 139), "exited", ["exited with code 139: killed by SIGSEGV"]),
        (ContainerState(STOPPED, "dead", 137), "dead", ["marks it dead", "SIGKILL"]),
        (ContainerState(STOPPED, "restarting", None, restart_count=1, started_at=STARTED), "restarted",
         ["its process ended and the container restarted (restart count 1)"]),
        (ContainerState(STOPPED, "running", None, restart_count=0, started_at=STOPPED), "restarted",
         ["restarted (restart count 0)"]),
        (ContainerState(STOPPED, "paused", None, started_at=STARTED), "paused", ["paused: it answers nothing"]),
    ],
)
def test_a_run_that_served_then_stopped_says_so_and_how(
    shared_dir: Path, state: ContainerState, reason: str, phrases: list[str]
) -> None:
    machine = served_run(shared_dir)
    verdict = machine.feed(state)
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, reason)
    assert verdict.was_serving
    assert verdict.message.startswith("ComfyUI was serving (http://127.0.0.1:8188 printed, 5.0 min before this)")
    assert "before ComfyUI was ready" not in verdict.message
    for phrase in phrases:
        assert phrase in verdict.message + verdict.remedy
    assert verdict.summary()["was_serving"] is True


@pytest.mark.parametrize(
    ("state", "phrase"),
    [
        (ContainerState(STARTED + 5.0, "exited", 137), "SIGKILL"),
        (ContainerState(STARTED + 5.0, "exited", 143), "prints nothing on SIGTERM"),
        (ContainerState(STARTED + 5.0, "exited", 0), "exited with code 0"),
        (ContainerState(STARTED + 5.0, "dead", 1), "marks it dead"),
        (ContainerState(STARTED + 5.0, "paused"), "paused before ComfyUI was ready"),
    ],
)
def test_a_run_that_never_served_still_stopped_before_it_was_ready(
    shared_dir: Path, state: ContainerState, phrase: str
) -> None:
    machine = ReadinessMachine(started_at=STARTED, run_started_at=STARTED)
    backlog(machine, timed(shared_dir, "startup-cpu"), until=4.0)
    verdict = machine.feed(state)
    assert verdict.phase is Phase.FAILED and not verdict.was_serving
    assert "before ComfyUI was ready" in verdict.message and phrase in verdict.message


def facts_with(verdict: Verdict, state: str) -> HostFacts:
    facts = HostFacts()
    facts.comfyui = ComfyUIFacts(
        containers=[ComfyUIContainerFacts(id="0123456789ab", name="comfyui", image="comfyui:1", state=state,
                                          verdict=verdict)]
    )
    return facts


@pytest.mark.parametrize(
    ("state", "severity"),
    [
        (ContainerState(STOPPED, "exited", 143), Severity.WARN),  # stopped on purpose
        (ContainerState(STOPPED, "exited", 137), Severity.WARN),
        (ContainerState(STOPPED, "exited", 0), Severity.WARN),
        (ContainerState(STOPPED, "exited", 137, oom_killed=True), Severity.FAIL),
        (ContainerState(STOPPED, "exited", 3), Severity.FAIL),
        (ContainerState(STOPPED, "dead", 137), Severity.FAIL),
        (ContainerState(STOPPED, "restarting", None, restart_count=1, started_at=STARTED), Severity.FAIL),
        (ContainerState(STOPPED, "paused", None, started_at=STARTED), Severity.FAIL),
    ],
)
def test_the_check_rule_says_it_was_serving(shared_dir: Path, state: ContainerState, severity: Severity) -> None:
    verdict = served_run(shared_dir).feed(state)
    [finding] = readiness(facts_with(verdict, state.status), RuleOptions())
    assert finding.id == "comfyui.ready" and finding.severity is severity
    assert finding.message.startswith("ComfyUI container comfyui: ComfyUI was serving (")
    assert "before ComfyUI was ready" not in finding.message
    assert finding.evidence["was_serving"] is True


def inspect(status: str, started: str, finished: str = "0001-01-01T00:00:00Z") -> dict[str, object]:
    return {"Id": "c0ffee", "Name": "/comfyui", "State": {"Status": status, "Running": status == "running",
                                                         "StartedAt": started, "FinishedAt": finished}}


@pytest.mark.parametrize(
    ("body", "since"),
    [
        # a first run: its whole log is its own, lines stamped before StartedAt included
        (inspect("running", "2026-12-07T19:16:29.921898979Z"), None),
        # a later run: from the end of the previous one, or a second before its start
        (inspect("running", "2026-12-07T19:16:46.835119155Z", "2026-12-07T19:16:45.958620888Z"), 1796671005.9586208),
        (inspect("running", "2026-12-07T19:16:46.835119155Z", "2026-12-07T10:00:00Z"), 1796671005.8351192),
        # stopped: FinishedAt is this run's end; the runs before ended before its start
        (inspect("exited", "2026-12-07T19:16:46.835119155Z", "2026-12-07T19:20:00Z"), 1796671005.8351192),
        (inspect("created", "0001-01-01T00:00:00Z"), None),
    ],
)
def test_a_run_s_log_starts_before_docker_stamps_its_start(body: dict[str, object], since: float | None) -> None:
    """Docker sets StartedAt after the process started: a first line can be stamped 21 ms before it."""
    from gpuhost.comfyui.container import container_from_inspect, run_log_since

    found_since = run_log_since(container_from_inspect(body))
    assert found_since == (pytest.approx(since) if since is not None else None)
