"""The readiness state machine fed directly from the recorded captures: no container, no sleeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuhost.comfyui.readiness import (
    ContainerState,
    LogLine,
    Phase,
    ProbeResult,
    ReadinessMachine,
    Tick,
    TimedLog,
    Verdict,
    gui_address,
    parse_timed_log,
)
from tests.support.comfyui_replay import CAPTURES, capture_file, capture_names

URL = "http://127.0.0.1:8188/system_stats"


def timed(shared_dir: Path, name: str) -> TimedLog:
    """A capture: the project's copy (tests/fixtures/comfyui) where there is one, else the shared one."""
    return parse_timed_log(capture_file(f"{name}.timed.log", shared_dir).read_text())


def replay(log: TimedLog, host_network: bool = True, stall_timeout: float = 60.0, probe_200: bool = True) -> Verdict:
    """Feed a capture as the live driver would: each line at its time, a probe 0.05 s after the
    GUI line (the recorded first 200 came within the 0.1 s poll), time passing until the recorded
    end, and the exit when the run ended by itself (not a signal the recorder sent: rc < 0)."""
    machine = ReadinessMachine(stall_timeout=stall_timeout, started_at=0.0, host_network=host_network)
    for at, text in log.lines:
        machine.feed(LogLine(at, text))
        machine.feed(Tick(at))
        if machine.gui_seen and probe_200 and not machine.decided:
            machine.feed(ProbeResult(at + 0.05, URL, 200))
    if log.exit_at is not None:
        machine.feed(Tick(log.exit_at))
        if log.returncode is not None and log.returncode >= 0:
            machine.feed(ContainerState(log.exit_at, "exited", log.container_exit_code))
    return machine.verdict


def test_every_capture_has_an_expected_verdict(shared_dir: Path) -> None:
    assert capture_names(shared_dir) == set(CAPTURES)


@pytest.mark.parametrize("capture", sorted(CAPTURES))
def test_capture_reaches_its_verdict(shared_dir: Path, capture: str) -> None:
    expected = CAPTURES[capture]
    verdict = replay(timed(shared_dir, capture), stall_timeout=expected.stall_timeout or 60.0)
    assert (verdict.phase.value, verdict.reason) == (expected.phase, expected.reason)
    assert verdict.failing_line.startswith(expected.line)
    assert sorted(w.node for w in verdict.warnings) == sorted(expected.warnings)


def test_healthy_start_with_tracebacks_is_ready_at_the_gui_line(shared_dir: Path) -> None:
    log = timed(shared_dir, "startup-cpu")
    texts = [text for _, text in log.lines]
    # the healthy capture itself holds the alarming lines
    assert any(t.startswith("Traceback") for t in texts)
    assert any(t.startswith("ModuleNotFoundError") for t in texts)
    assert any(t.startswith("IMPORT FAILED") for t in texts)
    verdict = replay(log)
    assert verdict.phase is Phase.READY
    assert verdict.decided_at == pytest.approx(12.107 + 0.05)
    assert verdict.gui_url == "http://127.0.0.1:8188"
    assert verdict.comfyui_version == "0.3.64"
    assert {w.kind for w in verdict.warnings} == {"comfy-extras"}
    assert all(w.reason == "No module named 'torchaudio'" for w in verdict.warnings)
    assert "torchaudio missing: audio nodes disabled" in verdict.notes
    assert "first boot: user settings" in verdict.notes


def test_broken_custom_node_is_a_warning_naming_it(shared_dir: Path) -> None:
    verdict = replay(timed(shared_dir, "failure-custom-node-import"))
    assert verdict.phase is Phase.READY
    custom = [w for w in verdict.warnings if w.kind == "custom-node"]
    assert len(custom) == 1
    assert custom[0].node == "broken_node"
    assert custom[0].path == "/opt/ComfyUI-root/ComfyUI/custom_nodes/broken_node"
    assert custom[0].reason == "broken_node: deliberately broken custom node for a test fixture"
    assert custom[0].line.strip() == "0.0 seconds (IMPORT FAILED): /opt/ComfyUI-root/ComfyUI/custom_nodes/broken_node"


# --- captures of the real image (tests/fixtures/comfyui, scripts/record-comfyui-capture) ------------


