"""The failure paths, live: the real ComfyUI 0.3.64 (gpuhost-comfyui:0.3.64) provoked into each failure,
judged by `gpuhost wait-ready` while it runs (and by `gpuhost check` afterwards where that is the
question), and recorded as it goes; the replay stand-in then plays the project's capture of the same
scenario and must agree with the real server (GUI lines, verdict and warnings, exit code, HTTP answers,
the addresses it listened on).

Every scenario runs through tests/support/comfyui_capture.py: a container with no network but its own
loopback (`--network none`, IPv6 switched on for `lo`) and ComfyUI on port 8188 there. `wait-ready`
runs in that network namespace (`nsenter --net`, the host's gpuhost; the Engine API socket is a path,
reachable from any namespace) and is told where to probe (`--url http://127.0.0.1:8188/system_stats`):
a container without a network publishes nothing for it to find. So a bare `--listen`, which binds
0.0.0.0 and :: (every address), exposes nothing beyond the container, and no test port is ever reachable
from outside this machine. Root is needed (nsenter); each real start takes 10-25 s on two busy cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.comfyui_capture import (
    PORT,
    SCENARIOS,
    Capture,
    Live,
    differences,
    record,
    recording,
    replay_command,
)
from tests.support.comfyui_real import ensure_image
from tests.support.comfyui_replay import CAPTURES, build_image
from tests.support.comfyui_replay import IMAGE as REPLAY_IMAGE
from tests.support.paths import REPO

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nsenter") is None,
                       reason="wait-ready runs in the container's network namespace: root and nsenter"),
]
PROBE_URL = f"http://127.0.0.1:{PORT}/system_stats"
EXTRAS = {("comfy-extras", "nodes_audio.py"), ("comfy-extras", "nodes_audio_encoder.py")}


@pytest.fixture(scope="module")
def images(shared_dir: Path) -> Iterator[None]:
    ensure_image()
    build_image(shared_dir)
    yield


def gpuhost(*args: str, live: Live | None = None, timeout: float = 600) -> tuple[int, dict[str, Any]]:
    """The CLI of this checkout with --json, in the container's network namespace when `live` is given."""
    argv = [sys.executable, "-m", "gpuhost", *args, "--json"]
    done = subprocess.run(live.in_netns(argv) if live else argv, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"gpuhost {' '.join(args)}: rc {done.returncode}\n{done.stdout}\n{done.stderr}") from None


def wait_ready(*options: str) -> Any:
    """A `during` callback: `gpuhost wait-ready NAME --url PROBE_URL OPTIONS` inside the namespace."""
    def run(live: Live) -> tuple[int, dict[str, Any]]:
        return gpuhost("wait-ready", live.name, "--url", PROBE_URL, "--timeout", "5m", *options, live=live)
    return run


def agrees_with_the_replay(real: Capture, tmp_path: Path) -> None:
    """The replay stand-in, playing the project's capture of this scenario, answers as the real server."""
    scenario = SCENARIOS[real.name]
    stall = CAPTURES[real.name].stall_timeout or 60.0
    replayed = record(scenario, tmp_path / "replay", image=REPLAY_IMAGE, command=replay_command(scenario, speed=4.0),
                      silence=stall + 3.0)
    assert differences(real, replayed, stall) == [], (real.timed_log()[-3000:], replayed.timed_log()[-3000:])


def verdict_of(recorded: Any) -> tuple[int, dict[str, Any]]:
    if recorded.during_error is not None:
        raise recorded.during_error
    assert recorded.during_result is not None, "wait-ready did not finish"
    return tuple(recorded.during_result)  # type: ignore[return-value]


def test_a_custom_node_that_raises_at_import_is_ready_with_a_warning_naming_it(images: None, tmp_path: Path) -> None:
    with recording(SCENARIOS["failure-custom-node-import"], tmp_path, during=wait_ready()) as recorded:
        rc, answer = verdict_of(recorded)
        capture = recorded.capture
    assert rc == 0, answer
    assert (answer["verdict"], answer["reason"]) == ("ready", "ready")
    assert {(w["kind"], w["node"]) for w in answer["warnings"]} == {("custom-node", "broken_node"), *EXTRAS}
    [node] = [w for w in answer["warnings"] if w["kind"] == "custom-node"]
    assert node["path"] == "/basedir/custom_nodes/broken_node"
    assert node["reason"] == "broken_node: deliberately broken custom node for a test fixture"
    assert node["line"].strip() == "0.0 seconds (IMPORT FAILED): /basedir/custom_nodes/broken_node"
    assert capture.first_200_at is not None
    agrees_with_the_replay(capture, tmp_path)


def test_a_custom_node_that_blocks_at_import_is_stalled_naming_the_last_line(images: None, tmp_path: Path) -> None:
    scenario = SCENARIOS["failure-custom-node-blocks"]
    stall = CAPTURES[scenario.name].stall_timeout
    assert stall is not None and scenario.silence > stall
    with recording(scenario, tmp_path, during=wait_ready("--stall-timeout", f"{stall:.0f}s")) as recorded:
        rc, answer = verdict_of(recorded)
        capture = recorded.capture
    line = "blocking_node: waiting for a lock that nobody releases"
    assert rc == 1, answer
    assert (answer["verdict"], answer["reason"]) == ("stalled", "stalled"), answer
    assert answer["last_line"] == answer["failing_line"] == line
    idle = re.fullmatch(rf"no new log line for (\d+) s; last line: {re.escape(line)}", answer["message"])
    assert idle is not None, answer["message"]
    assert stall <= int(idle.group(1)) <= stall + 5  # decided at the next tick after the timeout
    assert "--stall-timeout" in answer["remedy"]
    assert capture.lines[-1][1] == line and capture.first_200_at is None
    agrees_with_the_replay(capture, tmp_path)


