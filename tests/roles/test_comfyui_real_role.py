"""The whole comfyui role, for real, on this machine's dockerd: the real ComfyUI 0.3.64 image
(gpuhost-comfyui:0.3.64) in CPU mode, with three synthetic safetensors files synced from moto's S3
server on 127.0.0.1 into two folders. Then ComfyUI itself is asked what it sees, `gpuhost models verify
--url` is run against it, the container is restarted, and an EC2 stop/start (the models directory
emptied) is repaired by the command the role's boot unit runs.

The role runs once for the module (about two minutes on two busy cores); the tests after it change the
deployment and put it back as they found it."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.ansible import PlaybookRun, local_play, run_playbook
from tests.support.comfyui_real import IMAGE, ensure_image, free_port, get_json, http_status
from tests.support.paths import REPO
from tests.support.s3 import BUCKET, fill_bucket, model_bytes, s3_client, s3_server

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = "comfyui-real"
# two folders, three files: each valid safetensors (a header and one U8 tensor), different bytes
FILES = {
    "checkpoints/alpha.safetensors": model_bytes(70_000, 11),
    "checkpoints/beta.safetensors": model_bytes(50_000, 12),
    "loras/gamma.safetensors": model_bytes(30_000, 13),
}
HOST_USER = "gpuhost-comfyreal"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
PLAYBOOK = local_play("Deploy ComfyUI", "comfyui")


@dataclass
class Deployment:
    run: PlaybookRun
    variables: dict[str, Any]
    work: Path
    name: str
    url: str
    models: Path
    manifest: Path
    unit: Path

    def listed(self, folder: str) -> list[str]:
        return sorted(get_json(f"{self.url}/models/{folder}"))


def manifest() -> dict[str, Any]:
    models: list[dict[str, Any]] = []
    for key, data in FILES.items():
        folder, name = key.split("/")
        entry: dict[str, Any] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        # both ways a manifest names a file: a path under its folder, or a name with a folder
        entry.update({"path": key} if folder == "checkpoints" else {"path": name, "folder": folder})
        models.append(entry)
    return {"models": models}


def unit_commands(unit: str) -> list[list[str]]:
    return [shlex.split(line.split("=", 1)[1]) for line in unit.splitlines()
            if line.startswith(("ExecStartPre=", "ExecStart="))]


def gpuhost(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpuhost", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False)


def wait_ready(name: str) -> dict[str, Any]:
    done = gpuhost("wait-ready", name, "--timeout", "5m", "--stall-timeout", "3m", "--json")
    answer = dict(json.loads(done.stdout))
    assert done.returncode == 0 and answer["verdict"] == "ready", answer
    return answer


def remove_container(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Iterator[Deployment]:
    ensure_image()
    work = tmp_path_factory.mktemp("comfyui-real-role")
    name = f"gpuhost-comfyui-real-role-{uuid.uuid4().hex[:6]}"
    with pytest.MonkeyPatch.context() as patch, s3_server() as endpoint:
        for key, value in AWS_ENV.items():
            patch.setenv(key, value)
        patch.delenv("AWS_PROFILE", raising=False)
        client = s3_client(endpoint)
        fill_bucket(client, BUCKET, FILES, PREFIX)
        port = free_port()
        variables = {
            "comfyui_image": IMAGE,
            "comfyui_image_source": "pull",  # present already: pull: not_present asks no registry
            "comfyui_container_name": name,
            "comfyui_host_user": HOST_USER,
            "comfyui_require_gpu": False,
            "comfyui_cpu_mode": True,
            "comfyui_host_port": port,
            "comfyui_data_dir": str(work / "data"),
            "comfyui_wait_timeout": "5m",
            "comfyui_wait_stall_timeout": "3m",
            "comfyui_models_source": f"s3://{BUCKET}/{PREFIX}",
            "comfyui_models_manifest": manifest(),
            "comfyui_models_dir": str(work / "disk" / "models"),
            "comfyui_models_endpoint_url": endpoint,
            "comfyui_models_region": "us-east-1",
            "comfyui_models_s3_packages": [],
            "comfyui_models_config_dir": str(work / "etc"),
            "comfyui_models_unit_dir": str(work / "systemd"),
            "gpuhost_agent_path": str(work / "agent" / "gpuhost-agent.pyz"),
            "gpuhost_agent_bin": str(work / "agent" / "gpuhost-agent"),
            "gpuhost_agent_python": sys.executable,
        }
        try:
            run = run_playbook(work, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(variables), env=AWS_ENV)
            yield Deployment(run, variables, work, name, f"http://127.0.0.1:{port}", work / "disk" / "models",
                             work / "etc" / "models.manifest.json", work / "systemd" / "gpuhost-models-sync.service")
        finally:
            remove_container(name)
            subprocess.run(["userdel", HOST_USER], capture_output=True, check=False)


def test_the_role_deploys_the_real_comfyui_and_waits_until_it_serves(deployed: Deployment) -> None:
    run = deployed.run
    assert run.returncode == 0, run.output[-6000:]
    assert f"ComfyUI in {deployed.name} is ready after" in run.flat, run.output[-3000:]
    assert "Warning: comfy-extras nodes_audio.py failed to import" in run.flat
    inspect = json.loads(subprocess.run(["docker", "inspect", deployed.name], capture_output=True, text=True,
                                        check=True).stdout)[0]
    env = dict(item.split("=", 1) for item in inspect["Config"]["Env"])
    assert env["BASE_DIRECTORY"] == "/basedir"
    assert env["COMFY_CMDLINE_EXTRA"] == "--extra-model-paths-config /basedir/extra_model_paths.yaml --cpu"
    uid, gid = env["WANTED_UID"], env["WANTED_GID"]
    import docker

    top = docker.from_env().containers.get(deployed.name).top(ps_args="-o pid,uid,gid,args")
    assert [row[1:3] for row in top["Processes"] if "main.py" in row[-1]] == [[uid, gid]], top
    database = Path(deployed.variables["comfyui_data_dir"]) / "user" / "comfyui.db"
    assert (str(database.stat().st_uid), str(database.stat().st_gid)) == (uid, gid)
    assert http_status(f"{deployed.url}/system_stats") == 200


def test_comfyui_lists_each_synced_model(deployed: Deployment) -> None:
    assert deployed.listed("checkpoints") == ["alpha.safetensors", "beta.safetensors"]
    assert deployed.listed("loras") == ["gamma.safetensors"]
    # and the nodes that load them offer them
    loaders = get_json(f"{deployed.url}/object_info/CheckpointLoaderSimple")
    assert sorted(loaders["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]) == [
        "alpha.safetensors", "beta.safetensors"]
    lora = get_json(f"{deployed.url}/object_info/LoraLoader")
    assert lora["LoraLoader"]["input"]["required"]["lora_name"][0] == ["gamma.safetensors"]


def test_models_verify_url_passes_and_names_a_file_removed_on_the_host(deployed: Deployment) -> None:
    verify = ("models", "verify", str(deployed.models), "--manifest", str(deployed.manifest), "--url", deployed.url)
    done = gpuhost(*verify, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(f["action"] for f in json.loads(done.stdout)["files"]) == ["ok", "ok", "ok"]

    removed = deployed.models / "loras" / "gamma.safetensors"
    kept = removed.read_bytes()
    stat = removed.stat()
    removed.unlink()
    try:
        done = gpuhost(*verify, "--json")
        assert done.returncode == 1, done.stdout + done.stderr
        files = {f["name"]: f["action"] for f in json.loads(done.stdout)["files"]}
        assert [name for name, action in files.items() if action != "ok"] == ["gamma.safetensors"], files
        assert files["gamma.safetensors"] == "missing"
        table = gpuhost(*verify)
        assert table.returncode == 1 and "gamma.safetensors" in table.stdout, table.stdout + table.stderr
        # ComfyUI no longer lists it either
        assert deployed.listed("loras") == []
    finally:
        removed.write_bytes(kept)
        os.chown(removed, stat.st_uid, stat.st_gid)
        os.chmod(removed, stat.st_mode & 0o7777)


def test_docker_restart_comes_back_ready(deployed: Deployment) -> None:
    restarted = time.time()
    subprocess.run(["docker", "restart", "-t", "30", deployed.name], capture_output=True, check=True, timeout=120)
    answer = wait_ready(deployed.name)
    assert answer["reached_at"] > restarted
    assert http_status(f"{deployed.url}/system_stats") == 200
    assert deployed.listed("checkpoints") == ["alpha.safetensors", "beta.safetensors"]


def test_a_stop_start_that_empties_the_models_disk_is_repaired_by_the_boot_unit(deployed: Deployment) -> None:
    commands = unit_commands(deployed.unit.read_text())
    assert [command[1] for command in commands] == ["-d", "models-sync"]
    subprocess.run(["docker", "stop", "-t", "30", deployed.name], capture_output=True, check=True, timeout=120)
    # the instance store comes back empty: the models directory and HF_HOME beside it are gone
    shutil.rmtree(deployed.models.parent)
    # what systemd runs at boot before docker.service, as the role rendered it
    for command in commands:
        done = subprocess.run(command, env={**os.environ, **AWS_ENV}, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert sorted(f["action"] for f in answer["files"]) == ["fetched", "fetched", "fetched"]
    started = time.time()
    subprocess.run(["docker", "start", deployed.name], capture_output=True, check=True, timeout=120)
    assert wait_ready(deployed.name)["reached_at"] > started
    assert deployed.listed("checkpoints") == ["alpha.safetensors", "beta.safetensors"]
    assert deployed.listed("loras") == ["gamma.safetensors"]
    done = gpuhost("models", "verify", str(deployed.models), "--manifest", str(deployed.manifest), "--url",
                   deployed.url)
    assert done.returncode == 0, done.stdout + done.stderr