def test_a_user_directory_it_cannot_write_fails_at_the_database_line(shared_dir: Path) -> None:
    """The real 0.3.64 prints no PermissionError for a mounted user directory it cannot write: only the
    database line, and then it serves (the capture has the GUI line and a 500 for /settings after it)."""
    log = timed(shared_dir, "failure-user-dir-not-writable")
    texts = [text for _, text in log.lines]
    assert not any(t.startswith("PermissionError") for t in texts[: texts.index("Starting server")])
    assert any(t.startswith("To see the GUI go to: ") for t in texts)
    verdict = replay(log)
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "dir-not-writable")
    assert verdict.failing_line.startswith("Failed to initialize database.")
    assert verdict.failing_line.endswith("(sqlite3.OperationalError) unable to open database file")
    assert verdict.gui_url == ""  # decided before the server printed it
    assert "user directory" in verdict.message and "keeps no settings, saved workflows or database" in verdict.message
    assert "chown the host directory mounted as ComfyUI's user directory" in verdict.remedy


def test_a_base_directory_it_cannot_write_fails_at_the_permission_error(shared_dir: Path) -> None:
    log = timed(shared_dir, "failure-base-dir-not-writable")
    verdict = replay(log)
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "dir-not-writable")
    assert "cannot write /basedir/user: the mounted directory is not writable" in verdict.message
    assert verdict.decided_at is not None and verdict.decided_at < (log.exit_at or 0)
    assert verdict.exit_code == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("(sqlite3.OperationalError) unable to open database file", "dir-not-writable"),
        ("(sqlite3.OperationalError) attempt to write a readonly database", "dir-not-writable"),
        # other database failures: ComfyUI 0.3.64 serves on without its database, as the line says
        ("Can't locate revision identified by 'f00dbabe'", "ready"),
        ("Unsupported database URL 'postgres://db/comfy'.", "ready"),
    ],
)
def test_the_database_line_is_a_permission_failure_only_when_sqlite_cannot_write(error: str, reason: str) -> None:
    line = ("Failed to initialize database. Please ensure you have installed the latest requirements. If the error "
            f"persists, please report this as in future the database will be required: {error}")
    verdict = feed_lines("ComfyUI version: 0.3.64", line, "Starting server", "To see the GUI go to: http://0.0.0.0:8188")
    assert verdict.reason == reason
    assert (verdict.failing_line == line) == (reason != "ready")


def test_a_custom_node_that_blocks_is_stalled_naming_its_line(shared_dir: Path) -> None:
    log = timed(shared_dir, "failure-custom-node-blocks")
    last_at, last = log.lines[-1]
    assert last == "blocking_node: waiting for a lock that nobody releases"
    assert (log.exit_at or 0) - last_at > 20.0  # the recorder waited past the stall timeout
    verdict = replay(log, stall_timeout=20.0)
    assert (verdict.phase, verdict.reason) == (Phase.STALLED, "stalled")
    assert verdict.failing_line == verdict.last_line == last
    assert verdict.message.startswith("no new log line for ") and verdict.message.endswith(f"last line: {last}")
    # the same run judged with a stall timeout longer than its silence is still starting
    assert replay(log, stall_timeout=60.0).phase is Phase.STARTING


def test_a_bare_listen_prints_two_gui_lines_and_the_first_decides(shared_dir: Path) -> None:
    log = timed(shared_dir, "startup-cpu-listen-dual")
    gui = [gui_address(text) for _, text in log.lines if gui_address(text)]
    assert gui == [("http://0.0.0.0:8188", "0.0.0.0", 8188), ("http://[::]:8188", "::", 8188)]
    verdict = replay(log)
    assert (verdict.phase, verdict.gui_url) == (Phase.READY, "http://0.0.0.0:8188")
    assert replay(log, host_network=False).phase is Phase.READY  # every address: a published port reaches it


def test_killed_after_ready_is_said_to_have_served(shared_dir: Path) -> None:
    """What `check` makes of the run afterwards: its whole log, then its state (exit 137), no probe."""
    log = timed(shared_dir, "startup-cpu-killed")
    assert log.returncode == -9 and log.container_exit_code == 137
    assert replay(log).phase is Phase.READY  # while it ran
    machine = ReadinessMachine(stall_timeout=180.0, started_at=0.0, host_network=True)
    for at, text in log.lines:
        machine.feed(LogLine(at, text))
    machine.feed(ContainerState(log.exit_at or 0.0, "exited", log.container_exit_code))
    verdict = machine.verdict
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "stopped")
    assert verdict.was_serving
    assert verdict.message.startswith("ComfyUI was serving (http://127.0.0.1:8188 printed, ")
    assert "SIGKILL" in verdict.message and "exit 137" in verdict.message
    assert "before ComfyUI was ready" not in verdict.message