@pytest.mark.parametrize(
    ("scenario", "failing_line", "in_message"),
    [
        ("failure-user-dir-not-writable",
         "Failed to initialize database. Please ensure you have installed the latest requirements. If the error "
         "persists, please report this as in future the database will be required: (sqlite3.OperationalError) "
         "unable to open database file",
         "its user directory (where comfyui.db is unless --database-url moves it) is not writable"),
        ("failure-base-dir-not-writable", "PermissionError: [Errno 13] Permission denied: '/basedir/user'",
         "cannot write /basedir/user: the mounted directory is not writable by the container's user"),
    ],
    ids=["user-dir", "base-dir"],
)
def test_a_user_directory_it_cannot_write_is_failed_with_its_own_reason_and_remedy(
    images: None, tmp_path: Path, scenario: str, failing_line: str, in_message: str
) -> None:
    with recording(SCENARIOS[scenario], tmp_path, during=wait_ready()) as recorded:
        rc, answer = verdict_of(recorded)
        capture = recorded.capture
        user_dir = recorded.base_dir / "user"
    assert rc == 1, answer
    assert (answer["verdict"], answer["reason"]) == ("failed", "dir-not-writable"), answer
    assert answer["failing_line"] == failing_line
    assert in_message in answer["message"]
    assert answer["remedy"].startswith("chown the host directory")
    if scenario == "failure-user-dir-not-writable":
        # what the verdict says is so: the server came up, but the user directory got nothing, and the
        # first write there (GET /settings creates user/default) fails
        assert capture.first_200_at is not None
        assert capture.http["answers"]["GET /settings"]["status"] == 500
        assert "PermissionError: [Errno 13] Permission denied: '/basedir/user/default'" in capture.raw.decode()
        assert list(user_dir.iterdir()) == []
    else:
        assert capture.returncode == 1 and capture.first_200_at is None
        assert not user_dir.exists()
    agrees_with_the_replay(capture, tmp_path)


def test_a_bare_listen_listens_on_both_families_and_is_ready(images: None, tmp_path: Path) -> None:
    scenario = SCENARIOS["startup-cpu-listen-dual"]
    assert scenario.listen == ("--listen",)
    with recording(scenario, tmp_path, during=wait_ready()) as recorded:
        rc, answer = verdict_of(recorded)
        capture = recorded.capture
        import docker

        attrs = docker.from_env().api.inspect_container(recorded.name)
    assert rc == 0, answer
    assert (answer["verdict"], answer["gui_url"], answer["url"]) == ("ready", "http://0.0.0.0:8188", PROBE_URL)
    assert capture.gui_lines == ["To see the GUI go to: http://0.0.0.0:8188", "To see the GUI go to: http://[::]:8188"]
    assert capture.http["listening"] == ["0.0.0.0:8188", "[::]:8188"]
    assert capture.http["reach"] == {"127.0.0.1": 200, "::1": 200}
    # every address, but of a namespace that has nothing beyond its loopback
    assert attrs["HostConfig"]["NetworkMode"] == "none" and not attrs["NetworkSettings"]["Ports"]
    agrees_with_the_replay(capture, tmp_path)


def test_sigkill_after_ready_is_reported_as_killed_after_serving(images: None, tmp_path: Path) -> None:
    with recording(SCENARIOS["startup-cpu-killed"], tmp_path, during=wait_ready()) as recorded:
        rc, answer = verdict_of(recorded)
        assert (rc, answer["verdict"]) == (0, "ready"), answer
        assert recorded.capture.returncode == -9  # docker kill: exit 137
        _, report = gpuhost("check")  # later, from the host
        [finding] = [f for f in report["findings"]
                     if f["id"] == "comfyui.ready" and f["evidence"].get("container") == recorded.name]
        capture = recorded.capture
    assert finding["severity"] == "warn"
    message = finding["message"]
    assert message.startswith(f"ComfyUI container {recorded.name}: ComfyUI was serving (http://127.0.0.1:8188 "
                              "printed, "), message
    assert "killed with SIGKILL (exit 137" in message and "before ComfyUI was ready" not in message
    assert finding["evidence"]["was_serving"] is True
    agrees_with_the_replay(capture, tmp_path)


@pytest.mark.parametrize("scenario", ["startup-cpu", "startup-cpu-listen-all"])
def test_the_replay_of_a_healthy_start_agrees_with_the_real_server(images: None, tmp_path: Path, scenario: str) -> None:
    with recording(SCENARIOS[scenario], tmp_path, during=wait_ready()) as recorded:
        rc, answer = verdict_of(recorded)
        capture = recorded.capture
    assert (rc, answer["verdict"]) == (0, "ready"), answer
    agrees_with_the_replay(capture, tmp_path)
