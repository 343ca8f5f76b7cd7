"""wait-ready, check and check --workflow through real containers that replay the ComfyUI captures.

All captures start together (about 14 s in all: each replays its recorded timing); every test then
follows or inspects its own container through the Engine API, as on a real host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuhost.comfyui.readiness import Phase
from gpuhost.comfyui.wait import WaitOptions, wait_ready
from gpuhost.engine import EngineClient
from tests.support.comfyui_replay import (
    CAPTURES,
    NAME_PREFIX,
    build_image,
    free_port,
    remove,
    remove_network,
    run_capture,
    run_holder,
)
from tests.support.paths import REPO

pytestmark = pytest.mark.docker
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def docker_client() -> Any:
    import docker

    return docker.from_env()


@pytest.fixture(scope="module", autouse=True)
def replay_network(docker_client: Any) -> Iterator[None]:
    yield
    remove_network(docker_client)


@pytest.fixture(scope="module")
def replays(shared_dir: Path, docker_client: Any) -> Iterator[dict[str, str]]:
    """Every capture running in its own container, started at the same moment."""
    build_image(shared_dir)
    names = {capture: f"{NAME_PREFIX}{capture}" for capture in CAPTURES}
    holder = f"{NAME_PREFIX}holder"
    for name in [*names.values(), holder]:
        remove(docker_client, name)
    port = free_port()
    try:
        run_holder(docker_client, holder, port)
        for capture, name in names.items():
            if capture == "failure-port-in-use":
                run_capture(docker_client, capture, name, host_port=port, host_network=True)
            else:
                run_capture(docker_client, capture, name)
        yield names
    finally:
        for name in [*names.values(), holder]:
            remove(docker_client, name)


def host_port(docker_client: Any, name: str) -> int:
    container = docker_client.containers.get(name)
    return int(container.attrs["NetworkSettings"]["Ports"]["8188/tcp"][0]["HostPort"])


def gpuhost(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuhost", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@pytest.mark.parametrize("capture", sorted(CAPTURES))
def test_wait_ready_replay(replays: dict[str, str], capture: str) -> None:
    expected = CAPTURES[capture]
    result = wait_ready(EngineClient(), replays[capture], WaitOptions(timeout=60, stall_timeout=30))
    verdict = result.verdict
    assert (verdict.phase.value, verdict.reason) == (expected.phase, expected.reason), verdict.message
    assert verdict.failing_line.startswith(expected.line)
    assert sorted(w.node for w in verdict.warnings) == sorted(expected.warnings)
    if verdict.phase is Phase.READY:
        assert verdict.last_probe == "HTTP 200"
        assert verdict.probe_url.startswith("http://127.0.0.1:") and verdict.probe_url.endswith("/system_stats")
        assert verdict.gui_url == "http://0.0.0.0:8188"  # --listen 0.0.0.0 inside the container
    else:
        assert verdict.tail and verdict.tail[-1] == verdict.failing_line


def test_wait_ready_replay_port_in_use_while_another_process_answers(docker_client: Any) -> None:
    """The first instance keeps 200 on the port; this one dies with Errno 98: failed, not ready."""
    port = free_port()
    holder, failing = f"{NAME_PREFIX}pin-holder", f"{NAME_PREFIX}pin"
    try:
        run_holder(docker_client, holder, port)
        run_capture(docker_client, "failure-port-in-use", failing, host_port=port, host_network=True,
                    extra_args=("--speed", "3"))
        result = wait_ready(EngineClient(), failing, WaitOptions(timeout=60, stall_timeout=30))
        verdict = result.verdict
        assert (verdict.phase, verdict.reason) == (Phase.FAILED, "port-in-use")
        assert verdict.foreign_answer and verdict.last_probe == "HTTP 200"
        assert f"127.0.0.1:{port}" in verdict.message and "Another process already answers" in verdict.message
        assert verdict.failing_line == (
            f"OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', {port}): "
            "address already in use"
        )
        # what a port-only probe sees, after this container exited: still 200
        docker_client.containers.get(failing).wait(timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=5) as answer:
            assert answer.status == 200
    finally:
        remove(docker_client, failing)
        remove(docker_client, holder)


def test_wait_ready_replay_stalled_reports_the_last_line(docker_client: Any) -> None:
    name = f"{NAME_PREFIX}stall"
    remove(docker_client, name)
    try:
        run_capture(docker_client, "startup-cpu", name, extra_args=("--freeze-after", "5.2", "--speed", "2"))
        result = wait_ready(EngineClient(), name, WaitOptions(timeout=60, stall_timeout=2))
        verdict = result.verdict
        assert (verdict.phase, verdict.reason) == (Phase.STALLED, "stalled")
        assert verdict.last_line == "torchaudio missing, MMAudio VAE model will be broken"
        assert result.elapsed_s < 30
    finally:
        remove(docker_client, name)


def test_wait_ready_cli_replay(replays: dict[str, str]) -> None:
    ready = gpuhost("wait-ready", replays["startup-cpu"], "--json", "--timeout", "60")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    payload = json.loads(ready.stdout)
    assert payload["schema"] == "gpuhost.wait-ready/v1"
    assert (payload["verdict"], payload["reason"], payload["exit_code"]) == ("ready", "ready", 0)
    assert {w["node"] for w in payload["warnings"]} == {"nodes_audio.py", "nodes_audio_encoder.py"}

    failed = gpuhost("wait-ready", replays["failure-missing-module"], "--timeout", "60")
    assert failed.returncode == 1
    assert "FAILED (missing-module)" in failed.stdout
    assert "failing line: ModuleNotFoundError: No module named 'requests'" in failed.stdout
    assert "pip install requests" in failed.stdout
    assert "last 17 log lines:" in failed.stdout  # the whole log: it is shorter than 30 lines
    assert "\n        import requests\n" in failed.stdout


def test_wait_ready_cli_bad_input_and_unreadable_docker(replays: dict[str, str]) -> None:
    missing = gpuhost("wait-ready", f"{NAME_PREFIX}does-not-exist", "--json")
    assert missing.returncode == 2 and "no container named" in json.loads(missing.stdout)["error"]
    bad = gpuhost("wait-ready", replays["startup-cpu"], "--timeout", "soon")
    assert bad.returncode == 2 and "--timeout" in bad.stderr
    unreadable = gpuhost("wait-ready", "x", "--docker-host", "unix:///nonexistent/docker.sock", "--json")
    assert unreadable.returncode == 3


def test_wait_ready_replay_unreadable_log_is_exit_3(docker_client: Any) -> None:
    import docker.types

    name = f"{NAME_PREFIX}nolog"
    remove(docker_client, name)
    try:
        run_capture(docker_client, "startup-cpu", name, log_config=docker.types.LogConfig(type="none"))
        run = gpuhost("wait-ready", name, "--json", "--timeout", "30")
        assert run.returncode == 3, run.stdout
        assert "log driver" in json.loads(run.stdout)["remedy"]
    finally:
        remove(docker_client, name)


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no system python3")
def test_agent_wait_ready_replay(replays: dict[str, str], tmp_path: Path) -> None:
    """The zipapp the roles run on hosts, with the host's own python3."""
    from gpuhost.ship import build_zipapp

    agent, _ = build_zipapp(tmp_path / "gpuhost-agent.pyz")
    run = subprocess.run(
        [SYSTEM_PYTHON, str(agent), "wait-ready", replays["failure-missing-module-torchvision"], "--timeout", "60"],
        capture_output=True, text=True, timeout=90,
    )
    assert run.returncode == 1, run.stderr
    payload = json.loads(run.stdout)
    assert (payload["verdict"], payload["reason"]) == ("failed", "missing-module")
    assert payload["failing_line"] == "ModuleNotFoundError: No module named 'torchvision'"
    assert payload["container_exit_code"] == 1
    assert payload["tail"][-1] == payload["failing_line"]