@pytest.mark.parametrize(
    ("capture", "module", "importer", "at"),
    [
        ("failure-missing-module", "requests", "app/frontend_management.py:16", 10.582),
        ("failure-missing-module-torchvision", "torchvision", "comfy/ldm/cascade/stage_c_coder.py:19", 2.965),
    ],
)
def test_missing_module_fails_at_the_line_not_at_the_exit(
    shared_dir: Path, capture: str, module: str, importer: str, at: float
) -> None:
    log = timed(shared_dir, capture)
    verdict = replay(log)
    assert verdict.reason == "missing-module"
    assert verdict.decided_at == at < (log.exit_at or 0)
    assert f"'{module}'" in verdict.message and importer in verdict.message
    assert f"pip install {module}" in verdict.remedy
    assert verdict.exit_code == 1  # the exit still gets recorded
    assert verdict.comfyui_version == ""  # it died before printing its version


def test_port_in_use_names_the_address_and_the_other_process(shared_dir: Path) -> None:
    log = timed(shared_dir, "failure-port-in-use")
    machine = ReadinessMachine(stall_timeout=60, started_at=0.0, host_network=True)
    # the first instance answers 200 on the port during the whole startup of this one
    for at, text in log.lines:
        machine.feed(ProbeResult(at, URL, 200))
        machine.feed(LogLine(at, text))
    verdict = machine.verdict
    assert verdict.phase is Phase.FAILED and verdict.reason == "port-in-use"
    assert verdict.foreign_answer
    assert "127.0.0.1:8188" in verdict.message and "Another process already answers" in verdict.message
    assert verdict.decided_at == 11.99


def test_a_200_before_the_gui_line_is_not_ready(shared_dir: Path) -> None:
    log = timed(shared_dir, "startup-cpu")
    machine = ReadinessMachine(started_at=0.0, host_network=True)
    machine.feed(ProbeResult(1.0, URL, 200))
    for at, text in log.lines[:-1]:  # everything but the GUI line
        machine.feed(LogLine(at, text))
    assert machine.verdict.phase is Phase.STARTING and machine.verdict.foreign_answer
    gui_at, gui_line = log.lines[-1]
    machine.feed(LogLine(gui_at, gui_line))
    machine.feed(ProbeResult(gui_at - 0.5, URL, 200))  # asked before the line: still another process
    assert machine.verdict.phase is Phase.STARTING
    machine.feed(ProbeResult(gui_at + 0.01, URL, 200))
    assert machine.verdict.phase is Phase.READY


def test_gui_line_without_an_answer_times_out_with_the_probe_error(shared_dir: Path) -> None:
    log = timed(shared_dir, "startup-cpu")
    machine = ReadinessMachine(stall_timeout=5, started_at=0.0, host_network=True, deadline=60.0)
    for at, text in log.lines:
        machine.feed(LogLine(at, text))
    for second in range(13, 60):
        machine.feed(ProbeResult(float(second), URL, None, "connection refused"))
        machine.feed(Tick(float(second)))
    assert machine.verdict.phase is Phase.STARTING  # quiet after the GUI line is no stall
    machine.feed(Tick(60.0))
    verdict = machine.verdict
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "timeout")
    assert "never answered 200" in verdict.message and "connection refused" in verdict.message


def test_no_new_line_is_stalled_with_the_last_line(shared_dir: Path) -> None:
    log = timed(shared_dir, "startup-cpu")
    machine = ReadinessMachine(stall_timeout=30.0, started_at=0.0)
    for at, text in log.lines:
        if at > 6.0:
            break
        machine.feed(LogLine(at, text))
    machine.feed(Tick(35.0))
    assert machine.verdict.phase is Phase.STARTING  # 29 s after the last line
    machine.feed(Tick(36.2))
    verdict = machine.verdict
    assert (verdict.phase, verdict.reason) == (Phase.STALLED, "stalled")
    assert verdict.last_line == "torchaudio missing, MMAudio VAE model will be broken"
    assert verdict.failing_line == verdict.last_line
    assert "no new log line for 31 s" in verdict.message


