"""The real ComfyUI 0.3.64 (gpuhost-comfyui:0.3.64, tests/comfyui-image) on the CPU, started the way
tests/support/comfyui_real.py starts it, judged by `gpuhost wait-ready` as a user runs it; and the
image's side of the interface the comfyui role relies on (roles/comfyui/README.md, "What an image must
provide"): WANTED_UID/WANTED_GID or --user, --base-directory, COMFY_CMDLINE_EXTRA, SIGTERM.

Each start takes 10-20 s on two busy cores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.comfyui_real import IMAGE, FirstOK, ensure_image, get_json, http_status, real_comfyui
from tests.support.comfyui_replay import CAPTURES
from tests.support.paths import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_image(shared_dir: Path) -> str:
    return ensure_image()


def gpuhost(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The CLI of this checkout, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "gpuhost", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_wait_ready_decides_ready_within_half_a_second_of_the_first_200(tmp_path: Path, real_image: str) -> None:
    with real_comfyui(tmp_path) as server:
        poller = FirstOK(f"{server.url}/system_stats", interval=0.02).start()
        try:
            done = gpuhost("wait-ready", server.name, "--timeout", "5m", "--stall-timeout", "3m", "--json")
            first_200 = poller.join(30)
        finally:
            poller.stop()
        logs = server.logs()
        answer = json.loads(done.stdout)
        assert done.returncode == 0, (answer, logs[-3000:])
        assert (answer["verdict"], answer["reason"]) == ("ready", "ready")
        assert answer["comfyui_version"] == "0.3.64"
        assert answer["gui_url"] == f"http://127.0.0.1:{server.port}"
        # what the replay of the recorded healthy start expects, the real server gives: the two audio nodes
        # of comfy_extras fail to import without torchaudio, and that is a warning, not a failure
        assert sorted(w["node"] for w in answer["warnings"]) == sorted(CAPTURES["startup-cpu"].warnings)
        assert first_200 is not None, logs[-3000:]
        # the verdict asks for its own 200 after the GUI line, so it may land a poll before ours
        assert abs(answer["reached_at"] - first_200) < 0.5, (answer["reached_at"], first_200)
        assert http_status(f"{server.url}/system_stats") == 200


@pytest.mark.parametrize("run_as", ["wanted_env", "user"])
def test_the_image_runs_comfyui_as_the_host_id_on_its_base_directory(
    tmp_path: Path, real_image: str, run_as: str
) -> None:
    uid = gid = 4244 if run_as == "user" else 4243
    with real_comfyui(tmp_path, uid=uid, gid=gid, run_as=run_as, args=("--cpu", "--preview-method", "none")) as server:
        server.wait_ready()
        top = server.container.top(ps_args="-o pid,uid,gid,args")
        comfyui = [row for row in top["Processes"] if "main.py" in row[-1]]
        assert len(comfyui) == 1, top
        assert comfyui[0][1:3] == [str(uid), str(gid)]
        command = comfyui[0][-1]
        # the image's own arguments, then COMFY_CMDLINE_EXTRA's, split into words
        assert command.endswith(f"--listen 127.0.0.1 --port {server.port} --cpu --preview-method none"), command
        assert "--base-directory /basedir" in command
        stats = get_json(f"{server.url}/system_stats")
        assert stats["system"]["comfyui_version"] == "0.3.64"
        assert stats["devices"][0]["type"] == "cpu"
        database = server.folder("user") / "comfyui.db"
        assert (database.stat().st_uid, database.stat().st_gid) == (uid, gid)
        # docker stop: SIGTERM reaches ComfyUI through the entrypoint, which exits as ComfyUI does (143); a
        # PID 1 that ignored it would be killed when the grace period ran out (137)
        server.container.stop(timeout=60)
        server.container.reload()
        assert server.container.attrs["State"]["ExitCode"] == 143


def test_the_image_refuses_a_bad_identity_or_argument_line(tmp_path: Path, real_image: str) -> None:
    import docker

    client = docker.from_env()
    cases = [
        ("WANTED_UID must be a number from 0 to", {"WANTED_UID": "12a", "WANTED_GID": "1000"}, None),
        ("WANTED_GID must be a number from 0 to", {"WANTED_UID": "1000", "WANTED_GID": "4294967295"}, None),
        ("set both WANTED_UID and WANTED_GID, or neither", {"WANTED_UID": "1000"}, None),
        ("without root: start it as root (no --user) or drop WANTED_UID/WANTED_GID",
         {"WANTED_UID": "2000", "WANTED_GID": "2000"}, "1000:1000"),
        ("COMFY_CMDLINE_EXTRA cannot be split into arguments", {"COMFY_CMDLINE_EXTRA": "--cpu '--listen"}, None),
        ("BASE_DIRECTORY must be an absolute path", {"BASE_DIRECTORY": "basedir"}, None),
    ]
    for message, environment, user in cases:
        container = client.containers.run(IMAGE, environment=environment, user=user, network_mode="none",
                                          detach=True, labels={"gpuhost.test": "comfyui-real"})
        try:
            status = container.wait(timeout=60)
            output = container.logs().decode()
        finally:
            container.remove(force=True)
        # refused before ComfyUI starts: one line, exit 2
        assert status["StatusCode"] == 2, (message, output)
        assert output.startswith("comfyui-entrypoint: ") and message in output, output
        assert output.count("\n") == 1, output
