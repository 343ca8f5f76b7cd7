"""The comfyui role's container, checked inside the instance; last, a failing capture fails the play."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

NAME = "comfyui"
GPU_GID = "4242"
SCENARIO = Path(__file__).resolve().parents[1]
PROJECT = SCENARIO.parents[1]


def inspect(host: Any) -> dict[str, Any]:
    result = host.run(f"docker inspect {NAME}")
    assert result.rc == 0, result.stderr
    return dict(json.loads(result.stdout)[0])


def listeners(host: Any) -> set[tuple[str, int]]:
    """Listening IPv4 TCP sockets of the instance, from /proc/net/tcp (no ss or netstat there)."""
    found = set()
    for line in host.file("/proc/net/tcp").content_string.splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":
            address, port = local.split(":")
            octets = [str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)]
            found.add((".".join(octets), int(port, 16)))
    return found


def test_runs_the_loaded_image_with_the_nvidia_runtime(host: Any) -> None:
    container = inspect(host)
    assert container["State"]["Running"] and container["RestartCount"] == 0
    assert container["Config"]["Image"] == "gpuhost-comfyui-replay:test"
    assert host.file("/var/lib/gpuhost/images/comfyui.tar").is_file  # loaded from the archive, no registry
    host_config = container["HostConfig"]
    assert host_config["Runtime"] == "nvidia"
    assert not host_config.get("DeviceRequests")  # never --gpus unless asked
    env = dict(item.split("=", 1) for item in container["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert env["COMFY_CMDLINE_EXTRA"] == "--extra-model-paths-config /basedir/extra_model_paths.yaml"
    assert "WANTED_UID" not in env  # comfyui_run_as: user


def test_runs_as_the_host_user_with_the_gpu_group(host: Any) -> None:
    user = host.user("comfyui")
    assert host.run("stat -c %F /dev/nvidia0").stdout.strip() == "character special file"
    assert str(host.file("/dev/nvidia0").gid) == GPU_GID
    container = inspect(host)
    assert container["Config"]["User"] == f"{user.uid}:{user.gid}"
    assert container["HostConfig"]["GroupAdd"] == [GPU_GID]
    # the running process itself, as the kernel sees it
    proc_status = host.file(f"/proc/{container['State']['Pid']}/status").content_string
    status = dict(line.split(":", 1) for line in proc_status.splitlines())
    assert status["Uid"].split()[:2] == [str(user.uid), str(user.uid)]
    assert status["Gid"].split()[0] == str(user.gid)
    assert GPU_GID in status["Groups"].split()


def test_port_is_published_on_loopback_only(host: Any) -> None:
    container = inspect(host)
    assert container["HostConfig"]["PortBindings"] == {"8188/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8188"}]}
    listening = listeners(host)
    assert ("127.0.0.1", 8188) in listening
    assert not [address for address, port in listening if port == 8188 and address != "127.0.0.1"]
    answer = host.run("python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8188/system_stats').status)\"")
    assert answer.stdout.strip() == "200"


def test_volumes_logs_restart_policy_and_label(host: Any) -> None:
    container = inspect(host)
    mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in container["Mounts"]}
    for key, path in {"models": "/basedir/models", "custom_nodes": "/basedir/custom_nodes", "user": "/basedir/user",
                      "output": "/basedir/output", "input": "/basedir/input", "run": "/comfy/mnt"}.items():
        assert mounts[path] == (f"/srv/comfyui/{key}", True)
        directory = host.file(f"/srv/comfyui/{key}")
        assert directory.is_directory and directory.user == "comfyui"
    assert mounts["/basedir/extra_model_paths.yaml"] == ("/srv/comfyui/extra_model_paths.yaml", False)
    assert mounts["/mnt/models"] == ("/srv/models", False)
    host_config = container["HostConfig"]
    assert host_config["RestartPolicy"]["Name"] == "unless-stopped"
    assert host_config["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "50m", "max-file": "5"}}
    assert container["Config"]["Labels"]["gpuhost.comfyui"] == "1"


def test_extra_model_paths_is_comfyuis_format(host: Any) -> None:
    rendered = yaml.safe_load(host.file("/srv/comfyui/extra_model_paths.yaml").content_string)
    # a list of folders becomes one value of lines, each a folder (ComfyUI's utils/extra_config.py)
    assert rendered == {
        "shared": {"base_path": "/mnt/models", "is_default": True, "checkpoints": "checkpoints",
                   "loras": "loras\nmore/loras"}
    }


def test_second_converge_did_not_restart_it(host: Any) -> None:
    first = host.file("/root/comfyui-first-started-at").content_string.strip()
    assert first and inspect(host)["State"]["StartedAt"] == first


def test_wait_ready_on_the_host_says_ready(host: Any) -> None:
    run = host.run(f"gpuhost-agent wait-ready {NAME} --timeout 60")
    assert run.rc == 0, run.stdout
    verdict = json.loads(run.stdout)
    assert (verdict["verdict"], verdict["url"]) == ("ready", "http://127.0.0.1:8188/system_stats")
    assert {w["node"] for w in verdict["warnings"]} == {"nodes_audio.py", "nodes_audio_encoder.py"}


def test_zz_a_failing_capture_fails_the_play_with_the_reason() -> None:
    """Last: it replaces the container. The play must fail and say what to fix."""
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(PROJECT / "roles"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    run = subprocess.run(
        ["ansible-playbook", "-i", inventory, str(SCENARIO / "failing.yml")],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    assert "ComfyUI in container comfyui is not ready: failed (missing-module)" in output
    assert "Python module 'torchvision' is missing" in output
    assert "failing line: ModuleNotFoundError: No module named 'torchvision'" in output
    assert "pip install torchvision" in output
    assert "last 19 log lines:" in output  # the whole log up to the failing line
    assert "from .ldm.cascade.stage_c_coder import StageC_coder" in output