def test_no_output_at_all_stalls_from_the_start() -> None:
    machine = ReadinessMachine(stall_timeout=10.0, started_at=100.0)
    machine.feed(Tick(109.0))
    assert not machine.decided
    machine.feed(Tick(110.0))
    assert machine.verdict.reason == "stalled" and "(no output)" in machine.verdict.message


@pytest.mark.parametrize(
    ("state", "reason", "phrase"),
    [
        (ContainerState(5.0, "exited", 0), "exited", "exited with code 0"),
        (ContainerState(5.0, "exited", 2), "exited", "exited with code 2"),
        (ContainerState(5.0, "exited", 143), "stopped", "SIGTERM"),
        (ContainerState(5.0, "exited", 137), "stopped", "SIGKILL"),
        (ContainerState(5.0, "exited", 137, oom_killed=True), "exited", "OOM"),
        (ContainerState(5.0, "restarting", None, restart_count=1), "restarted", "restart count 1"),
        (ContainerState(5.0, "running", None, restart_count=3), "restarted", "restart count 3"),
        (ContainerState(5.0, "paused"), "paused", "paused"),
        (ContainerState(5.0, "removed"), "removed", "removed"),
    ],
)
def test_container_state_ends_the_wait(shared_dir: Path, state: ContainerState, reason: str, phrase: str) -> None:
    log = timed(shared_dir, "startup-cpu")
    machine = ReadinessMachine(started_at=0.0)
    for at, text in log.lines[:5]:
        machine.feed(LogLine(at, text))
    machine.feed(ContainerState(3.0, "running", None, restart_count=0))
    assert not machine.decided
    verdict = machine.feed(state)
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, reason)
    assert phrase in verdict.message


def test_restarts_before_the_wait_are_the_baseline() -> None:
    machine = ReadinessMachine(started_at=0.0, restart_count=4)
    machine.feed(ContainerState(1.0, "running", None, restart_count=4))
    assert not machine.decided
    machine.feed(ContainerState(2.0, "running", None, restart_count=5))
    assert machine.verdict.reason == "restarted"


def test_loopback_listen_in_a_bridge_container_fails_at_the_gui_line(shared_dir: Path) -> None:
    verdict = replay(timed(shared_dir, "startup-cpu"), host_network=False, probe_200=False)
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "listen-loopback")
    assert "--listen 0.0.0.0" in verdict.remedy
    # --listen 0.0.0.0 is reachable through a published port
    assert replay(timed(shared_dir, "startup-cpu-listen-all"), host_network=False).phase is Phase.READY


def test_port_not_published_fails_after_the_gui_line(shared_dir: Path) -> None:
    machine = ReadinessMachine(started_at=0.0, host_network=False)
    for at, text in timed(shared_dir, "startup-cpu-listen-all").lines:
        machine.feed(LogLine(at, text))
    machine.feed(ProbeResult(12.0, "", None, "container port 8188/tcp is not published", reachable=False))
    assert machine.verdict.reason == "not-published"


def test_unhandled_exception_from_main_is_a_crash_with_a_known_remedy() -> None:
    lines = [
        "Checkpoint files will always be loaded safely.",
        "Traceback (most recent call last):",
        '  File "/opt/ComfyUI/main.py", line 180, in <module>',
        "    import comfy.model_management",
        '  File "/opt/ComfyUI/comfy/model_management.py", line 230, in <module>',
        "    total_vram = get_total_memory(get_torch_device()) / (1024 * 1024)",
        "RuntimeError: Found no NVIDIA driver on your system.",
    ]
    machine = ReadinessMachine(started_at=0.0)
    for number, text in enumerate(lines):
        machine.feed(LogLine(float(number), text))
    verdict = machine.verdict
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "crashed")
    assert verdict.failing_line == lines[-1]
    assert "nvidia runtime" in verdict.remedy


def test_logged_exception_during_a_prompt_is_not_fatal(shared_dir: Path) -> None:
    """The corrupt-model run's traceback comes from the executor, after startup: not a failure."""
    machine = ReadinessMachine(started_at=0.0, host_network=True)
    for at, text in timed(shared_dir, "startup-cpu").lines:
        machine.feed(LogLine(at, text))
    for number, text in enumerate((shared_dir / "fixtures/comfyui/prompt-corrupt-model.log").read_text().splitlines()):
        machine.feed(LogLine(12.2 + number / 100, text))
    assert not machine.decided
    machine.feed(ProbeResult(13.0, URL, 200))
    assert machine.verdict.phase is Phase.READY