def test_check_reports_replays_with_the_same_verdict(replays: dict[str, str]) -> None:
    from gpuhost.check import run_check

    wait_ready(EngineClient(), replays["startup-cpu"], WaitOptions(timeout=60))
    wait_ready(EngineClient(), replays["failure-custom-node-import"], WaitOptions(timeout=60))
    report = run_check()
    ours = {c.name: c for c in report.facts.comfyui.containers if c.name.startswith(NAME_PREFIX)}
    for capture, name in replays.items():
        expected = CAPTURES[capture]
        verdict = ours[name].verdict
        assert (verdict.phase.value, verdict.reason) == (expected.phase, expected.reason), capture
    by_container = {
        f.evidence.get("container"): f for f in report.findings if f.id == "comfyui.ready"
    }
    assert by_container[replays["startup-cpu"]].severity.value == "ok"
    failing = by_container[replays["failure-missing-module"]]
    assert failing.severity.value == "fail" and "'requests' is missing" in failing.message
    assert failing.evidence["failing_line"] == "ModuleNotFoundError: No module named 'requests'"
    imports = [f for f in report.findings if f.id == "comfyui.import-failed"
               and f.evidence["container"] == replays["failure-custom-node-import"]]
    assert len(imports) == 1 and "custom nodes broken_node" in imports[0].message
    assert "comfyui.ready" in {f.id for f in report.findings if f.severity.value == "fail"}
    # a ready server is asked for its queue (the recorded GET /prompt: 0 waiting); the others are not
    assert ours[replays["startup-cpu"]].queue_remaining == 0
    assert ours[replays["failure-missing-module"]].queue_remaining is None
    from gpuhost.metrics.report import render_report

    metrics = render_report(report)
    assert f'gpuhost_comfyui_queue_remaining{{container="{replays["startup-cpu"]}"}} 0' in metrics
    assert f'gpuhost_comfyui_phase{{container="{replays["startup-cpu"]}",phase="ready"}} 1' in metrics
    assert f'gpuhost_comfyui_phase{{container="{replays["failure-missing-module"]}",phase="failed"}} 1' in metrics


