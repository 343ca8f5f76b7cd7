"""wait-ready, check and check --workflow through real containers that replay the ComfyUI captures.

All captures start together (about 14 s in all: each replays its recorded timing); every test then
follows or inspects its own container through the Engine API, as on a real host.
"""

from __future__ import annotations

import json
import os
import shutil
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
    IMAGE,
    NAME_PREFIX,
    build_image,
    capture_file,
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
    options = WaitOptions(timeout=90, stall_timeout=expected.stall_timeout or 30)
    result = wait_ready(EngineClient(), replays[capture], options)
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
        if expected.stall_timeout is not None:  # silent for less than check's own stall timeout (3 min) yet
            assert (verdict.phase.value, verdict.reason) == ("starting", "starting"), capture
            continue
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


# --- the replay honours the real image's interface --------------------------------------------------

REPLAY_ID = 4245


def test_the_replay_takes_the_identity_and_arguments_the_role_gives_an_image(docker_client: Any) -> None:
    """WANTED_UID/WANTED_GID make it run as that id (the real image's own code); COMFY_CMDLINE_EXTRA's
    --listen and --port come after the command's and win, ComfyUI's other flags are taken and ignored."""
    name, port = f"{NAME_PREFIX}interface", free_port()
    remove(docker_client, name)
    try:
        # loopback either way: the command's address is another one of 127.0.0.0/8
        docker_client.containers.run(
            IMAGE, ["play", "startup-cpu", "--listen", "127.0.0.2", "--port", str(free_port()), "--speed", "4"],
            name=name,
            detach=True, network_mode="host",
            environment={"WANTED_UID": str(REPLAY_ID), "WANTED_GID": str(REPLAY_ID),
                         "COMFY_CMDLINE_EXTRA": f"--cpu --listen 127.0.0.1 --port {port} --preview-method none"},
        )
        verdict = wait_ready(EngineClient(), name, WaitOptions(timeout=60)).verdict
        assert (verdict.phase, verdict.gui_url) == (Phase.READY, f"http://127.0.0.1:{port}"), verdict.message
        assert verdict.probe_url == f"http://127.0.0.1:{port}/system_stats"
        top = docker_client.containers.get(name).top(ps_args="-o pid,uid,gid,args")["Processes"]
        assert [row[1:3] for row in top if "replay.py" in row[-1]] == [[str(REPLAY_ID), str(REPLAY_ID)]]
    finally:
        remove(docker_client, name)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"WANTED_UID": "12a", "WANTED_GID": "1000"}, "WANTED_UID must be a number from 0 to"),
        ({"WANTED_UID": "1000"}, "set both WANTED_UID and WANTED_GID, or neither"),
        ({"COMFY_CMDLINE_EXTRA": "--cpu '--listen"}, "COMFY_CMDLINE_EXTRA cannot be split into arguments"),
        ({"BASE_DIRECTORY": "basedir"}, "BASE_DIRECTORY must be an absolute path"),
    ],
    ids=["uid", "half", "extra", "base"],
)
def test_the_replay_refuses_what_the_image_refuses(docker_client: Any, environment: dict[str, str],
                                                   message: str) -> None:
    container = docker_client.containers.run(IMAGE, environment=environment, network_mode="none", detach=True,
                                             labels={"gpuhost.test": "comfyui-replay"})
    try:
        status = container.wait(timeout=60)
        output = container.logs().decode()
    finally:
        container.remove(force=True)
    assert status["StatusCode"] == 2, output
    assert output.startswith("comfyui-entrypoint: ") and message in output and output.count("\n") == 1, output