def test_tail_keeps_the_last_30_lines(shared_dir: Path) -> None:
    log = timed(shared_dir, "failure-port-in-use")
    verdict = replay(log)
    assert len(verdict.tail) == 30
    assert verdict.tail[-1].startswith("OSError: [Errno 98]")
    assert verdict.tail == [text for _, text in log.lines][-30:]


def test_gui_address_forms() -> None:
    assert gui_address("To see the GUI go to: http://0.0.0.0:8188") == ("http://0.0.0.0:8188", "0.0.0.0", 8188)
    assert gui_address("To see the GUI go to: http://[::]:8189") == ("http://[::]:8189", "::", 8189)
    assert gui_address("To see the GUI go to: https://127.0.0.1:443")[1:] == ("127.0.0.1", 443)  # type: ignore[index]
    assert gui_address("Starting server") is None


def test_timed_log_parsing(shared_dir: Path) -> None:
    log = timed(shared_dir, "startup-cpu")
    assert log.lines[0] == (2.512, "Checkpoint files will always be loaded safely.")
    assert (log.exit_at, log.returncode, log.container_exit_code) == (17.396, -15, 143)
    assert timed(shared_dir, "failure-missing-module").container_exit_code == 1
    with pytest.raises(ValueError, match="line 1"):
        parse_timed_log("no tab here")


def test_which_containers_are_comfyui() -> None:
    from gpuhost.comfyui.container import looks_like_comfyui

    assert looks_like_comfyui("mmartial/comfyui-nvidia-docker:ubuntu24_cuda12.8-20260605", {})
    assert looks_like_comfyui("registry.local/sd:1", {"gpuhost.comfyui": "1"})
    assert not looks_like_comfyui("nginx:1.27", {})  # even when the container is named comfyui-proxy


# --- start-up and first-prompt failures on GPU hosts, one line each --------------------------------

GUI = "To see the GUI go to: http://0.0.0.0:8188"


def feed_lines(*lines: str, state: ContainerState | None = None, probe: bool = True) -> Verdict:
    machine = ReadinessMachine(stall_timeout=60.0, started_at=0.0, host_network=True)
    at = 0.0
    for text in lines:
        at += 1.0
        machine.feed(LogLine(at, text))
        if probe and machine.gui_seen:
            machine.feed(ProbeResult(at + 0.05, URL, 200))
    if state is not None:
        machine.feed(state)
    return machine.verdict


@pytest.mark.parametrize(
    "lines, reason, in_message",
    [
        (
            ["pytorch version: 2.8.0+cu129", "Traceback (most recent call last):",
             '  File "/app/main.py", line 147, in <module>',
             "RuntimeError: The NVIDIA driver on your system is too old (found version 12020). Please update your "
             "GPU driver by downloading and installing a new version from the URL: http://www.nvidia.com/Download/"
             "index.aspx Alternatively, go to: https://pytorch.org to install a PyTorch version that has been "
             "compiled with your version of the CUDA driver."],
            "driver-too-old", "torch 2.8.0+cu129 needs a newer NVIDIA driver: the host's driver supports CUDA 12.2",
        ),
        (
            ["Device: cuda:0 NVIDIA B200 : cudaMallocAsync",
             "torch.AcceleratorError: CUDA error: no kernel image is available for execution on the device"],
            "gpu-arch-unsupported", "no kernels for this GPU's architecture",
        ),
        (["ComfyUI version: 0.3.64", "comfyui-frontend-package is not installed."], "frontend-missing",
         "exits without a traceback"),
        (["usage: main.py [-h] [--listen [IP]] [--port PORT]",
          "main.py: error: unrecognized arguments: --fast-fp16-accumulation"], "bad-arguments",
         "unrecognized arguments: --fast-fp16-accumulation"),
        (["Traceback (most recent call last):", "PermissionError: [Errno 13] Permission denied: '/app/ComfyUI/user'"],
         "dir-not-writable", "cannot write /app/ComfyUI/user"),
        (["## ComfyUI-Manager: EXECUTE => ['/usr/bin/python3', '-m', 'pip', 'install', 'onnxruntime-gpu']",
          "## Execute install/(de)activation script for '/app/custom_nodes/comfyui_controlnet_aux'",
          "[ComfyUI-Manager] Startup script completed.",
          "After restarting ComfyUI, please refresh the browser."], "restart-required",
         "installed Python dependencies"),
    ],
)
def test_a_known_failure_line_decides_the_start(lines: list[str], reason: str, in_message: str) -> None:
    verdict = feed_lines(*lines)
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, reason)
    assert in_message in verdict.message
    assert verdict.remedy
    assert verdict.failing_line == lines[-1]


