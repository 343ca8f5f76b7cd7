"""Replays that have been up for a while, through the Engine API as on a real host: wait-ready on a
server that became ready longer ago than the stall timeout, the same with log streams that come late
(the race that once called a ready replay "stalled" with no output), and `check`'s verdict on a
server that served and was then killed, stopped, paused or ended by itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gpuhost.comfyui.facts import ComfyUIContainerFacts, ComfyUIFacts
from gpuhost.comfyui.readiness import Phase
from gpuhost.comfyui.snapshot import snapshot_verdict
from gpuhost.comfyui.wait import WaitOptions, wait_ready
from gpuhost.engine import EngineClient, EngineStream
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Severity
from gpuhost.rules import RuleOptions
from gpuhost.rules.comfyui import readiness
from tests.support.comfyui_replay import NAME_PREFIX, build_image, remove, run_capture
from tests.support.paths import REPO

pytestmark = pytest.mark.docker
STALL_S = 3.0
GUI = "To see the GUI go to: http://0.0.0.0:8188"
# startup-cpu replayed four times faster: the GUI line (its last line) 3 s after the start
FAST = ("--speed", "4")


@pytest.fixture(scope="module")
def docker_client(shared_dir: Any) -> Any:
    import docker

    build_image(shared_dir)
    return docker.from_env()


def wait_for_line(container: Any, text: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in container.logs().decode(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{container.name} did not print {text!r} within {timeout:g} s")


def capture_lines(shared_dir: Any) -> int:
    return len((shared_dir / "fixtures/comfyui/startup-cpu.timed.log").read_text().splitlines()) - 1


@pytest.fixture(scope="module")
def aged(docker_client: Any) -> Iterator[str]:
    """A replay that printed its GUI line, and its last line, more than the stall timeout ago."""
    name = f"{NAME_PREFIX}aged"
    remove(docker_client, name)
    try:
        container = run_capture(docker_client, "startup-cpu", name, extra_args=FAST)
        wait_for_line(container, GUI)
        time.sleep(STALL_S + 2.0)
        yield name
    finally:
        remove(docker_client, name)


def test_served_longer_ago_than_the_stall_timeout_is_ready(aged: str, shared_dir: Any) -> None:
    result = wait_ready(EngineClient(), aged, WaitOptions(timeout=60, stall_timeout=STALL_S))
    verdict = result.verdict
    assert (verdict.phase, verdict.reason) == (Phase.READY, "ready"), verdict.message
    assert verdict.lines_seen == capture_lines(shared_dir)  # the whole backlog, each line once
    assert verdict.last_line == GUI
    assert not verdict.foreign_answer  # no probe was judged before the backlog
    assert verdict.gui_line_at is not None and verdict.decided_at is not None
    assert verdict.decided_at - verdict.gui_line_at > STALL_S  # judged on the log's timeline


class LateLogs(EngineClient):
    """The Engine API with every log stream opened `delay` seconds late, as a loaded host serves it."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def open_stream(
        self, path: str, params: dict[str, Any] | None = None, timeout: float | None = None,
        deadline: float | None = None,
    ) -> EngineStream:
        if path.endswith("/logs"):
            time.sleep(self.delay)
        return super().open_stream(path, params=params, timeout=timeout, deadline=deadline)


def test_a_late_log_stream_is_no_stall(aged: str) -> None:
    """The race behind the flaky test_wait_ready_replay[startup-cpu]: the first tick used to come
    before the log thread had delivered the backlog, so idleness ran from the container's start."""
    result = wait_ready(LateLogs(delay=2.0), aged, WaitOptions(timeout=60, stall_timeout=STALL_S))
    assert (result.verdict.phase, result.verdict.reason) == (Phase.READY, "ready"), result.verdict.message


@pytest.mark.parametrize("skew_s", [-3600.0, 3600.0])
def test_a_client_clock_off_by_an_hour_judges_on_the_daemon_s_clock(aged: str, skew_s: float) -> None:
    """Ticks and probes are moved onto the clock that stamped the log (GET /info's SystemTime): an hour
    behind, every probe would look older than the GUI line (another process's answer)."""
    result = wait_ready(
        EngineClient(), aged, WaitOptions(timeout=20, stall_timeout=STALL_S), clock=lambda: time.time() + skew_s
    )
    verdict = result.verdict
    assert (verdict.phase, verdict.reason) == (Phase.READY, "ready"), verdict.message
    assert not verdict.foreign_answer
    assert verdict.decided_at is not None and abs(verdict.decided_at - time.time()) < 60