@pytest.mark.parametrize(
    ("layout", "capture", "failing_line"),
    [
        ("user", "failure-user-dir-not-writable", "Failed to initialize database."),
        ("base", "failure-base-dir-not-writable", "PermissionError: [Errno 13] Permission denied: '/basedir/user'"),
    ],
)
def test_a_base_directory_its_user_cannot_write_replays_what_the_real_server_does(
    docker_client: Any, tmp_path: Path, layout: str, capture: str, failing_line: str
) -> None:
    """Whatever capture it was told to play: a root-owned user/ (or no user/ in a root-owned base
    directory) as the real image's user, and it plays the recorded failure."""
    root = tmp_path / "basedir"
    (root / "models").mkdir(parents=True)
    os.chown(root / "models", REPLAY_ID, REPLAY_ID)
    if layout == "user":
        (root / "user").mkdir(mode=0o755)
        volumes = {str(root / "user"): {"bind": "/basedir/user", "mode": "rw"}}
    else:
        root.chmod(0o755)
        volumes = {str(root): {"bind": "/basedir", "mode": "rw"}}
    name = f"{NAME_PREFIX}{layout}-dir"
    remove(docker_client, name)
    try:
        run_capture(docker_client, "startup-cpu", name, extra_args=("--speed", "4"), volumes=volumes,
                    environment={"WANTED_UID": str(REPLAY_ID), "WANTED_GID": str(REPLAY_ID)})
        verdict = wait_ready(EngineClient(), name, WaitOptions(timeout=60)).verdict
        assert (verdict.phase, verdict.reason) == (Phase.FAILED, "dir-not-writable"), verdict.message
        assert verdict.failing_line.startswith(failing_line)
        logs = docker_client.containers.get(name).logs().decode()
        recorded = [line.split("\t", 1)[1] for line in
                    capture_file(f"{capture}.timed.log").read_text().splitlines()][:5]
        assert logs.splitlines()[:5] == recorded
    finally:
        remove(docker_client, name)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nsenter") is None,
                    reason="the probe enters the container's network namespace: root and nsenter")
@pytest.mark.parametrize(
    ("listen", "gui_hosts", "addresses"),
    [
        (("--listen",), ["0.0.0.0", "[::]"], ["0.0.0.0:8188", "[::]:8188"]),
        (("--listen", "127.0.0.1,::1"), ["127.0.0.1", "[::1]"], ["127.0.0.1:8188", "[::1]:8188"]),
    ],
    ids=["bare", "two"],
)
def test_the_replay_binds_every_address_its_gui_lines_name(
    replays: dict[str, str], tmp_path: Path, listen: tuple[str, ...], gui_hosts: list[str], addresses: list[str]
) -> None:
    """In a network namespace of its own (nothing published, nothing beyond its loopback): one GUI line
    and one listening socket per address, IPv6 beside IPv4 on one port, each answering."""
    from tests.support.comfyui_capture import Scenario, probe_hosts, record, replay_command

    scenario = Scenario("startup-cpu-listen-dual", "", listen=listen)
    capture = record(scenario, tmp_path, image=IMAGE, command=replay_command(scenario, speed=4.0))
    assert capture.gui_lines == [f"To see the GUI go to: http://{host}:8188" for host in gui_hosts]
    assert capture.http["listening"] == addresses
    assert capture.http["reach"] == {host: 200 for host in probe_hosts(listen)}
    assert capture.returncode == -15  # served until the recorder's SIGTERM


def test_the_saved_archive_names_the_image_by_its_own_tag(shared_dir: Path, docker_client: Any, tmp_path: Path) -> None:
    """The molecule scenario loads the archive by IMAGE: another tag of the same image that comes first in
    its list (another checkout's GPUHOST_REPLAY_IMAGE) must not be the one the archive carries."""
    import tarfile

    from tests.support.comfyui_replay import save_image

    build_image(shared_dir)
    other = f"a-gpuhost-replay-other-{os.getpid()}:test"
    docker_client.images.get(IMAGE).tag(other)
    try:
        assert other in docker_client.images.get(IMAGE).tags  # Docker lists it first: its name sorts first
        with tarfile.open(save_image(tmp_path / "replay.tar")) as archive:
            manifest = archive.extractfile("manifest.json")
            assert manifest is not None
            assert [entry["RepoTags"] for entry in json.load(manifest)] == [[IMAGE]]
    finally:
        docker_client.images.remove(other)