@pytest.mark.parametrize(
    "line, kind, node",
    [
        ("NVIDIA B200 with CUDA capability sm_100 is not compatible with the current PyTorch installation.",
         "gpu-arch", "sm_100"),
        ("Installed frontend version 1.23.4 is lower than the recommended version 1.28.7.", "frontend",
         "comfyui-frontend-package"),
        ("WARNING: this card most likely does not support cuda-malloc, if you get \"CUDA error\" please run "
         "ComfyUI with: --disable-cuda-malloc", "cuda-malloc", "cuda-malloc"),
        ("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached "
         "files.", "hf-download", "comfyui_controlnet_aux"),
    ],
)
def test_a_warning_line_names_its_cause_and_the_server_still_serves(line: str, kind: str, node: str) -> None:
    verdict = feed_lines(
        "[Prompt Server] web root: /app/web",
        '  File "/app/custom_nodes/comfyui_controlnet_aux/__init__.py", line 3, in <module>',
        line,
        GUI,
    )
    assert verdict.phase is Phase.READY
    [warning] = [w for w in verdict.warnings if w.kind == kind]
    assert warning.node == node
    assert warning.remedy
    if kind == "cuda-malloc":
        assert "--disable-cuda-malloc" in warning.remedy


def test_registry_fetch_gaps_after_the_gui_line_are_not_a_stall() -> None:
    machine = ReadinessMachine(stall_timeout=30.0, started_at=0.0, host_network=True)
    machine.feed(LogLine(10.0, GUI))
    for n, at in enumerate((100.0, 400.0, 900.0), start=1):
        machine.feed(LogLine(at, f"FETCH ComfyRegistry Data: {n * 5}/95"))
        machine.feed(Tick(at + 200.0))
    assert machine.verdict.phase is Phase.STARTING
    assert "ComfyUI-Manager fetches registry data" in machine.verdict.notes
    machine.feed(ProbeResult(1200.0, URL, 200))
    assert machine.verdict.phase is Phase.READY


def test_docker_refusing_to_start_for_cuda_is_reported_without_a_log() -> None:
    error = (
        "failed to create task for container: failed to create shim task: OCI runtime create failed: runc create "
        "failed: unable to start container process: error during container init: error running prestart hook #0: "
        "exit status 1, stdout: , stderr: Auto-detected mode as 'legacy'\nnvidia-container-cli: requirement error: "
        "unsatisfied condition: cuda>=12.8, please update your driver to a newer version, or use an earlier cuda "
        "container: unknown"
    )
    verdict = feed_lines(state=ContainerState(1.0, "created", exit_code=128, error=error))
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "cuda-too-new")
    assert "requires cuda>=12.8" in verdict.message
    assert verdict.lines_seen == 0
    other = feed_lines(state=ContainerState(1.0, "exited", exit_code=127, error="exec: \"python\": not found"))
    assert (other.reason, other.failing_line) == ("start-failed", "exec: \"python\": not found")


def test_sigkill_while_loading_a_model_is_host_ram_not_a_stop() -> None:
    verdict = feed_lines("Requested to load SDXL", state=ContainerState(5.0, "exited", exit_code=137))
    assert verdict.reason == "host-oom"
    killed = feed_lines("Loading model", "Killed", state=ContainerState(5.0, "exited", exit_code=137))
    assert killed.reason == "host-oom"
    limited = feed_lines("Requested to load SDXL", state=ContainerState(5.0, "exited", exit_code=137, oom_killed=True))
    assert "OOM killer" in limited.message
    stopped = feed_lines("Requested to load SDXL", "loaded completely 9000 4000",
                         state=ContainerState(5.0, "exited", exit_code=137))
    assert stopped.reason == "stopped"