def test_wait_ready_cli_on_a_long_running_server(aged: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gpuhost", "wait-ready", aged, "--stall-timeout", "3s", "--timeout", "60", "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    payload = json.loads(run.stdout)
    assert (payload["verdict"], payload["reason"], payload["was_serving"]) == ("ready", "ready", False)


def test_a_start_that_went_quiet_long_ago_is_stalled_at_once(docker_client: Any) -> None:
    name = f"{NAME_PREFIX}quiet"
    remove(docker_client, name)
    try:
        container = run_capture(docker_client, "startup-cpu", name, extra_args=("--freeze-after", "5.2", *FAST))
        wait_for_line(container, "torchaudio missing, MMAudio VAE model will be broken")
        time.sleep(STALL_S + 1.0)
        verdict = wait_ready(EngineClient(), name, WaitOptions(timeout=60, stall_timeout=STALL_S)).verdict
        assert (verdict.phase, verdict.reason) == (Phase.STALLED, "stalled")
        assert verdict.last_line == "torchaudio missing, MMAudio VAE model will be broken"
    finally:
        remove(docker_client, name)


# --- a server that served, then stopped -----------------------------------------------------------

# name suffix: (extra replay arguments, what is done to it once it served, reason, words of the message,
# severity of check's finding)
AFTER_SERVING: dict[str, tuple[tuple[str, ...], str, str, tuple[str, ...], Severity]] = {
    "kill": ((), "kill -s KILL", "stopped", ("SIGKILL", "exit 137"), Severity.WARN),
    "term": ((), "kill -s TERM", "stopped", ("SIGTERM", "exit 143"), Severity.WARN),
    "stop": ((), "stop", "stopped", ("SIGTERM", "exit 143"), Severity.WARN),
    "pause": ((), "pause", "paused", ("paused: it answers nothing",), Severity.FAIL),
    "exit0": (("--exit-after", "1", "--exit-code", "0"), "", "exited", ("exited with code 0",), Severity.WARN),
    "exit3": (("--exit-after", "1", "--exit-code", "3"), "", "exited", ("exited with code 3",), Severity.FAIL),
}


@pytest.fixture(scope="module")
def after_serving(docker_client: Any) -> Iterator[dict[str, Any]]:
    """One replay per way of ending, each started, ready, then ended that way."""
    names = {variant: f"{NAME_PREFIX}served-{variant}" for variant in AFTER_SERVING}
    for name in names.values():
        remove(docker_client, name)
    try:
        containers = {
            variant: run_capture(
                docker_client, "startup-cpu", names[variant], extra_args=(*FAST, *AFTER_SERVING[variant][0])
            )
            for variant in AFTER_SERVING
        }
        for variant, container in containers.items():
            wait_for_line(container, GUI)
            if not AFTER_SERVING[variant][0]:  # those that end by themselves may have done so already
                assert wait_ready(EngineClient(), names[variant], WaitOptions(timeout=60)).verdict.phase is Phase.READY
            action = AFTER_SERVING[variant][1]
            if action:
                subprocess.run(["docker", *action.split(), names[variant]], check=True, capture_output=True, timeout=60)
            if action != "pause":
                container.wait(timeout=60)
        yield {variant: docker_client.api.inspect_container(names[variant]) for variant in AFTER_SERVING}
    finally:
        for name in names.values():
            remove(docker_client, name)


@pytest.mark.parametrize("variant", sorted(AFTER_SERVING))
def test_check_says_it_was_serving_then_how_it_stopped(after_serving: dict[str, Any], variant: str) -> None:
    _, _, reason, words, severity = AFTER_SERVING[variant]
    container, verdict = snapshot_verdict(EngineClient(), after_serving[variant])
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, reason), verdict.message
    assert verdict.was_serving
    assert verdict.message.startswith("ComfyUI was serving (http://0.0.0.0:8188 printed, ")
    assert "before ComfyUI was ready" not in verdict.message
    for word in words:
        assert word in verdict.message
    assert verdict.last_line == GUI
    facts = HostFacts()
    facts.comfyui = ComfyUIFacts(containers=[ComfyUIContainerFacts(
        id=container.id[:12], name=container.name, image=container.image, state=container.status, verdict=verdict
    )])
    [finding] = readiness(facts, RuleOptions())
    assert finding.severity is severity
    assert finding.message.startswith(f"ComfyUI container {container.name}: ComfyUI was serving")


def test_a_log_past_the_head_cap_is_read_at_its_start_and_its_end(
    docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that has logged for months: its start (up to the cap), then its last lines, not the
    middle; following resumes after the last line."""
    from gpuhost.comfyui import backlog
    from gpuhost.comfyui.container import container_from_inspect
    from gpuhost.comfyui.readiness import ReadinessMachine, Tick
    from tests.support.comfyui_replay import IMAGE

    monkeypatch.setattr(backlog, "MAX_HEAD_BYTES", 64 * 1024)
    name = f"{NAME_PREFIX}long-log"
    remove(docker_client, name)
    script = (
        "import sys, time\n"
        "print('ComfyUI version: 0.3.64')\n"
        "for n in range(4000): print(f'got prompt {n:05d} ' + 'x' * 40)\n"
        "print('Prompt executed in 1.23 seconds', flush=True)\n"
        "time.sleep(3600)\n"
    )
    try:
        container = docker_client.containers.run(IMAGE, entrypoint=["python3", "-c", script], name=name, detach=True)
        wait_for_line(container, "Prompt executed in 1.23 seconds")
        client = EngineClient()
        machine = ReadinessMachine(stall_timeout=600.0, started_at=0.0)
        facts = container_from_inspect(client.get(f"/containers/{name}/json"))
        cursor = backlog.read_backlog(client, facts, machine, time.time, 30.0)
        verdict = machine.verdict
        assert cursor.gap and cursor.reached_end
        assert verdict.comfyui_version == "0.3.64"  # from the head, its first line
        assert verdict.last_line == "Prompt executed in 1.23 seconds"  # from the tail
        assert verdict.lines_seen < 4002 and verdict.tail[-2].startswith("got prompt 03999 ")
        assert "more than 65.5 kB of log: read its start and its last 200 lines" in verdict.notes
        machine.feed(Tick(time.time()))
        assert verdict.phase is Phase.STARTING  # idleness from the real last line, not the head's
    finally:
        remove(docker_client, name)