def test_check_workflow_replay_matches_comfyuis_answer(
    replays: dict[str, str], docker_client: Any, shared_dir: Path
) -> None:
    wait_ready(EngineClient(), replays["startup-cpu"], WaitOptions(timeout=60))
    port = host_port(docker_client, replays["startup-cpu"])
    workflow = shared_dir / "fixtures/comfyui/prompt-missing-model.request.json"
    checked = gpuhost("check", "--workflow", str(workflow), "--comfyui-url", f"http://127.0.0.1:{port}", "--json")
    assert checked.returncode == 1
    payload = json.loads(checked.stdout)
    predicted = payload["workflow"]["comfyui_would_answer"]
    assert "comfyui.workflow" in payload["failing"]
    # what ComfyUI says only after the POST (the replay answers as recorded)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/prompt", data=workflow.read_bytes(), headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as posted:
        urllib.request.urlopen(request, timeout=10)
    assert posted.value.code == predicted["status"] == 400
    assert json.loads(posted.value.read()) == predicted["body"]
    posted.value.close()
    logs = docker_client.containers.get(replays["startup-cpu"]).logs().decode()
    assert "Value not in list: ckpt_name: 'v1-5-pruned-emaonly.safetensors' not in []" in logs

    found = gpuhost("check", "--workflow", str(workflow))  # the server found by check itself
    assert found.returncode == 1
    assert "model file 'v1-5-pruned-emaonly.safetensors' for ckpt_name is not on the server" in found.stdout
    assert "ComfyUI would answer POST /prompt" in found.stdout


def test_check_workflow_bad_input_and_no_server(tmp_path: Path) -> None:
    bad = tmp_path / "ui.json"
    bad.write_text('{"nodes": [], "links": []}')
    assert gpuhost("check", "--workflow", str(bad)).returncode == 2
    assert gpuhost("check", "--comfyui-url", "http://127.0.0.1:9").returncode == 2
    good = tmp_path / "api.json"
    good.write_text('{"1": {"class_type": "SaveImage", "inputs": {}}}')
    unreachable = gpuhost("check", "--workflow", str(good), "--comfyui-url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 3 and "object_info" in unreachable.stderr


def test_replay_serves_the_recorded_bodies(replays: dict[str, str], docker_client: Any, shared_dir: Path) -> None:
    wait_ready(EngineClient(), replays["startup-cpu"], WaitOptions(timeout=60))
    base = f"http://127.0.0.1:{host_port(docker_client, replays['startup-cpu'])}"
    bodies = (("/system_stats", "system_stats.json"), ("/queue", "queue.json"), ("/prompt", "prompt-get.json"))
    for path, name in bodies:
        with urllib.request.urlopen(base + path, timeout=5) as answer:
            assert answer.read() == (shared_dir / "fixtures/comfyui" / name).read_bytes()
            assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/no-such-route", timeout=5)
    assert missing.value.code == 404
    missing.value.close()


def test_stopped_container_is_silent_and_check_says_stopped(replays: dict[str, str], docker_client: Any) -> None:
    from gpuhost.check import run_check

    name = replays["startup-cpu-listen-all"]
    wait_ready(EngineClient(), name, WaitOptions(timeout=60))
    container = docker_client.containers.get(name)
    before = container.logs()
    started = time.monotonic()
    container.stop(timeout=10)
    assert time.monotonic() - started < 5  # SIGTERM ends it at once (no 10 s SIGKILL fallback)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 143
    assert container.logs() == before  # no shutdown line
    ours = [c for c in run_check().facts.comfyui.containers if c.name == name]
    assert [(c.verdict.phase, c.verdict.reason) for c in ours] == [(Phase.FAILED, "stopped")]


def test_wait_ready_replay_with_an_explicit_url(replays: dict[str, str], docker_client: Any) -> None:
    port = host_port(docker_client, replays["startup-cpu"])
    url = f"http://127.0.0.1:{port}/system_stats"
    result = wait_ready(EngineClient(), replays["startup-cpu"], WaitOptions(timeout=60, url=url))
    assert (result.verdict.phase, result.verdict.probe_url) == (Phase.READY, url)
